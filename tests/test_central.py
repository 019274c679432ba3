"""The central flow of GD (Cohen, Damian, Talwalkar, Kolter & Lee, arXiv 2410.24206): oracles.

* below the edge the central flow is gradient flow (against Dopri8 of the gradient field);
* a 3-D loss with a closed-form central flow (entry into the edge at a scalar root, exponential motion on it);
* two decoupled copies: two eigenvalues at the edge, each copy against its closed form;
* the LCP solver against brute-force feasibility;
* the edge-of-stability MLP: the flow tracks GD's time averages, gradient flow does not (slow).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeq  # noqa: F401
from modeq._errors import RegimeError
from modeq.flows import gradient_field
from modeq.flows._central import central_flow, central_flow_solve, solve_lcp
from modeq.optimizers import gd, heavy_ball
from modeq.solve import solve_ode
from modeq.studies._central import (
    closed_form_central_flow,
    closed_form_loss,
    two_edge_loss,
)


def test_lcp_solution_is_complementary():
    rng = np.random.default_rng(0)
    lcp = jax.jit(solve_lcp)
    for k in (1, 2, 3):
        for _ in range(5):
            B = rng.standard_normal((k, k))
            M = jnp.asarray(B @ B.T + 0.1 * np.eye(k))
            q = jnp.asarray(rng.standard_normal(k))
            s, viol = lcp(M, q)
            w = q + M @ s
            assert float(viol) < 1e-10  # the 1e-13 ridge on the active block: measured <= 2e-12
            assert np.all(np.asarray(s) >= 0) and np.all(np.asarray(w) >= -1e-10)
            assert abs(float(s @ w)) < 1e-10
            if k == 1:  # closed form: s = max(0, -q/M)
                assert abs(float(s[0]) - max(0.0, -float(q[0]) / float(M[0, 0]))) < 1e-11


def test_below_edge_equals_gradient_flow():
    # product-like 2-D loss, h small: h * lambda_max stays far below 2, so sigma^2 = 0 and the flow is RK4 of GF
    def loss(th):
        return 0.5 * (1.5 - 2.0 * th[0] * th[1]) ** 2 + 0.05 * th[0] ** 4

    theta0 = jnp.array([2.8, 3.5]) / 3
    h, T = 0.05, 2.0
    res = central_flow_solve(gd(), loss, theta0, h=h, T=T, k=1, substeps=16)
    ref = np.asarray(solve_ode(gradient_field(gd(), loss), theta0, res.ts, rtol=1e-13).ys)
    assert not res.active.any()
    assert np.abs(res.sigma2).max() == 0.0
    err = np.abs(res.theta - ref).max()
    assert err < 1e-9, err  # RK4, dt = h/16: measured 2.8e-10 (4.6e-9 at h/8: order 4.03)


@pytest.fixture(scope="module")
def closed_form_runs():
    """The central flow on the 3-D closed-form loss, h = 0.5, with dt = h/8 and h/16 (one compilation each)."""
    h, T = 0.5, 10.0
    return h, {sub: central_flow_solve(gd(), closed_form_loss, jnp.array([1.0, 1.0, 0.0]), h=h, T=T, k=1,
                                       substeps=sub) for sub in (8, 16)}


def test_closed_form_central_flow(closed_form_runs):
    h, runs = closed_form_runs
    res = runs[16]
    exact, sigma2, te = closed_form_central_flow(res.ts, h)
    err = np.abs(res.theta - exact).max()
    assert err < 1e-2, err  # O(tau) from the smoothed entry, tau = h/16: measured 5.9e-3 (1.17e-2 at h/8)
    far = np.abs(res.ts - te) > 0.5
    assert np.abs(res.sigma2[far, 0] - sigma2[far]).max() < 1e-3  # measured 1.8e-4
    assert np.abs(res.sharpness[res.ts > te + 0.5, 0] - 2 / h).max() < 1e-10  # pinned at the edge
    assert res.entered and abs(res.entered[0][0] - te) <= h
    assert not res.left
    assert res.violation.max() < 1e-10


def test_closed_form_is_first_order_in_tau(closed_form_runs):
    h, runs = closed_form_runs
    errs = [np.abs(runs[sub].theta - closed_form_central_flow(runs[sub].ts, h)[0]).max() for sub in (8, 16)]
    order = np.log2(errs[0] / errs[1])
    assert 0.8 < order < 1.3, (errs, order)  # measured 1.00


def test_two_eigenvalues_at_the_edge():
    h, T = 0.5, 10.0
    theta0 = jnp.array([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    res = central_flow_solve(gd(), two_edge_loss, theta0, h=h, T=T, k=2, substeps=16)
    e1, s1, t1 = closed_form_central_flow(res.ts, h, slope=1.0)
    e2, s2, t2 = closed_form_central_flow(res.ts, h, slope=2.0)
    assert t2 < t1
    err = max(np.abs(res.theta[:, :3] - e1).max(), np.abs(res.theta[:, 3:] - e2).max())
    assert err < 1e-2, err  # measured 5.9e-3
    end = res.ts > t1 + 0.5
    assert res.active[end].all()  # both eigenvalues at the edge
    assert np.abs(res.sharpness[end] - 2 / h).max() < 1e-9
    assert np.allclose(np.sort(res.sigma2[-1]), np.sort([s1[-1], s2[-1]]), rtol=5e-3)


def test_heavy_ball_is_refused():
    with pytest.raises(RegimeError, match="heavy-ball"):
        central_flow(heavy_ball(0.5), closed_form_loss, h=0.1)


def test_input_errors():
    with pytest.raises(ValueError, match="k"):
        central_flow(gd(), closed_form_loss, h=0.1, k=0)
    with pytest.raises(ValueError, match="h"):
        central_flow(gd(), closed_form_loss, h=-1.0)
    with pytest.raises(ValueError, match="backend"):
        central_flow(gd(), closed_form_loss, h=0.1, backend="qr")


def test_lanczos_backend_matches_dense():
    # the field on the two-edge problem with copy 1 at the edge (S = x1 = 2/h = 4, sigma^2 = 2(c + z1 - x1) = 1) and
    # copy 2 below it (S = 2 x2 = 3): dense vs Lanczos (d steps), and both against the closed form
    theta = jnp.array([4.0, 3.5, 0.0, 1.5, 1.5, 0.0])
    dense = central_flow(gd(), two_edge_loss, h=0.5, k=2)
    lanczos = central_flow(gd(), two_edge_loss, h=0.5, k=2, backend="lanczos", iterations=6)
    state = eqx.filter_jit(lambda flow, th: flow.state(th, 1e-8))
    a, b = state(dense, theta), state(lanczos, theta)
    assert np.allclose(a.velocity, b.velocity, atol=1e-9) and np.allclose(a.sigma2, b.sigma2, atol=1e-7)
    assert np.allclose(a.sharpness, [4.0, 3.0]) and np.allclose(a.sigma2, [1.0, 0.0], atol=1e-7)
    assert np.allclose(a.velocity, [0.0, 0.5, 0.0, 1.0, 0.0, 0.0], atol=1e-7)  # x1 pinned, z1' = x1 - z1


def test_cli_central_flow_table_and_strict_json(tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from modeq._cli_central import central_flow_cmd

    app = typer.Typer()
    app.command("central-flow")(central_flow_cmd)
    app.command("noop")(lambda: None)  # two commands: typer keeps the sub-command name
    out = tmp_path / "cf.json"
    result = CliRunner().invoke(app, ["central-flow", "--loss", "closed_form", "--T", "1", "--h", "0.2", "--window",
                                      "2", "--no-principal", "--quiet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "L GD avg" in result.output and "verdict:" in result.output
    payload = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert payload["verdict"]["verdict"] == "outside the asymptotic regime"  # T = 1: GD never reaches the edge
    assert payload["central"]["active"][0] == [False]


@pytest.mark.slow
def test_edge_of_stability_mlp_central_flow_tracks_gd_gradient_flow_does_not():
    # GD at h = 0.2 on the tanh MLP: sharpness 3.2 -> 10 = 2/h by step ~80, overshoot, then at the edge. Lean version
    # of the documented study (400 steps, Euler, k = 1, Lanczos with 20 steps; the documented run is 1000 steps, RK4,
    # k = 2, dense). Measured: central flow loss 0.046, sharpness 0.0105; gradient flow 0.46, 0.60 (25 s on 2 cores).
    from modeq.studies._central import DEFAULT_TOLERANCE, central_flow_study, edge_mlp

    problem, h, _ = edge_mlp()
    study = central_flow_study(problem.loss, problem.theta0, h=h, T=80.0, k=1, method="euler", principal=False,
                               burn_in=200, backend="lanczos", iterations=20)
    assert study.verdict.verdict == "consistent", study.verdict.reason
    ce, ge = study.errors["central"], study.errors["gradient_flow"]
    assert ce["loss"] <= DEFAULT_TOLERANCE["loss"] and ce["sharpness"] <= DEFAULT_TOLERANCE["sharpness"]
    assert ge["loss"] > 3 * DEFAULT_TOLERANCE["loss"] and ge["sharpness"] > 10 * DEFAULT_TOLERANCE["sharpness"]
    assert ce["theta"] < ge["theta"] / 2
    assert study.central.entered and not study.central.left
    assert study.to_dict()["errors"]["central"]["loss"] == ce["loss"]


def test_compare_flow_central_is_refused_with_a_pointer_to_central_flow():
    # the central flow predicts GD's time-averaged trajectory, not the iterates: an order fit against them is
    # meaningless, so `compare --flow central` fails with one clear error pointing to `modeq central-flow`
    from typer.testing import CliRunner

    from modeq._errors import InputError
    from modeq.cli import app
    from modeq.compare import parse_flow

    with pytest.raises(InputError, match="time-averaged.*modeq central-flow"):
        parse_flow("central")
    result = CliRunner().invoke(app, ["compare", "--optimizer", "gd", "--loss", "product", "--flow", "central",
                                      "--h", "0.1,0.05", "--T", "0.5", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "modeq central-flow" in result.output and "Traceback" not in result.output
