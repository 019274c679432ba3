"""Oracles for the series engine: exact solutions, symbolic coefficients, closed forms from the papers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import modeq
from modeq import optimizers as O
from modeq.flows import memoryless_map, modified_field
from modeq.series import manifold_point, map_coefficients, memory_correction, reduced_map, slow_manifold
from modeq.series import _symbolic as sym


def wavy(theta):
    """A 2-D non-quadratic loss (docs/theory/hb_trees.md#oracle)."""
    x, y = theta
    return 0.5 * (x * y - 1.0) ** 2 + 0.2 * jnp.sin(x + 2 * y) + x**4 / 40


THETA = jnp.array([0.5, 1.5])


def grad_and_hg(loss, theta):
    g = jax.grad(loss)
    return g(theta), jax.jvp(g, (theta,), (g(theta),))[1]


def test_gd_modified_equation_of_y_squared():
    """Hairer-Lubich-Wanner IX: Euler on y' = y^2 has y' = y^2 - h y^3 + 3/2 h^2 y^4 - 8/3 h^3 y^5 + 31/6 h^4 y^6."""
    loss = lambda y: -(y[0] ** 3) / 3.0  # g = -y^2, GD is explicit Euler for y' = y^2
    y = jnp.array([0.7])
    h = 0.01
    exact = [1, -1, sp.Rational(3, 2), sp.Rational(-8, 3), sp.Rational(31, 6)]
    for order in range(1, 6):
        field = modified_field(O.gd(), loss, h=h, order=order)
        expected = sum(float(c) * h**k * 0.7 ** (k + 2) for k, c in enumerate(exact[:order]))
        assert float(field(y)[0]) == pytest.approx(expected, rel=1e-13, abs=0)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_gd_autodiff_field_equals_symbolic_trees(order):
    h = 0.05
    auto = modified_field(O.gd(), wavy, h=h, order=order)
    exact = sym.symbolic_field(sym.gd_modified_coefficients(order), wavy, h=h)
    rng = np.random.default_rng(order)
    for _ in range(3):
        theta = jnp.asarray(rng.uniform(-1, 1.5, 2))
        np.testing.assert_allclose(auto(theta), exact(theta), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("order, beta", [(1, 0.5), (2, 0.5), (3, 0.5), (4, 0.5), (2, 0.9), (3, 0.9)])
def test_hb_autodiff_field_equals_symbolic_trees(order, beta):
    h = 0.01 if beta == 0.5 else 1e-3
    field = modified_field(O.heavy_ball(beta), wavy, h=h, order=order)
    auto = jax.jit(lambda th: field(th))
    exact = sym.symbolic_field(sym.hb_modified_coefficients(order), wavy, h=h, beta=beta)
    rng = np.random.default_rng(10 + order)
    for _ in range(2):
        theta = jnp.asarray(rng.uniform(-1, 1.5, 2))
        np.testing.assert_allclose(auto(theta), exact(theta), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_hb_memoryless_map_equals_symbolic_trees(order):
    beta, h = 0.5, 0.01
    auto = memoryless_map(O.heavy_ball(beta), wavy, h=h, order=order)
    records = sym.hb_memoryless_coefficients(order)
    # Psi(theta) = theta - sum_t h^|t| coef(t) F(t): a field with h^(|t|-1) scaled by -h
    exact = sym.symbolic_field(records, wavy, h=h, beta=beta)
    np.testing.assert_allclose(auto(THETA), THETA - h * exact(THETA), rtol=1e-12, atol=1e-14)


def test_hb_memoryless_map_reproduces_theory_numbers():
    """docs/theory/hb_trees.md#oracle: Psi truncated at K nodes at theta = (0.5, 1.5), beta = 1/2, h = 0.01."""
    expected = {1: (0.510995826749, 1.509991653498), 2: (0.51165051707, 1.510238505718),
                3: (0.511724834509, 1.5102432589), 4: (0.511728572903, 1.510236897898)}
    for order, value in expected.items():
        got = memoryless_map(O.heavy_ball(0.5), wavy, h=0.01, order=order)(THETA)
        np.testing.assert_allclose(got, value, atol=2e-12)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_hb_order2_field_is_ghosh_igr_m(beta):
    """theta' = -(1/(1-beta)) grad[L + h(1+beta)/(4(1-beta)^2) ||grad L||^2] (Ghosh et al. 2023)."""
    h = 0.003
    g = jax.grad(wavy)
    modified_loss = lambda th: wavy(th) + h * (1 + beta) / (4 * (1 - beta) ** 2) * jnp.sum(g(th) ** 2)
    field = modified_field(O.heavy_ball(beta), wavy, h=h, order=2)
    np.testing.assert_allclose(field(THETA), -jax.grad(modified_loss)(THETA) / (1 - beta), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_hb_order2_memoryless_map_is_gd_on_modified_loss(beta):
    """Cattaneo & Shigida 2502.02132 Sec. 2: GD with step h/(1-beta) on L + h beta/(2(1-beta)^2)||grad L||^2."""
    h = 0.003
    g = jax.grad(wavy)
    modified_loss = lambda th: wavy(th) + h * beta / (2 * (1 - beta) ** 2) * jnp.sum(g(th) ** 2)
    step = memoryless_map(O.heavy_ball(beta), wavy, h=h, order=2)
    np.testing.assert_allclose(step(THETA), THETA - h / (1 - beta) * jax.grad(modified_loss)(THETA), rtol=1e-15, atol=1e-15)


def test_gd_order2_field_is_igr():
    h = 0.02
    g = jax.grad(wavy)
    igr = lambda th: wavy(th) + h / 4 * jnp.sum(g(th) ** 2)
    np.testing.assert_allclose(modified_field(O.gd(), wavy, h=h, order=2)(THETA), -jax.grad(igr)(THETA), rtol=1e-14)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_hb_on_quadratic_matches_log_of_dominant_root(beta):
    """On L = lambda theta^2/2 the order-R HB field is the first R terms of log(r_+(h lambda))/h times theta."""
    x, b = sp.symbols("x b")
    r_plus = ((1 + b - x) + sp.sqrt((1 + b - x) ** 2 - 4 * b)) / 2
    series = sp.series(sp.log(r_plus.subs(b, sp.Rational(beta).limit_denominator(100))), x, 0, 6).removeO()
    coefficients = [series.coeff(x, k) for k in range(1, 6)]
    lam, h = 1.3, 2e-3
    loss = lambda th: 0.5 * lam * th[0] ** 2
    theta = jnp.array([0.8])
    for order in range(1, 5):
        field = modified_field(O.heavy_ball(beta), loss, h=h, order=order)
        rate = sum(float(c) * lam**k * h ** (k - 1) for k, c in enumerate(coefficients[:order], start=1))
        assert float(field(theta)[0]) == pytest.approx(rate * 0.8, rel=1e-12)


SMOOTH_OPTIMIZERS = {
    "heavy_ball": O.heavy_ball(0.7),
    "nesterov": O.nesterov(0.6),
    "sgdm": O.sgdm(0.8),
    "adamw": O.adamw(b1=0.9, b2=0.99, eps=0.0, eps_root=0.05, weight_decay=0.1),
    "nadam": O.nadam(b1=0.9, b2=0.95, eps=0.0, eps_root=0.05, weight_decay=0.05),
    "rmsprop": O.rmsprop(decay=0.9, eps=0.05),
    "lion_k": O.lion(b1=0.8, b2=0.9, weight_decay=0.1, K="smooth_l1", eps=0.1),
}


@pytest.mark.parametrize("name", sorted(SMOOTH_OPTIMIZERS))
def test_memory_correction_is_order2_term_of_manifold(name):
    """Cattaneo-Shigida's closed-form M(theta) equals minus the h^2 coefficient of the slow-manifold map."""
    opt = SMOOTH_OPTIMIZERS[name]
    coefficients = map_coefficients(reduced_map(opt, jax.grad(wavy), 1), THETA, 2)
    np.testing.assert_allclose(coefficients[2], -memory_correction(opt, wavy, h=1.0)(THETA), rtol=1e-12, atol=1e-14)


def test_memory_corrections_match_theory_closed_forms():
    g, hg = grad_and_hg(wavy, THETA)
    beta, h = 0.6, 0.01
    np.testing.assert_allclose(memory_correction(O.heavy_ball(beta), wavy, h=h)(THETA), h * beta / (1 - beta) ** 3 * hg, rtol=1e-13)
    np.testing.assert_allclose(memory_correction(O.nesterov(beta), wavy, h=h)(THETA), h * beta**2 / (1 - beta) ** 3 * hg, rtol=1e-13)
    # AdamW, eps inside the root (docs/theory/regularizers.md#adaptive): M = h[(b1/(1-b1) - b2/(1-b2))/s + eps b2/((1-b2) s^3)] (grad||g||_{1,eps} + lam H theta)
    b1, b2, eps, lam = 0.9, 0.99, 0.05, 0.1
    s = jnp.sqrt(g**2 + eps)
    one_norm = lambda th: jnp.sum(jnp.sqrt(jax.grad(wavy)(th) ** 2 + eps))
    h_theta = jax.jvp(jax.grad(wavy), (THETA,), (THETA,))[1]
    expected = h * ((b1 / (1 - b1) - b2 / (1 - b2)) / s + eps * b2 / ((1 - b2) * s**3)) * (jax.grad(one_norm)(THETA) + lam * h_theta)
    got = memory_correction(O.adamw(b1=b1, b2=b2, eps=0.0, eps_root=eps, weight_decay=lam), wavy, h=h)(THETA)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_slow_manifold_attracts_hb_iterates():
    """After a burn-in, HB's momentum lies on the series manifold up to O(h^R) (docs/theory/manifold.md#fixed-point, independent oracle)."""
    beta, h = 0.5, 0.002
    opt = O.heavy_ball(beta)
    traj = O.simulate(opt, wavy, THETA, 200, h=h)
    theta_n, m_n = traj.theta[-1], traj.momenta[0][-1]
    gaps = [float(jnp.linalg.norm(jax.jit(slow_manifold(opt, wavy, h=h, order=r))(theta_n)[0] - m_n)) for r in (1, 2, 3)]
    for a, b in zip(gaps, gaps[1:]):
        assert b < 0.1 * a  # each order gains about a factor h * lambda / (1-beta)^2
    assert gaps[-1] < 1e-5
    from modeq.series import slow_manifold_start  # the past-orbit shooting start (not the series): 1e-12

    exact = slow_manifold_start(opt, wavy, theta_n, h).momenta[0]
    assert float(jnp.linalg.norm(exact - m_n)) < 1e-10


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="order"):
        modified_field(O.gd(), wavy, h=0.1, order=0)
    with pytest.raises(ValueError, match="h must be > 0"):
        modified_field(O.gd(), wavy, h=-0.1, order=2)
    with pytest.raises(ValueError, match="beta"):
        O.heavy_ball(1.0)
    with pytest.raises(ValueError, match="no smooth modified equation"):
        modified_field(O.lion(), wavy, h=0.1, order=2)
    with pytest.raises(ValueError, match="two-step"):
        modified_field(O.heavy_ball_two_step(0.5), wavy, h=0.1, order=1)
    with pytest.raises(ValueError, match="truncation"):
        modified_field(O.gd(), wavy, h=0.1, order=2, truncation="pade")
    # plain Lion is fine at order 1 (sign descent)
    assert modified_field(O.lion(weight_decay=0.0), wavy, h=0.1, order=1)(THETA).shape == (2,)
