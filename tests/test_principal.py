"""Oracles for the principal flow (modeq.flows._principal): GD (Rosca et al. 2023) and heavy-ball (docs/theory/principal_flow.md).

Each claim is checked against an independent computation: the exact iterates of GD / heavy-ball on a quadratic
(NumPy recursions, heavy-ball started on its exactly computed invariant manifold), the roots of the characteristic
polynomial (NumPy), the series of log r_+(x)/x (sympy), the exact tree coefficients (modeq.series), the dense back-end
for the Lanczos one, and the discrete iterates of GD on non-quadratic losses (fitted global orders 2 and 3).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from _quadratic import spd_quadratic

import modeq.compare  # noqa: F401  (the registry must be filled whatever the import order)
from modeq.compare import FLOW_BUILDERS, AccuracyWarning, compare_flow
from modeq.flows import (
    imag_part,
    principal_diagnostics,
    principal_flow,
    principal_flow_solve,
    principal_flow_third,
    real_part,
    to_complex_state,
)
from modeq.flows._principal import log_root, series_coefficients
from modeq.optimizers import adam, gd, heavy_ball, simulate
from modeq.problems import linear_overparam, logistic, product, quadratic
from modeq.series import hb_modified_coefficients, manifold_point

STEPS = 500
_log_root = jax.jit(log_root)
_evaluate = eqx.filter_jit(lambda field, theta: field(theta))  # one compiled evaluation per field function


@pytest.fixture(scope="module")
def quad():
    """Random SPD quadratic, d = 20, eigenvalues 0.1..1 (so h lambda_max = h)."""
    problem = quadratic(d=20)
    a = np.asarray(jax.jit(jax.hessian(problem.loss))(jnp.zeros(20)))
    return problem, a, np.asarray(problem.theta0)


def _relative_errors(flow, iterates):
    """(max_n |e_n| / max_n |theta_n|, max_n |e_n| / |theta_n|)."""
    err = np.linalg.norm(flow - iterates, axis=1)
    norm = np.linalg.norm(iterates, axis=1)
    return float(err.max() / norm.max()), float(np.max(err / norm))


# ---------------------------------------------------------------------------------------------------------------------
# The scalar multiplier and its series
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_log_root_is_log_of_dominant_root(beta):
    xs = np.concatenate([np.linspace(-3.0, 2 * (1 + beta) + 1, 401), [1e-3, -1e-3]])
    xs = xs[(np.abs(xs - 1.0) > 1e-6) | (beta > 0)]  # x = 1 is GD's singular point (r_* = 0)
    xs = xs[xs != 0.0]  # phi(0) is the limit, checked below
    log_abs, arg, phi_re, phi_im = map(np.asarray, _log_root(xs, beta))
    for x, la, ar, pr, pi in zip(xs, log_abs, arg, phi_re, phi_im):
        roots = np.roots([1.0, -(1.0 + beta - x), beta]).astype(complex)
        mods = np.abs(roots)
        if abs(mods[0] - mods[1]) < 1e-9 * mods.max():
            r = roots[np.argmax(roots.imag)]
        else:
            r = roots[np.argmax(mods)]
        expected = np.log(r)
        assert abs(complex(la, ar) - expected) <= 1e-7 * max(1.0, abs(expected))  # np.roots ~ sqrt(eps) at double roots
        assert abs(complex(pr, pi) - expected / x) <= 1e-7 * max(1.0, abs(expected / x))
    # the limit at x = 0 and no cancellation near it
    _, _, phi0, _ = _log_root(np.array([0.0, 1e-12, -1e-12]), beta)
    np.testing.assert_allclose(np.asarray(phi0), -1.0 / (1.0 - beta), rtol=1e-10)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_series_coefficients_match_sympy_and_narayana(beta):
    x = sp.Symbol("x")
    b = sp.Rational(str(beta))
    r_plus = ((1 + b - x) + sp.sqrt((1 + b - x) ** 2 - 4 * b)) / 2
    series = sp.series(sp.log(r_plus) / x, x, 0, 8).removeO()
    exact = np.array([float(series.coeff(x, p)) for p in range(8)])
    np.testing.assert_allclose(np.asarray(series_coefficients(beta, 8)), exact, rtol=1e-13)
    narayana = [sum(sp.binomial(p, j) ** 2 * b**j for j in range(p + 1)) for p in range(8)]
    np.testing.assert_allclose(
        exact, [-float(n / ((p + 1) * (1 - b) ** (2 * p + 1))) for p, n in enumerate(narayana)], rtol=1e-13
    )


def test_series_are_the_tall_tree_coefficients_of_the_modified_equation():
    """docs/theory/principal_flow.md#heavy-ball: PF contains every H^k g term of the HB modified equation (trees g, Hg, H^2 g, H^3 g)."""
    beta = 0.7
    records = {r.elementary_differential: r for r in hb_modified_coefficients(4)}
    a = series_coefficients(beta, 4)
    for p, name in enumerate(["g", "Hg", "H^2 g", "H^3 g"]):
        assert float(records[name].coefficient.subs(sp.Symbol("beta"), sp.Rational(7, 10))) == pytest.approx(float(a[p]), rel=1e-13)


