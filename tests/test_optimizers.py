"""The optimizer specifications and the ``lax.scan`` simulator: equivalent forms, start modes, divergence, vmap/jit,
pytrees and input validation."""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeq import optimizers as mo
from modeq.problems import MiniBatch, logistic, resolve_problem

HB_TOL = 1e-13


@functools.lru_cache(maxsize=None)
def problem(name):
    return resolve_problem(name)


def rel_dev(a, b):
    """``max_n ||a_n - b_n|| / ||b_n||`` along a whole trajectory."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def run(opt, name, h, steps=200, **kw):
    p = problem(name)
    return mo.simulate(opt, p.loss, p.theta0, steps, h=h, **kw)


def paper_form_heavy_ball(name, h, beta, steps):
    """HB as written by Cattaneo & Shigida (arXiv 2509.08483), an independent recursion:
    theta_{n+1} = theta_n - h g_n + h beta v_n, v_{n+1} = beta v_n - g_n, v_0 = 0."""
    p = problem(name)
    grad = jax.jit(jax.grad(p.loss))
    theta = np.asarray(p.theta0)
    v = np.zeros_like(theta)
    out = [theta]
    for _ in range(steps):
        g = np.asarray(grad(theta))
        theta, v = theta - h * g + h * beta * v, beta * v - g
        out.append(theta)
    return np.stack(out)


# --- heavy-ball: four forms, one recursion ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, h, beta", [("rosenbrock", 0.01, 0.9), ("mlp:d=60", 0.05, 0.9), ("logistic", 0.3, 0.5)])
def test_heavy_ball_forms_agree(name, h, beta):
    """Momentum-sum form == two-step form == normalized SGDM (eta = h/(1-beta)) == the paper form, to 1e-13."""
    steps = 200
    sum_form = np.asarray(run(mo.heavy_ball(beta), name, h, steps).theta)
    two_step = np.asarray(run(mo.heavy_ball_two_step(beta), name, h, steps).theta)
    normalized = np.asarray(run(mo.sgdm(beta), name, h / (1 - beta), steps).theta)
    paper = paper_form_heavy_ball(name, h, beta, steps)
    assert np.linalg.norm(sum_form[-1] - sum_form[0]) > 1e-2  # not a vacuous comparison
    assert rel_dev(two_step, sum_form) <= HB_TOL
    assert rel_dev(normalized, sum_form) <= HB_TOL
    assert rel_dev(paper, sum_form) <= HB_TOL


def test_heavy_ball_momentum_is_minus_paper_velocity():
    """The momentum variable is m = -v, and theta_{n+1} - theta_n = -h m_{n+1}."""
    traj = run(mo.heavy_ball(0.9), "rosenbrock", 0.01, 50)
    theta, m = np.asarray(traj.theta), np.asarray(traj.momenta[0])
    np.testing.assert_allclose(theta[1:] - theta[:-1], -0.01 * m[1:], rtol=1e-12, atol=1e-16)


@pytest.fixture(scope="module")
def two_step_base():
    # one base optimizer: with_hyper keeps the static structure, so every hypothesis example reuses one compile
    return mo.heavy_ball(0.5), mo.heavy_ball_two_step(0.5)


@given(beta=st.floats(0.0, 0.99, exclude_max=True), h=st.floats(1e-4, 0.1))
def test_heavy_ball_two_step_property(two_step_base, beta, h):
    """For any beta in [0, 0.99) and h in (0, 0.1]: the simulated HB equals its two-step form."""
    hb, two = two_step_base
    a = run(hb.with_hyper(beta=beta), "logistic", jnp.asarray(h), 100)
    b = run(two.with_hyper(beta=beta), "logistic", jnp.asarray(h), 100)
    assert int(a.diverged_at) == -1
    assert rel_dev(b.theta, a.theta) <= 1e-12


# --- Lion-K ----------------------------------------------------------------------------------------------------------


def test_lion_quadratic_is_normalized_sgdm():
    """Lion-K with K = |x|^2/2, b1 = b2, no weight decay: c_n = m_{n+1}, i.e. normalized SGDM."""
    lion = mo.lion(b1=0.8, b2=0.8, weight_decay=0.0, K="quadratic")
    a = run(lion, "mlp:d=60", 0.1).theta
    b = run(mo.sgdm(0.8), "mlp:d=60", 0.1).theta
    assert rel_dev(a, b) <= HB_TOL


def test_lion_smooth_l1_tends_to_sign():
    """grad K_eps(x) = x/sqrt(x^2 + eps) -> sign(x) as eps -> 0: the error is below eps/(2 x^2) and shrinks with eps."""
    rng = np.random.default_rng(0)
    g = jnp.asarray(rng.standard_normal(50))
    m = jnp.asarray(rng.standard_normal(50))
    theta = jnp.asarray(rng.standard_normal(50))
    sign = mo.lion(weight_decay=0.1)
    d_sign = sign.direction(sign.update_momenta((m,), g, theta), (m,), g, theta, 0.1)
    c = 0.9 * m + 0.1 * g
    errors = []
    for eps in [1e-2, 1e-4, 1e-6, 1e-8, 1e-10]:
        smooth = mo.lion(weight_decay=0.1, K="smooth_l1", eps=eps)
        d = smooth.direction(smooth.update_momenta((m,), g, theta), (m,), g, theta, 0.1)
        err = np.abs(np.asarray(d - d_sign))
        assert np.all(err <= eps / (2 * np.asarray(c) ** 2) + 1e-15)
        errors.append(err.max())
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] / errors[-2] < 0.02  # O(eps) once eps << min c^2


def test_lion_smooth_l1_trajectory_tends_to_lion():
    lion = run(mo.lion(weight_decay=0.01), "logistic", 0.01, 50).theta
    smooth = run(mo.lion(weight_decay=0.01, K="smooth_l1", eps=1e-14), "logistic", 0.01, 50).theta
    assert rel_dev(smooth, lion) < 1e-6


# --- initial momenta -------------------------------------------------------------------------------------------------


def test_m0_zero():
    traj = run(mo.adam(), "rosenbrock", 0.01, 5)
    for m in traj.momenta:
        assert np.all(np.asarray(m[0]) == 0.0)
    two = run(mo.heavy_ball_two_step(0.9), "rosenbrock", 0.01, 5)
    np.testing.assert_array_equal(two.momenta[0][0], problem("rosenbrock").theta0)  # theta_{-1} = theta_0


def test_m0_first_is_the_stationary_value():
    p = problem("rosenbrock")
    g0 = np.asarray(jax.grad(p.loss)(p.theta0))
    beta, h = 0.9, 0.01
    traj = run(mo.heavy_ball(beta), "rosenbrock", h, 5, m0="first")
    np.testing.assert_allclose(traj.momenta[0][0], g0 / (1 - beta), rtol=1e-15)
    # warm start: the first step is a GD step with the effective learning rate h/(1-beta)
    np.testing.assert_allclose(traj.theta[1], p.theta0 - h * g0 / (1 - beta), rtol=1e-14)
    adam = run(mo.adam(), "rosenbrock", h, 5, m0="first")
    np.testing.assert_allclose(adam.momenta[0][0], g0, rtol=1e-14)
    np.testing.assert_allclose(adam.momenta[1][0], g0**2, rtol=1e-14)


def test_m0_given_tuple():
    m0 = (jnp.array([0.3, -0.2]),)
    traj = run(mo.heavy_ball(0.9), "rosenbrock", 0.01, 5, m0=m0)
    np.testing.assert_array_equal(traj.momenta[0][0], m0[0])
    p = problem("rosenbrock")
    g0 = jax.grad(p.loss)(p.theta0)
    np.testing.assert_allclose(traj.theta[1], p.theta0 - 0.01 * (0.9 * m0[0] + g0), rtol=1e-15)


def test_m0_bad():
    with pytest.raises(ValueError, match="m0"):
        run(mo.heavy_ball(0.9), "rosenbrock", 0.01, 5, m0="warm")
    with pytest.raises(ValueError, match="m0"):
        run(mo.adam(), "rosenbrock", 0.01, 5, m0=(jnp.zeros(2),))


# --- divergence ------------------------------------------------------------------------------------------------------


def _first_nonfinite_gd_step(theta0, h, steps):
    theta = np.asarray(theta0, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(steps):
            new = theta - h * theta  # grad of |theta|^2/2 is theta
            if not np.all(np.isfinite(new)):
                return n
            theta = new
    return -1


def test_divergence_is_reported():
    """GD on |theta|^2/2 with h = 3 (h lambda = 3 > 2): theta_n = (-2)^n theta_0 overflows; no NaN leaves."""
    theta0, h, steps = jnp.array([1.0, 0.5]), 3.0, 1100
    expected = _first_nonfinite_gd_step(theta0, h, steps)
    assert 1000 < expected < steps
    with pytest.warns(mo.DivergenceWarning, match="diverged at step"):
        traj = mo.simulate(mo.gd(), lambda th: 0.5 * th @ th, theta0, steps, h=h)
    assert int(traj.diverged_at) == expected
    assert traj.diverged
    for arr in (traj.theta, traj.loss, traj.grad_norm):
        assert not np.any(np.isnan(np.asarray(arr)))
    theta = np.asarray(traj.theta)
    assert np.all(np.isfinite(theta))
    np.testing.assert_array_equal(theta[expected:], np.broadcast_to(theta[expected], theta[expected:].shape))
    with pytest.raises(mo.DivergenceError, match=str(expected)):
        traj.raise_if_diverged()


def test_divergence_with_momentum_freezes_momenta():
    with pytest.warns(mo.DivergenceWarning):
        traj = mo.simulate(mo.heavy_ball(0.9), lambda th: 0.5 * th @ th, jnp.array([1.0, -2.0]), 2000, h=5.0)
    assert traj.diverged
    assert np.all(np.isfinite(np.asarray(traj.momenta[0])))


def test_no_divergence():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traj = run(mo.gd(), "rosenbrock", 0.01, 20)
    assert int(traj.diverged_at) == -1 and not traj.diverged
    assert traj.raise_if_diverged() is traj


# --- vmap / jit ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minibatch_setup():
    p = logistic()
    return p, MiniBatch(p, 4)


def test_vmap_over_keys(minibatch_setup):
    p, oracle = minibatch_setup
    opt = mo.heavy_ball(0.9)

    def one(key):
        return mo.simulate(opt, p.loss, p.theta0, 40, h=0.1, oracle=oracle, key=key).theta

    keys = jax.random.split(jax.random.key(0), 4)
    thetas = np.asarray(jax.vmap(one)(keys))
    for i in range(4):
        for j in range(i):
            assert np.linalg.norm(thetas[i, -1] - thetas[j, -1]) > 1e-6  # independent runs differ
    again = np.asarray(jax.vmap(one)(keys))
    np.testing.assert_array_equal(thetas, again)  # same keys, same runs
    single = np.asarray(one(keys[2]))
    np.testing.assert_allclose(thetas[2], single, rtol=1e-12, atol=1e-14)


def test_stochastic_oracle_needs_key(minibatch_setup):
    p, oracle = minibatch_setup
    with pytest.raises(ValueError, match="key"):
        mo.simulate(mo.gd(), p.loss, p.theta0, 5, h=0.1, oracle=oracle)


def test_vmap_over_with_hyper():
    base = mo.heavy_ball(0.0)
    p = problem("logistic")
    betas = jnp.array([0.0, 0.5, 0.9])
    batched = jax.vmap(lambda b: mo.simulate(base.with_hyper(beta=b), p.loss, p.theta0, 60, h=0.1).theta)(betas)
    for k, b in enumerate([0.0, 0.5, 0.9]):
        separate = mo.simulate(mo.heavy_ball(b), p.loss, p.theta0, 60, h=0.1).theta
        np.testing.assert_allclose(batched[k], separate, rtol=1e-12, atol=1e-15)


def test_vmap_over_hyper_dict_and_h():
    base = mo.adam()
    p = problem("logistic")
    hyper = {k: jnp.stack([v, v]) for k, v in base.hyper.items()}
    hyper["b1"] = jnp.array([0.8, 0.95])
    hyper["b2"] = jnp.array([0.99, 0.999])
    hs = jnp.array([0.01, 0.02])

    def one(hp, h):
        return mo.simulate(dataclasses.replace(base, hyper=hp), p.loss, p.theta0, 60, h=h).theta

    batched = jax.vmap(one)(hyper, hs)
    for k in range(2):
        separate = mo.simulate(
            mo.adam(b1=float(hyper["b1"][k]), b2=float(hyper["b2"][k])), p.loss, p.theta0, 60, h=float(hs[k])
        ).theta
        np.testing.assert_allclose(batched[k], separate, rtol=1e-12, atol=1e-15)


def test_simulate_inside_jit():
    """simulate is jit-compatible: h and hyperparameters traced, no Python bool on tracers, no warning inside jit."""
    p = problem("logistic")
    base = mo.heavy_ball(0.5)

    @jax.jit
    def f(h, beta, theta0):
        traj = mo.simulate(base.with_hyper(beta=beta), p.loss, theta0, 30, h=h)
        return traj.theta, traj.diverged_at

    theta, diverged_at = f(0.1, 0.9, p.theta0)
    direct = mo.simulate(mo.heavy_ball(0.9), p.loss, p.theta0, 30, h=0.1).theta
    np.testing.assert_allclose(theta, direct, rtol=1e-12, atol=1e-15)
    assert int(diverged_at) == -1
    # a divergent run inside jit: no Python bool on the traced diverged_at, no warning at trace time
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diverged = jax.jit(lambda h: mo.simulate(mo.gd(), lambda th: 0.5 * th @ th, jnp.ones(2), 1100, h=h).diverged_at)
        assert int(diverged(3.0)) > 1000
    # vmap over initial points
    starts = jnp.stack([p.theta0, 2 * p.theta0])
    thetas = jax.vmap(lambda t0: f(0.1, 0.9, t0)[0])(starts)
    np.testing.assert_allclose(thetas[0], direct, rtol=1e-12, atol=1e-15)


def test_step_size_schedule():
    p = problem("rosenbrock")
    const = mo.simulate(mo.heavy_ball(0.9), p.loss, p.theta0, 30, h=0.01).theta
    sched = mo.simulate(mo.heavy_ball(0.9), p.loss, p.theta0, 30, h=lambda n: 0.01 + 0.0 * n).theta
    np.testing.assert_allclose(sched, const, rtol=1e-15, atol=1e-15)  # jax 0.11 differs by one rounding unit
    decay = mo.simulate(mo.gd(), p.loss, p.theta0, 3, h=lambda n: 0.01 / (1.0 + n)).theta
    g0 = jax.grad(p.loss)(p.theta0)
    np.testing.assert_allclose(decay[1], p.theta0 - 0.01 * g0, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(decay[2], decay[1] - 0.005 * jax.grad(p.loss)(decay[1]), rtol=1e-15, atol=1e-15)


# --- pytrees ---------------------------------------------------------------------------------------------------------


def test_pytree_theta0():
    x = jnp.linspace(-1.0, 1.0, 7)
    y = 0.5 * x**2 - x + 0.3

    def tree_loss(params):
        pred = params["a"] * x**2 + params["b"] * x + params["c"]
        return 0.5 * jnp.mean((pred - y) ** 2)

    def flat_loss(th):
        return tree_loss({"a": th[0], "b": th[1:2], "c": th[2]})

    theta0 = {"a": jnp.asarray(0.0), "b": jnp.array([0.0]), "c": jnp.asarray(1.0)}
    traj = mo.simulate(mo.adam(), tree_loss, theta0, 100, h=0.05)
    assert traj.theta.shape == (101, 3)
    last = traj.theta_tree(-1)
    assert set(last) == {"a", "b", "c"} and last["b"].shape == (1,)
    # ravel_pytree orders dict keys alphabetically: (a, b, c)
    flat = mo.simulate(mo.adam(), flat_loss, jnp.array([0.0, 0.0, 1.0]), 100, h=0.05)
    np.testing.assert_allclose(traj.theta, flat.theta, rtol=1e-14, atol=1e-15)
    assert float(traj.loss[-1]) < float(traj.loss[0])
    np.testing.assert_allclose(traj.loss, flat.loss, rtol=1e-13)


# --- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("ctor", [mo.heavy_ball, mo.heavy_ball_two_step, mo.nesterov, mo.sgdm, mo.sgdm_standard])
def test_bad_beta(ctor, beta):
    with pytest.raises(ValueError, match="beta"):
        ctor(beta)


@pytest.mark.parametrize(
    "ctor, kwargs, name",
    [
        (mo.adam, {"b1": 1.0}, "b1"),
        (mo.adam, {"b2": -0.5}, "b2"),
        (mo.adam, {"eps": -1e-8}, "eps"),
        (mo.adam, {"eps": 0.0, "eps_root": 0.0}, "eps"),
        (mo.adamw, {"weight_decay": -1.0}, "weight_decay"),
        (mo.nadam, {"b1": 1.2}, "b1"),
        (mo.rmsprop, {"decay": 1.0}, "decay"),
        (mo.rmsprop, {"eps": 0.0}, "eps"),
        (mo.lion, {"b2": 1.0}, "b2"),
        (mo.lion, {"K": "smooth_l1", "eps": 0.0}, "eps"),
        (mo.lion, {"K": "cubic"}, "K"),
        (mo.sgdm_standard, {"dampening": 1.0}, "dampening"),
    ],
)
def test_bad_hyperparameters(ctor, kwargs, name):
    with pytest.raises(ValueError, match=name):
        ctor(**kwargs)


@pytest.mark.parametrize("h", [0.0, -0.1, float("inf")])
def test_bad_h(h):
    with pytest.raises(ValueError, match=r"^h must"):
        run(mo.gd(), "rosenbrock", h, 5)


@pytest.mark.parametrize("steps", [0, -3])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match=r"^steps must"):
        run(mo.gd(), "rosenbrock", 0.1, steps)


def test_bad_steps_type():
    with pytest.raises(TypeError, match="steps"):
        run(mo.gd(), "rosenbrock", 0.1, 2.5)
