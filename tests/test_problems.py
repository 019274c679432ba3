"""The canonical test problems and ``resolve_problem``."""

from __future__ import annotations

import functools
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from modeq.problems import (
    PROBLEMS,
    Problem,
    check_scalar_loss,
    diagonal_net,
    hyperbola,
    linear_overparam,
    mlp,
    product,
    quadratic,
    quadratic_hessian,
    resolve_problem,
    rosenbrock,
    uv,
)


@functools.lru_cache(maxsize=None)
def built(name):
    return PROBLEMS[name]()


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_builds_finite_loss_and_gradient(name):
    p = built(name)
    assert isinstance(p, Problem)
    assert p.theta0.dtype == jnp.float64 and p.theta0.shape == (p.dim,)
    value, g = jax.jit(jax.value_and_grad(p.loss))(p.theta0)
    assert value.shape == () and value.dtype == jnp.float64 and np.isfinite(float(value))
    assert g.shape == (p.dim,) and np.all(np.isfinite(np.asarray(g)))
    assert p.description
    check_scalar_loss(p.loss, p.theta0)


@pytest.mark.parametrize("name", sorted(n for n in PROBLEMS if built(n).is_finite_sum))
def test_finite_sum_mean_of_example_losses(name):
    p = built(name)
    theta = p.theta0 + 0.1 * jnp.arange(p.dim) / p.dim  # away from any special point
    idx = jnp.arange(p.n_examples)
    per_example = jax.jit(jax.vmap(lambda i: p.example_loss(theta, i)))(idx)
    loss = jax.jit(p.loss)(theta)
    np.testing.assert_allclose(jnp.mean(per_example), loss, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(p.batch_loss)(theta, idx), loss, rtol=1e-12)
    if p.model is not None:  # squared loss: l_i = (f_i - y_i)^2 / 2
        f = jax.jit(jax.vmap(lambda i: p.model(theta, i)))(idx)
        np.testing.assert_allclose(0.5 * (f - p.targets) ** 2, per_example, rtol=1e-12)


def test_not_a_finite_sum():
    p = rosenbrock()
    assert not p.is_finite_sum
    with pytest.raises(ValueError, match="finite sum"):
        p.batch_loss(p.theta0, jnp.arange(2))


# --- manifolds of minimizers -----------------------------------------------------------------------------------------


def _design_matrix(p):
    """X with rows grad_theta f_i (the model is linear in theta)."""
    return np.asarray(jax.vmap(lambda i: jax.grad(p.model)(jnp.zeros(p.dim), i))(jnp.arange(p.n_examples)))


def _minimizers():
    out = [
        (uv(), jnp.array([1.0, 1.0])),
        (uv(), jnp.array([2.0, 0.5])),
        (product(x=2.0, y=1.5), jnp.array([1.0, 0.75])),
        (product(x=2.0, y=1.5), jnp.array([-3.0, -0.25])),
        (hyperbola(), jnp.array([1.0, 0.0])),
        (hyperbola(), jnp.array([-np.cosh(0.7), np.sinh(0.7)])),
        (rosenbrock(), jnp.array([1.0, 1.0])),
        (quadratic(d=6), jnp.zeros(6)),
    ]
    lin = linear_overparam()
    x = _design_matrix(lin)
    least_norm, *_ = np.linalg.lstsq(x, np.asarray(lin.targets), rcond=None)
    out.append((lin, jnp.asarray(least_norm)))
    d = 10
    w_star = np.zeros(d)
    w_star[:2] = 1.0  # diagonal_net's 2-sparse teacher
    out.append((diagonal_net(d=d), jnp.concatenate([jnp.sqrt(jnp.asarray(w_star)), jnp.zeros(d)])))
    return out


@pytest.mark.parametrize("p, theta", _minimizers(), ids=lambda v: v.name if isinstance(v, Problem) else "")
def test_manifold_vanishes_at_minimizer(p, theta):
    assert p.manifold is not None
    np.testing.assert_allclose(p.manifold(theta), 0.0, atol=1e-12)
    assert abs(float(p.loss(theta))) <= 1e-24
    np.testing.assert_allclose(jax.grad(p.loss)(theta), 0.0, atol=1e-12)
    # ... and not next to it (the check is not vacuous)
    assert np.max(np.abs(np.asarray(p.manifold(theta + 0.1)))) > 1e-3


