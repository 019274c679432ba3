"""The :class:`Problem` record: a loss, its data, a default start and what is known about its minimizers."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

Loss = Callable[[Float[Array, " d"]], Float[Array, ""]]


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: oracles holding a Problem are static jit arguments
class Problem:
    r"""A test problem for optimizers and their modified equations.

    Attributes:
        name: registry name.
        loss: $L(\theta)$ on a flat float64 vector (a plain JAX callable).
        theta0: default initial point.
        example_loss: $\ell_i(\theta)$, with $L = \frac1n\sum_i \ell_i$ when the loss is a finite sum
            (``example_loss(theta, i)``; ``i`` may be a traced integer), else ``None``.
        n_examples: $n$ for finite sums, else 0.
        model: for squared losses $\ell_i = \frac12 (f(\theta, x_i) - y_i)^2$: ``model(theta, i) -> f_i``
            (used by the label-noise oracle), else ``None``.
        targets: the labels $y_i$ of a squared loss.
        manifold: $c(\theta)$ whose zero set is the manifold $\Gamma$ of minimizers, where known.
        conserved: a quantity conserved by gradient flow, where known (e.g. $w_1^2 - w_2^2$ for the product model).
        description: one line for ``modeq problems``.
    """

    name: str
    loss: Loss
    theta0: Float[Array, " d"]
    example_loss: Optional[Callable] = None
    n_examples: int = 0
    model: Optional[Callable] = None
    targets: Optional[Float[Array, " n"]] = None
    manifold: Optional[Callable] = None
    conserved: Optional[Callable] = None
    description: str = ""

    @property
    def dim(self) -> int:
        """$d$, the number of parameters (length of ``theta0``)."""
        return int(self.theta0.shape[0])

    @property
    def is_finite_sum(self) -> bool:
        r"""Whether $L = \frac1n\sum_i\ell_i$ with per-example losses (needed by mini-batch oracles)."""
        return self.example_loss is not None and self.n_examples > 0

    def batch_loss(self, theta, indices):
        r"""Mean example loss over ``indices``: $\frac1{|B|}\sum_{i\in B}\ell_i(\theta)$."""
        if not self.is_finite_sum:
            raise ValueError(f"problem {self.name!r} is not a finite sum: it has no per-example losses")
        return jnp.mean(jax.vmap(lambda i: self.example_loss(theta, i))(indices))
