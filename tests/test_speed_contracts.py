"""Speed contracts (issue 16): what keeps the first answer fast, checked without timing anything.

* ``import modeq`` loads neither sympy, scipy, diffrax nor matplotlib (they cost 0.4-0.8 s each to import);
* the exact Student t quantile that replaced ``scipy.stats.t.ppf`` agrees with scipy;
* :func:`modeq.solve.solve_on_grid` (dense output instead of one step per save time) is accurate to ~1e-14 on an
  exact solution, its error estimate is honest, and it fails loudly;
* nothing recompiles where a cache is meant to prevent it (the pattern of optax's tests: count compilations with
  ``jax.log_compiles``): a new step size in ``simulate`` or in a flow solve of the same shape reuses the program;
* the diffrax solves carry no host callback, so JAX's persistent compilation cache can store them, and the cache
  settings of :mod:`modeq._config` follow the environment.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeq
from modeq.compare._order import t_quantile
from modeq.solve import SolveError, solve_on_grid


def _python(code: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MODEQ_", "JAX_COMPILATION"))}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_is_light_and_cache_follows_environment(tmp_path, monkeypatch):
    heavy = ("sympy", "scipy", "diffrax", "matplotlib", "optax", "rich")
    code = (
        "import sys, jax, modeq; "
        f"print([m for m in {heavy!r} if m in sys.modules]); "
        "print(jax.config.jax_compilation_cache_dir)"
    )
    loaded, cache_dir = _python(code, MODEQ_COMPILATION_CACHE_DIR=str(tmp_path / "cache")).splitlines()
    assert loaded == "[]", f"import modeq loads {loaded}"
    assert cache_dir == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    monkeypatch.setenv("MODEQ_NO_COMPILATION_CACHE", "1")
    assert modeq._config.enable_compilation_cache() is None


def test_lazy_symbolic_names_resolve():
    from modeq.series import BETA, hb_modified_coefficients  # noqa: F401  (loads sympy on first use)

    assert str(modeq.series.BETA) == "beta"
    assert "hb_modified_coefficients" in dir(modeq.series)
    with pytest.raises(AttributeError):
        modeq.series.no_such_name  # noqa: B018


def test_t_quantile_matches_scipy():
    from scipy import stats

    for dof in (1, 2, 3, 4, 5, 7, 10, 33, 200):
        for p in (0.5, 0.8, 0.975, 0.995):
            assert t_quantile(p, dof) == pytest.approx(float(stats.t.ppf(p, dof)), rel=1e-12, abs=1e-14)
    with pytest.raises(ValueError, match="dof"):
        t_quantile(0.975, 0)


A = 0.1


def _logistic(y):
    return -y + A * y**2


def _logistic_exact(y0, t):
    # y' = -y + a y^2: 1/y satisfies u' = u - a
    return 1.0 / (A + (1.0 / y0[None, :] - A) * np.exp(t)[:, None])


def test_solve_on_grid_exact_solution_and_honest_floor():
    y0 = np.array([1.0, 3.0])
    h, steps = 0.01, 150
    values, floor = solve_on_grid(_logistic, y0, h, steps, rtol=1e-12, pad_to=200)
    exact = _logistic_exact(y0, np.arange(steps + 1) * h)
    error = float(np.max(np.linalg.norm(values - exact, axis=-1)))
    assert values.shape == (steps + 1, 2)
    # dense output at the free adaptive steps would be ~1e-10 off here (degree-6 continuous extension): the capped
    # solve brings it to round-off
    assert error < 1e-13
    assert 0 < floor < 1e-13


def test_solve_on_grid_fails_loudly():
    # y' = y^2, y(0) = 1 blows up at t = 1
    with pytest.raises(SolveError) as info:
        solve_on_grid(lambda y: y**2, jnp.ones(1), 0.1, 20, rtol=1e-10)
    assert 0.5 <= info.value.t_failed <= 1.0  # the blow-up time
    with pytest.raises(ValueError, match="steps"):
        solve_on_grid(_logistic, jnp.ones(1), 0.1, 0)


class _CompileCounter(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.names = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Finished XLA compilation of"):
            self.names.append(message.split(" in ")[0].removeprefix("Finished XLA compilation of "))


def _compilations(fn):
    """Names of the XLA programs compiled while running ``fn`` (persistent-cache hits count too)."""
    counter = _CompileCounter()
    logger = logging.getLogger("jax")
    logger.addHandler(counter)
    try:
        with jax.log_compiles(True):
            fn()
    finally:
        logger.removeHandler(counter)
    return counter.names


def test_new_step_size_does_not_recompile():
    from modeq.optimizers import OPTIMIZERS, simulate
    from modeq.problems import product

    problem, opt = product(), OPTIMIZERS["hb"]()
    simulate(opt, problem.loss, problem.theta0, 50, h=0.01)
    assert _compilations(lambda: simulate(opt, problem.loss, problem.theta0, 50, h=0.02).theta.block_until_ready()) == []
    # the counter sees a real recompilation (a new number of steps is a new scan length)
    assert _compilations(lambda: simulate(opt, problem.loss, problem.theta0, 51, h=0.02).theta.block_until_ready())

    field = modeq.flows.gradient_field(opt, problem.loss, h=0.01)
    solve_on_grid(field, problem.theta0, 0.01, 10, pad_to=40)
    assert _compilations(lambda: solve_on_grid(field, problem.theta0, 0.005, 40, pad_to=40)) == []


def test_solves_have_no_host_callbacks():
    """JAX refuses to write programs with host callbacks to its persistent cache ("uses host callbacks")."""
    from modeq.solve._ode import _solve_dense, _without_host_callbacks

    ts = jnp.linspace(0.0, 1.0, 5)
    one = jnp.asarray(1e-10)
    with _without_host_callbacks():
        text = _solve_dense.lower(jnp.ones(2), ts, one, one, jnp.asarray(np.inf), 1000, _logistic, one).as_text()
    assert "callback" not in text.lower()
