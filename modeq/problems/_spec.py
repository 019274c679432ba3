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
        v, g = jax.jit(jax.value_and_grad(flat_loss))(flat0)  # one compiled call, not op by op
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


LEAST_SQUARES_HELP = (
    "a least-squares model for label noise: the loss file also defines RESIDUALS(theta) -> r (n residuals), or "
    "PREDICT(theta) -> f (n predictions) and TARGETS (n labels), r = f - y; the loss must be "
    "L = sum_i r_i^2 / (2n) = mean(r^2)/2")


def _least_squares_parts(module, spec: str, loss, theta0) -> dict:
    r"""The squared-loss structure of a user's loss file, for label noise: ``model``, ``targets``, ``example_loss``,
    ``n_examples`` of :class:`Problem`, or ``{}`` when the file defines neither ``RESIDUALS`` nor ``PREDICT``.

    Convention (the built-in problems' one, as in Li, Wang & Arora, arXiv 2110.06914): $L(\theta) =
    \frac1{2n}\sum_i r_i(\theta)^2$ with $r = $ ``RESIDUALS(theta)``, or $r = $ ``PREDICT(theta) - TARGETS``. The
    loss is checked against it at ``theta0`` (relative 1e-9); raises ``ValueError`` naming ``RESIDUALS``/``PREDICT``
    when the parts are malformed or disagree with the loss."""
    res, pred, targ = (getattr(module, k, None) for k in ("RESIDUALS", "PREDICT", "TARGETS"))
    if res is None and pred is None:
        if targ is not None:
            raise ValueError(f"loss: {spec!r} defines TARGETS but no PREDICT(theta); {LEAST_SQUARES_HELP}")
        return {}
    if res is not None and pred is not None:
        raise ValueError(f"loss: {spec!r} defines both RESIDUALS and PREDICT: give one; {LEAST_SQUARES_HELP}")
    name = "RESIDUALS" if res is not None else "PREDICT"
    if not callable(res if res is not None else pred):
        raise TypeError(f"loss: {name} of {spec!r} must be a function theta -> array of shape (n,)")
    if pred is not None:
        if targ is None:
            raise ValueError(f"loss: {spec!r} defines PREDICT but no TARGETS; {LEAST_SQUARES_HELP}")
        y = jnp.asarray(np.asarray(targ, dtype=float))

        def res(theta, _p=pred, _y=y):
            return jnp.asarray(_p(theta)) - _y
    else:
        def res(theta, _r=res):
            return jnp.asarray(_r(theta))
    try:
        r0 = np.asarray(res(theta0), dtype=float)
    except Exception as exc:
        raise ValueError(f"loss: {name} of {spec!r} failed at theta0: {type(exc).__name__}: {exc}") from None
    if r0.ndim != 1 or r0.size == 0 or (pred is not None and r0.shape != y.shape):
        raise ValueError(f"loss: {name} of {spec!r} must return a 1-D array (one entry per example"
                         f"{', as long as TARGETS' if pred is not None else ''}), got shape {r0.shape}")
    n = int(r0.size)
    try:
        got = float(loss(theta0))
    except Exception:  # check_scalar_loss reports a loss that fails at theta0
        return {}
    want = 0.5 * float(np.mean(r0**2))
    if not abs(got - want) <= 1e-9 * max(abs(want), abs(got)) + 1e-300:
        raise ValueError(f"loss: {spec!r} at theta0 is {got:.10g}, but its {name} give mean(r^2)/2 = {want:.10g}; "
                         f"{LEAST_SQUARES_HELP}")

    def model(theta, i):  # f_i (PREDICT) or r_i (RESIDUALS, targets 0): label noise needs only grad f_i = grad r_i
        return (jnp.asarray(pred(theta)) if pred is not None else res(theta))[i]

    def example_loss(theta, i):
        return 0.5 * res(theta)[i] ** 2

    return {"model": model, "targets": y if pred is not None else jnp.zeros(n), "example_loss": example_loss,
            "n_examples": n}


def least_squares_problem(theta0, *, residuals=None, predict=None, targets=None,
                          name: str = "least_squares") -> Problem:
    r"""A squared-loss :class:`Problem` from a user's model, for label noise and mini-batches in Python: residuals
    $r(\theta)\in\mathbb R^n$ (``residuals``), or predictions $f(\theta)$ (``predict``) and ``targets`` $y$,
    $r = f - y$; loss $L = \frac1{2n}\sum_i r_i^2$, the convention of the built-in problems and of the
    ``RESIDUALS``/``PREDICT`` + ``TARGETS`` attributes of a ``--loss`` file. Raises ``ValueError`` as those do."""
    import types

    theta0 = jnp.asarray(check_theta0("theta0", theta0))
    attrs = types.SimpleNamespace(RESIDUALS=residuals, PREDICT=predict, TARGETS=targets)
    if residuals is not None:
        def loss(theta):
            return 0.5 * jnp.mean(jnp.asarray(residuals(theta)) ** 2)
    elif predict is not None and targets is not None:
        y = jnp.asarray(np.asarray(targets, dtype=float))

        def loss(theta):
            return 0.5 * jnp.mean((jnp.asarray(predict(theta)) - y) ** 2)
    else:
        raise ValueError("residuals: give residuals(theta), or predict(theta) and targets")
    parts = _least_squares_parts(attrs, name, loss, theta0)
    check_scalar_loss(loss, theta0)
    return Problem(name=name, loss=loss, theta0=theta0, description=f"least squares {name}", **parts)


def resolve_problem(spec: str, theta0: Optional[Any] = None) -> Problem:
    """Build a :class:`Problem` from a spec string.

    * ``NAME`` or ``NAME:key=value,key=value`` for a built-in problem (see ``modeq problems``);
    * ``path/to/file.py:function`` or ``package.module:function`` for a user's loss ``theta -> scalar``. Its initial
      point comes from ``theta0``, else from a module attribute ``THETA0``. A file that also defines
      ``RESIDUALS(theta)`` (or ``PREDICT(theta)`` and ``TARGETS``) with L = mean(r^2)/2 gives a
      squared-loss problem (``model``, ``n_examples``) that label noise and mini-batches accept.

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
        problem = Problem(name=spec, loss=fn, theta0=jnp.asarray(start), description=f"user loss {spec}",
                          **_least_squares_parts(module, spec, fn, jnp.asarray(start)))
    if theta0 is not None:
        if theta0.shape != (problem.dim,):
            raise ValueError(f"theta0 must have {problem.dim} entries for loss {spec!r}, got {theta0.size}")
        problem = Problem(**{**problem.__dict__, "theta0": jnp.asarray(theta0)})
    check_scalar_loss(problem.loss, problem.theta0)
    return problem
