"""The command-line contract: names, JSON keys, exit codes."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import modeq
from modeq.cli import app
from modeq.compare import fit_order

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_problems_lists_every_problem():
    out = invoke("problems")
    assert out.exit_code == 0
    for name in modeq.problems.PROBLEMS:
        assert name in out.output


def test_problems_lists_each_problems_options():
    out = invoke("problems")
    assert "options: --loss mlp:d=1000,inputs=8,n=64,seed=0" in out.output
    assert "options: --loss rosenbrock:stiffness=10" in out.output
    data = json.loads(invoke("problems", "--json").stdout)
    assert {p["name"]: p["options"] for p in data["problems"]}["quadratic"] == {
        "d": 20, "seed": 0, "condition": 10.0, "lambda_max": 1.0}


def test_headers_name_the_optimizer_in_the_cli_syntax():
    out = invoke("run", "--optimizer", "hb", "--param", "beta=0.5", "--param", "lr=0.02", "--steps", "2", "--quiet")
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0] == "--optimizer hb --param h=0.02 --param beta=0.5 --loss product: d = 2, " \
                                         "2 steps, m0 = zero"
    out = invoke("regularizer", "--optimizer", "gd", "--h", "0.1", "--loss", "rosenbrock", "--steps", "2", "--quiet")
    assert out.exit_code == 0, out.output
    first = out.output.splitlines()[0]
    assert first.startswith("--optimizer gd --param h=0.1 --loss rosenbrock --form ode: L = Rosenbrock-type valley")
    assert "{" not in first  # not a Python dict


def test_run_in_chunks_equals_one_simulation(tmp_path, monkeypatch):
    # 57 steps run as chunks of 3 (at most two chunk lengths): the same numbers as one call of simulate, m0 = first
    monkeypatch.setattr("modeq.cli._RUN_MIN_CHUNK", 1)  # a run this short is otherwise one chunk
    path = tmp_path / "run.json"
    out = invoke("run", "--optimizer", "nesterov", "--param", "h=0.01", "--param", "beta=0.8", "--m0", "first",
                 "--loss", "rosenbrock", "--steps", "57", "--json", str(path), "--quiet")
    assert out.exit_code == 0, out.output
    data = json.loads(path.read_text())
    problem = modeq.problems.rosenbrock()
    traj = modeq.simulate(modeq.optimizers.nesterov(0.8), problem.loss, problem.theta0, 57, h=0.01, m0="first")
    assert not traj.diverged
    np.testing.assert_allclose(data["loss_history"], np.asarray(traj.loss), rtol=1e-13)
    np.testing.assert_allclose(data["theta_final"], np.asarray(traj.theta[-1]), rtol=1e-13)


def test_run_writes_the_contract_json(tmp_path):
    path = tmp_path / "run.json"
    out = invoke("run", "--optimizer", "hb", "--param", "learning_rate=0.01", "--param", "beta=0.5",
                 "--loss", "product", "--steps", "30", "--json", str(path), "--quiet")
    assert out.exit_code == 0, out.output
    data = json.loads(path.read_text())
    for key in ("optimizer", "params", "loss", "steps", "theta_final", "loss_history"):
        assert key in data
    assert data["params"] == {"h": 0.01, "beta": 0.5}
    assert len(data["loss_history"]) == 31
    problem = modeq.problems.product()
    traj = modeq.simulate(modeq.optimizers.heavy_ball(0.5), problem.loss, problem.theta0, 30, h=0.01)
    np.testing.assert_allclose(data["theta_final"], np.asarray(traj.theta[-1]), rtol=1e-14)
    np.testing.assert_allclose(data["loss_history"], np.asarray(traj.loss), rtol=1e-14)


def test_run_user_loss_spec(tmp_path):
    f = tmp_path / "myloss.py"
    f.write_text("import jax.numpy as jnp\ndef loss(t):\n    return jnp.sum((t - 1.0) ** 2)\n")
    path = tmp_path / "out.json"
    out = invoke("run", "--optimizer", "gd", "--param", "h=0.25", "--loss", f"{f}:loss", "--theta0", "0,0",
                 "--steps", "3", "--json", str(path), "--quiet")
    assert out.exit_code == 0, out.output
    # GD with h = 1/4 on (t-1)^2 halves the distance to 1 each step
    np.testing.assert_allclose(json.loads(path.read_text())["theta_final"], [0.875, 0.875], rtol=1e-15)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--param", "beta=1.5"), "beta must be in [0, 1)"),
        (("--param", "h=-1"), "h must be > 0"),
        (("--param", "gamma=1"), "unknown parameter 'gamma'"),
        (("--steps", "0"), "steps must be an integer >= 1"),
        (("--theta0", "1,2,3"), "theta0 must have 2 entries"),
        (("--loss", "nosuch"), "unknown problem"),
        (("--loss", "nosuch_module_xyz:f"), "cannot import module"),
        (("--optimizer", "adamax"), "optimizer: unknown"),
    ],
)
def test_run_bad_input_gives_one_line_and_exit_2(args, fragment):
    out = invoke("run", "--quiet", *args)
    assert out.exit_code == 2
    assert fragment in out.output
    assert out.output.strip().count("\n") == 0


def test_run_non_scalar_loss(tmp_path):
    f = tmp_path / "vec.py"
    f.write_text("def loss(t):\n    return t * 2\nTHETA0 = [1.0, 2.0]\n")
    out = invoke("run", "--loss", f"{f}:loss", "--quiet")
    assert out.exit_code == 2 and "must return a scalar" in out.output


def test_run_reports_divergence(tmp_path):
    path = tmp_path / "d.json"
    out = invoke("run", "--optimizer", "gd", "--param", "h=3.0", "--loss", "quadratic:d=5,lambda_max=1.0",
                 "--steps", "2000", "--json", str(path), "--quiet")
    assert out.exit_code == 0
    assert "diverged at step" in out.output
    data = json.loads(path.read_text())
    assert data["diverged_at"] is not None and np.all(np.isfinite(data["theta_final"]))


def test_compare_json_contract_and_orders(tmp_path):
    path, png = tmp_path / "c.json", tmp_path / "c.png"
    out = invoke("compare", "--optimizer", "hb", "--param", "beta=0.5", "--loss", "product",
                 "--flow", "modified:1,modified:2", "--flow", "memoryless:2", "--h", "0.004,0.002,0.001",
                 "--T", "0.5", "--json", str(path), "--plot", str(png), "--quiet")
    assert out.exit_code == 0, out.output
    data = json.loads(path.read_text())
    for key in ("optimizer", "params", "loss", "T", "results"):
        assert key in data
    assert [r["flow"] for r in data["results"]] == ["modified:1", "modified:2", "memoryless:2"]
    for r in data["results"]:
        for key in ("flow", "order", "h", "max_error", "fitted_order", "fitted_order_ci", "error_constant"):
            assert key in r
        assert abs(r["fitted_order"] - r["order"]) < 0.15
        lo, hi = r["fitted_order_ci"]
        assert lo < r["fitted_order"] < hi
    assert png.stat().st_size > 10_000


def test_compare_bad_flow():
    out = invoke("compare", "--flow", "modified:0", "--quiet")
    assert out.exit_code == 2 and "order" in out.output
    out = invoke("compare", "--flow", "spline", "--quiet")
    assert out.exit_code == 2 and "flow must be" in out.output
    out = invoke("compare", "--optimizer", "lion", "--flow", "modified:2", "--quiet")
    assert out.exit_code == 2 and "no smooth modified equation" in out.output


def test_coefficients_command():
    out = invoke("coefficients", "--optimizer", "gd", "--order", "3", "--json")
    assert out.exit_code == 0
    data = json.loads(out.output)
    coeffs = {d["tree"]: d["coefficient"] for d in data}
    assert coeffs == {"o": "-1", "[o]": "-1/2", "[[o]]": "-1/3", "[o,o]": "-1/12"}
    out = invoke("coefficients", "--optimizer", "hb", "--order", "3", "--latex")
    assert out.exit_code == 0 and "\\beta" in out.output


def test_fit_order_recovers_slope_and_interval():
    hs = np.array([0.1, 0.05, 0.025, 0.0125])
    errors = 3.0 * hs**2 * np.exp(0.01 * np.array([1, -1, 1, -1]))
    fit = fit_order(hs, errors)
    assert abs(fit.order - 2) < 0.02 and fit.ci[0] < fit.order < fit.ci[1]
    assert fit.constant == pytest.approx(3.0, rel=0.05)
    exact = fit_order(hs, 2.0 * hs**3)
    assert exact.order == pytest.approx(3.0, abs=1e-12) and exact.constant == pytest.approx(2.0, rel=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        fit_order([0.1], [0.2])


def test_principal_flow_command_matches_iterates_on_a_quadratic(tmp_path):
    path, png = tmp_path / "pf.json", tmp_path / "pf.png"
    # h * lambda_max = 0.05 * 36 = 1.8: oscillating iterates, complex principal flow
    out = invoke("principal-flow", "--optimizer", "gd", "--loss", "quadratic:d=6,lambda_max=36,condition=4",
                 "--h", "0.05", "--T", "2", "--json", str(path), "--plot", str(png), "--quiet")
    assert out.exit_code == 0, out.output
    data = json.loads(path.read_text())
    assert data["max_error"] < 1e-9
    assert "oscillatory" in data["diagnostics"]["regime"]
    assert png.stat().st_size > 10_000
    out = invoke("principal-flow", "--h", "-1", "--quiet")
    assert out.exit_code == 2 and "h must be > 0" in out.output
    out = invoke("principal-flow", "--backend", "lanczos", "--k", "0", "--quiet")
    assert out.exit_code == 2 and "k" in out.output


def test_regularizer_command(tmp_path):
    path = tmp_path / "r.json"
    out = invoke("regularizer", "--optimizer", "hb", "--param", "beta=0.5", "--param", "h=0.01", "--steps", "20",
                 "--json", str(path), "--quiet")
    assert out.exit_code == 0, out.output
    data = json.loads(path.read_text())
    # HB, order-2 ODE form: coefficient h (1+beta)/(4(1-beta)^2) = 0.01 * 1.5 / 1 = 0.015
    terms = data["modified_loss"]["terms"]
    assert any(abs(float(t["coefficient"]) - 0.015) < 1e-15 for t in terms), terms
    out = invoke("regularizer", "--optimizer", "adam", "--param", "eps_root=0.1", "--param", "eps=0", "--steps", "5",
                 "--quiet")
    assert out.exit_code == 0, out.output


def test_sde_and_slow_sde_commands(tmp_path):
    path = tmp_path / "s.json"
    out = invoke("sde", "--loss", "quadratic:d=2", "--eta", "0.2,0.1", "--T", "1", "--paths", "200",
                 "--json", str(path), "--quiet")
    assert out.exit_code == 0, out.output
    data = json.loads(path.read_text())
    assert data["results"]["etas"] == [0.2, 0.1]
    out = invoke("sde", "--paths", "1", "--quiet")
    assert out.exit_code == 2 and "paths" in out.output
    out = invoke("sde", "--eta", "0", "--quiet")
    assert out.exit_code == 2 and "eta" in out.output
    out = invoke("slow-sde", "--problem", "uv", "--eta", "0.05,0.04", "--T", "0.05", "--paths", "4", "--quiet")
    assert out.exit_code == 2 and "T = 0.05" in out.output  # 20 steps: too short to compare (issue 11)
    out = invoke("slow-sde", "--problem", "uv", "--eta", "0.05,0.04", "--T", "0.25", "--paths", "2", "--quiet",
                 "--json", str(path))
    assert out.exit_code == 0, out.output
    assert "slow_sde_mean" in json.loads(path.read_text())


def test_diverging_solve_reports_the_time_it_failed():
    from modeq.solve import SolveError, solve_ode

    with pytest.raises(SolveError) as info:
        solve_ode(lambda y: y**2, np.array([1.0]), np.linspace(0.0, 2.0, 21))  # blows up at t = 1
    assert 0.8 <= info.value.t_failed <= 1.0
    assert "failed after t =" in str(info.value)


# --json alone prints exactly one JSON document on stdout (no table, no progress bar); tiny settings: each command
# here runs in about a second.
JSON_COMMANDS = {
    "problems": ["problems"],
    "run": ["run", "--optimizer", "gd", "--param", "h=0.1", "--steps", "3"],
    "compare": ["compare", "--optimizer", "gd", "--flow", "gradient", "--h", "0.02,0.01", "--T", "0.04"],
    "coefficients": ["coefficients", "--optimizer", "gd", "--order", "2"],
    "principal-flow": ["principal-flow", "--loss", "quadratic:d=2", "--h", "0.1", "--T", "0.2"],
    "regularizer": ["regularizer", "--optimizer", "gd", "--param", "h=0.01", "--steps", "3"],
    "sde": ["sde", "--loss", "quadratic:d=2", "--eta", "0.2,0.1", "--T", "0.2", "--paths", "20"],
    "slow-sde": ["slow-sde", "--problem", "uv", "--eta", "0.05,0.04", "--T", "0.25", "--paths", "2"],
}  # report: tests/test_report.py parses its --json output


def test_every_command_has_json_and_quiet():
    import typer.main

    commands = typer.main.get_command(app).commands
    assert set(JSON_COMMANDS) | {"report"} <= set(commands)  # a new command: add its cheapest run to JSON_COMMANDS
    for name, command in commands.items():
        options = {opt for p in command.params for opt in p.opts}
        assert {"--json", "--quiet"} <= options, name


@pytest.mark.filterwarnings("ignore:.*Monte Carlo standard error")  # sde with 20 paths: noise-dominated on purpose
@pytest.mark.parametrize("name", list(JSON_COMMANDS))
def test_json_to_stdout_is_pure_json(name):
    out = runner.invoke(app, [*JSON_COMMANDS[name], "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)  # nothing but the JSON document
    assert data
    if name == "problems":
        assert [p["name"] for p in data["problems"]] == list(modeq.problems.PROBLEMS)
    if name == "run":
        assert len(data["loss_history"]) == 4


def test_bare_json_flag_forms(tmp_path):
    args = JSON_COMMANDS["coefficients"]
    before = runner.invoke(app, [*args[:1], "--json", *args[1:]])  # --json followed by another option
    dash = runner.invoke(app, [*args, "--json", "-", "--quiet"])
    assert before.exit_code == dash.exit_code == 0
    assert json.loads(before.stdout) == json.loads(dash.stdout)
    path = tmp_path / "c.json"
    to_file = runner.invoke(app, [*args, "--json", str(path)])  # --json PATH: file, and the table on stdout
    assert to_file.exit_code == 0 and json.loads(path.read_text()) == json.loads(dash.stdout)
    assert "[o]" in to_file.stdout


def test_compare_outside_the_manifold_regime_is_a_clear_error():
    # Adam's default b2 = 0.999 at h = 4e-4: h lambda/(1-b2)^2 ~ 1e3, the slow-manifold iteration diverges
    # (modified:1 only: every flow is built before the start, and Adam with eps_root = 0 has no order-2 field)
    out = invoke("compare", "--optimizer", "adam", "--loss", "product", "--h", "0.0004,0.0002", "--T", "0.01",
                 "--flow", "modified:1", "--quiet")
    assert out.exit_code == 2 and "slow manifold" in out.output and "error: h:" in out.output