# ---------------------------------------------------------------------------------------------------------------------
# (a) GD on a quadratic: exact at t = nh in every regime
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h_lambda_max, regime", [(0.8, "real"), (1.8, "oscillatory"), (2.2, "divergent")])
def test_gd_principal_flow_equals_iterates_on_quadratic(quad, h_lambda_max, regime):
    problem, a, theta0 = quad
    h = h_lambda_max  # lambda_max = 1
    iterates = [theta0]
    for _ in range(STEPS):
        iterates.append(iterates[-1] - h * (a @ iterates[-1]))
    iterates = np.array(iterates)
    result = principal_flow_solve(gd(), problem.loss, theta0, h=h, T=STEPS * h)
    to_max, per_step = _relative_errors(result.theta, iterates)
    # measured: 8e-14 / 2e-12 / 1.1e-11 (the last relative to |theta_n|, which grows like 1.2^n)
    assert (per_step if regime == "divergent" else to_max) <= 1e-10
    assert result.diagnostics.regime[0] == regime
    assert result.diagnostics.h_lambda_max[0] == pytest.approx(h_lambda_max, rel=1e-12)
    im = np.linalg.norm(result.imag, axis=1) / np.linalg.norm(iterates, axis=1).max()
    if regime == "divergent":
        im = np.linalg.norm(result.imag, axis=1) / np.linalg.norm(iterates, axis=1)
    assert im.max() <= 1e-10  # the flow is real at t = nh (complex in between when h lambda > 1)


def test_registry_is_filled_when_modeq_compare_is_imported_first():
    """modeq.compare._study imports modeq.flows before it defines FLOW_BUILDERS: the registration must still happen."""
    code = "import modeq.compare as c; assert {'principal', 'principal+third'} <= set(c.FLOW_BUILDERS), c.FLOW_BUILDERS"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_real_state_field_in_real_regime_and_registry(quad):
    problem, a, theta0 = quad
    h = 0.5
    field = FLOW_BUILDERS["principal"](gd(), problem.loss, h)
    assert field.name == "principal" and field.order == 2
    lam, u = np.linalg.eigh(a)
    expected = u @ (np.log1p(-h * lam) / (h * lam) * (u.T @ (a @ theta0)))
    np.testing.assert_allclose(np.asarray(field(jnp.asarray(theta0))), expected, rtol=1e-12)
    complex_field = principal_flow(gd(), problem.loss, h=h, state="complex")
    y = complex_field(to_complex_state(theta0))
    np.testing.assert_allclose(np.asarray(real_part(y)), expected, rtol=1e-12)
    assert float(jnp.max(jnp.abs(imag_part(y)))) == 0.0
    assert FLOW_BUILDERS["principal+third"](gd(), problem.loss, h).order == 3


# ---------------------------------------------------------------------------------------------------------------------
# (b) heavy-ball on a quadratic, started on its invariant manifold, real and complex roots
# ---------------------------------------------------------------------------------------------------------------------
def _exact_manifold_momentum(a, theta0, h, beta):
    r"""On the manifold theta_{n+1} = r_* theta_n per eigendirection, so m_n = (theta_{n-1} - theta_n)/h
    = (1/r_* - 1)/h theta_n. In the complex regime this is the real part of the complex solution r_*^n theta_0."""
    lam, u = np.linalg.eigh(a)
    log_abs, arg, _, _ = map(np.asarray, _log_root(h * lam, beta))
    r = np.exp(log_abs + 1j * arg)
    return u @ (np.real((1.0 / r - 1.0) / h) * (u.T @ theta0))


