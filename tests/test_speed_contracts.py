"""Speed contracts (issue 16): what keeps the first answer fast, checked without timing anything.

* ``import modeq`` loads neither sympy, scipy, diffrax nor matplotlib (they cost 0.4-0.8 s each to import), nor any
  modeq subpackage (loaded on first use);
* the exact Student t quantile that replaced ``scipy.stats.t.ppf`` agrees with scipy;
* :func:`modeq.solve.solve_on_grid` (dense output instead of one step per save time) is accurate to ~1e-14 on an
  exact solution, its error estimate is honest, and it fails loudly;
* nothing recompiles where a cache is meant to prevent it (the pattern of optax's tests: count compilations with
  ``jax.log_compiles``): a new step size in ``simulate`` or in a flow solve of the same shape reuses the program;
* the diffrax solves carry no host callback, so JAX's persistent compilation cache can store them, and the cache
  settings of :mod:`modeq._config` follow the environment;
* the final-state mode of ``simulate`` (unchecked blocks, checked at their end) agrees with the per-step-checked run
  and still freezes at the first non-finite step.
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


def test_subpackages_load_on_first_use():
    """``import modeq`` loads no subpackage (PEP 562 ``__getattr__``, docs/speed.md); every public name still resolves."""
    code = (
        "import sys, modeq; "
        "print(sorted(m for m in sys.modules if m.startswith('modeq.') and m != 'modeq._config')); "
        "from modeq import compare_flow, simulate; import modeq.flows; "
        "print(modeq.simulate is simulate, modeq.modified_field is modeq.flows.modified_field, "
        "callable(modeq.sde.sme), all(hasattr(modeq, n) for n in modeq.__all__), set(modeq.__all__) <= set(dir(modeq)))"
    )
    loaded, resolved = _python(code).splitlines()
    assert loaded == "[]", f"import modeq loads {loaded}"
    assert resolved == "True True True True True"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        modeq.no_such_name  # noqa: B018


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
    assert "unknown" not in str(info.value)  # diffrax's reason is named (an int code looked up as "unknown")
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


def test_pytree_and_numpy_starts_do_not_recompile():
    """A pytree or NumPy ``theta0`` reuses the compiled run at the next call (issue 16: it was retraced every call)."""
    from modeq.optimizers import OPTIMIZERS, simulate
    from modeq.problems import product

    problem, opt = product(), OPTIMIZERS["adam"]()
    tree0 = {"x": problem.theta0[:1], "y": problem.theta0[1:]}

    def tree_loss(t):
        return problem.loss(jnp.concatenate([t["x"], t["y"]]))

    for theta0, loss in ((tree0, tree_loss), (np.asarray(problem.theta0), problem.loss)):
        simulate(opt, loss, theta0, 20, h=0.01)
        assert _compilations(lambda: simulate(opt, loss, theta0, 20, h=0.02).theta.block_until_ready()) == []


def test_solves_have_no_host_callbacks():
    """JAX refuses to write programs with host callbacks to its persistent cache ("uses host callbacks")."""
    from modeq.solve._ode import _solve_dense, _without_host_callbacks

    ts = jnp.linspace(0.0, 1.0, 5)
    one = jnp.asarray(1e-10)
    with _without_host_callbacks():
        text = _solve_dense.lower(jnp.ones(2), ts, one, one, jnp.asarray(np.inf), 1000, _logistic, one).as_text()
    assert "callback" not in text.lower()


def _checked_twin(opt):
    """The same optimizer in a subclass that overrides ``step`` (with the same body): ``simulate`` then checks every
    step of a block, the path every optimizer took before the unchecked blocks of issue 16."""

    class Checked(type(opt)):
        def step(self, theta, momenta, g, h, n=None):
            return super().step(theta, momenta, g, h, n)

    twin = object.__new__(Checked)
    object.__getattribute__(twin, "__dict__").update(object.__getattribute__(opt, "__dict__"))
    return twin


# Two compiled programs of the same steps may round differently in the last bits (XLA fuses the loop bodies
# differently; the checked blocks already differed from save_every=1 by a few ulps before issue 16): the unchecked
# blocks agree with the checked ones to a few ulps over 120 steps.
RTOL_PROGRAMS = 1e-13


@pytest.mark.parametrize("name", ["gd", "hb", "nesterov", "sgdm", "adam", "adamw", "nadam", "rmsprop", "lion"])
def test_final_state_blocks_are_the_checked_steps(name):
    """``simulate(..., save_every=k)`` runs each block of k steps without the per-step finiteness check and checks its
    end (a non-finite state is absorbing for the base ``step``/``update_momenta``), running the block again with the
    per-step check if it is not finite. Oracle: the per-step-checked run (to a few ulps, see RTOL_PROGRAMS), on a
    finite run and on runs that diverge inside a block (the state frozen at the last finite step, the same
    ``diverged_at``)."""
    import warnings

    from modeq.optimizers import OPTIMIZERS, DivergenceWarning, simulate
    from modeq.problems import rosenbrock

    problem, opt = rosenbrock(), OPTIMIZERS[name]()
    twin = _checked_twin(opt)
    cases = ((1e-3, False), (1e308, True)) + (((30.0, True),) if name in ("gd", "hb", "nesterov", "sgdm") else ())
    for h, diverges in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            runs = [simulate(o, problem.loss, problem.theta0, 120, h=h, record=False, save_every=40) for o in (opt, twin)]
        fast, checked = runs
        assert (int(fast.diverged_at) >= 0) == diverges and int(fast.diverged_at) == int(checked.diverged_at)
        np.testing.assert_allclose(np.asarray(fast.theta), np.asarray(checked.theta), rtol=RTOL_PROGRAMS, atol=0)
        for a, b in zip(fast.momenta, checked.momenta):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL_PROGRAMS, atol=0)
        assert np.all(np.isfinite(np.asarray(fast.theta)))


def test_an_optimizer_overriding_step_keeps_the_per_step_check():
    """A ``step`` that can turn a non-finite state finite again (here: it resets non-finite momenta) is outside the
    absorbing argument: its run must still freeze at the first non-finite step."""
    import warnings

    from modeq.optimizers import DivergenceWarning, HeavyBall, heavy_ball, simulate
    from modeq.problems import rosenbrock

    class Resetting(HeavyBall):
        def step(self, theta, momenta, g, h, n=None):
            theta_new, momenta_new = super().step(theta, momenta, g, h, n)
            theta_new = jnp.where(n == 5, jnp.nan, theta_new)  # one non-finite step, then finite values again
            return jnp.nan_to_num(theta_new, nan=0.0) * jnp.where(n == 5, jnp.nan, 1.0), momenta_new

    base = heavy_ball(0.9)
    opt = object.__new__(Resetting)
    object.__getattribute__(opt, "__dict__").update(object.__getattribute__(base, "__dict__"))
    problem = rosenbrock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        traj = simulate(opt, problem.loss, problem.theta0, 20, h=1e-3, record=False, save_every=20)
    assert int(traj.diverged_at) == 5
