r"""Gradient oracles: pure functions ``oracle(theta, key, n) -> g`` keyed by ``jax.random`` keys.

``key`` is the key of the whole run (the simulator passes the same key at every step) and ``n`` the step index: each
oracle derives its per-step randomness by ``jax.random.fold_in``, so the same key gives the same run, any step can be
recomputed on its own, and oracles are jit- and vmap-friendly (vmap over keys gives independent runs).

Noise models follow the NGOS of Malladi et al. (2022) / Wang et al. (arXiv 2307.15196, Def. 3.1):
$g = \nabla L(\theta) + \sigma z$, $\mathbb E z = 0$, $\mathrm{Cov}\,z = \Sigma(\theta)$ (docs/theory/sme.md#ngos).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from .._validation import check_int_at_least, check_nonnegative, check_positive
from ._problem import Problem


class Oracle:
    """Base class. Subclasses implement ``__call__(theta, key, n)`` and, where known, ``covariance(theta)``
    (the covariance of $g$ itself, i.e. $\\sigma^2\\Sigma(\\theta)$ in NGOS notation)."""

    stochastic: bool = True

    def __call__(self, theta, key, n):  # pragma: no cover - interface
        raise NotImplementedError

    def covariance(self, theta):
        r"""$\mathrm{Cov}[g \mid \theta]$, the $(d, d)$ covariance of one stochastic gradient at ``theta`` (zero
        for full batch); ``NotImplementedError`` where no closed form is known."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form covariance")


@dataclasses.dataclass(frozen=True)
class FullBatch(Oracle):
    r"""The exact gradient $g = \nabla L(\theta)$ (no noise, zero covariance): the deterministic oracle that
    ``simulate`` uses by default."""

    loss: Callable
    stochastic: bool = False

    def __call__(self, theta, key, n):
        return jax.grad(self.loss)(theta)

    def covariance(self, theta):
        return jnp.zeros((theta.shape[0], theta.shape[0]))


@dataclasses.dataclass(frozen=True)
class MiniBatch(Oracle):
    r"""Mini-batches sampled without replacement (random reshuffling).

    Epoch $e$ uses the permutation ``jax.random.permutation(fold_in(key, e), n)``; step $k$ of the epoch uses its
    $k$-th block of ``batch_size`` indices. With ``drop_last`` (the default) an epoch has $\lfloor n/B\rfloor$ steps,
    so every example is used exactly once per epoch when $B$ divides $n$.
    Covariance (one step, marginal): $\frac{n-B}{B(n-1)}\cdot\frac1n\sum_i(\nabla\ell_i-\nabla L)(\nabla\ell_i-\nabla L)^\top$.
    """

    problem: Problem
    batch_size: int

    def __post_init__(self):
        if not self.problem.is_finite_sum:
            raise ValueError(f"problem {self.problem.name!r} has no per-example losses: mini-batches need a finite sum")
        check_int_at_least("batch_size", self.batch_size, 1)
        if self.batch_size > self.problem.n_examples:
            raise ValueError(
                f"batch_size must be in [1, {self.problem.n_examples}] (the number of examples), got {self.batch_size}"
            )

    @property
    def steps_per_epoch(self) -> int:
        r"""$\lfloor n/B\rfloor$: the number of steps in one epoch (one permutation of the examples)."""
        return self.problem.n_examples // self.batch_size

    def indices(self, key, n):
        """Indices of the mini-batch used at step ``n``."""
        epoch, k = jnp.divmod(n, self.steps_per_epoch)
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), self.problem.n_examples)
        return jax.lax.dynamic_slice(perm, (k * self.batch_size,), (self.batch_size,))

    def __call__(self, theta, key, n):
        idx = self.indices(key, n)
        return jax.grad(self.problem.batch_loss)(theta, idx)

    def per_example_gradients(self, theta):
        r"""$(\nabla\ell_1(\theta), \dots, \nabla\ell_n(\theta))$ stacked as an $(n, d)$ array."""
        idx = jnp.arange(self.problem.n_examples)
        return jax.vmap(lambda i: jax.grad(self.problem.example_loss)(theta, i))(idx)

    def covariance(self, theta):
        g = self.per_example_gradients(theta)
        c = g - g.mean(axis=0)
        n, b = self.problem.n_examples, self.batch_size
        factor = (n - b) / (b * (n - 1)) if n > 1 else 0.0
        return factor * (c.T @ c) / n