@pytest.mark.parametrize(
    "beta, h_lambda_max",
    [
        (0.5, 0.08),  # all roots real (x <= (1 - sqrt(0.5))^2 = 0.0858)
        (0.5, 0.5),  # mixed: real and complex pairs
        (0.5, 2.95),  # complex pairs and negative dominant roots (x > 2.914), stable (x < 3)
        (0.9, 0.0025),  # all real (x <= 0.00263)
        (0.9, 1.0),  # all complex
        (0.9, 3.799),  # complex and negative roots, just below the edge 3.8
    ],
)
def test_heavy_ball_principal_flow_equals_on_manifold_iterates(quad, beta, h_lambda_max):
    problem, a, theta0 = quad
    h = h_lambda_max
    m = _exact_manifold_momentum(a, theta0, h, beta)
    theta, iterates = theta0.copy(), [theta0]
    for _ in range(STEPS):  # momentum-sum form: m <- beta m + g, theta <- theta - h m
        m = beta * m + a @ theta
        theta = theta - h * m
        iterates.append(theta)
    iterates = np.array(iterates)
    # the package's heavy-ball from the same state gives the same iterates
    traj = simulate(heavy_ball(beta), problem.loss, theta0, STEPS, h=h, m0=(_exact_manifold_momentum(a, theta0, h, beta),))
    np.testing.assert_allclose(np.asarray(traj.theta), iterates, rtol=1e-9, atol=1e-12 * np.abs(theta0).max())
    result = principal_flow_solve(heavy_ball(beta), problem.loss, theta0, h=h, T=STEPS * h)
    to_max, _ = _relative_errors(result.theta, iterates)
    assert to_max <= 1e-10  # measured 2e-15 .. 2.4e-11 (largest: beta = 0.9 just below the edge)
    if h_lambda_max < 0.09:
        assert result.diagnostics.regime[0] == "real"
    else:
        assert result.diagnostics.regime[0] in ("complex", "oscillatory")


def test_manifold_point_agrees_with_exact_manifold_in_real_regime(quad):
    """The package's slow-manifold iterate (6 sweeps, error O((h lambda/(1-sqrt(beta))^2)^7)) converges to the exact
    linear manifold used above: same convention (momentum-sum form)."""
    problem, a, theta0 = quad
    beta, h = 0.5, 0.01
    m_exact = _exact_manifold_momentum(a, theta0, h, beta)
    (m_iter,) = manifold_point(heavy_ball(beta), problem.loss, theta0, h=h, sweeps=6)
    assert np.linalg.norm(np.asarray(m_iter) - m_exact) <= 1e-6 * np.linalg.norm(m_exact)


# ---------------------------------------------------------------------------------------------------------------------
# (c) non-quadratic losses: global order 2 (PF) and 3 (PF + third-derivative term)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "problem, flow, order",
    [
        (product(), "principal", 2),
        (product(), "principal+third", 3),
        (logistic(), "principal", 2),
        (logistic(), "principal+third", 3),
    ],
    ids=["product-pf", "product-pf3", "logistic-pf", "logistic-pf3"],
)
def test_fitted_global_order_on_non_quadratic_losses(problem, flow, order):
    """Measured (T = 1, h = 0.02 .. 0.0025): product 2.06 (local 2.11, 2.05, 2.03) and 3.04 (3.08, 3.04, 3.02);
    logistic 2.003 and 3.002; MLP(d=30) 1.996 and 2.998 (the last two not run here, to keep the file fast)."""
    hs = [0.02, 0.01, 0.005, 0.0025]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        result = compare_flow(gd(), problem.loss, problem.theta0, flow, hs, 1.0)
    errors = np.array(result.max_error)
    finest_local = np.log(errors[-2] / errors[-1]) / np.log(2.0)
    assert abs(result.fit.order - order) <= 0.25
    assert abs(finest_local - order) <= 0.1
    assert max(result.solver_floor) < 1e-3 * min(result.max_error)


