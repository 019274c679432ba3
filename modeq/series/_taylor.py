r"""Taylor coefficients in the step size by nested forward-mode differentiation.

Everything in :mod:`modeq.series` is a function of the scalar step size $h$ at a fixed point $\theta$ (the iterates
$\Psi_h^k(\theta)$, the slow manifold $M_h(\theta)$, ...). Its Taylor coefficients at $h = 0$,
$c_k = \frac1{k!}\partial_h^k F(0)$, are computed by nesting ``jax.jvp`` along the scalar direction $\partial_h$.
This works through every JAX primitive (custom_jvp functions such as softplus, control flow, linear solves), unlike
``jax.experimental.jet`` (docs/theory/bea.md#taylor), and stays matrix-free: memory is $O(K d)$ for $K$ coefficients.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp


def taylor_coefficients(fun: Callable, order: int, h0=0.0) -> list:
    r"""$[F(h_0), F'(h_0), F''(h_0)/2!, \dots, F^{(K)}(h_0)/K!]$ for $F$ = ``fun`` (scalar -> pytree), $K$ = ``order``."""

    def with_derivatives(k: int) -> Callable:
        if k == 0:
            return lambda h: (fun(h),)
        lower = with_derivatives(k - 1)

        def fn(h):
            primal, tangent = jax.jvp(lower, (h,), (jnp.ones_like(h),))
            return primal + (tangent[-1],)

        return fn

    derivatives = with_derivatives(order)(jnp.asarray(h0, dtype=jnp.float64))
    return [jax.tree.map(lambda x, k=k: x / math.factorial(k), d) for k, d in enumerate(derivatives)]


def evaluate_polynomial(coefficients: list, h) -> jax.Array:
    r"""$\sum_k c_k h^k$ for ``coefficients`` $= [c_0, c_1, \dots]$ (arrays or pytrees of arrays), by Horner's rule."""
    out = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        out = jax.tree.map(lambda a, b: a * h + b, out, c)
    return out
