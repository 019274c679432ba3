"""Turn ``--optimizer NAME --param k=v`` into an :class:`~modeq.optimizers.Optimizer` and a step size."""

from __future__ import annotations

import inspect
from typing import Sequence

from .optimizers._catalog import OPTIMIZERS

STEP_SIZE_NAMES = ("h", "learning_rate", "lr", "eta")


def _value(option: str, key: str, text: str):
    low = text.strip().lower()
    if not low:
        raise ValueError(f"{option}: {key!r} has no value; write {key}=VALUE")
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_params(items: Sequence[str], *, option: str = "param") -> dict:
    """``["beta=0.9", "h=0.01"]`` -> ``{"beta": 0.9, "h": 0.01}`` (numbers, booleans or strings).

    Each item may hold several comma-separated ``key=value`` pairs. A key given twice (``beta=0.5`` and
    ``beta=0.7``) is an error naming both, never "the last one wins"; so is an empty value (``sigma=``).
    ``option`` names the command-line option in the messages (``param``, ``noise-param``).
    """
    out: dict = {}
    raw: dict = {}
    for item in items or ():
        for part in str(item).split(","):
            if not part.strip():
                continue
            key, eq, val = part.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ValueError(f"{option}: expected key=value, got {part.strip()!r}")
            if key in out:
                raise ValueError(f"{option}: {key!r} given twice ({key}={raw[key]} and {key}={val.strip()}); give it once")
            out[key] = _value(option, key, val)
            raw[key] = val.strip()
    return out


def build_optimizer(name: str, params: dict, *, default_h: float | None = None):
    """Build the optimizer ``name`` from ``params``; returns ``(optimizer, h)``.

    ``h`` (aliases ``learning_rate``, ``lr``, ``eta``) is the step size; every other key must be an argument of the
    optimizer's constructor (``beta`` for HB/Nesterov/SGDM, optax's names ``b1``, ``b2``, ``eps``, ``eps_root``,
    ``weight_decay``, ``decay`` for the rest). Two aliases of the step size at once (``h`` and ``lr``) are an error
    naming both. With ``default_h=None`` the caller takes its step sizes elsewhere (``--h``, ``--eta``), so a step size
    among ``params`` is an error too, never silently ignored.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer: expected a name, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
    params = dict(params)
    given = [alias for alias in STEP_SIZE_NAMES if alias in params]
    if len(given) > 1:
        raise ValueError(f"param: {given[0]!r} and {given[1]!r} both set the step size; give one of them")
    if given and default_h is None:
        raise ValueError(
            f"param: {given[0]!r} is not a hyperparameter here: this command takes its step sizes from --h "
            f"(or --eta); remove --param {given[0]}"
        )
    h = params.pop(given[0]) if given else default_h
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
