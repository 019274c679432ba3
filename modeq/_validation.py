"""Input checks shared by every public entry point.

Each check raises a ``ValueError`` (or ``TypeError``) whose message names the parameter and its valid range, so
the CLI can print it as one line.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _as_float(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def check_positive(name: str, value: Any) -> float:
    """``value > 0`` and finite."""
    x = _as_float(name, value)
    if not x > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return x


def check_nonnegative(name: str, value: Any) -> float:
    x = _as_float(name, value)
    if x < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return x


def check_unit_interval(name: str, value: Any) -> float:
    """A decay rate in ``[0, 1)``."""
    x = _as_float(name, value)
    if not 0.0 <= x < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return x


def check_int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_finite_array(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    return arr


def check_theta0(name: str, value: Any) -> np.ndarray:
    """An initial point: a non-empty flat vector of finite real numbers (returned as float64)."""
    try:
        arr = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        text = repr(value)
        raise ValueError(
            f"{name}: expected a list of numbers, got {text if len(text) <= 60 else text[:57] + '...'}"
        ) from None
    if arr.size == 0:
        raise ValueError(f"{name}: empty; give at least one number (the problem needs dimension >= 1)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} must contain only finite values; entry {int(bad[0])} is {float(arr[bad[0]])}")
    return arr


# Bounded work: the largest orders and sizes that finish in seconds to a minute on a laptop CPU; beyond them the
# cost (given in the message) grows exponentially or runs out of memory, so we refuse before starting.
MAX_FLOW_ORDER = 8
"""Largest ``R`` of ``modified:R`` / ``memoryless:R``: the ``direct`` truncation costs $2^{R-1} + R$ gradients per
field evaluation and the ``taylor`` graph grows like $3^R$."""

MAX_DIM = 2_000_000
"""Largest number of parameters of a built-in problem (16 MB per float64 vector; a run stores steps x d of them)."""

MAX_DENSE_DIM = 4_000
"""Largest ``d`` of a problem built from a dense ``d x d`` matrix (128 MB, O(d^3) to factor)."""


def rooted_trees_up_to(order: int) -> int:
    """Number of rooted trees with at most ``order`` nodes (OEIS A000081, summed): the terms of an order-``order``
    B-series, i.e. the lines ``modeq coefficients`` prints."""
    a = [0, 1]
    for n in range(1, order):
        s = 0
        for k in range(1, n + 1):
            s += sum(d * a[d] for d in range(1, k + 1) if k % d == 0) * a[n - k + 1]
        a.append(s // n)
    return sum(a[1 : order + 1])


def check_flow_order(name: str, value: Any, limit: int = MAX_FLOW_ORDER) -> int:
    """The order ``R`` of a modified field or memoryless map: an integer in ``[1, limit]``."""
    r = check_int_at_least(name, value, 1)
    if r > limit:
        raise ValueError(
            f"{name} must be <= {limit}, got {r}: order R costs 2^(R-1) + R = {2 ** (r - 1) + r:.3g} gradients per "
            f"field evaluation (truncation direct) and a traced graph growing like 3^R (taylor)"
        )
    return r


def check_size(name: str, value: Any, *, low: int = 1, limit: int = MAX_DIM, per_unit_bytes: float = 8.0,
               what: str = "parameters", quadratic: bool = False) -> int:
    """A problem size: an integer in ``[low, limit]``; the message gives the memory it would take
    (``per_unit_bytes * n``, or ``per_unit_bytes * n**2`` with ``quadratic=True``)."""
    n = check_int_at_least(name, value, low)
    if n > limit:
        cost = (lambda k: per_unit_bytes * float(k) ** (2 if quadratic else 1))
        raise ValueError(
            f"{name} must be <= {limit:,}, got {n:.4g}: {what} would take {_bytes(cost(n))} "
            f"(limit {_bytes(cost(limit))})"
        )
    return n


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover
