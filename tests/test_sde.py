"""SMEs, Euler--Maruyama ensembles (modeq.sde) and the weak-error studies (modeq.studies)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeq.optimizers import gd, heavy_ball, sgdm
from modeq.problems import GaussianNGOS
from modeq.sde import MonteCarloWarning, simulate_sde, sme
from modeq.studies import exact_weak_study, weak_error_study

A = jnp.array([[1.0, 0.3], [0.3, 2.0]])
B = jnp.array([0.5, -0.2])
C = jnp.array([[1.0, 0.2], [0.2, 0.5]])
X0 = jnp.array([1.0, 1.0])


def loss(x):
    return 0.5 * (x - B) @ A @ (x - B)


ORACLE = GaussianNGOS(loss, sigma=1.0, covariance_fn=lambda x: C)


def test_sme_fields():
    s1 = sme(loss, ORACLE, 0.1)
    s2 = sme(loss, ORACLE, 0.1, order=2)
    g = A @ (X0 - B)
    np.testing.assert_allclose(s1.drift(0.0, X0), -g, atol=1e-14)
    np.testing.assert_allclose(s2.drift(0.0, X0), -g - 0.05 * A @ g, atol=1e-14)
    S = s1.diffusion(0.0, X0)
    np.testing.assert_allclose(S @ S.T, 0.1 * C, atol=1e-14)
    # SGDM (normalized) shares the SGD SDE; heavy ball uses the effective LR h/(1-beta)
    np.testing.assert_allclose(sme(loss, ORACLE, 0.1, optimizer=sgdm(0.9)).eta, 0.1)
    np.testing.assert_allclose(sme(loss, ORACLE, 0.01, optimizer=heavy_ball(0.9)).eta, 0.1)
    sched = sme(loss, ORACLE, 0.1, schedule=lambda t: 2.0)
    np.testing.assert_allclose(sched.drift(0.0, X0), -2 * g, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eta=0.0), "eta"),
        (dict(eta=-1.0), "eta"),
        (dict(eta=0.1, order=3), "order"),
        (dict(eta=0.1, order=2, optimizer=sgdm(0.9)), "order"),
    ],
)
def test_sme_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sme(loss, ORACLE, **kwargs)


def test_simulate_bad_input():
    s = sme(loss, ORACLE, 0.1)
    with pytest.raises(ValueError, match="paths"):
        simulate_sde(s, X0, 1.0, 10, paths=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="save_every"):
        simulate_sde(s, X0, 1.0, 10, paths=4, key=jax.random.key(0), save_every=3)
    with pytest.raises(ValueError, match="eta"):
        exact_weak_study(loss, ORACLE, X0, [0.1, -0.05])
    with pytest.raises(ValueError, match="paths"):
        weak_error_study(loss, ORACLE, X0, [0.1, 0.05], paths=1)


def _exact_ou(t, eta):
    # 1-D marginals of dX = -A(X-B)dt + sqrt(eta) C^1/2 dW, from the exact moments
    from modeq.sde._weak import sme_moments

    return sme_moments(A, -A @ B, C, X0, eta, t, 1)


@pytest.mark.statistical
@pytest.mark.parametrize("method", ["scan", "diffrax"])
def test_em_moments(method):
    eta, paths = 0.1, (4000 if method == "scan" else 1000)
    r = simulate_sde(sme(loss, ORACLE, eta), X0, 1.0, 200, paths=paths, key=jax.random.key(3), method=method)
    m, P = _exact_ou(1.0, eta)
    se = np.sqrt(np.diag(P) / paths)
    # Euler bias O(dt) = 5e-3 relative; allow 4 standard errors + bias
    assert np.all(np.abs(r.mean[-1] - m) < 4 * se + 0.01)
    assert np.all(np.abs(r.std[-1] ** 2 - np.diag(P)) < 0.1 * np.diag(P))


def test_scan_em_batching_invariance():
    s = sme(loss, ORACLE, 0.1)
    a = simulate_sde(s, X0, 1.0, 20, paths=8, key=jax.random.key(0), save_every=5)
    b = simulate_sde(s, X0, 1.0, 20, paths=8, key=jax.random.key(0), save_every=20, shard=False)
    np.testing.assert_array_equal(np.asarray(a.xs[:, -1]), np.asarray(b.xs[:, -1]))
    assert a.xs.shape == (8, 5, 2) and b.xs.shape == (8, 2, 2)


def test_sharded_equals_single_device():
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, modeq
        from modeq.problems import GaussianNGOS
        from modeq.sde import sme, simulate_sde
        assert len(jax.devices()) == 4
        loss = lambda x: 0.5 * x @ x + 0.1 * jnp.sum(x ** 4)
        s = sme(loss, GaussianNGOS(loss, sigma=1.0), 0.1)
        a = simulate_sde(s, jnp.ones(3), 1.0, 50, paths=16, key=jax.random.key(0))
        b = simulate_sde(s, jnp.ones(3), 1.0, 50, paths=16, key=jax.random.key(0), shard=False)
        assert a.devices == 4 and b.devices == 1
        print(float(np.max(np.abs(np.asarray(a.xs) - np.asarray(b.xs)))))
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-12


def test_exact_weak_orders():
    etas = [0.02 / 2**j for j in range(4)]
    r1 = exact_weak_study(loss, ORACLE, X0, etas, 1.0, order=1)
    r2 = exact_weak_study(loss, ORACLE, X0, etas, 1.0, order=2)
    for name in ("mean", "second_moment"):
        assert abs(r1.fits[name].order - 1.0) < 0.05, (name, r1.fits[name])
        assert abs(r2.fits[name].order - 2.0) < 0.05, (name, r2.fits[name])
    assert r2.errors["mean"][-1] < 1e-2 * r1.errors["mean"][-1]
    d = r1.to_dict()
    assert d["method"] == "exact-gaussian" and len(d["errors"]["mean"]) == 4


def test_exact_study_rejects_non_quadratic():
    with pytest.raises(ValueError, match="quadratic"):
        exact_weak_study(lambda x: jnp.sum(x**4), GaussianNGOS(lambda x: jnp.sum(x**4)), X0, [0.1, 0.05])


@pytest.mark.statistical
def test_mc_weak_order_one():
    # phi = first coordinate: the O(eta) bias of the order-1 SME (~0.03 eta/0.1) is resolved with 2000 paths
    r = weak_error_study(loss, ORACLE, X0, [0.2, 0.1], 1.0, paths=2000, key=jax.random.key(0),
                         phi=lambda x: x[0] + x[1], substeps=16)
    e, se = np.array(r.errors["phi"]), np.array(r.stderr["phi"])
    assert np.all(e > 2 * se)
    assert 0.5 < r.fits["phi"].order < 1.6
    assert r.warnings == ()


@pytest.mark.statistical
def test_mc_warns_when_noise_dominates():
    with pytest.warns(MonteCarloWarning):
        weak_error_study(loss, ORACLE, X0, [0.1, 0.05], 1.0, paths=50, key=jax.random.key(0), order=2,
                         substeps=8, coupling="independent")


@pytest.mark.statistical
def test_mc_common_random_numbers_resolve_the_weak_order():
    """CRN: the SME is driven by the oracle's own normals (split into substeps); the paired standard error is ~10x
    below the independent one, so 1000 paths resolve order 1 (measured 1.02, 95% CI [0.93, 1.12] at 2000 paths)."""
    kw = dict(paths=1000, key=jax.random.key(0), phi=lambda x: x[0] + x[1], substeps=8)
    crn = weak_error_study(loss, ORACLE, X0, [0.2, 0.1, 0.05], 1.0, coupling="crn", **kw)
    ind = weak_error_study(loss, ORACLE, X0, [0.2, 0.1], 1.0, coupling="independent", **kw)
    assert crn.method.endswith("crn]") and ind.method.endswith("independent]")
    assert crn.stderr["phi"][0] < 0.2 * ind.stderr["phi"][0]
    fit = crn.fits["phi"]
    assert fit.ci[0] < 1.0 < fit.ci[1] and fit.ci[1] - fit.ci[0] < 0.5, fit
    assert abs(crn.errors["phi"][0] - ind.errors["phi"][0]) < 3 * ind.stderr["phi"][0]  # same bias, either way
    with pytest.raises(ValueError, match="coupling"):
        weak_error_study(loss, ORACLE, X0, [0.2, 0.1], 1.0, coupling="same", **kw)


# ---------------------------------------------------------------------------------------------------------------
# the study layer: sme_weak_study (modeq.studies)


@pytest.mark.statistical
def test_order_two_sme_is_resolved_with_its_defaults():
    """Issue 11, item 5: with plain Euler--Maruyama at 4 substeps the order-2 SME's own O(dt) bias dominates (fits
    0.5-1). The study extrapolates (Talay--Tubaro) and checks its remaining bias against the measured error: the
    default run fits 2 +- 0.2 (measured 2.02-2.07 over seeds 0-2) with the verdict "consistent"."""
    from modeq.problems import resolve_problem
    from modeq.studies import sme_weak_study

    p = resolve_problem("quadratic:d=2", None)
    r = sme_weak_study(p, GaussianNGOS(p.loss, 0.5), order=2)
    assert r.expected == 2.0 and r.paths == 20000 and r.etas == (0.2, 0.1, 0.05)
    assert abs(r.fits["phi"].order - 2.0) < 0.2, r.fits["phi"]
    assert r.verdict.verdict == "consistent", r.verdict
    assert all(b < max(0.1 * e, s) for b, e, s in zip(r.discretisation_bias, r.errors["phi"], r.stderr["phi"]))
    assert "Talay-Tubaro" in r.discretisation
    d = r.to_dict()
    assert d["verdict"]["verdict"] == "consistent" and d["expected_order"] == 2.0


def test_divergent_weak_study_says_diverged_and_fits_nothing(tmp_path):
    """`modeq sde --eta 5,2.5 --T 20` used to print a fitted weak order 4.9 for a divergent SGD (h lambda = 5)."""
    import json

    from typer.testing import CliRunner

    from modeq.cli import app

    path = tmp_path / "d.json"
    out = CliRunner().invoke(app, ["sde", "--eta", "5,2.5", "--T", "20", "--paths", "50", "--quiet", "--json",
                                   str(path)])
    assert out.exit_code == 0, out.output
    assert "verdict: diverged" in out.output and "fitted weak order: none" in out.output
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    r = data["results"]
    assert r["verdict"]["verdict"] == "diverged" and r["verdict"]["measured"] is None
    assert r["fits"]["phi"] is None and r["diverged"] and r["errors"]["phi"] == [None, None]
    assert any("unstable" in w for w in r["warnings"])


def test_sme_needs_an_optimizer_with_an_sme():
    from modeq.optimizers import adam, sgdm_standard

    with pytest.raises(ValueError, match="adam.*supported: .*sgdm_standard"):
        sme(loss, ORACLE, 0.1, optimizer=adam())
    np.testing.assert_allclose(sme(loss, ORACLE, 0.01, optimizer=sgdm_standard(0.8, 0.5)).eta, 0.025, rtol=1e-14)