def test_third_coefficient_is_minus_one_twelfth_for_gd():
    problem = product()
    theta = problem.theta0
    h = 0.1
    pf = _evaluate(principal_flow(gd(), problem.loss, h=h), theta)
    pf3 = _evaluate(principal_flow_third(gd(), problem.loss, h=h), theta)
    grad = jax.grad(problem.loss)
    g = grad(theta)
    tgg = jax.jvp(lambda z: jax.jvp(grad, (z,), (g,))[1], (theta,), (g,))[1]
    np.testing.assert_allclose(np.asarray(pf3 - pf), np.asarray(-(h**2) / 12 * tgg), rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# (d) Lanczos back-end
# ---------------------------------------------------------------------------------------------------------------------
def test_lanczos_equals_dense_when_k_covers_the_spectrum():
    problem = quadratic(d=500, seed=1)
    theta = problem.theta0
    h = 1.8  # h lambda in [0.18, 1.8]: complex regime, both states
    y = to_complex_state(theta, jnp.asarray(np.random.default_rng(3).standard_normal(500)))
    dense = _evaluate(principal_flow(gd(), problem.loss, h=h, state="complex"), y)
    lanczos = _evaluate(principal_flow(gd(), problem.loss, h=h, state="complex", backend="lanczos", k=500), y)
    for part in (real_part, imag_part):  # measured 5e-15
        assert float(jnp.linalg.norm(part(lanczos) - part(dense)) / jnp.linalg.norm(part(dense))) <= 1e-8


def test_lanczos_equals_dense_on_low_rank_hessian():
    """Hessian X^T X / n of rank 5 in d = 500: k = 5 top pairs, the residual of g is 0 (g lies in the range);
    Lanczos breaks down after 6 steps and restarts in the null space."""
    problem = linear_overparam(n=5, d=500)
    theta = problem.theta0
    for optimizer, h in ((gd(), 1.5), (heavy_ball(0.5), 0.5)):
        dense = _evaluate(principal_flow(optimizer, problem.loss, h=h), theta)
        lanczos = _evaluate(principal_flow(optimizer, problem.loss, h=h, backend="lanczos", k=5), theta)
        assert float(jnp.linalg.norm(lanczos - dense) / jnp.linalg.norm(dense)) <= 1e-8  # measured 8e-13, 2e-12


@pytest.fixture(scope="module")
def gapped_quadratic():
    """d = 80: top 10 eigenvalues in [2, 3], the rest <= 1 with a cluster of 5 at 1 (so lambda_{k+1} = 1)."""
    lam = np.concatenate([np.linspace(2.0, 3.0, 10), np.ones(5), np.geomspace(0.05, 0.9, 65)])
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    a = jnp.asarray((q * lam) @ q.T)
    return (lambda th: 0.5 * th @ (a @ th)), jnp.asarray(rng.standard_normal(lam.size)), q


@pytest.mark.parametrize("beta, h", [(0.0, 0.3), (0.5, 0.02)])
def test_lanczos_truncation_error_falls_like_power_of_h_lambda_next(gapped_quadratic, beta, h):
    r"""Exact top-k pairs (k = 10, iterations = d), x_{k+1} = h lambda_{k+1} = h: the P-term series leaves
    ~ |a_P| x_{k+1}^P |Pi g|, so error(3)/error(6) ~ |a_3/a_6| x_{k+1}^-3 (|a_p| grows like (1-sqrt(beta))^-2p for HB);
    and the stated bound sum_{p>=P} |a_p| x_{k+1}^p |Pi g| holds."""
    loss, theta, q = gapped_quadratic
    k, d, x_next = 10, theta.shape[0], h
    optimizer = heavy_ball(beta) if beta else gd()
    dense = _evaluate(principal_flow(optimizer, loss, h=h), theta)
    a = np.abs(np.asarray(series_coefficients(beta, 80)))
    residual = np.linalg.norm(q[:, k:].T @ np.asarray(jax.grad(loss)(theta)))
    errors = {}
    for terms in (3, 6):
        field = principal_flow(optimizer, loss, h=h, backend="lanczos", k=k, iterations=d, terms=terms)
        errors[terms] = float(jnp.linalg.norm(_evaluate(field, theta) - dense))
        assert errors[terms] <= np.sum(a[terms:] * x_next ** np.arange(terms, 80)) * residual
    predicted = a[3] / a[6] * x_next ** (3 - 6)
    assert errors[3] / errors[6] == pytest.approx(predicted, rel=0.3)  # measured within 2%


# ---------------------------------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------------------------------
def test_diagnostics_regimes_and_edge_crossing():
    def loss(w):  # h lambda = 3 w^2 at h = 1
        return 0.25 * jnp.sum(w**4)

    thetas = np.array([[0.5], [0.7], [0.9], [0.7]])
    diag = principal_diagnostics(loss, thetas, 1.0, gd())
    np.testing.assert_allclose(diag.h_lambda_max, 3 * thetas[:, 0] ** 2, rtol=1e-12)
    assert diag.regime == ("real", "oscillatory", "divergent", "oscillatory")
    assert diag.crossings == [2, 3]
    assert diag.spectral_radius[2] == pytest.approx(3 * 0.81 - 1)
    hb = principal_diagnostics(loss, np.array([[0.1], [0.5], [0.99], [1.01]]), 1.0, heavy_ball(0.5))
    assert hb.regime == ("real", "complex", "oscillatory", "divergent")  # 0.03, 0.75, 2.94, 3.06; edge 3
    assert hb.crossings == [3] and hb.edge == 3.0
    assert hb.spectral_radius[1] == pytest.approx(np.sqrt(0.5))
    assert 0 < hb.phase[1] < 1 and hb.phase[2] == 1.0
    lanczos = principal_diagnostics(loss, thetas, 1.0, gd(), backend="lanczos", iterations=1)
    np.testing.assert_allclose(lanczos.h_lambda_max, diag.h_lambda_max, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# (e) bad input
# ---------------------------------------------------------------------------------------------------------------------
def _asymmetric_loss():
    """A 'loss' whose derivative rule is not a gradient: its Hessian is the non-symmetric matrix A."""
    a = jnp.array([[1.0, 2.0], [0.0, 1.0]])

    @jax.custom_jvp
    def f(x):
        return 0.5 * x @ (a @ x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), (a @ x) @ t

    return f


def test_bad_inputs_raise_value_errors_naming_the_parameter():
    problem = quadratic(d=4)
    loss, theta0 = problem.loss, problem.theta0
    cases = [
        (lambda: principal_flow(gd(), loss, h=0.0), "h"),
        (lambda: principal_flow(gd(), loss, h=-1.0), "h"),
        (lambda: principal_flow(gd(), loss, h=0.1, backend="lanczos", k=0), "k"),
        (lambda: principal_flow(gd(), loss, h=0.1, backend="lanczos", k=5, check_at=theta0), "k"),
        (lambda: principal_flow(gd(), loss, h=0.1, backend="lanczos"), "k"),
        (lambda: principal_flow(gd(), loss, h=0.1, k=2), "k"),
        (lambda: principal_flow(gd(), loss, h=0.1, backend="qr"), "backend"),
        (lambda: principal_flow(gd(), loss, h=0.1, backend="lanczos", k=2, terms=0), "terms"),
        (lambda: principal_flow(adam(), loss, h=0.1), "optimizer"),
        (lambda: principal_flow_solve(gd(), loss, theta0, h=0.0, T=1.0), "h"),
        (lambda: principal_flow_solve(gd(), loss, theta0, h=0.1, T=-1.0), "T"),
        (lambda: principal_flow_solve(gd(), loss, theta0, h=0.1, T=1.0, backend="lanczos", k=5), "k"),
        (lambda: principal_flow_solve(gd(), lambda th: jnp.sum(jnp.sqrt(th)), -jnp.ones(3), h=0.1, T=1.0), "loss"),
        (lambda: principal_flow_solve(gd(), _asymmetric_loss(), jnp.ones(2), h=0.1, T=1.0), "loss"),
        (lambda: principal_flow_solve(gd(), _asymmetric_loss(), jnp.ones(2), h=0.1, T=1.0, backend="lanczos", k=1), "loss"),
        (lambda: principal_diagnostics(loss, theta0[None], -0.1), "h"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            call()
    # k > d inside a traced field (no check_at): raised at trace time
    field = principal_flow(gd(), loss, h=0.1, backend="lanczos", k=5)
    with pytest.raises(ValueError, match=r"^k\b"):
        field(theta0)


# ---------------------------------------------------------------------------------------------------------------------
# The principal-flow study, compare's principal values and the command (issue 11: exact wherever it is claimed)
# ---------------------------------------------------------------------------------------------------------------------
def _closed_form_iterates(a, b, theta0, h, beta, steps):
    """theta* + Re(r_*^n) (theta0 - theta*) per eigen-direction: GD (beta = 0, r = 1 - h lambda) and heavy-ball started on
    its slow manifold (r_* the dominant root of r^2 - (1 + beta - h lambda) r + beta, NumPy)."""
    lam, u = np.linalg.eigh(a)
    roots = []
    for x in h * lam:
        r = np.roots([1.0, -(1.0 + beta - x), beta]) if beta else np.array([1.0 - x])
        mod = np.abs(r)
        r = r[mod >= mod.max() * (1 - 1e-12)]
        roots.append(r[np.argmax(r.imag)])
    star = np.linalg.solve(a, b)
    n = np.arange(steps + 1)[:, None]
    return star + (np.real(np.array(roots)[None, :] ** n) * (u.T @ (theta0 - star))[None, :]) @ u.T


@pytest.mark.parametrize(
    "optimizer, eigenvalues, h, T",
    [
        (gd(), [0.5, 1.0, 2.0, 4.0], 0.4975, 5.0),  # h lambda = 0.25 .. 1.99: real and oscillating
        (heavy_ball(0.6), [0.3, 1.1, 2.5], 0.1, 3.0),  # one real and two complex directions (the case)
        # negative curvature (r > 1), real, complex and negative dominant roots (x = 2.52 < edge 2.6), beta = 0.3
        (heavy_ball(0.3), [-0.2, 0.05, 0.4, 2.0, 9.0], 0.28, 2.8),
    ],
)
def test_principal_flow_study_is_exact_on_quadratics(optimizer, eigenvalues, h, T):
    from modeq.studies import principal_flow_study

    loss, a, b = spd_quadratic(eigenvalues)
    theta0 = np.array([1.0, -2.0, 0.5, 0.7, -0.4][: len(eigenvalues)])
    study = principal_flow_study(optimizer, loss, theta0, h=h, T=T)
    assert study.quadratic and study.verdict.verdict == "consistent"
    assert study.max_error <= 1e-9 * study.scale
    beta = optimizer.principal_flow_momentum()
    closed = _closed_form_iterates(a, b, theta0, h, beta, study.steps)
    scale = 1.0 + np.abs(closed).max()
    assert np.abs(study.iterates - closed).max() <= 1e-11 * scale  # the start is the flow's own
    assert np.abs(study.flow.theta - closed).max() <= 1e-9 * scale  # the flow against independent iterates
    data = study.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["verdict"]["verdict"] == "consistent" and data["metric"].startswith("max over")


def test_principal_flow_study_on_a_non_quadratic_loss_says_what_the_flow_is():
    from modeq.studies import principal_flow_study

    problem = product()
    study = principal_flow_study(gd(), problem.loss, problem.theta0, h=0.3, T=1.2)
    assert not study.quadratic and study.verdict.verdict == "outside the asymptotic regime"
    assert any("analysis tool" in note for note in study.notes)
    with pytest.raises(ValueError, match="^optimizer"):
        principal_flow_study(adam(), problem.loss, problem.theta0, h=0.1, T=1.0)


@pytest.mark.parametrize("h", [0.3, 0.45])  # h lambda_max = 1.2, 1.8 (the case)
def test_principal_flow_values_for_compare_are_exact_beyond_h_lambda_one(h):
    from modeq.flows import principal_flow_values

    loss, a, b = spd_quadratic([0.5, 1.0, 2.0, 4.0], seed=5)
    theta0 = np.array([1.0, 0.5, -0.3, 0.8])
    steps = int(round(2.7 / h))
    values, floor = principal_flow_values(gd(), loss, theta0, h, steps, pad_to=10)
    closed = _closed_form_iterates(a, b, theta0, h, 0.0, steps)
    assert values.shape == closed.shape and np.abs(values - closed).max() <= 1e-10
    assert 0.0 <= floor <= 1e-10


def test_principal_flow_command_heavy_ball_mixed_regimes(tmp_path):
    from typer.testing import CliRunner

    from modeq.cli import app

    path = tmp_path / "pf.json"
    # eigenvalues 0.3, 0.866, 2.5, beta 0.6, h 0.1: h lambda = 0.03 (real), 0.087 and 0.25 (complex)
    out = CliRunner().invoke(app, ["principal-flow", "--optimizer", "hb", "--param", "beta=0.6", "--loss",
                                   "quadratic:d=3,lambda_max=2.5,condition=8.333333", "--h", "0.1", "--T", "3",
                                   "--json", str(path), "--quiet"])
    assert out.exit_code == 0, out.output
    data = json.loads(path.read_text())
    assert data["max_error"] < 1e-9 and data["verdict"]["verdict"] == "consistent"
    assert data["start"]["method"] == "exact quadratic" and data["start"]["complex"]
    assert "verdict: consistent" in out.output and "--optimizer hb --param beta=0.6 --h 0.1" in out.output
    assert "|theta_n - Re theta(n h)|" in out.output