def test_quadratic_hessian_spectrum():
    p = quadratic(d=8, condition=50.0, lambda_max=2.0)
    a = np.asarray(jax.jit(lambda: quadratic_hessian(p))())
    np.testing.assert_allclose(a, a.T, atol=1e-15)
    lam = np.linalg.eigvalsh(a)
    np.testing.assert_allclose([lam.min(), lam.max()], [2.0 / 50.0, 2.0], rtol=1e-12)


# --- conserved quantities of gradient flow ---------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [product, uv, hyperbola], ids=["product", "uv", "hyperbola"])
def test_conserved_by_gradient_flow(factory):
    p = factory()
    grad = jax.jit(jax.grad(p.loss))
    start = p.theta0 if float(p.loss(p.theta0)) > 1e-3 else p.theta0 * jnp.array([1.0, 0.4])  # uv starts on Gamma
    sol = solve_ivp(
        lambda t, th: -np.asarray(grad(jnp.asarray(th))),
        (0.0, 5.0),
        np.asarray(start),
        method="DOP853",
        rtol=1e-10,
        atol=1e-12,
        dense_output=False,
        t_eval=np.linspace(0.0, 5.0, 21),
    )
    assert sol.success
    c = np.array([float(p.conserved(jnp.asarray(th))) for th in sol.y.T])
    np.testing.assert_allclose(c, c[0], atol=1e-7)
    assert float(p.loss(jnp.asarray(sol.y[:, -1]))) < 1e-2 * float(p.loss(start))  # the flow really moved
    # a large GD step does not conserve it (the check is not vacuous)
    th = start - 0.3 * grad(start)
    assert abs(float(p.conserved(th)) - c[0]) > 1e-4


# --- the MLP ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [11, 60, 200, 1000, 10000])
def test_mlp_dimension(d):
    p = mlp(d=d)
    assert d - (8 + 2) < p.dim <= d
    assert str(p.dim) in p.description


def test_mlp_large_builds_quickly():
    start = time.perf_counter()
    p = mlp(d=100_000)
    g = jax.jit(jax.grad(p.loss))(p.theta0)
    elapsed = time.perf_counter() - start
    assert 100_000 - 10 < p.dim <= 100_000
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.linalg.norm(g)) > 0
    assert elapsed < 10.0


def test_mlp_too_small():
    with pytest.raises(ValueError, match="d"):
        mlp(d=5)


# --- resolve_problem -------------------------------------------------------------------------------------------------


def test_resolve_builtin_names():
    for name in ("product", "rosenbrock", "uv"):
        p = resolve_problem(name)
        assert p.name == name
        np.testing.assert_array_equal(p.theta0, PROBLEMS[name]().theta0)


def test_resolve_builtin_with_options():
    p = resolve_problem("mlp:d=200")
    assert p.name == "mlp" and 190 < p.dim <= 200
    q = resolve_problem("quadratic:d=5,condition=100.0,seed=3")
    assert q.dim == 5 and "0.01" in q.description
    np.testing.assert_array_equal(q.theta0, quadratic(d=5, condition=100.0, seed=3).theta0)
    r = resolve_problem("product", theta0=[0.5, 2.0])
    np.testing.assert_array_equal(r.theta0, [0.5, 2.0])


