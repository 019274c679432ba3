r"""Integration of vector fields with diffrax on the iterate grid $t = nh$.

Two entry points, both Dopri8 (Dormand & Prince 1981; dense output of Prince & Dormand 1981, see the diffrax
``Dopri8`` docs) with a PID controller at tight tolerances in float64:

* :func:`solve_ode` saves exactly at the requested times (``step_ts``: the solver lands on every save time, so no
  dense-output interpolation error enters, at the price of one step per save time at least);
* :func:`solve_on_grid` takes the steps the tolerance asks for (capped so that the dense output stays accurate) and
  reads $y(nh)$ off Dopri8's dense output, whatever the number of save times: a few hundred steps per flow and step
  size for the default ``modeq compare`` study, where landing on every save time takes up to 8,000; it estimates its
  own error against a solve with steps twice smaller;
* :func:`solve_on_grid_stacked`: :func:`solve_on_grid` for several fields from one start, solved as one uncoupled
  system (one traced and compiled solve for all the flows of a study).

A failed solve (a field that blows up, or ``max_steps`` exhausted) is reported with the time it reached
(:class:`~modeq._errors.SolveError`), never returned as NaNs. The solves are compiled without host callbacks (diffrax
``throw=False``, the result checked here; equinox's run-time checks switched to their NaN form while tracing), so
JAX's persistent compilation cache (:mod:`modeq._config`) can store them. diffrax is imported on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Optional, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._exported import solve_dense_cached
from .._errors import SolveError  # noqa: F401  (re-exported: the ODE solve failed; t_failed = last finite time)


@contextlib.contextmanager
def _without_host_callbacks():
    """Trace with equinox's run-time checks in their ``"nan"`` form instead of ``"raise"``.

    diffrax validates traced inputs (``SaveAt(ts=...)`` increasing and inside ``[t0, t1]``) with
    ``equinox.error_if``, whose default form is a host callback; JAX refuses to write a program with host callbacks to
    its persistent compilation cache. Our inputs satisfy those checks by construction, and a violated check would
    show up as NaNs, which :func:`_check` reports as a :class:`SolveError`. Only the ``"raise"`` default is switched
    (``EQX_ON_ERROR=breakpoint`` etc. set by the user are kept); only affects programs traced inside the block.
    """
    try:
        import equinox._errors as eqx_errors
    except ImportError:  # pragma: no cover - a future equinox layout: keep its default (only cacheability is lost)
        yield
        return
    old = getattr(eqx_errors, "EQX_ON_ERROR", None)
    if old != "raise":
        yield
        return
    eqx_errors.EQX_ON_ERROR = "nan"
    try:
        yield
    finally:
        eqx_errors.EQX_ON_ERROR = old


@dataclasses.dataclass(frozen=True)
class Solution:
    r"""The result of :func:`solve_ode`: ``ys[j]`` $= y(t_j)$ at the requested times ``ts`` (step end points, no
    interpolation), ``steps`` the number of accepted Dopri8 steps and ``rtol`` the relative tolerance used."""

    ts: np.ndarray
    ys: np.ndarray
    steps: int
    rtol: float


def _field_term(t, y, field):
    return field(y)


@eqx.filter_jit
def _solve(y0, ts, rtol, atol, max_steps: int, field):
    import diffrax

    term = diffrax.ODETerm(_field_term)
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Dopri8(),
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=y0,
        args=field,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, step_ts=ts),
        max_steps=max_steps,
        throw=False,
    )
    return sol.ys, sol.result, sol.stats["num_steps"]


def solve_ode(
    field: Callable,
    y0,
    ts,
    *,
    rtol: float = 1e-12,
    atol: Optional[float] = None,
    max_steps: int = 100_000,
    pad_to: Optional[int] = None,
) -> Solution:
    r"""Solve $y' = f(y)$ from ``y0`` at ``ts[0]`` and return $y$ at every time in ``ts``; the adaptive steps are
    clipped to land on every save time, so the saved values are step end points (no interpolation).

    ``field`` is ``f(y)`` or a :class:`~modeq.flows.VectorField` (whose ``h`` is traced: one compilation serves
    every step size). ``pad_to`` pads ``ts`` with copies of its last time to a fixed length, so that sweeps over
    step sizes (different numbers of save times) reuse one compiled solve. ``atol`` defaults to ``rtol`` times the size of
    ``y0`` (at least ``rtol``). Raises :class:`SolveError` with the time reached if the solve fails.
    """
    y0 = jnp.asarray(y0, dtype=jnp.float64)
    ts = jnp.asarray(ts, dtype=jnp.float64)
    if atol is None:
        atol = rtol * max(1.0, float(jnp.max(jnp.abs(y0))))
    n = ts.shape[0]
    if pad_to is not None and pad_to > n:
        ts = jnp.concatenate([ts, jnp.full((pad_to - n,), ts[-1])])
    with _without_host_callbacks():
        ys, result, steps = _solve(y0, ts, jnp.asarray(rtol), jnp.asarray(atol), max_steps, field)
    ys, ts = np.asarray(ys)[:n], np.asarray(ts)[:n]
    _check(ys, ts, result)
    return Solution(ts, ys, int(steps), rtol)


def _check(ys: np.ndarray, ts: np.ndarray, result) -> None:
    """Raise :class:`SolveError` with the last time at which the solution is finite, unless the solve succeeded.
    ``result`` is diffrax's ``RESULTS`` item or its integer code (0: successful; diffrax is imported only to name a
    failure)."""
    code = int(np.asarray(getattr(result, "_value", result)))
    finite = np.all(np.isfinite(ys), axis=tuple(range(1, ys.ndim)))
    if code != 0 or not finite.all():
        last = int(np.argmin(finite)) - 1 if not finite.all() else len(ts) - 1
        t_failed = float(ts[max(last, 0)])
        if code != 0:
            import diffrax

            # (the item's value must be an int32 array: a Python int is looked up as "unknown")
            reason = diffrax.RESULTS[type(diffrax.RESULTS.successful)(np.asarray(code, np.int32), diffrax.RESULTS)]
        else:
            reason = "non-finite solution"
        raise SolveError(f"ODE solve failed after t = {t_failed:.6g} (of {float(ts[-1]):.6g}): {reason}", t_failed)


def _max_row_rms_norm(y):
    """The largest root-mean-square over the rows of ``y`` (the step-size controller's norm for a stack of
    independent states: each row is held to the tolerance it would get alone; a plain RMS over the stack would
    let one row's error grow by the square root of the number of rows)."""
    y = jnp.asarray(y)
    if y.ndim < 2:
        return jnp.sqrt(jnp.mean(jnp.square(y)))
    return jnp.max(jnp.sqrt(jnp.mean(jnp.square(y.reshape(y.shape[0], -1)), axis=1)))


class StackedField(eqx.Module):
    r"""The fields $f_1, \dots, f_k$ of :class:`~modeq.flows.VectorField`\ s solved as one system on the stacked state
    $y = (y_1, \dots, y_k)$ (shape ``(k,) + y0.shape``): $y_i' = f_i(y_i)$, uncoupled. One traced solve (and one
    compiled program) for several flows of a study instead of one per flow; each row keeps its own step size ``h``."""

    fields: tuple

    def __call__(self, y):
        return jnp.stack([f.fn(y[i], f.h) for i, f in enumerate(self.fields)])


@eqx.filter_jit
def _solve_dense(y0, ts, rtol, atol, dtmax, max_steps: int, field, dt0=None, norm=None):
    import diffrax

    controller = (diffrax.PIDController(rtol=rtol, atol=atol, dtmax=dtmax) if norm is None else
                  diffrax.PIDController(rtol=rtol, atol=atol, dtmax=dtmax, norm=norm))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_field_term),
        diffrax.Dopri8(),
        t0=ts[0],
        t1=ts[-1],
        dt0=dt0,
        y0=y0,
        args=field,
        saveat=diffrax.SaveAt(ts=ts),  # read off the dense output: no step is forced onto a save time
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
        # a plain while loop (nothing differentiates these solves in reverse mode): traces in about 0.7x the time of
        # the default checkpointed loop, same steps and values
        adjoint=diffrax.ForwardMode(),
    )
    return sol.ys, sol.result, sol.stats["num_accepted_steps"]


#: :func:`solve_on_grid` returns the solve whose steps are capped at ``1/VALUE_REFINEMENT`` of the free adaptive
#: steps, and measures its error against a solve with steps capped ``2x`` smaller again.
VALUE_REFINEMENT = 4


def solve_on_grid(
    field: Callable,
    y0,
    h: float,
    steps: int,
    *,
    rtol: float = 1e-12,
    atol: Optional[float] = None,
    max_steps: int = 100_000,
    pad_to: Optional[int] = None,
) -> tuple[np.ndarray, float]:
    r"""Solve $y' = f(y)$, $y(0) = y_0$, and return ``(values, floor)``: ``values[n]`` $\approx y(nh)$ for
    $n = 0, \dots,$ ``steps`` (a NumPy array of shape ``(steps + 1,) + y0.shape``) and ``floor``, an estimate of
    $\max_n \|{\rm values}[n] - y(nh)\|_2$ (the returned values' own numerical error, not a bound for a finer
    solution).

    The values are read off Dopri8's dense output at the times $nh$, so the cost does not grow with the number of
    save times. diffrax's Dopri8 continuous extension is a degree-6 polynomial over the 14 stages: its error is
    $O(\Delta t^6)$ per step, far above the step error $O(\Delta t^9)$ when the tolerance allows long steps (about
    1e-10 at ``rtol = 1e-12`` with 7 steps over $[0, 1]$). Three solves at ``rtol`` (``atol`` defaults to ``rtol``
    times the size of ``y0``, at least ``rtol``) therefore share one compiled program:

    1. free adaptive steps: $N$ accepted steps over $[0, T]$, $T = $ ``steps`` $h$ (only $N$ is kept);
    2. steps capped at $T/(4N)$: the returned values (interpolation error $\sim 4^{-6}$ of the free solve's);
    3. steps capped at $T/(8N)$: the reference; ``floor`` $= \max_n \|{\rm values}[n] - {\rm ref}[n]\|_2$, which
       estimates the values' error since the reference is $\sim 2^6$ times more accurate.

    Together $13N$ steps, against ``steps`` (at least) for a solve that lands on every save time (:func:`solve_ode`).
    If $8N$ exceeds ``max_steps`` the free solve is returned and the reference is the free solve at ``rtol/100``.

    ``field`` is ``f(y)`` or a :class:`~modeq.flows.VectorField` (whose ``h`` is traced). ``pad_to`` (at least
    ``steps``) fixes the length of the save grid to ``pad_to + 1`` (the extra times repeat $T$), so that a sweep over
    step sizes compiles once. Raises :class:`SolveError` with the time reached if a solve fails.
    """
    values, ref = _values_and_reference(field, y0, h, steps, rtol, atol, max_steps, pad_to, None)
    diff = (values - ref).reshape(values.shape[0], -1)
    return values, float(np.max(np.linalg.norm(diff, axis=-1)))


