r"""Slow (invariant) manifold of a momentum method and its memoryless reduction.

For an optimizer in momentum-variable form with constant coefficients (full batch, stationary regime), the momentum
variables relax geometrically onto a graph $m = M_h(\theta)$ that is invariant under one step
(docs/theory/manifold.md; Kovachki & Stuart 2021; Cattaneo & Shigida, arXiv 2509.08483 for HB):

$$ M_h(\theta') = \beta\odot M_h(\theta) + b\odot s(\theta), \qquad
   \theta' = \theta - h\,D\big(\beta M_h(\theta) + b s(\theta),\ M_h(\theta),\ g(\theta),\ \theta\big). $$

Rewriting it as $M_h(\theta) = \big[b\,s(\theta) - (M_h(\theta') - M_h(\theta))\big]/(1-\beta)$ gives a fixed-point
iteration that gains one power of $h$ per sweep (the bracket is $O(h)$ times the previous iterate):
$M^{(0)} = b s/(1-\beta)$, and $M^{(k)}$ agrees with $M_h$ through $h^k$. Each sweep evaluates the previous iterate at
two points, so $M^{(k)}$ costs $2^k$ gradients and no derivatives at all. On the manifold the optimizer is the
one-step map $\Psi_h(\theta) = \theta - h D(\cdot)$ (the *memoryless iteration*), to which
:mod:`modeq.series._bea` applies.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._validation import check_int_at_least
from ..optimizers._spec import Optimizer
from ._taylor import evaluate_polynomial, taylor_coefficients


def _check_reducible(optimizer: Optimizer) -> None:
    obstacle = optimizer.reduction_obstacle()
    if obstacle is not None:
        from .._errors import RegimeError

        raise RegimeError(f"optimizer: {optimizer.name} has no slow-manifold reduction: {obstacle}")


def manifold_iterate(optimizer: Optimizer, grad: Callable, sweeps: int) -> Callable:
    r"""$M^{(k)}(\theta, h)$ with $k$ = ``sweeps``: the slow manifold through $h^k$ (tuple, one array per momentum).

    $M^{(0)}$ is the stationary state at fixed $\theta$; $M^{(k)}(\theta)$ is the state whose one-step change equals
    $M^{(k-1)}(\theta') - M^{(k-1)}(\theta)$, $\theta'$ the step from $(\theta, M^{(k-1)}(\theta))$
    (:meth:`~modeq.optimizers.Optimizer.slow_state` solves that equation: $(b s - r)/(1-\beta)$ in momentum-variable
    form, the state's own affine solve for :func:`~modeq.optimizers.from_optax`)."""
    _check_reducible(optimizer)

    def level(k: int) -> Callable:
        def m_k(theta, h):
            g = grad(theta)
            if k == 0:
                return optimizer.slow_state(g, theta, h)
            lower = level(k - 1)
            m = lower(theta, h)
            theta_next, _ = optimizer.step(theta, m, g, h, None)
            m_next = lower(theta_next, h)
            return optimizer.slow_state(g, theta, h, tuple(mn - mi for mn, mi in zip(m_next, m)))

        return m_k

    return level(sweeps)


def reduced_map(optimizer: Optimizer, grad: Callable, sweeps: int) -> Callable:
    r"""The memoryless map $\Psi_h(\theta)$: one step of the optimizer from $(\theta, M^{(k)}(\theta))$
    ($\theta - h D(\beta M + b s, M, g, \theta)$ in momentum-variable form).

    Exact through $h^{k+1}$ (``sweeps`` = $k$). For GD (no momentum) it is $\theta - h g$ exactly.
    """
    manifold = manifold_iterate(optimizer, grad, sweeps) if optimizer.momenta else None

    def step(theta, h):
        g = grad(theta)
        m = manifold(theta, h) if manifold is not None else ()
        return optimizer.step(theta, m, g, h, None)[0]

    return step


def slow_manifold(optimizer: Optimizer, loss: Callable, *, h, order: int = 4) -> Callable:
    r"""$\theta \mapsto M_h(\theta)$ truncated after $h^{R-1}$ (polynomial in $h$), $R$ = ``order``.

    For heavy-ball in momentum-sum form ($v = -m$ in the paper form) $M_h = g/(1-\beta) + h\,Hg/(1-\beta)^3 + \dots$
    (docs/theory/manifold.md#invariant-manifold). Use it to start an optimizer on its invariant manifold.
    """
    order = check_int_at_least("order", order, 1)
    iterate = manifold_iterate(optimizer, jax.grad(loss), order - 1)

    def manifold(theta):
        coefficients = taylor_coefficients(lambda s: iterate(theta, s), order - 1)
        return evaluate_polynomial(coefficients, h)

    return manifold


@eqx.filter_jit
def _manifold_point(optimizer, loss, theta, h, sweeps: int):
    return manifold_iterate(optimizer, jax.grad(loss), sweeps)(theta, h)


def manifold_point(optimizer: Optimizer, loss: Callable, theta, *, h, sweeps: int = 8):
    r"""$M^{(k)}(\theta, h)$ evaluated at the numerical $h$ (not truncated): the most accurate cheap start on the
    manifold, accurate to $O(h^{k+1})$ with $k$ = ``sweeps`` ($2^k$ gradients; compiled once per optimizer type, loss
    and ``sweeps`` up to 7 sweeps, evaluated eagerly beyond).

    Limits: on a quadratic the sweeps contract like $h\lambda(1+\beta)/(1-\beta)^2$ only, and each sweep takes the
    difference of two values of the previous one divided by $1-\beta$, so rounding errors grow like
    $(2/(1-\beta))^k$ (heavy-ball $\beta = 0.9$ on the product model at $h = 10^{-4}$: closest after 7 sweeps, 2e-8
    relative, then 2e-7, 6e-6, 2e-4 after 8, 9, 10). It diverges where the manifold is complex. Start optimizers with
    :func:`modeq.series.slow_manifold_start`, which converges and says how accurately."""
    sweeps = check_int_at_least("sweeps", sweeps, 0)
    theta, h = jnp.asarray(theta, jnp.float64), jnp.asarray(h, jnp.float64)
    if sweeps > 7:  # the unrolled graph has 2^sweeps gradients: compiling it costs more than running it eagerly
        return manifold_iterate(optimizer, jax.grad(loss), sweeps)(theta, h)
    return _manifold_point(optimizer, loss, theta, h, sweeps)


def memory_correction(optimizer: Optimizer, loss: Callable, *, h) -> Callable:
    r"""First-order memory correction $M(\theta)$ of Cattaneo & Shigida (arXiv 2502.02132, Thm 3.3; docs/theory/manifold.md#memory-correction):
    the memoryless iteration $\theta_{n+1} = \theta_n - h[F(\theta_n) + M(\theta_n)]$ is $O(h^2)$-accurate, with

    $$ F = D(\bar m, \bar m, g, \theta),\ \bar m_\ell = \frac{b_\ell s_\ell}{1-\beta_\ell}, \qquad
       M = h \sum_\ell \Big[\frac{b_\ell\beta_\ell}{(1-\beta_\ell)^2}\partial_{m_\ell^{new}} D
           + \frac{b_\ell}{(1-\beta_\ell)^2}\partial_{m_\ell^{old}} D\Big]\,(\nabla s_\ell)\, F, $$

    using $\sum_k k\beta^k = \beta/(1-\beta)^2$ (new momenta) and $\sum_k (k+1)\beta^k = 1/(1-\beta)^2$ (old ones).
    Computed with forward-mode JVPs only. Agrees with the $h^2$ term of the slow-manifold expansion (tested).
    """
    _check_reducible(optimizer)
    if not optimizer.has_momentum_form:
        from .._errors import RegimeError

        raise RegimeError(f"optimizer: memory_correction needs the momentum-variable form, which {optimizer.name} "
                          "does not have; use modified_field(..., order=2) (the same h^2 term, from the state dynamics)")
    grad = jax.grad(loss)
    hyper = optimizer.hyper

    def correction(theta):
        g = grad(theta)
        mbar = optimizer.stationary_momenta(g, theta)
        F = optimizer.direction(mbar, mbar, g, theta, h, None)
        new_t, old_t = [], []
        for var in optimizer.momenta:
            beta, b = var.beta(hyper), var.weight(hyper)
            _, ds = jax.jvp(lambda th: var.source(grad(th), th), (theta,), (F,))
            new_t.append(b * beta / (1.0 - beta) ** 2 * ds)
            old_t.append(b / (1.0 - beta) ** 2 * ds)
        _, dD = jax.jvp(
            lambda new, old: optimizer.direction(new, old, g, theta, h, None), (mbar, mbar), (tuple(new_t), tuple(old_t))
        )
        return h * dD

    return correction


def manifold_orbit(optimizer: Optimizer, grad: Callable, sweeps: int) -> Callable:
    r"""``orbit(theta, h, R)``: $[\theta_0, \dots, \theta_R]$, the optimizer's own iterates (stationary coefficients)
    started on the slow manifold, $m_0 = M^{(k)}(\theta_0)$ with $k$ = ``sweeps``.

    The off-manifold error $O(h^{k+1})$ of $m_0$ moves $\theta_j$ by $O(h^{k+2})$ only, so with $k = R-1$ the orbit agrees
    with the memoryless orbit through $h^R$ while costing $2^{R-1} + R$ gradients instead of $R\,2^{R-1}$.
    """
    manifold = manifold_iterate(optimizer, grad, sweeps) if optimizer.momenta else None

    def orbit(theta, h, steps: int) -> list:
        momenta = manifold(theta, h) if manifold is not None else ()
        out = [theta]
        for _ in range(steps):
            theta, momenta = optimizer.step(theta, momenta, grad(theta), h, None)
            out.append(theta)
        return out

    return orbit
