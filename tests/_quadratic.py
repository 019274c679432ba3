"""A quadratic with a prescribed spectrum, shared by the tests of the exact starts and the principal flow."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def spd_quadratic(eigenvalues, seed=3):
    """L = 1/2 t.A t - b.t with A = Q diag(eigenvalues) Q^T (Q a random rotation): (loss, A, b)."""
    d = len(eigenvalues)
    q = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]
    a = q @ np.diag(eigenvalues) @ q.T
    b = np.random.default_rng(seed + 1).standard_normal(d)
    aj, bj = jnp.asarray(a), jnp.asarray(b)
    return (lambda t: 0.5 * t @ (aj @ t) - bj @ t), a, b
