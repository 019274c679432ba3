"""Adam / AdamW / NAdam with bias correction from rest: the shadow start and the orders it gives
(docs/theory/bias_correction.md). Oracles: exact answers (GD, heavy-ball on a quadratic by eigen-decomposition), the
closed-form leading shift (an independent derivation) and measured orders."""

import json
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from modeq import optimizers as O
from modeq import problems as P
from modeq.compare import AccuracyWarning, compare_flow
from modeq.series import lambert_lag, leading_shift, shadow_start

ADAM = {"b1": 0.9, "b2": 0.95, "eps": 0.0, "eps_root": 1e-2}
HS = [2e-5, 1e-5, 5e-6]  # h lambda_max/(1-b2)^2 = 0.036 at 2e-5 on the product model


def test_shadow_start_of_gd_is_theta0_exactly():
    problem = P.product()
    start = shadow_start(O.gd(), problem.loss, problem.theta0, 0.01, order=3)
    assert start.burn_in == 0 and start.shift_norm == 0.0
    np.testing.assert_array_equal(start.theta, np.asarray(problem.theta0))
    json.dumps(start.to_dict(), allow_nan=False)


def test_heavy_ball_from_rest_shadow_start_is_the_slow_eigencomponent():
    """Linear HB on L = theta' A theta / 2: (theta, m) -> M (theta, m) per eigen-direction of A; the iterates from
    (theta_0, 0) are mu_s^n c_s v_s + mu_f^n c_f v_f, and the shadow start is the theta-part of c_s v_s."""
    beta, h = 0.5, 0.005  # h lambda_max/(1-beta)^2 = 0.02
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    lam = np.array([1.0, 0.6, 0.25])
    a = q @ np.diag(lam) @ q.T
    theta0 = np.array([0.8, -0.5, 0.3])
    A = jnp.asarray(a)

    def loss(th):
        return 0.5 * th @ A @ th

    x = q.T @ theta0
    slow = np.empty(3)
    for i, l in enumerate(lam):
        mu, v = np.linalg.eig(np.array([[1 - h * l, -h * beta], [l, beta]]))
        c = np.linalg.solve(v, np.array([x[i], 0.0]))
        s = int(np.argmax(np.abs(mu)))
        slow[i] = np.real(c[s] * v[0, s])
    exact = q @ slow
    start = shadow_start(O.heavy_ball(beta), loss, jnp.asarray(theta0), h, order=3)
    shift = exact - theta0
    assert np.linalg.norm(shift) > 1e-3  # the start is far from theta0 at this h: O(h beta/(1-beta)^2)
    # the start's error is O(h^(R+1) log(1/h)) (pull-back over t_b = O(h log(1/h))): 3.7e-4 of the shift here,
    # 1e-2 with the order-2 field, 0.5 with one burn-in step miscounted
    assert np.linalg.norm(start.theta - exact) < 1e-3 * np.linalg.norm(shift)


def test_lambert_lag_sum_of_divisors():
    b = 0.3  # sum_k sigma(k) b^k
    sigma = [1, 3, 4, 7, 6, 12, 8, 15, 13, 18, 12, 28, 14, 24, 24, 31, 18, 39, 20, 42]
    assert lambert_lag(b) == pytest.approx(sum(s * b ** (k + 1) for k, s in enumerate(sigma)), rel=1e-9)
    assert lambert_lag(0.999) * (1 - 0.999) ** 2 == pytest.approx(np.pi**2 / 6, rel=2e-3)


@pytest.mark.parametrize("family, power, tol", [("adam", 2, 1e-2), ("nadam", 1, 0.1)])
def test_shadow_shift_has_the_closed_form_leading_term(family, power, tol):
    """Adam: h^2 [Lambda(b1) D_m H D + 2 Lambda(b2) D_v (g * H D)]; NAdam: -h b1 g/(sqrt(g^2+eps_root)+eps).
    Relative error O(h) (measured 2e-3 and 5e-2 at h = 1e-5)."""
    problem = P.product()
    opt = getattr(O, family)(**ADAM)
    h = 1e-5
    closed, p = leading_shift(opt, problem.loss, problem.theta0, h)
    start = shadow_start(opt, problem.loss, problem.theta0, h, order=3)
    assert p == power
    assert np.linalg.norm(start.shift - closed) < tol * np.linalg.norm(closed)


def _study(opt, R, init, burn_in=None):
    problem = P.product()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        return compare_flow(opt, problem.loss, problem.theta0, f"modified:{R}", HS, 0.01, init=init, burn_in=burn_in)


def test_adam_bias_corrected_shadow_start_restores_order_3_naive_start_is_order_2():
    opt = O.adam(**ADAM)
    assert opt.bias_correction
    shadow = _study(opt, 3, "shadow")
    naive = _study(opt, 3, "rest", burn_in=0)
    assert abs(shadow.fit.order - 3) < 0.2, shadow.max_error
    assert shadow.verdict.verdict == "consistent"
    assert abs(shadow.whole_run_fit.order - 2) < 0.2  # the boundary layer: |theta~_0 - theta_0| = O(h^2)
    assert shadow.whole_run_error == pytest.approx(shadow.start_shift, rel=1e-6)  # attained at n = 0
    assert abs(shadow.composite_fit.order - 3) < 0.2  # flow + O(h^2) boundary layer: order R = 3 on the whole run
    assert abs(naive.fit.order - 2) < 0.2
    d = shadow.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["whole_run_fitted_order"] == pytest.approx(shadow.whole_run_fit.order)
    assert len(d["start_shift"]) == len(HS) and d["start"][0].startswith("shadow start")


def test_nadam_bias_corrected_naive_start_is_first_order():
    """optax's NAdam correction overshoots a constant gradient by (1-b1)[phi(n+1) - phi(n+2)]: an O(h) shift."""
    naive = _study(O.nadam(**ADAM), 2, "rest", burn_in=0)
    assert abs(naive.fit.order - 1) < 0.2


def test_shadow_init_refuses_memoryless_maps():
    problem = P.product()
    with pytest.raises(ValueError, match="shadow"):
        compare_flow(O.adam(**ADAM), problem.loss, problem.theta0, "memoryless:2", HS, 0.01, init="shadow")


def test_cli_compare_init_shadow(tmp_path):
    from typer.testing import CliRunner

    from modeq.cli import app

    path = tmp_path / "s.json"
    out = CliRunner().invoke(app, ["compare", "--optimizer", "adam", "--param", "b1=0.9", "--param", "b2=0.95",
                                   "--param", "eps=0", "--param", "eps_root=0.01", "--loss", "product", "--flow",
                                   "modified:2", "--h", "2e-5,1e-5", "--T", "0.01", "--init", "shadow", "--json",
                                   str(path), "--quiet"])
    assert out.exit_code == 0, out.output
    data = json.loads(path.read_text())
    assert data["init"] == "shadow"
    r = data["results"][0]
    assert abs(r["fitted_order"] - 2) < 0.2 and len(r["whole_run_max_error"]) == 2