USER_MODULE = textwrap.dedent(
    """
    import jax.numpy as jnp

    THETA0 = [1.0, 2.0, 3.0]

    def loss(theta):
        return jnp.sum((theta - 1.0) ** 4)

    def vector_loss(theta):
        return theta ** 2

    NOT_CALLABLE = 3.0
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_loss.py"
    path.write_text(USER_MODULE)
    return path


def test_resolve_user_file(user_file):
    p = resolve_problem(f"{user_file}:loss")
    np.testing.assert_array_equal(p.theta0, [1.0, 2.0, 3.0])
    assert float(p.loss(p.theta0)) == pytest.approx(1.0 + 16.0)
    q = resolve_problem(f"{user_file}:loss", theta0=[0.0, 0.0])
    np.testing.assert_array_equal(q.theta0, [0.0, 0.0])


def test_resolve_user_module(tmp_path, monkeypatch):
    pkg = tmp_path / "modeq_test_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "losses.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    p = resolve_problem("modeq_test_pkg.losses:loss")
    assert p.dim == 3 and float(p.loss(jnp.ones(3))) == 0.0


def test_resolve_user_file_without_theta0(tmp_path):
    path = tmp_path / "bare.py"
    path.write_text("def f(theta):\n    return (theta ** 2).sum()\n")
    with pytest.raises(ValueError, match="theta0"):
        resolve_problem(f"{path}:f")
    p = resolve_problem(f"{path}:f", theta0=[1.0, 2.0])
    assert float(p.loss(p.theta0)) == 5.0


@pytest.mark.parametrize(
    "spec, match",
    [
        ("no_such_problem", "loss"),
        ("mlp:d", "loss"),
        ("mlp:depth=3", "loss"),
        ("/no/such/file.py:loss", "loss"),
        ("no_such_package_xyz.module:loss", "loss"),
        (":loss", "loss"),
        ("modeq.problems:", "loss"),
        ("modeq.problems:no_such_function", "loss"),
    ],
)
def test_resolve_bad_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_problem(spec)


def test_resolve_bad_user_functions(user_file, tmp_path):
    with pytest.raises(ValueError, match="scalar"):
        resolve_problem(f"{user_file}:vector_loss")
    with pytest.raises(TypeError, match="callable"):
        resolve_problem(f"{user_file}:NOT_CALLABLE")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match="loss.*boom"):
        resolve_problem(f"{broken}:f")


@pytest.mark.parametrize("theta0", [[1.0, 2.0, 3.0], [1.0], [float("nan"), 1.0]])
def test_resolve_bad_theta0(theta0):
    with pytest.raises(ValueError, match="theta0"):
        resolve_problem("product", theta0=theta0)


def test_resolve_user_wrong_theta0_length(user_file):
    # a user's loss defines no dimension: theta0 sets it, and a loss that cannot take that length is reported
    p = resolve_problem(f"{user_file}:loss", theta0=[1.0, 2.0, 3.0, 4.0])
    assert p.dim == 4
    path = user_file.parent / "fixed.py"
    path.write_text("import jax.numpy as jnp\nTHETA0 = [0.0, 0.0]\ndef f(th):\n    return th @ jnp.ones(2)\n")
    with pytest.raises(ValueError, match="loss"):
        resolve_problem(f"{path}:f", theta0=[1.0, 2.0, 3.0])


# --- input checks: finiteness, sizes, options ------------------------------------------------------------------------


def test_check_scalar_loss_evaluates_value_and_gradient():
    check_scalar_loss(lambda t: jnp.sum(t**2), jnp.ones(3))
    with pytest.raises(ValueError, match="value at theta0 is nan"):
        check_scalar_loss(lambda t: jnp.sum(t**2) * jnp.nan, jnp.ones(3))
    with pytest.raises(ValueError, match="value at theta0 is inf"):
        check_scalar_loss(lambda t: 1.0 / jnp.sum(t), jnp.zeros(3))
    with pytest.raises(ValueError, match="gradient at theta0 is not finite .1 of 2 entries, first: entry 1"):
        check_scalar_loss(lambda t: t[0] ** 2 + jnp.sqrt(jnp.abs(t[1])), jnp.array([1.0, 0.0]))


def test_check_scalar_loss_takes_pytrees():
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
    check_scalar_loss(lambda p: jnp.sum(p["w"] @ p["b"] + 1.0), params)
    with pytest.raises(ValueError, match="theta0: empty"):
        check_scalar_loss(lambda p: 0.0, {})


def test_problem_options_are_the_keyword_arguments():
    from modeq.problems._spec import problem_options

    assert problem_options("mlp") == {"d": 1000, "inputs": 8, "n": 64, "seed": 0}
    assert problem_options("hyperbola") == {}
    with pytest.raises(ValueError, match="unknown option 'width' for problem 'mlp'; valid: d=1000"):
        resolve_problem("mlp:width=3")


@pytest.mark.parametrize("factory, kwargs, match", [
    (mlp, {"d": 10**12}, "d must be <= 2,000,000, got 1e\\+12: parameters would take 8 TB"),
    (quadratic, {"d": 10**5}, "d must be <= 4,000, got 1e\\+05: the dense d x d matrix would take 80 GB .limit 128 MB."),
    (mlp, {"n": 10**7}, "n must be <="),
    (diagonal_net, {"d": 10, "sparsity": 11}, "sparsity must be <= d"),
])
def test_problem_sizes_are_bounded_with_the_cost(factory, kwargs, match):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("body, match", [
    ("THETA0 = [float('nan'), 1.0]", "THETA0 of .*finite"),
    ("THETA0 = []", "THETA0 of .*empty"),
    ("THETA0 = ['a', 'b']", "THETA0 of .*list of numbers"),
])
def test_resolve_checks_the_files_theta0(tmp_path, body, match):
    path = tmp_path / "f.py"
    path.write_text(body + "\nimport jax.numpy as jnp\ndef f(t):\n    return jnp.sum(t ** 2)\n")
    with pytest.raises(ValueError, match=match):
        resolve_problem(f"{path}:f")
