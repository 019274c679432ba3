"""Resolve a loss given by name: a built-in problem (``product``, ``mlp:d=2000``) or a user's function
(``path/to/file.py:function`` or ``package.module:function``)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

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
    """Evaluate ``loss(theta0)`` once and check it returns a finite real scalar."""
    try:
        value = jax.eval_shape(loss, jnp.asarray(theta0))
    except Exception as exc:
        raise ValueError(
            f"{name}: evaluating it at theta0 (shape {tuple(np.shape(theta0))}) failed: {type(exc).__name__}: {exc}"
        ) from None
    if getattr(value, "shape", None) != ():
        raise ValueError(f"{name} must return a scalar, got shape {getattr(value, 'shape', None)}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{name} must return a real floating-point scalar, got dtype {value.dtype}")


def resolve_problem(spec: str, theta0: Optional[Any] = None) -> Problem:
    """Build a :class:`Problem` from a spec string.

    * ``NAME`` or ``NAME:key=value,key=value`` for a built-in problem (see ``modeq problems``);
    * ``path/to/file.py:function`` or ``package.module:function`` for a user's loss ``theta -> scalar``. Its initial
      point comes from ``theta0``, else from a module attribute ``THETA0``.

    ``theta0`` (a sequence of floats) overrides the default initial point; its length must equal the dimension.
    """
    head, _, rest = spec.partition(":")
    if head in PROBLEMS:
        kwargs = {}
        if rest:
            for item in rest.split(","):
                key, eq, val = item.partition("=")
                if not eq:
                    raise ValueError(f"loss: options of {head!r} must be key=value, got {item!r}")
                kwargs[key.strip()] = _parse_value(val.strip())
        try:
            problem = PROBLEMS[head](**kwargs)
        except TypeError as exc:
            raise ValueError(f"loss: bad option for problem {head!r}: {exc}") from None
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
        start = jnp.asarray(np.asarray(default if theta0 is None else theta0, dtype=float).ravel())
        problem = Problem(name=spec, loss=fn, theta0=start, description=f"user loss {spec}")
    if theta0 is not None:
        start = np.asarray(theta0, dtype=float).ravel()
        if start.shape != (problem.dim,):
            raise ValueError(f"theta0 must have {problem.dim} entries for loss {spec!r}, got {start.size}")
        if not np.all(np.isfinite(start)):
            raise ValueError("theta0 must contain only finite values")
        problem = Problem(**{**problem.__dict__, "theta0": jnp.asarray(start)})
    check_scalar_loss(problem.loss, problem.theta0)
    return problem