@dataclasses.dataclass(frozen=True)
class GaussianNGOS(Oracle):
    r"""Gaussian NGOS: $g = \nabla L(\theta) + \sigma\,\Sigma(\theta)^{1/2} z$, $z\sim N(0, I)$.

    Give ``covariance_sqrt(theta)`` (a matrix $S$ with $SS^\top = \Sigma$) or ``covariance_fn(theta)`` (then
    $\Sigma^{1/2}$ is taken by a symmetric eigendecomposition, clipped at zero). Default: $\Sigma = I$.
    """

    loss: Callable
    sigma: float = 1.0
    covariance_fn: Optional[Callable] = None
    covariance_sqrt: Optional[Callable] = None

    def __post_init__(self):
        check_nonnegative("sigma", self.sigma)

    def sqrt(self, theta):
        r"""A square root $S$ of $\Sigma(\theta)$, $SS^\top = \Sigma$: ``covariance_sqrt(theta)`` if given, else the
        symmetric square root of ``covariance_fn(theta)`` (eigenvalues clipped at 0), else $I$."""
        if self.covariance_sqrt is not None:
            return self.covariance_sqrt(theta)
        if self.covariance_fn is not None:
            w, v = jnp.linalg.eigh(self.covariance_fn(theta))
            return (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T
        return jnp.eye(theta.shape[0])

    def __call__(self, theta, key, n):
        s = self.sqrt(theta)
        z = jax.random.normal(jax.random.fold_in(key, n), (s.shape[1],))
        return jax.grad(self.loss)(theta) + self.sigma * (s @ z)

    def covariance(self, theta):
        s = self.sqrt(theta)
        return self.sigma**2 * (s @ s.T)


@dataclasses.dataclass(frozen=True)
class LabelNoise(Oracle):
    r"""Label noise for squared losses: each step the labels become $y_i + \delta\,\epsilon_i$, $\epsilon_i\sim N(0,1)$,
    $g = \frac1n\sum_i (f_i(\theta) - y_i - \delta\epsilon_i)\nabla f_i(\theta)$, so
    $\mathrm{Cov}\,g = \frac{\delta^2}{n^2}\sum_i \nabla f_i\nabla f_i^\top$ (Blanc et al. 2020; Li, Wang & Arora 2022).
    """

    problem: Problem
    delta: float

    def __post_init__(self):
        if self.problem.model is None:
            raise ValueError(f"label noise needs a squared-loss problem with a model; {self.problem.name!r} has none")
        check_positive("delta", self.delta)

    def _jac(self, theta):
        idx = jnp.arange(self.problem.n_examples)
        return jax.vmap(lambda i: jax.grad(self.problem.model)(theta, i))(idx)

    def __call__(self, theta, key, n):
        eps = jax.random.normal(jax.random.fold_in(key, n), (self.problem.n_examples,))
        return jax.grad(self.problem.loss)(theta) - self.delta * (eps @ self._jac(theta)) / self.problem.n_examples

    def covariance(self, theta):
        j = self._jac(theta)
        return (self.delta / self.problem.n_examples) ** 2 * (j.T @ j)


@dataclasses.dataclass(frozen=True)
class SVAG(Oracle):
    r"""Stochastic variance amplified gradient (Li, Malladi & Arora 2021; docs/theory/sme.md#sme).

    $g^{(l)} = \frac{1+\sqrt{2l-1}}{2} g_a + \frac{1-\sqrt{2l-1}}{2} g_b$ from two independent draws of ``base``:
    same mean, covariance $l$ times the base covariance. Run it with learning rate $\eta/l$ (time $t = k\eta/l$).
    """

    base: Oracle
    l: float

    def __post_init__(self):
        if not self.l >= 1:
            raise ValueError(f"l must be >= 1, got {self.l}")

    def __call__(self, theta, key, n):
        r = math.sqrt(2 * self.l - 1)
        ga = self.base(theta, jax.random.fold_in(key, 0), n)
        gb = self.base(theta, jax.random.fold_in(key, 1), n)
        return 0.5 * (1 + r) * ga + 0.5 * (1 - r) * gb

    def covariance(self, theta):
        return self.l * self.base.covariance(theta)
