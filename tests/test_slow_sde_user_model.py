"""The slow SDE on a user's own model (issue 14, item 2): label noise for a least-squares model given in a loss file
(RESIDUALS, or PREDICT + TARGETS), Hessian-covariance noise for any loss, the manifold's dimension found
numerically and a clear error when the minimizer is isolated."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from modeq._errors import RegimeError
from modeq.cli import app
from modeq.problems import LabelNoise, resolve_problem
from modeq.sde import label_noise_flow
from modeq.studies._sde import manifold_dimension

runner = CliRunner()

# a 2-layer diagonal linear network f(x) = <u * v, x> on n = 2 points in R^3: theta = (u, v) in R^6, the minimizers
# {Z (u * v) = y} form a manifold of dimension 6 - 2 = 4
DIAG = textwrap.dedent("""
    import jax.numpy as jnp

    Z = jnp.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]])
    Y = jnp.array([0.7, -0.4])
    THETA0 = [1.0, 0.8, 0.6, 0.9, 1.1, 0.7]

    def PREDICT(theta):
        return Z @ (theta[:3] * theta[3:])

    TARGETS = Y

    def RESIDUALS_(theta):
        return PREDICT(theta) - Y

    def loss(theta):
        return 0.5 * jnp.mean(RESIDUALS_(theta) ** 2)
""")

# a linear model on 3 points in R^2 (full column rank): one isolated minimizer
ISOLATED = textwrap.dedent("""
    import jax.numpy as jnp

    X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    THETA0 = [0.3, -0.2]

    def RESIDUALS(theta):
        return X @ theta - jnp.array([1.0, 2.0, 2.5])

    def loss(theta):
        return 0.5 * jnp.mean(RESIDUALS(theta) ** 2)
""")


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _diag_loss(theta):
    z = jnp.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]])
    r = z @ (theta[:3] * theta[3:]) - jnp.array([0.7, -0.4])
    return 0.5 * jnp.mean(r**2)


def test_cli_label_noise_on_a_users_model_equals_the_python_flow(tmp_path):
    spec = _write(tmp_path, "diag.py", DIAG) + ":loss"
    out_json = tmp_path / "s.json"
    out = runner.invoke(app, ["slow-sde", "--loss", spec, "--noise", "label", "--noise-param", "delta=1", "--eta",
                              "0.1,0.05", "--T", "1", "--paths", "2", "--quiet", "--json", str(out_json)])
    assert out.exit_code == 0, out.output
    assert "manifold dimension 4 of d = 6" in out.output
    data = json.loads(out_json.read_text())
    assert data["manifold_dim"] == 4
    # the Python API on the same loss written independently (not through the file): c = delta^2 / n, n = 2
    theta0 = jnp.array([1.0, 0.8, 0.6, 0.9, 1.1, 0.7])
    ref = label_noise_flow(_diag_loss, theta0, [0.0, 1.0], 0.5).ys[-1]
    gap = float(np.max(np.abs(np.asarray(data["slow_sde_mean"]) - ref)))
    assert gap < 1e-10, gap
    assert float(np.linalg.norm(ref - np.asarray(data["phi_theta0"]))) > 1e-3  # the flow moved: not a vacuous match


def test_residuals_and_predict_give_the_same_label_noise_covariance(tmp_path):
    pred = resolve_problem(_write(tmp_path, "p.py", DIAG) + ":loss")
    plain = DIAG.replace("PREDICT", "F").replace("TARGETS = Y", "")  # a loss file without the squared-loss parts
    res = resolve_problem(_write(tmp_path, "r.py", plain.replace("RESIDUALS_", "RESIDUALS")) + ":loss")
    assert pred.n_examples == res.n_examples == 2 and res.model is not None
    theta = jnp.array([0.3, -0.7, 1.2, 0.5, 0.9, -0.4])
    jac = jax.jacfwd(lambda t: jnp.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]]) @ (t[:3] * t[3:]))(theta)
    want = (0.3 / 2) ** 2 * jac.T @ jac  # delta^2 / n^2 * J^T J (Blanc et al. 2020)
    for problem in (pred, res):
        np.testing.assert_allclose(LabelNoise(problem, 0.3).covariance(theta), want, rtol=1e-13, atol=1e-15)
        g = jax.grad(problem.loss)(theta)
        np.testing.assert_allclose(jax.grad(problem.batch_loss)(theta, jnp.arange(2)), g, rtol=1e-13, atol=1e-15)


def test_a_loss_that_breaks_the_convention_is_refused(tmp_path):
    bad = DIAG.replace("0.5 * jnp.mean", "jnp.sum")
    with pytest.raises(ValueError, match=r"mean\(r\^2\)/2"):
        resolve_problem(_write(tmp_path, "bad.py", bad) + ":loss")
    out = runner.invoke(app, ["slow-sde", "--loss", _write(tmp_path, "plain.py", DIAG.replace("PREDICT", "F")
                                                                           .replace("TARGETS = Y", "")) + ":loss",
                              "--noise", "label", "--quiet"])
    assert out.exit_code == 2 and "RESIDUALS" in out.output and len(out.output.strip().splitlines()) == 1


def test_isolated_minimizer_is_one_error_line_naming_the_loss(tmp_path):
    spec = _write(tmp_path, "iso.py", ISOLATED) + ":loss"
    out = runner.invoke(app, ["slow-sde", "--loss", spec, "--noise", "label", "--eta", "0.1,0.05", "--quiet"])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "no manifold of minimizers: the slow SDE is trivial" in lines[0] and spec in lines[0]


def test_manifold_dimension_uv_and_isolated():
    uv = lambda t: 0.5 * (t[0] * t[1] - 1.0) ** 2
    assert manifold_dimension(uv, jnp.array([2.0, 0.5])) == 1
    with pytest.raises(RegimeError, match="quad: no manifold"):
        manifold_dimension(lambda t: 0.5 * t @ t, jnp.zeros(3), name="quad")


def test_gaussian_noise_on_a_users_loss_runs(tmp_path):
    spec = _write(tmp_path, "g.py", DIAG.replace("PREDICT", "F").replace("TARGETS = Y", "")) + ":loss"
    out = runner.invoke(app, ["slow-sde", "--loss", spec, "--noise", "gaussian", "--noise-param", "sigma=0.5",
                              "--eta", "0.1,0.05", "--T", "1", "--paths", "2", "--quiet", "--json", "-"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["manifold_dim"] == 4 and "projected-noise" in data["target_method"]


def test_python_least_squares_problem_matches_the_file(tmp_path):
    from modeq.problems._spec import least_squares_problem

    z, y = jnp.array([[1.0, 0.5, -0.3], [0.2, -1.0, 0.8]]), jnp.array([0.7, -0.4])
    theta0 = [1.0, 0.8, 0.6, 0.9, 1.1, 0.7]
    p = least_squares_problem(theta0, predict=lambda t: z @ (t[:3] * t[3:]), targets=y, name="diag")
    f = resolve_problem(_write(tmp_path, "diag.py", DIAG) + ":loss")
    theta = jnp.array([0.3, -0.7, 1.2, 0.5, 0.9, -0.4])
    assert float(p.loss(theta)) == pytest.approx(float(_diag_loss(theta)), rel=1e-14)
    np.testing.assert_allclose(LabelNoise(p, 0.3).covariance(theta), LabelNoise(f, 0.3).covariance(theta),
                               rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="residuals"):
        least_squares_problem(theta0, predict=lambda t: t)
