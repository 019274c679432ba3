r"""The implicit regularizer of *any* optimizer, found numerically from its order-2 modified field.

The order-2 modified field is $f^{[2]} = f_1 + h f_2$ (:func:`modeq.flows.modified_field`, exact Taylor truncation).
When the leading field is a multiple of the gradient, $f_1 = -c\nabla L$ (every optimizer that is a linear filter of
past gradients: GD, heavy-ball, Nesterov, SGDM, EMA/trace chains), and the correction is a gradient field,
$f_2 = -c\nabla R$, the optimizer follows to $O(h^2)$ the rescaled gradient flow of the **modified loss**
$\tilde L = L + hR$ (docs/builders/from_optax.md#implicit-regularizer). $R$ is recovered, up to a constant, by the
line integral

$$ R(\theta) - R(\theta_\star) = -\frac1c\int_0^1 f_2\big(\theta_\star + s(\theta - \theta_\star)\big)\cdot
   (\theta - \theta_\star)\, ds $$

(20-point Gauss-Legendre), after two checks at random points: $f_1 \parallel \nabla L$ with one constant $c$, and a
symmetric Jacobian of $f_2$ ($u^\top J v = v^\top J u$). For a linear filter with impulse response $w_k$
($u_n = -h\sum_k w_k g_{n-k}$), $c = \sum_k w_k$, $m_1 = \sum_k k\,w_k$, the lag expansion
$g_{n-k} = g + kh\,c\,Hg + O(h^2)$ and backward error analysis of $\theta - hcg - h^2 c\, m_1 Hg$ give

$$ R = \Big(\frac{m_1}{2} + \frac c4\Big)\|\nabla L\|^2, $$

which is $\frac14\|\nabla L\|^2$ for GD (Barrett & Dherin 2021) and $\frac{1+\beta}{4(1-\beta)^2}\|\nabla L\|^2$ for
heavy-ball (Ghosh et al. 2023; Cattaneo & Shigida, arXiv 2502.02132): both are tests of this module.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from .._errors import RegimeError
from .._pytree import flatten_loss
from .._validation import check_positive
from ..optimizers._spec import Optimizer


@dataclasses.dataclass(frozen=True)
class NumericalRegularizer:
    r"""``value(theta)`` $= R(\theta) - R(\theta_\star)$ (the implicit regularizer, up to its constant),
    ``correction(theta)`` $= h f_2(\theta)$ (the order-2 correction field, always available), ``scale`` $c$ with
    $f_1 = -c\nabla L$, ``h``, ``reference`` $\theta_\star$, and the two checks' measured residuals
    (``parallel_residual``, ``symmetry_residual``, relative)."""

    value: Callable
    correction: Callable
    modified_loss: Callable
    scale: float
    h: float
    reference: np.ndarray
    parallel_residual: float
    symmetry_residual: float


def _order2_parts(optimizer, flat_loss):
    from ..flows._modified import modified_field

    f1 = modified_field(optimizer, flat_loss, h=1.0, order=1)
    f12 = modified_field(optimizer, flat_loss, h=1.0, order=2, truncation="taylor")  # f1 + 1 * f2, exactly

    def f2(theta):
        return f12.fn(theta, jnp.asarray(1.0)) - f1.fn(theta, jnp.asarray(1.0))

    return jax.jit(lambda t: f1.fn(t, jnp.asarray(1.0))), jax.jit(f2)


def implicit_regularizer(optimizer: Optimizer, loss: Callable, *, h, reference, probes: int = 3,
                         tol: float = 1e-7, seed: int = 0) -> NumericalRegularizer:
    r"""The implicit regularizer $R$ of ``optimizer`` on ``loss`` (module docstring), for any optimizer with a
    slow-manifold reduction, including :func:`~modeq.optimizers.from_optax` ones.

    Args:
        h: the step size ($\tilde L = L + hR$).
        reference: $\theta_\star$, where $R$ is set to 0 (e.g. the start of the run); also the centre of the probes.
        probes: random points (normal, unit scale around ``reference``) for the two checks.
        tol: relative tolerance of the checks.

    Raises :class:`~modeq._errors.RegimeError` naming which check failed (a preconditioned method: $f_1$ not a multiple
    of $\nabla L$; a correction that is not a gradient field); ``correction`` is what exists then
    (:func:`modeq.flows.modified_field`).
    """
    h = check_positive("h", h)
    flat_loss, ref, _ = flatten_loss(loss, reference, name="reference")
    ref = jnp.asarray(ref, jnp.float64)
    f1, f2 = _order2_parts(optimizer, flat_loss)
    grad = jax.jit(jax.grad(flat_loss))
    rng = np.random.default_rng(seed)
    points = [ref + jnp.asarray(rng.standard_normal(ref.shape)) * 0.5 for _ in range(probes)]
    cs, par = [], 0.0
    for p in points:
        g, a = np.asarray(grad(p)), np.asarray(f1(p))
        c = -float(a @ g) / float(g @ g)
        cs.append(c)
        par = max(par, float(np.linalg.norm(a + c * g) / max(np.linalg.norm(a), 1e-300)))
    spread = (max(cs) - min(cs)) / max(abs(np.mean(cs)), 1e-300)
    if par > tol or spread > tol:
        raise RegimeError(
            f"optimizer: the order-1 field of {optimizer.name} is not a constant multiple of -grad L (relative misfit "
            f"{max(par, spread):.2g}: a preconditioned or nonlinear method); there is no scalar modified loss of the "
            "form L + hR: use modeq.flows.modified_field for its correction field")
    c = float(np.mean(cs))
    sym = 0.0
    for p in points:
        u, v = (jnp.asarray(rng.standard_normal(ref.shape)) for _ in range(2))
        jv = jax.jvp(f2, (p,), (v,))[1]
        ju = jax.jvp(f2, (p,), (u,))[1]
        a, b = float(u @ jv), float(v @ ju)
        sym = max(sym, abs(a - b) / max(abs(a), abs(b), 1e-300))
    if sym > tol:
        raise RegimeError(
            f"optimizer: the order-2 correction of {optimizer.name} is not a gradient field (Jacobian asymmetry "
            f"{sym:.2g}): there is no modified loss of the form L + hR at this order")
    nodes, weights = np.polynomial.legendre.leggauss(20)
    nodes, weights = jnp.asarray((nodes + 1) / 2), jnp.asarray(weights / 2)

    @jax.jit
    def value(theta):
        d = theta - ref
        vals = jax.vmap(lambda s: f2(ref + s * d) @ d)(nodes)
        return -jnp.sum(weights * vals) / c

    def unflat(fn):
        def wrapped(theta):
            flat, _ = jax.flatten_util.ravel_pytree(theta)
            return fn(jnp.asarray(flat, jnp.float64))

        return wrapped

    return NumericalRegularizer(
        value=unflat(value), correction=unflat(lambda t: h * f2(t)),
        modified_loss=unflat(lambda t: flat_loss(t) + h * value(t)), scale=c, h=h, reference=np.asarray(ref),
        parallel_residual=max(par, spread), symmetry_residual=sym,
    )
