r"""One verdict policy for every study: expected vs measured order, its interval, and one word on whether to believe it.

Every study of :mod:`modeq.studies` ends in a :class:`Verdict`. The verdicts, in the order they are decided:

``"diverged"``
    a run became non-finite: nothing was fitted.
``"outside the asymptotic regime"``
    the largest step size has $h\lambda_{\max}/(1-\beta)^2 > 0.05$ (deterministic studies), or the run is too short
    to compare: the fitted order is reported but means nothing about the asymptotic order.
``"Monte Carlo error too large to tell"``
    (stochastic studies) the weak errors are not resolved: at fewer than two step sizes is the measured bias at least
    ``resolve`` (default 3) Monte Carlo standard errors above zero.
``"consistent"`` / ``"not consistent"``
    with three or more step sizes: the expected order $R$ lies in the 95% interval of the fitted order widened by
    ``slack`` (default 0.1: the pre-asymptotic curvature allowed), and the interval is narrower than ``max_width``
    (default 1: an interval as wide as [-221, 299] proves nothing); with two step sizes (no interval):
    $|p - R| \le$ ``tolerance`` (default 0.2).

Nothing here prints: front ends render ``Verdict.to_dict()`` (JSON-ready, ``None`` never NaN) or ``str(verdict)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence

CONSISTENT = "consistent"
NOT_CONSISTENT = "not consistent"
OUTSIDE_REGIME = "outside the asymptotic regime"
MC_TOO_LARGE = "Monte Carlo error too large to tell"
DIVERGED = "diverged"
VERDICTS = (CONSISTENT, NOT_CONSISTENT, OUTSIDE_REGIME, MC_TOO_LARGE, DIVERGED)

#: $h\lambda_{\max}/(1-\beta)^2$ above which the asymptotic series in $h$ are not trusted (docs/theory/manifold.md#regime)
REGIME_LIMIT = 0.05


def finite_or_none(x) -> Optional[float]:
    """``float(x)`` if it is a finite number, else ``None`` (JSON has no NaN)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON: NaN and infinities become ``None``, numpy and
    JAX scalars and arrays become Python numbers and lists, tuples become lists, dataclasses become dicts."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_dict"):
            return jsonable(obj.to_dict())
        return jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
        return jsonable(obj.tolist())
    if hasattr(obj, "to_dict"):
        return jsonable(obj.to_dict())
    return str(obj)


@dataclasses.dataclass(frozen=True)
class Verdict:
    r"""Expected vs measured, and whether to believe it.

    ``expected``: the theoretical order $R$; ``measured``: the fitted order (``None`` if nothing was fitted);
    ``interval``: its 95% interval (``None`` with two step sizes); ``verdict``: one of :data:`VERDICTS`; ``reason``: one
    sentence saying why.
    """

    expected: Optional[float]
    measured: Optional[float]
    interval: Optional[tuple]
    verdict: str
    reason: str

    def to_dict(self) -> dict:
        """``{"expected", "measured", "interval", "verdict", "reason"}``, strict JSON (``None`` for missing)."""
        return {
            "expected": finite_or_none(self.expected),
            "measured": finite_or_none(self.measured),
            "interval": None if self.interval is None else [finite_or_none(x) for x in self.interval],
            "verdict": self.verdict,
            "reason": self.reason,
        }

    @property
    def ok(self) -> bool:
        """True for ``"consistent"``."""
        return self.verdict == CONSISTENT

    def __str__(self) -> str:
        return self.verdict


