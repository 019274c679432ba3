r"""Builders of modified vector fields: gradient flow, order-R backward-error corrections, memoryless reductions.

For GD the one-step map is $\Psi_h(\theta) = \theta - h\nabla L(\theta)$. For a momentum method it is the memoryless
(on-manifold) map of :mod:`modeq.series._manifold`. Backward error analysis (:mod:`modeq.series._bea`) turns either into
the modified field $f_h = f_1 + h f_2 + \dots$; "order $R$" keeps $f_1..f_R$ and has global error $O(h^R)$
on $[0, T]$ for the iterates at $t = nh$ (Hairer, Lubich & Wanner ch. IX; docs/theory/bea.md, docs/theory/manifold.md).

Two truncations of the same series:

* ``"taylor"``: the exact polynomial $\sum_{k\le R} h^{k-1} f_k$, coefficients from nested JVPs in $h$. Exact to
  rounding (checked against the symbolic tree coefficients), but the traced graph grows like $3^R$, so compile time
  limits it to $R \lesssim 3$ for momentum methods and $R \lesssim 4$ for GD.
* ``"direct"``: $\frac1h\sum_{m=1}^{R}\frac{(-1)^{m+1}}{m}\Delta^m$ of the orbit at the numerical $h$ (manifold iterate
  $M^{(R-1)}$ at the numerical $h$ too). It equals the Taylor truncation up to $O(h^R)$, so its global error is also
  $O(h^R)$ (measured), and costs $2^{R-1} + R$ gradients with no derivatives at all.
"""

from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from .._pytree import on_pytrees
from .._validation import check_flow_order, check_positive
from ..optimizers._spec import Optimizer
from ..series._bea import log_of_orbit, modified_field_coefficients
from ..series._manifold import _check_reducible, manifold_orbit, reduced_map
from ..series._taylor import evaluate_polynomial, taylor_coefficients

TRUNCATIONS = ("taylor", "direct")


class RegimeWarning(UserWarning):
    r"""A series in $h$ is evaluated where $h\lambda_{\max}/(1-\beta)^2 > 0.05$: outside the regime where the
    expansion means something (its terms grow like powers of that number)."""


@eqx.filter_jit
def top_hessian_eigenvalue(loss: Callable, theta, iterations: int = 30):
    r"""$\lambda_{\max}$ of $\nabla^2 L(\theta)$ (largest in modulus) by ``iterations`` steps of power iteration on
    Hessian-vector products (``jax.jvp`` of ``jax.grad``): matrix-free, compiled once per loss and shape."""
    grad = jax.grad(loss)

    def body(_, carry):
        v, _lam = carry
        w = jax.jvp(grad, (theta,), (v,))[1]
        lam = jnp.linalg.norm(w)
        return jnp.where(lam > 0, w / jnp.where(lam > 0, lam, 1.0), v), lam

    v0 = jnp.ones_like(theta) / jnp.sqrt(theta.size)
    return jax.lax.fori_loop(0, iterations, body, (v0, jnp.zeros(())))[1]


class VectorField(eqx.Module):
    r"""A vector field $\theta \mapsto f(\theta)$ with its step size: call as ``field(theta)`` or, for diffrax, as
    ``field.term(t, y, args)``. ``h`` is an array field, so changing it does not retrace.

    A series field (``regime_beta`` set: modified fields and memoryless maps) called eagerly on a concrete ``theta``
    warns (:class:`RegimeWarning`) when $h\lambda_{\max}(\theta)/(1-\beta)^2 > 0.05$ ($\lambda_{\max}$ by power
    iteration) or when the value is not finite; traced calls (inside jit, diffrax) are not checked."""

    fn: Callable = eqx.field(static=True)
    h: jax.Array
    name: str = eqx.field(static=True, default="field")
    order: int = eqx.field(static=True, default=1)
    regime_beta: Optional[float] = eqx.field(static=True, default=None)
    regime_loss: Optional[Callable] = eqx.field(static=True, default=None)

    def __call__(self, theta):
        out = self.fn(theta, self.h)
        if self.regime_beta is not None and isinstance(theta, jax.Array) and not isinstance(
                theta, jax.core.Tracer) and not isinstance(self.h, jax.core.Tracer):  # flat arrays only, not pytrees
            self._check_regime(jnp.asarray(theta), out)
        return out

    def _check_regime(self, theta, out) -> None:
        import warnings

        if theta.ndim != 1 or self.regime_loss is None:
            return
        lam = float(top_hessian_eigenvalue(self.regime_loss, theta))
        x = float(self.h) * lam / (1.0 - self.regime_beta) ** 2
        if x > 0.05 or not bool(jnp.all(jnp.isfinite(out))):
            warnings.warn(
                f"{self.name}: h*lambda_max/(1-beta)^2 = {x:.3g} at this theta (h = {float(self.h):g}, beta = "
                f"{self.regime_beta:g}): the series in h is meaningful only well below 0.05"
                + ("; the value is not finite" if not bool(jnp.all(jnp.isfinite(out))) else ""),
                RegimeWarning, stacklevel=3,
            )

    def term(self, t, y, args):
        """The field in diffrax's ``ODETerm`` signature ``(t, y, args) -> f(y)`` (autonomous: ``t`` is ignored)."""
        return self.fn(y, self.h)


