"""Oracles for the one start policy on the slow manifold (modeq.series.slow_manifold_start).

* quadratics: the exact start against the dominant root of r^2 - (1 + beta - h lambda) r + beta = 0 (NumPy), and the
  iterates started there against their closed form Re(r^n) (theta_0 - theta*) per eigen-direction, real and complex
  directions mixed;
* other losses: the converged fixed point against an independent computation (a hand-written heavy-ball recursion
  with a hand-coded gradient, run from a past point found by SciPy's root finder over a longer past window), the
  exact start where both exist, and a RegimeError where no fixed point exists.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from _quadratic import spd_quadratic

from modeq._errors import RegimeError
from modeq.optimizers import adam, gd, heavy_ball, heavy_ball_two_step, simulate
from modeq.problems import product
from modeq.series import slow_manifold_start
from modeq.series._start import _past_orbit_start, quadratic_model


def _dominant_roots(lam, h, beta):
    out = []
    for x in h * lam:
        r = np.roots([1.0, -(1.0 + beta - x), beta])
        mod = np.abs(r)
        r = r[mod >= mod.max() * (1 - 1e-12)]
        out.append(r[np.argmax(r.imag)])
    return np.array(out)


@pytest.mark.parametrize(
    "eigenvalues, beta, h",
    [
        ([0.3, 1.1, 2.5], 0.6, 0.1),  # h lambda = 0.03 real, 0.11 and 0.25 complex ((1 - sqrt 0.6)^2 = 0.051)
        ([0.3, 1.1, 2.5], 0.6, 0.015),  # all real
        ([0.05, 0.4, 2.0, 9.0, -0.2], 0.3, 0.35),  # negative curvature, real, complex, negative dominant root (x = 3.15)
    ],
)
def test_exact_start_on_quadratics_gives_closed_form_iterates(eigenvalues, beta, h):
    loss, a, b = spd_quadratic(eigenvalues)
    theta0 = np.array([1.0, -2.0, 0.5, 0.7, -0.4][: len(eigenvalues)])
    start = slow_manifold_start(heavy_ball(beta), loss, theta0, h)
    assert start.method == "exact quadratic" and start.residual < 1e-12
    lam, u = np.linalg.eigh(a)
    r = _dominant_roots(lam, h, beta)
    assert start.complex == bool(np.any(np.abs(r.imag) > 0))
    # m = c g per eigen-direction, c = 1/(r - beta) (real part in the complex regime)
    expected = u @ (np.real(1.0 / (r - beta)) * (u.T @ (a @ theta0 - b)))
    np.testing.assert_allclose(np.asarray(start.momenta[0]), expected, rtol=1e-12, atol=1e-13)
    # the iterates are Re(r^n) (theta_0 - theta*) per eigen-direction
    steps = 60
    traj = simulate(heavy_ball(beta), loss, theta0, steps, h=h, m0=start.momenta)
    star = np.linalg.solve(a, b)
    n = np.arange(steps + 1)[:, None]
    closed = star + (np.real(r[None, :] ** n) * (u.T @ (theta0 - star))[None, :]) @ u.T
    scale = 1.0 + np.abs(closed).max()
    assert np.abs(np.asarray(traj.theta) - closed).max() <= 1e-11 * scale


def test_no_momenta_and_no_reduction():
    loss, _, _ = spd_quadratic([1.0, 2.0])
    start = slow_manifold_start(gd(), loss, np.ones(2), 0.1)
    assert start.method == "none" and start.momenta == ()
    with pytest.raises(RegimeError, match="no slow-manifold reduction"):
        slow_manifold_start(heavy_ball_two_step(0.9), loss, np.ones(2), 0.1)
    with pytest.raises(ValueError, match="h must be"):
        slow_manifold_start(heavy_ball(0.9), loss, np.ones(2), -1.0)


def test_quadratic_detection():
    loss, _, _ = spd_quadratic([1.0, 2.0])
    assert quadratic_model(loss, jnp.ones(2)) is not None
    assert quadratic_model(product().loss, product().theta0) is None
    assert quadratic_model(lambda t: 0.5 * t @ t + 1e-3 * t[0] ** 4, jnp.ones(2)) is None


def test_exact_start_equals_converged_fixed_point_in_the_real_regime():
    loss, _, _ = spd_quadratic([0.3, 1.1, 2.5])
    theta0 = jnp.array([1.0, -2.0, 0.5])
    h, beta = 0.01, 0.6  # h lambda_max / (1 - beta)^2 = 0.16, every direction real
    exact = slow_manifold_start(heavy_ball(beta), loss, theta0, h)
    (fixed,), residual, _ = _past_orbit_start(heavy_ball(beta), loss, theta0, h, 1e-13, 0.16, 4096)
    assert exact.method == "exact quadratic" and residual <= 1e-13
    np.testing.assert_allclose(np.asarray(fixed), np.asarray(exact.momenta[0]), rtol=1e-11)


def _product_reference(theta0, h, beta, past):
    """M(theta0) from a hand-written heavy-ball recursion on L = 1/2 (1.5 - 2 w1 w2)^2, run from theta_{-past} (found
    by scipy.optimize.root) with m = g/(1-beta) there: its error is beta^past-small."""
    from scipy.optimize import root

    def grad(w):
        r = 2.0 * w[0] * w[1] - 1.5
        return np.array([2.0 * r * w[1], 2.0 * r * w[0]])

    def run(w):
        m = grad(w) / (1.0 - beta)
        for _ in range(past):
            m = beta * m + grad(w)
            w = w - h * m
        return w, m

    guess = np.array(theta0, dtype=float)
    for _ in range(past):  # backward gradient flow of the heavy-ball time scale
        guess = guess + h * grad(guess) / (1.0 - beta)
    sol = root(lambda w: run(w)[0] - theta0, guess, method="hybr", tol=1e-15)
    w, m = run(sol.x)
    assert np.abs(w - theta0).max() < 1e-13
    return m


def test_default_compare_start_matches_a_high_accuracy_reference():
    problem = product()
    theta0 = np.asarray(problem.theta0)
    # h = 1e-4: h lambda_max/(1-beta)^2 = 0.045, inside the asymptotic regime (modeq compare's default grid)
    start = slow_manifold_start(heavy_ball(0.9), problem.loss, theta0, 1e-4)
    reference = _product_reference(theta0, 1e-4, 0.9, 400)  # 0.9^400 = 5e-19
    assert start.method == "fixed point" and start.residual < 1e-11 and not start.notes
    np.testing.assert_allclose(np.asarray(start.momenta[0]), reference, rtol=1e-10)
    # h = 4e-4 (h lambda_max/(1-beta)^2 = 0.18): the 6-sweep iteration was off by 1e-3; the past orbit can be followed
    # about 120 steps, and the start says how accurate it is
    start = slow_manifold_start(heavy_ball(0.9), problem.loss, theta0, 4e-4)
    reference = _product_reference(theta0, 4e-4, 0.9, 120)
    assert 1e-12 < start.residual < 1e-4 and start.notes
    np.testing.assert_allclose(np.asarray(start.momenta[0]), reference, rtol=1e-5)
    assert abs(float(start.momenta[0][0]) - (-5.9662)) < 1e-4


def test_fixed_point_raises_a_regime_error_where_it_does_not_exist():
    problem = product()
    with pytest.raises(RegimeError, match=r"h = 0\.05.*h\*lambda_max/\(1-beta\)\^2 = 22"):
        slow_manifold_start(heavy_ball(0.9), problem.loss, problem.theta0, 0.05)
    with pytest.raises(RegimeError, match="smaller h"):
        slow_manifold_start(adam(), problem.loss, problem.theta0, 1e-3)


def test_matrix_free_newton_gives_the_dense_result(monkeypatch):
    import modeq.series._start as start_module

    problem = product()
    dense = slow_manifold_start(heavy_ball(0.9), problem.loss, problem.theta0, 1e-4)
    monkeypatch.setattr(start_module, "MAX_SHOOTING_DIM", 1)  # GMRES on Jacobian-vector products
    free = slow_manifold_start(heavy_ball(0.9), problem.loss, problem.theta0, 1e-4)
    np.testing.assert_allclose(np.asarray(free.momenta[0]), np.asarray(dense.momenta[0]), rtol=1e-12)