def order_verdict(
    expected: float,
    fit,
    *,
    regime: Optional[float] = None,
    diverged: bool = False,
    slack: float = 0.1,
    max_width: float = 1.0,
    tolerance: float = 0.2,
    resolved: Optional[Sequence[bool]] = None,
    regime_limit: float = REGIME_LIMIT,
) -> Verdict:
    r"""The verdict on a fitted order (see the module docstring for the rules).

    Args:
        expected: the theoretical order $R$.
        fit: an :class:`~modeq.compare.OrderFit` (or ``None`` when nothing could be fitted).
        regime: $h\lambda_{\max}/(1-\beta)^2$ at the largest step size (``None``: not applicable).
        diverged: a run of the study diverged.
        resolved: for Monte Carlo studies, per step size whether the bias is resolved (above ``resolve`` standard
            errors); ``None`` for deterministic studies.
    """
    measured = None if fit is None else finite_or_none(fit.order)
    ci = None
    if fit is not None and getattr(fit, "ci", None) is not None:
        lo, hi = (finite_or_none(x) for x in fit.ci)
        ci = None if lo is None or hi is None else (lo, hi)
    if diverged:
        return Verdict(expected, measured, ci, DIVERGED, "a run diverged (non-finite iterates): nothing to fit")
    if regime is not None and regime > regime_limit:
        return Verdict(expected, measured, ci, OUTSIDE_REGIME,
                       f"h*lambda_max/(1-beta)^2 = {regime:.3g} > {regime_limit:g} at the largest step size")
    if resolved is not None and sum(bool(r) for r in resolved) < 2:
        return Verdict(expected, measured, ci, MC_TOO_LARGE,
                       f"the bias is resolved above the Monte Carlo error at {sum(bool(r) for r in resolved)} of "
                       f"{len(resolved)} step sizes (need 2): use more paths or larger step sizes")
    if measured is None:
        return Verdict(expected, None, None, NOT_CONSISTENT, "no order could be fitted (zero or non-finite errors)")
    if ci is None:
        ok = abs(measured - expected) <= tolerance
        return Verdict(expected, measured, None, CONSISTENT if ok else NOT_CONSISTENT,
                       f"two step sizes, no interval: |fitted - R| = {abs(measured - expected):.3g} "
                       f"{'<=' if ok else '>'} {tolerance:g}")
    lo, hi = ci
    if hi - lo > max_width:
        return Verdict(expected, measured, ci, NOT_CONSISTENT,
                       f"the 95% interval [{lo:.3g}, {hi:.3g}] is wider than {max_width:g}: the errors do not follow "
                       "one power law")
    ok = lo - slack <= expected <= hi + slack
    return Verdict(expected, measured, ci, CONSISTENT if ok else NOT_CONSISTENT,
                   f"R = {expected:g} {'inside' if ok else 'outside'} the 95% interval [{lo:.3f}, {hi:.3f}] "
                   f"(+- {slack:g})")


def check_sweep(hs: Sequence[float], T: float, *, name: str = "h", min_steps: int = 2, rel: float = 1e-6) -> list:
    r"""Validate a sweep of step sizes over one horizon $T$ before anything is computed.

    Refuses (``ValueError`` naming ``name`` and ``T``): a step size that is not positive and finite, duplicates,
    horizons $N h$ ($N = \mathrm{round}(T/h)$) that differ between step sizes by more than ``rel`` (a fit across
    horizons compares different errors), and runs of fewer than ``min_steps`` steps. Returns the step sizes sorted
    from the largest.
    """
    values = []
    for x in hs:
        v = finite_or_none(x)
        if v is None or v <= 0:
            raise ValueError(f"{name}: every step size must be a positive finite number, got {x!r}")
        values.append(v)
    if not values:
        raise ValueError(f"{name}: give at least one step size")
    if len(set(values)) != len(values):
        dup = sorted({v for v in values if values.count(v) > 1})
        raise ValueError(f"{name}: duplicate step sizes {', '.join(format(v, 'g') for v in dup)}: each must appear once")
    values.sort(reverse=True)
    for v in values:
        n = round(T / v)
        if n < min_steps:
            raise ValueError(f"T: T = {T:g} is only {n} step(s) of {name} = {v:g} (need at least {min_steps}): "
                             f"use a longer T or smaller {name}")
        if abs(n * v - T) > rel * T:
            raise ValueError(f"T: T = {T:g} is not a multiple of {name} = {v:g} (round(T/{name}) * {name} = {n * v:g}): "
                             f"a fit across different horizons compares different errors; choose T a multiple of "
                             "every step size")
    return values