def _check_common(optimizer: Optimizer, h, order: int, truncation: str) -> int:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a modeq.optimizers.Optimizer, got {type(optimizer).__name__}")
    if not isinstance(h, jax.core.Tracer):
        check_positive("h", h)
    order = check_flow_order("order", order)
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    _check_reducible(optimizer)
    if order >= 2 and not optimizer.smooth:
        raise ValueError(
            f"order: {optimizer.name} admits no smooth modified equation beyond order 1 ({optimizer.smooth_reason}); "
            "use order = 1 or a smooth variant"
        )
    return order


def modified_field(
    optimizer: Optimizer, loss: Callable, *, h, order: int, truncation: str = "taylor"
) -> VectorField:
    r"""The order-$R$ modified vector field of ``optimizer`` on ``loss``: $\theta' = f_h^{[R]}(\theta)$.

    For momentum methods this is the field of the reduced (memoryless, on the slow manifold) dynamics, so its flow
    tracks the optimizer started on its invariant manifold with global error $O(h^R)$. Examples (docs/theory/bea.md#gd, regularizers.md):

    * GD, $R = 2$: $-\nabla(L + \frac h4\|\nabla L\|^2)$ (implicit gradient regularization);
    * heavy-ball, $R = 2$: $-\frac1{1-\beta}\nabla\big(L + \frac{h(1+\beta)}{4(1-\beta)^2}\|\nabla L\|^2\big)$.

    Args:
        optimizer: e.g. ``modeq.optimizers.heavy_ball(beta=0.9)``.
        loss: $L(\theta)$ on a flat vector or on a pytree of arrays (the field is then called on, and returns, pytrees
            of the same structure, flattened with ``jax.flatten_util.ravel_pytree`` as in
            :func:`modeq.optimizers.simulate`).
        h: step size $> 0$.
        order: $1 \le R \le 8$ ($R = 1$: the rescaled gradient flow $-F(\theta)$; the ``direct`` truncation costs
            $2^{R-1} + R$ gradients per evaluation, so larger orders are refused up front).
        truncation: ``"taylor"`` (exact polynomial in $h$) or ``"direct"`` (same order, much cheaper); see the module
            docstring.
    """
    order = _check_common(optimizer, h, order, truncation)
    grad = jax.grad(loss)

    def build(flat_loss):  # the field on flat vectors; on_pytrees applies it to pytrees too
        orbit = manifold_orbit(optimizer, jax.grad(flat_loss), order - 1)
        if truncation == "taylor":

            def fn(theta, hh):
                coefficients = modified_field_coefficients(orbit, theta, order)
                return evaluate_polynomial(coefficients, hh) if order > 1 else coefficients[0]

        else:

            def fn(theta, hh):
                return log_of_orbit(orbit(theta, hh, order)) / hh

        return fn

    fn = on_pytrees(build, loss)
    return VectorField(fn, jnp.asarray(h, dtype=jnp.float64), f"modified:{order}", order,
                       optimizer.slowest_decay() if order > 1 else None, loss)


def memoryless_map(optimizer: Optimizer, loss: Callable, *, h, order: int, truncation: str = "taylor") -> VectorField:
    r"""The order-$R$ memoryless iteration $\theta_{n+1} = \Psi_h^{[R]}(\theta_n)$ (returned as a callable on $\theta$).

    ``"taylor"``: $\Psi_h$ expanded through $h^R$ (for HB, $R = 2$: GD with step $h/(1-\beta)$ on
    $L + \frac{h\beta}{2(1-\beta)^2}\|\nabla L\|^2$, Cattaneo & Shigida arXiv 2502.02132 Sec. 2); ``"direct"``: the
    reduced map with the manifold iterate $M^{(R-1)}$ at the numerical $h$. Both have global error $O(h^R)$ against the
    optimizer started on its manifold.
    """
    order = _check_common(optimizer, h, order, truncation)

    def build(flat_loss):  # the map on flat vectors; on_pytrees applies it to pytrees too
        step = reduced_map(optimizer, jax.grad(flat_loss), order - 1)
        if truncation == "taylor":

            def fn(theta, hh):
                return evaluate_polynomial(taylor_coefficients(lambda s: step(theta, s), order), hh)

            return fn
        return step

    fn = on_pytrees(build, loss)
    return VectorField(fn, jnp.asarray(h, dtype=jnp.float64), f"memoryless:{order}", order,
                       optimizer.slowest_decay() if order > 1 else None, loss)


def gradient_field(optimizer: Optimizer, loss: Callable, *, h=1.0) -> VectorField:
    r"""The order-1 field $-F(\theta)$: the rescaled gradient flow ($-\nabla L/(1-\beta)$ for heavy-ball)."""
    return modified_field(optimizer, loss, h=h, order=1)
