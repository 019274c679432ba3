"""Resolve a loss given by name: a built-in problem (``product``, ``mlp:d=2000``) or a user's function
(``path/to/file.py:function`` or ``package.module:function``)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_theta0
from ._catalog import PROBLEMS
from ._problem import Problem


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _load_attr(spec: str):
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"loss: expected a problem name or 'file.py:function' / 'module:function', got {spec!r}")
    if target.endswith(".py") or os.sep in target:
        if not os.path.isfile(target):
            raise ValueError(f"loss: file {target!r} does not exist")
        name = "modeq_user_" + os.path.splitext(os.path.basename(target))[0]
        module_spec = importlib.util.spec_from_file_location(name, target)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ValueError(f"loss: importing {target!r} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ValueError(f"loss: cannot import module {target!r}: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, attr):
        raise ValueError(f"loss: {target!r} has no attribute {attr!r}")
    return module, getattr(module, attr)


def check_scalar_loss(loss, theta0, name: str = "loss") -> None:
    """Evaluate ``loss(theta0)`` and its gradient once: both must be finite, the value a real scalar.

    ``theta0`` may be a flat vector or a pytree of arrays (flattened with ``jax.flatten_util.ravel_pytree``, as
    :func:`modeq.optimizers.simulate` does). Raises ``ValueError``/``TypeError`` naming ``name``.
    """
    from .._pytree import flatten_loss

    try:
        flat_loss, flat0, _ = flatten_loss(loss, theta0, name="theta0")
        value = jax.eval_shape(flat_loss, flat0)
    except (ValueError, TypeError) as exc:
        if str(exc).startswith(("theta0", name)):
            raise
        raise ValueError(
            f"{name}: evaluating it at theta0 (shape {tuple(np.shape(theta0))}) failed: {type(exc).__name__}: {exc}"
        ) from None
    except Exception as exc:
        raise ValueError(
            f"{name}: evaluating it at theta0 (shape {tuple(np.shape(theta0))}) failed: {type(exc).__name__}: {exc}"
        ) from None
    if getattr(value, "shape", None) != ():
        raise ValueError(f"{name} must return a scalar, got shape {getattr(value, 'shape', None)}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{name} must return a real floating-point scalar, got dtype {value.dtype}")
    try:
        v, g = jax.value_and_grad(flat_loss)(flat0)
    except Exception as exc:
        raise ValueError(f"{name}: its gradient at theta0 failed: {type(exc).__name__}: {exc}") from None
    if not np.isfinite(float(v)):
        raise ValueError(f"{name}: its value at theta0 is {float(v)}, not finite; choose another theta0 or loss")
    bad = np.flatnonzero(~np.isfinite(np.asarray(g)))
    if bad.size:
        raise ValueError(
            f"{name}: its gradient at theta0 is not finite ({bad.size} of {g.size} entries, first: entry "
            f"{int(bad[0])} = {float(np.asarray(g)[bad[0]])}); choose another theta0 or loss"
        )


def problem_options(name: str) -> dict:
    """The options of the built-in problem ``name`` (its keyword arguments) with their defaults."""
    sig = inspect.signature(PROBLEMS[name])
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def _file_theta0(spec: str, default: Any) -> np.ndarray:
    try:
        return check_theta0("theta0", default)
    except ValueError as exc:
        raise ValueError(f"theta0: the THETA0 of {spec!r}: {str(exc).removeprefix('theta0').lstrip(': ')}") from None


def resolve_problem(spec: str, theta0: Optional[Any] = None) -> Problem:
    """Build a :class:`Problem` from a spec string.

    * ``NAME`` or ``NAME:key=value,key=value`` for a built-in problem (see ``modeq problems``);
    * ``path/to/file.py:function`` or ``package.module:function`` for a user's loss ``theta -> scalar``. Its initial
      point comes from ``theta0``, else from a module attribute ``THETA0``.

    ``theta0`` (a sequence of floats) overrides the default initial point; its length must equal the dimension.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"loss: expected a problem name or 'file.py:function', got {spec!r}")
    if theta0 is not None:
        theta0 = check_theta0("theta0", theta0)
    head, _, rest = spec.partition(":")
    if head in PROBLEMS:
        kwargs = {}
        options = problem_options(head)
        if rest:
            for item in rest.split(","):
                key, eq, val = item.partition("=")
                key = key.strip()
                if not eq or not key:
                    raise ValueError(f"loss: options of {head!r} must be key=value, got {item!r}")
                if key not in options:
                    valid = ", ".join(f"{k}={v}" for k, v in options.items()) or "none"
                    raise ValueError(f"loss: unknown option {key!r} for problem {head!r}; valid: {valid}")
                if key in kwargs:
                    raise ValueError(f"loss: option {key!r} of {head!r} given twice")
                kwargs[key] = _parse_value(val.strip())
        try:
            problem = PROBLEMS[head](**kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"loss {head}: {exc}") from None
    else:
        if ":" not in spec:
            raise ValueError(
                f"loss: unknown problem {spec!r}; valid: {', '.join(sorted(PROBLEMS))}, or 'file.py:function'"
            )
        module, fn = _load_attr(spec)
        if not callable(fn):
            raise TypeError(f"loss: {spec!r} is not callable")
        default = getattr(module, "THETA0", None)
        if theta0 is None and default is None:
            raise ValueError(f"theta0: the loss {spec!r} has no THETA0; pass --theta0 \"a,b,...\"")
        start = theta0 if theta0 is not None else _file_theta0(spec, default)
        problem = Problem(name=spec, loss=fn, theta0=jnp.asarray(start), description=f"user loss {spec}")
    if theta0 is not None:
        if theta0.shape != (problem.dim,):
            raise ValueError(f"theta0 must have {problem.dim} entries for loss {spec!r}, got {theta0.size}")
        problem = Problem(**{**problem.__dict__, "theta0": jnp.asarray(theta0)})
    check_scalar_loss(problem.loss, problem.theta0)
    return problem
