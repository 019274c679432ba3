"""Turn ``--optimizer NAME --param k=v`` into an :class:`~modeq.optimizers.Optimizer` and a step size."""

from __future__ import annotations

import inspect
from typing import Sequence

from .optimizers._catalog import OPTIMIZERS

STEP_SIZE_NAMES = ("h", "learning_rate", "lr", "eta")


def _value(text: str):
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_params(items: Sequence[str]) -> dict:
    """``["beta=0.9", "h=0.01"]`` -> ``{"beta": 0.9, "h": 0.01}`` (numbers, booleans or strings)."""
    out = {}
    for item in items or ():
        for part in item.split(","):
            if not part.strip():
                continue
            key, eq, val = part.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"param: expected key=value, got {part!r}")
            out[key.strip()] = _value(val)
    return out


def build_optimizer(name: str, params: dict, *, default_h: float | None = None):
    """Build the optimizer ``name`` from ``params``; returns ``(optimizer, h)``.

    ``h`` (aliases ``learning_rate``, ``lr``, ``eta``) is the step size; every other key must be an argument of the
    optimizer's constructor (``beta`` for HB/Nesterov/SGDM, optax's names ``b1``, ``b2``, ``eps``, ``eps_root``,
    ``weight_decay``, ``decay`` for the rest).
    """
    key = name.strip().lower().replace("-", "_")
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
    params = dict(params)
    h = default_h
    for alias in STEP_SIZE_NAMES:
        if alias in params:
            h = params.pop(alias)
    ctor = OPTIMIZERS[key]
    sig = inspect.signature(ctor)
    accepts_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    if not accepts_kwargs:
        valid = [p for p in sig.parameters]
        unknown = [k for k in params if k not in valid]
        if unknown:
            raise ValueError(
                f"param: unknown parameter {unknown[0]!r} for {key}; valid: h (learning_rate), {', '.join(valid)}"
            )
    return ctor(**params), h