def solve_on_grid_stacked(
    fields: Sequence,
    y0,
    h: float,
    steps: int,
    *,
    rtol: float = 1e-12,
    max_steps: int = 100_000,
    pad_to: Optional[int] = None,
) -> tuple[list, list]:
    r""":func:`solve_on_grid` for several :class:`~modeq.flows.VectorField`\ s from the same ``y0``, solved as one
    uncoupled system (:class:`StackedField`): returns ``(values, floors)``, one entry per field, each as
    :func:`solve_on_grid` returns it. The step-size controller takes the largest error over the fields (each field is
    held to the tolerance it gets alone, so the values agree with separate solves to within their floors); the study
    traces and compiles one solve instead of one per field. ``atol`` is ``rtol`` times the size of ``y0`` (at least
    ``rtol``), as for :func:`solve_on_grid`.
    """
    fields = tuple(fields)
    y0 = np.asarray(y0, dtype=np.float64)  # host arrays: no eager JAX op (each compiles a small program)
    stacked = np.ascontiguousarray(np.broadcast_to(y0, (len(fields),) + y0.shape))
    atol = rtol * max(1.0, float(np.max(np.abs(y0))))
    values, ref = _values_and_reference(StackedField(fields), stacked, h, steps, rtol, atol, max_steps, pad_to,
                                        _max_row_rms_norm)
    out, floors = [], []
    for i in range(len(fields)):
        diff = (values[:, i] - ref[:, i]).reshape(values.shape[0], -1)
        out.append(values[:, i])
        floors.append(float(np.max(np.linalg.norm(diff, axis=-1))))
    return out, floors


def _values_and_reference(field, y0, h, steps, rtol, atol, max_steps, pad_to, norm):
    """The returned values and the reference solve of :func:`solve_on_grid` (NumPy arrays on the grid ``n h``)."""
    y0 = np.asarray(y0, dtype=np.float64)  # host arrays and scalars in: no eager JAX op (each compiles a program)
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps: need at least 1 step, got {steps}")
    if not h > 0:
        raise ValueError(f"h: need a positive step size, got {h}")
    n_save = max(steps, int(pad_to or 0)) + 1
    ts_np = np.minimum(np.arange(n_save), steps) * float(h)
    ts, T = ts_np, float(ts_np[-1])
    if atol is None:
        atol = rtol * max(1.0, float(np.max(np.abs(y0))))

    dt0 = np.asarray(min(float(h), T), dtype=np.float64)

    def run(rtol_, atol_, dtmax):
        f64 = np.float64
        with _without_host_callbacks():
            ys, result, n = solve_dense_cached(
                _solve_dense, field, y0, ts, np.asarray(rtol_, f64), np.asarray(atol_, f64), np.asarray(dtmax, f64),
                max_steps, dt0, norm,
            )
        ys = np.asarray(ys)[: steps + 1]
        _check(ys, ts_np[: steps + 1], result)
        return ys, int(n)

    free, n_free = run(rtol, atol, np.inf)
    n_free = max(n_free, 1)
    if 2 * VALUE_REFINEMENT * n_free <= max_steps:
        values, _ = run(rtol, atol, T / (VALUE_REFINEMENT * n_free))
        ref, _ = run(rtol, atol, T / (2 * VALUE_REFINEMENT * n_free))
    else:
        values, _ = free, None
        ref, _ = run(rtol / 100, atol / 100, np.inf)
    return values, ref
