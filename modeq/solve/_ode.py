r"""Integration of vector fields with diffrax on the iterate grid $t = nh$.

Defaults follow shared/STACK.md: Dopri8 with a PID controller at tight tolerances in float64, saving exactly at the
requested times (``step_ts``: the solver lands on every save time, so no dense-output interpolation error enters).
A failed solve (a field that blows up, or ``max_steps`` exhausted) is reported with the time it
reached, never returned as NaNs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


from .._errors import SolveError  # noqa: F401  (re-exported: the ODE solve failed; t_failed = last finite time)


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
    ys, result, steps = _solve(y0, ts, jnp.asarray(rtol), jnp.asarray(atol), max_steps, field)
    ys, ts = np.asarray(ys)[:n], ts[:n]
    finite = np.all(np.isfinite(ys), axis=tuple(range(1, ys.ndim)))
    if result != diffrax.RESULTS.successful or not finite.all():
        last = int(np.argmin(finite)) - 1 if not finite.all() else len(ts) - 1
        t_failed = float(ts[max(last, 0)])
        reason = diffrax.RESULTS[result] if result != diffrax.RESULTS.successful else "non-finite solution"
        raise SolveError(f"ODE solve failed after t = {t_failed:.6g} (of {float(ts[-1]):.6g}): {reason}", t_failed)
    return Solution(np.asarray(ts), ys, int(steps), rtol)
