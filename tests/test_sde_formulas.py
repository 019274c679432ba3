"""Deterministic oracles for the stochastic formulas: each test fails when a coefficient is wrong.

* the slow SDE's drift: the mean one-step increment of both slow-SDE schemes (exact sigma-point average over the
  noise, no Monte Carlo) against one half of d2Phi[Sigma] by finite differences of Phi, with Sigma != I;
* the SME of standard SGDM with dampening: learning-rate factor (1 - tau)/(1 - mu) against the exact moments of the
  iterates (linear recursion of (x, b));
* Wang et al. (arXiv 2307.15196) Section 4.1: endpoint and step variances at small k and the limiting gap against the
  exact covariance recursion.
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeq.optimizers import sgdm_standard, simulate
from modeq.problems import GaussianNGOS
from modeq.sde import d2phi_fd, gaussian_gradient_variances, phi, sme, sme_moments
from modeq.sde._slow import _slow_step


def curve_loss(x):  # codimension-2 manifold with active mixed and normal terms (docs/theory/slow_sde.md#curved)
    return (0.5 * (1 + 0.3 * x[0] ** 2) * (x[2] - 0.5 * jnp.sin(x[0]) - 0.3 * x[1] ** 2) ** 2
            + 0.5 * (2 + 0.5 * jnp.sin(x[2])) * (x[1] - 0.4 * x[0] ** 2 + 0.2 * x[0] * x[2]) ** 2)


_B = np.array([[1.0, 0.4, -0.2], [0.3, 0.8, 0.5], [-0.1, 0.2, 1.1]])
SIGMA = jnp.asarray(2.3 * _B @ _B.T)  # gradient-noise covariance, scale != 1


@functools.lru_cache(maxsize=None)
def _half_d2phi_fd():
    y = phi(curve_loss, jnp.array([0.4, -0.3, 0.5]))
    return y, 0.5 * np.asarray(d2phi_fd(curve_loss, y, SIGMA))


@pytest.mark.parametrize("scheme", ["em", "projected"])
def test_slow_sde_mean_increment_is_half_d2phi(scheme):
    r"""E[Y_{dt} - y]/dt = 1/2 d2Phi(y)[Sigma] + O(dt) (Li, Wang & Arora 2022, Thm. 4.6). The expectation over the
    noise is the sigma-point rule xi = +-sqrt(3) e_i (exact for the Gaussian moments of order <= 3), so the check is
    deterministic; the reference is central finite differences of Phi (no closed form shared with the scheme)."""
    y, expected = _half_d2phi_fd()
    dt = 1e-4
    pts = math.sqrt(3.0) * jnp.concatenate([jnp.eye(3), -jnp.eye(3)])
    step = eqx.filter_jit(jax.vmap(
        lambda xi: _slow_step(curve_loss, lambda v: SIGMA, y, xi, dt, jnp.asarray(50.0), scheme, 1e-8)))
    increment = np.asarray(jnp.mean(step(pts), axis=0) - y) / dt
    assert np.max(np.abs(expected)) > 0.1  # a drift worth checking
    np.testing.assert_allclose(increment, expected, atol=2e-3 * np.max(np.abs(expected)))


def _standard_sgdm_moments(A, g0, C, x0, gamma, mu, tau, steps):
    """Exact mean/covariance of x after ``steps`` steps of b <- mu b + (1 - tau)(A x + g0 + xi), x <- x - gamma b,
    b_0 = 0, Cov xi = C (written out here, independent of the library's recursions)."""
    d = A.shape[0]
    I = np.eye(d)
    w = 1.0 - tau
    T = np.block([[I - gamma * w * A, -gamma * mu * I], [w * A, mu * I]])
    c = np.concatenate([-gamma * w * g0, w * g0])
    N = np.concatenate([-gamma * w * I, w * I])
    z, P = np.concatenate([x0, np.zeros(d)]), np.zeros((2 * d, 2 * d))
    for _ in range(steps):
        z, P = T @ z + c, T @ P @ T.T + N @ C @ N.T
    return z[:d], P[:d, :d]


def test_sme_of_sgdm_with_dampening_matches_exact_moments():
    r"""Standard SGDM (mu = 0.6, dampening tau = 0.5) with LR gamma: its SME is SGD's with LR
    gamma (1 - tau)/(1 - mu) (Wang et al. arXiv 2307.15196, Thm. 4.5 / App. A). Mean and covariance of the iterates
    after k = T/eta_SME steps agree with the SME's at time T to O(eta) (ratio ~2 when gamma halves); dropping the
    dampening factor halves the horizon the iterates reach and leaves an O(1) error."""
    A = np.array([[1.0, 0.3], [0.3, 2.0]])
    g0 = np.array([-0.5, 0.2])
    C = np.array([[1.0, 0.2], [0.2, 0.5]])
    x0 = np.array([1.0, 1.0])
    loss = lambda x: 0.5 * x @ jnp.asarray(A) @ x + jnp.asarray(g0) @ x  # noqa: E731
    oracle = GaussianNGOS(loss, sigma=1.0, covariance_fn=lambda x: jnp.asarray(C))
    mu, tau, T = 0.6, 0.5, 1.0
    errs = []
    for gamma in (0.016, 0.008):
        s = sme(loss, oracle, gamma, optimizer=sgdm_standard(mu, tau))
        eta = float(s.eta)
        np.testing.assert_allclose(eta, gamma * (1 - tau) / (1 - mu), rtol=1e-14)
        k = int(round(T / eta))
        m, P = _standard_sgdm_moments(A, g0, C, x0, gamma, mu, tau, k)
        ms, Ps = sme_moments(A, g0, C, x0, eta, k * eta, order=1)
        # the library's simulator gives the same mean (noise-free run = mean of a linear recursion)
        det = simulate(sgdm_standard(mu, tau), loss, jnp.asarray(x0), k, h=gamma, record=False).theta[-1]
        np.testing.assert_allclose(det, m, atol=1e-12)
        errs.append((np.max(np.abs(m - ms)), np.max(np.abs(P - Ps)) / eta))
    (em1, ec1), (em2, ec2) = errs
    assert em1 < 0.05 and ec1 < 0.05, errs  # O(eta) with eta = 0.02
    assert 1.6 < em1 / em2 < 2.4 and 1.6 < ec1 / ec2 < 2.4, errs  # first order in eta


def _sgdm_variances(eta, beta, sigma, k):
    """Exact Var x_k and Var(x_k - x_{k-1}) of normalized SGDM with i.i.d. gradients N(c, sigma^2) (m_0 = 0), from the
    covariance recursion of (x, m): m <- beta m + (1 - beta) g, x <- x - eta m."""
    T = np.array([[1.0, -eta * beta], [0.0, beta]])
    n = np.array([-eta * (1 - beta), 1 - beta])
    P = np.zeros((2, 2))
    for _ in range(k):
        P = T @ P @ T.T + sigma**2 * np.outer(n, n)
    return P[0, 0], eta**2 * P[1, 1]


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_section_41_variances_at_small_k_and_the_gap(beta):
    """Wang et al. (arXiv 2307.15196) Section 4.1: at k = 1, 2, 3, 7 the closed forms equal the exact recursion (the
    finite-k factor 1 - beta^(2k) of the step variance matters most at small k); at large k the gap between SGD's and
    SGDM's endpoint variances reaches gap_limit = eta^2 sigma^2 beta (2 + beta)/(1 - beta^2)."""
    eta, sigma = 0.1, 1.7
    for k in (1, 2, 3, 7):
        v = gaussian_gradient_variances(eta, beta, sigma, k)
        end, step = _sgdm_variances(eta, beta, sigma, k)
        np.testing.assert_allclose(v["sgdm_endpoint"], end, rtol=1e-12)
        np.testing.assert_allclose(v["sgdm_endpoint_sum"], end, rtol=1e-12)
        np.testing.assert_allclose(v["sgdm_step"], step, rtol=1e-12)
        np.testing.assert_allclose(v["sgd_endpoint"], k * eta**2 * sigma**2, rtol=1e-14)
    k = 600  # beta^k < 1e-27
    v = gaussian_gradient_variances(eta, beta, sigma, k)
    end, _ = _sgdm_variances(eta, beta, sigma, k)
    np.testing.assert_allclose(v["gap_limit"], k * eta**2 * sigma**2 - end, rtol=1e-9)
