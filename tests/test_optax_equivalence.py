"""Every modeq optimizer that optax also has reproduces optax's iterates.

Each case runs 200 steps of ``modeq.optimizers.simulate`` and of optax (a Python loop over a jitted ``tx.update``,
zero initial state as optax's ``init``) from the same point and compares the whole trajectory:
``max_n ||theta_n - theta_n^optax|| / ||theta_n^optax|| <= 1e-12`` in float64.

Adaptive methods: near ``g_j = 0`` the map ``g -> g/(sqrt(v) + eps)`` is sign-like, with a Lipschitz constant of order
``1/eps`` (``1/sqrt(eps)`` with eps inside the root). There a one-ulp difference (optax multiplies by ``rsqrt`` or by a
reciprocal, modeq divides) is amplified chaotically, so RMSProp is compared with ``eps = 1e-2`` where its map is well
conditioned: the test checks the formulas, not the rounding.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from modeq import optimizers as mo
from modeq.problems import resolve_problem

STEPS = 200
TOL = 1e-12


@functools.lru_cache(maxsize=None)
def problem(name):
    return resolve_problem(name)


@functools.lru_cache(maxsize=None)
def jitted_grad(name):
    return jax.jit(jax.grad(problem(name).loss))


def optax_trajectory(tx, name, steps=STEPS):
    """The optax reference: a Python loop over a jitted update (optax's zero initial state)."""
    grad = jitted_grad(name)
    theta = problem(name).theta0
    state = tx.init(theta)

    @jax.jit
    def step(theta, state):
        updates, state = tx.update(grad(theta), state, theta)
        return optax.apply_updates(theta, updates), state

    out = [theta]
    for _ in range(steps):
        theta, state = step(theta, state)
        out.append(theta)
    return np.asarray(jnp.stack(out))


def modeq_trajectory(opt, name, h, steps=STEPS, m0="zero"):
    p = problem(name)
    traj = mo.simulate(opt, p.loss, p.theta0, steps, h=h, m0=m0, record=False)
    assert int(traj.diverged_at) == -1
    return np.asarray(traj.theta)


def max_relative_deviation(a, b):
    """``max_n ||a_n - b_n|| / ||b_n||`` over the whole trajectory."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


BETA, H_SGD, H_ADAPTIVE = 0.9, 0.05, 0.01
MLP = "mlp:d=60"

# id -> (modeq optimizer, optax transformation, h, problems)
CASES = {
    "heavy_ball": (lambda: mo.heavy_ball(BETA), lambda: optax.sgd(H_SGD, momentum=BETA), H_SGD),
    "nesterov": (lambda: mo.nesterov(BETA), lambda: optax.sgd(H_SGD, momentum=BETA, nesterov=True), H_SGD),
    "sgdm_standard": (lambda: mo.sgdm_standard(BETA), lambda: optax.sgd(H_SGD, momentum=BETA), H_SGD),
    # standard SGDM with dampening tau: x -= gamma (1 - tau) sum beta^k g, i.e. optax sgd with lr gamma (1 - tau)
    "sgdm_standard_dampening": (
        lambda: mo.sgdm_standard(BETA, dampening=0.3),
        lambda: optax.sgd(H_SGD * 0.7, momentum=BETA),
        H_SGD,
    ),
    # normalized SGDM at eta = gamma/(1 - beta) (through standard_to_normalized) == optax sgd(gamma, momentum=beta)
    "sgdm_normalized": (
        lambda: mo.sgdm(BETA),
        lambda: optax.sgd(H_SGD, momentum=BETA),
        mo.standard_to_normalized(H_SGD, BETA)[0],
    ),
    "adam": (lambda: mo.adam(), lambda: optax.adam(H_ADAPTIVE), H_ADAPTIVE),
    "adam_eps_root": (
        lambda: mo.adam(eps=0.0, eps_root=1e-8),
        lambda: optax.adam(H_ADAPTIVE, eps=0.0, eps_root=1e-8),
        H_ADAPTIVE,
    ),
    "adamw": (
        lambda: mo.adamw(weight_decay=0.05),
        lambda: optax.adamw(H_ADAPTIVE, weight_decay=0.05),
        H_ADAPTIVE,
    ),
    "rmsprop_eps_in_sqrt": (
        lambda: mo.rmsprop(0.9, eps=1e-2, eps_in_sqrt=True),
        lambda: optax.rmsprop(H_ADAPTIVE, decay=0.9, eps=1e-2, eps_in_sqrt=True),
        H_ADAPTIVE,
    ),
    "rmsprop_eps_outside": (
        lambda: mo.rmsprop(0.9, eps=1e-2, eps_in_sqrt=False),
        lambda: optax.rmsprop(H_ADAPTIVE, decay=0.9, eps=1e-2, eps_in_sqrt=False),
        H_ADAPTIVE,
    ),
    "rmsprop_eps_in_sqrt_bias_correction": (
        lambda: mo.rmsprop(0.9, eps=1e-2, eps_in_sqrt=True, bias_correction=True),
        lambda: optax.rmsprop(H_ADAPTIVE, decay=0.9, eps=1e-2, eps_in_sqrt=True, bias_correction=True),
        H_ADAPTIVE,
    ),
    "rmsprop_eps_outside_bias_correction": (
        lambda: mo.rmsprop(0.9, eps=1e-2, eps_in_sqrt=False, bias_correction=True),
        lambda: optax.rmsprop(H_ADAPTIVE, decay=0.9, eps=1e-2, eps_in_sqrt=False, bias_correction=True),
        H_ADAPTIVE,
    ),
    "nadam": (lambda: mo.nadam(), lambda: optax.nadam(H_ADAPTIVE), H_ADAPTIVE),
    "nadamw": (
        lambda: mo.nadam(weight_decay=0.05),
        lambda: optax.nadamw(H_ADAPTIVE, weight_decay=0.05),
        H_ADAPTIVE,
    ),
    "lion": (
        lambda: mo.lion(b1=0.9, b2=0.99, weight_decay=0.01),
        lambda: optax.lion(H_ADAPTIVE, b1=0.9, b2=0.99, weight_decay=0.01),
        H_ADAPTIVE,
    ),
}

# every case runs on the MLP (d = 60) and on one 2-D problem, the 2-D problems in rotation
_SMALL = ("rosenbrock", "product", "logistic")
PARAMS = [
    pytest.param(case, name, id=f"{case}-{name}")
    for i, case in enumerate(CASES)
    for name in (MLP, _SMALL[i % len(_SMALL)])
]


def deviation(case, name):
    """Max relative deviation of modeq from optax, and how far the iterates moved (relative to theta_0)."""
    make_opt, make_tx, h = CASES[case]
    ours = modeq_trajectory(make_opt(), name, h)
    moved = float(np.max(np.linalg.norm(ours - ours[0], axis=1)) / np.linalg.norm(ours[0]))
    return max_relative_deviation(ours, optax_trajectory(make_tx(), name)), moved


@pytest.mark.parametrize("case, name", PARAMS)
def test_matches_optax(case, name):
    dev, moved = deviation(case, name)
    assert dev <= TOL, f"{case} on {name}: max relative deviation {dev:.3g} > {TOL:g}"
    assert moved > 1e-2, f"{case} on {name}: the iterates barely move ({moved:.3g}); the comparison would be vacuous"


# --- conventions -----------------------------------------------------------------------------------------------------


def test_eps_outside_vs_eps_root_inside():
    """``eps`` is added outside the square root and ``eps_root`` inside, as in optax; they are not interchangeable."""
    opt = mo.adam(eps=1e-2)
    assert float(opt.hyper["eps"]) == 1e-2 and float(opt.hyper["eps_root"]) == 0.0
    ours = modeq_trajectory(opt, MLP, H_ADAPTIVE)
    assert max_relative_deviation(ours, optax_trajectory(optax.adam(H_ADAPTIVE, eps=1e-2), MLP)) <= TOL
    swapped = optax_trajectory(optax.adam(H_ADAPTIVE, eps=0.0, eps_root=1e-2), MLP)
    assert max_relative_deviation(ours, swapped) > 1e-6
    inside = modeq_trajectory(mo.adam(eps=0.0, eps_root=1e-2), MLP, H_ADAPTIVE)
    assert max_relative_deviation(inside, swapped) <= TOL


@pytest.mark.parametrize("eps_in_sqrt", [True, False])
def test_rmsprop_eps_placement(eps_in_sqrt):
    """RMSProp's ``eps_in_sqrt`` maps onto the shared denominator ``sqrt(v + eps_root) + eps``."""
    opt = mo.rmsprop(0.9, eps=1e-3, eps_in_sqrt=eps_in_sqrt)
    assert float(opt.hyper["eps_root"]) == (1e-3 if eps_in_sqrt else 0.0)
    assert float(opt.hyper["eps"]) == (0.0 if eps_in_sqrt else 1e-3)
    assert opt.smooth == eps_in_sqrt


def test_dampening_equal_to_beta_is_normalized_sgdm():
    """Standard SGDM with dampening = beta is normalized SGDM with eta = gamma (Wang et al., Def. A.1)."""
    gamma = 0.1
    std = modeq_trajectory(mo.sgdm_standard(BETA, dampening=BETA), "rosenbrock", gamma, steps=100)
    norm = modeq_trajectory(mo.sgdm(BETA), "rosenbrock", gamma, steps=100)
    assert max_relative_deviation(std, norm) <= 1e-14


@pytest.mark.parametrize("dampening", [0.0, 0.3, 0.9])
def test_standard_to_normalized(dampening):
    """``standard_to_normalized``: SGDM-standard(gamma, mu, tau) == SGDM-normalized(gamma (1-tau)/(1-mu), mu)."""
    gamma = 0.01
    eta, beta = mo.standard_to_normalized(gamma, BETA, dampening)
    assert beta == BETA
    assert eta == pytest.approx(gamma * (1 - dampening) / (1 - BETA), rel=1e-15)
    std = modeq_trajectory(mo.sgdm_standard(BETA, dampening=dampening), MLP, gamma)
    norm = modeq_trajectory(mo.sgdm(beta), MLP, eta)
    assert max_relative_deviation(std, norm) <= TOL


def test_standard_to_normalized_validates():
    with pytest.raises(ValueError, match="gamma"):
        mo.standard_to_normalized(0.0, 0.9)
    with pytest.raises(ValueError, match="dampening"):
        mo.standard_to_normalized(0.1, 0.9, dampening=1.0)
