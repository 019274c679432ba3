r"""Ensembles of SGD/SGDM end points at small learning rates, for comparisons with SDE limits.

* :func:`beta_for`: the momentum schedule of Wang et al. (arXiv 2307.15196, Def. 4.1) scaled by $\eta$ with index
  $\alpha$: $1-\beta = c\,\eta^\alpha$ ($\alpha = 0$: fixed $\beta$; the slow-SDE limit is shared with SGD for
  $\alpha\in[0,2)$, Thm. 5.5; the $O(1/\eta)$-horizon SDE is shared for $\alpha < 1$, Thm. 4.5).
* :func:`endpoints`: ``paths`` independent runs of ``simulate`` (vmapped over keys), keeping only the last state
  (``save_every = steps``: memory O(paths d) for the $T/\eta^2$-step runs of slow-SDE studies). A run that diverges is
  reported (``FloatingPointError`` naming the path count), never returned as NaN.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from .._validation import check_int_at_least, check_positive
from ..optimizers import gd, sgdm, simulate


def beta_for(eta: float, alpha: float, scale: float = 1.0) -> float:
    r"""$\beta = 1 - c\,\eta^\alpha$ (Wang et al. 2023, Def. 4.1). Raises ``ValueError`` unless $0 \le \beta < 1$."""
    eta = check_positive("eta", eta)
    scale = check_positive("scale", scale)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    beta = 1.0 - scale * eta**alpha
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"alpha/scale: 1 - beta = {scale:g} * eta^{alpha:g} = {1 - beta:.4g} must lie in (0, 1]")
    return beta


def optimizer_for(eta: float, *, beta: Optional[float] = None, alpha: Optional[float] = None, scale: float = 1.0):
    """SGD (``beta`` and ``alpha`` both None), normalized SGDM with fixed ``beta``, or with $1-\\beta = c\\eta^\\alpha$."""
    if beta is not None and alpha is not None:
        raise ValueError("give beta (fixed momentum) or alpha (1 - beta = scale * eta^alpha), not both")
    if alpha is not None:
        return sgdm(beta_for(eta, alpha, scale))
    return gd() if beta is None else sgdm(beta)


def endpoints(optimizer, loss: Callable, theta0, steps: int, *, h: float, oracle, paths: int, key,
              m0="zero") -> jax.Array:
    r"""End points $x_N$ (shape ``(paths, d)``) of ``paths`` independent runs with keys ``split(key, paths)``."""
    steps = check_int_at_least("steps", steps, 1)
    paths = check_int_at_least("paths", paths, 2)
    h = check_positive("eta", h)
    keys = jax.random.split(key, paths)
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)

    def one(k):
        tr = simulate(optimizer, loss, theta0, steps, h=h, oracle=oracle, key=k, m0=m0, record=False,
                      save_every=steps)
        return tr.theta[-1], tr.diverged_at

    ends, div = jax.jit(jax.vmap(one))(keys)
    bad = int(jnp.sum(div >= 0))
    if bad:
        raise FloatingPointError(f"{getattr(optimizer, 'name', 'optimizer')}: {bad} of {paths} runs diverged at "
                                 f"eta = {h:g} (first at step {int(jnp.min(jnp.where(div >= 0, div, steps)))})")
    return ends
