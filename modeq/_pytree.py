"""Losses on pytrees: every public builder flattens ``(loss, theta0)`` the way :func:`modeq.optimizers.simulate`
does, so a loss on a model's parameter pytree (an equinox module's arrays, a flax ``params`` dict) works as it is.

The flat vector is ``jax.flatten_util.ravel_pytree(theta0)[0]`` in float64; the flat loss is
``theta -> loss(unravel(theta))``. A loss whose ``theta0`` is already a flat 1-D array is used unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def _is_flat(theta) -> bool:
    return isinstance(theta, (jax.Array, np.ndarray)) and np.ndim(theta) == 1


def flatten_loss(loss: Callable, theta0: Any, *, name: str = "theta0"):
    """``(flat_loss, flat0, unravel)`` for a loss on a pytree ``theta0``; identity wrapping for flat vectors.

    Raises ``ValueError`` naming ``name`` when ``theta0`` has no array leaves (dimension 0) or a non-numeric leaf.
    """
    if not callable(loss):
        raise TypeError(f"loss must be callable, got {type(loss).__name__}")
    if _is_flat(theta0):
        flat0 = jnp.asarray(theta0, dtype=jnp.float64)
        if flat0.size == 0:
            raise ValueError(f"{name}: empty; the problem needs dimension >= 1")
        return loss, flat0, (lambda v: v)
    try:
        flat0, unravel = ravel_pytree(theta0)
    except Exception as exc:
        raise TypeError(f"{name}: expected an array or a pytree of arrays, got {type(theta0).__name__}: {exc}") from None
    if flat0.size == 0:
        raise ValueError(f"{name}: empty (no array leaves); the problem needs dimension >= 1")
    if not jnp.issubdtype(flat0.dtype, jnp.number):
        raise TypeError(f"{name}: expected numeric leaves, got dtype {flat0.dtype}")
    flat0 = jnp.asarray(flat0, dtype=jnp.float64)

    def flat_loss(theta):
        return loss(unravel(theta))

    return flat_loss, flat0, unravel


def on_pytrees(build: Callable, loss: Callable) -> Callable:
    """``fn(theta, *args)`` from ``build(flat_loss) -> fn_flat(flat_theta, *args)`` that accepts a flat vector (used
    as is, ``build(loss)`` made once) or any pytree of arrays (flattened, ``build`` applied to the flattened loss, the
    result unflattened to the same structure). ``fn_flat`` must return a flat vector shaped like its input."""
    flat_fn = build(loss)

    def fn(theta, *args):
        if _is_flat(theta):
            return flat_fn(theta, *args)
        flat, unravel = ravel_pytree(theta)
        flat = jnp.asarray(flat, dtype=jnp.float64)
        return unravel(build(lambda v: loss(unravel(v)))(flat, *args))

    return fn


def pytree_method(*, unravel: bool = False):
    """Decorate a method ``(self, theta) -> out`` of an object built on a flat-vector loss so that it accepts a pytree
    ``theta``: the object is rebuilt on the flattened loss by ``self.rebuild(flat_loss)`` (``None``: no pytree support)
    and called on the flat vector; ``unravel=True`` maps a flat-vector result back to the pytree structure."""
    import functools

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, theta, *args, **kwargs):
            rebuild = getattr(self, "rebuild", None)
            if rebuild is None or _is_flat(theta) or isinstance(theta, (float, int)):
                return method(self, theta, *args, **kwargs)
            flat, unravel_fn = ravel_pytree(theta)
            flat_self = rebuild(lambda v: self.loss(unravel_fn(v)))
            out = method(flat_self, jnp.asarray(flat, dtype=jnp.float64), *args, **kwargs)
            return unravel_fn(out) if unravel else out

        return wrapper

    return decorate


def with_pytrees(builder: Callable) -> Callable:
    """Decorate a builder ``(optimizer, loss, **options) -> obj`` whose result has a ``rebuild`` field: sets it to
    ``flat_loss -> builder(optimizer, flat_loss, **options)`` so that :func:`pytree_method` methods take pytrees."""
    import dataclasses
    import functools

    @functools.wraps(builder)
    def wrapper(optimizer, loss, *args, **kwargs):
        obj = builder(optimizer, loss, *args, **kwargs)
        return dataclasses.replace(obj, rebuild=lambda flat_loss: builder(optimizer, flat_loss, *args, **kwargs))

    return wrapper
