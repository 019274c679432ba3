r"""Principal flow of gradient descent (Rosca, Wu, Qin & Dherin, TMLR 2023) and of heavy-ball.

With $(\lambda_i, u_i)$ the eigenpairs of $H = \nabla^2 L(\theta)$, $g = \nabla L(\theta)$ and $x_i = h\lambda_i$:

$$ \theta' = \sum_i \frac{\operatorname{Log} r_*(x_i)}{x_i}\,(g\cdot u_i)\,u_i = \varphi(hH)\,g, $$

where $r_*(x)$ is the root of largest modulus of $r^2 - (1 + \beta - x) r + \beta = 0$ (the per-eigendirection
iterate multiplier; equal moduli: $\operatorname{Im} r_* > 0$), $\operatorname{Log}$ the principal branch, and
$\varphi(0) = -1/(1-\beta)$. For GD ($\beta = 0$) $r_* = 1 - x$ and $\varphi(x) = \log(1-x)/x$, Rosca et al.'s PF;
for heavy-ball (momentum-sum form $m_{n+1} = \beta m_n + g_n$, $\theta_{n+1} = \theta_n - h m_{n+1}$, time $t = nh$) it
is the flow that heavy-ball started on its invariant manifold follows (docs/theory/principal_flow.md). Branches of
$r_*$ (computed in closed form per eigenvalue, never by a complex log of a wandering complex number):

* $x \le (1-\sqrt\beta)^2$: real positive root ($r_* > 1$ for $x < 0$): $\varphi$ real;
* $(1-\sqrt\beta)^2 < x < (1+\sqrt\beta)^2$: complex pair, $|r_*| = \sqrt\beta$, $\arg r_* \in (0, \pi)$ (HB only);
* $x \ge (1+\sqrt\beta)^2$: negative root, $\operatorname{Log} r_* = \log|r_*| + i\pi$ (GD: $x > 1$);
* stable ($|r_*| < 1$) iff $0 < x < 2(1+\beta)$; $x = 1$ is singular for GD ($r_* = 0$).

The series $\varphi(x) = \sum_p a_p x^p$ has $a_p = -P_p\big(\tfrac{1+\beta}{1-\beta}\big)/\big((p+1)(1-\beta)^{p+1}\big)$
($P_p$ the Legendre polynomials, from $\frac{d}{dx}\operatorname{Log} r_* = -((1+\beta-x)^2-4\beta)^{-1/2}$, their
generating function), i.e. $-N_p(\beta)/((p+1)(1-\beta)^{2p+1})$ with the type-B Narayana polynomials
$N_p = \sum_j \binom pj^2\beta^j$; GD: $a_p = -1/(p+1)$. Radius of convergence $(1-\sqrt\beta)^2$ (GD: 1). The PF thus
sums every "tall-tree" term $H^p g$ of the modified equation and misses the trees with third or higher derivatives:
global order 2 on non-quadratic losses. :func:`principal_flow_third` adds the first missing term,
$c_3 h^2 T[g, g]$ ($c_3 = -1/12$ for GD, $-(1+10\beta+\beta^2)/(12(1-\beta)^5)$ for HB, taken from the exact tree
coefficients of :mod:`modeq.series._symbolic`): global order 3. On quadratics the PF is exact: $\theta(nh)$ equals the
iterates.

Complex regime. When some $r_*(x_i)$ is not positive the flow is complex. The state is then $y = (a, b) \in
\mathbb R^{2d}$ for $\theta = a + ib$ (:func:`to_complex_state`, :func:`real_part`, :func:`imag_part`), with the
gradient continued to first order in $b$: $g(a + ib) = g(a) + i H(a) b$ and the eigenpairs taken at $a$. This is exact on
quadratics, where $\operatorname{Re}\theta(nh)$ is the iterate and $\operatorname{Im}\theta(nh) = 0$. Because the
eigenvalues stay real, the branch of $\operatorname{Log} r_*$ is fixed by the rule above and the solver never meets
the branch cut (the stall reported in docs/theory/principal_flow.md#gd came from evaluating a complex Hessian). On non-quadratic losses
in the complex regime the continuation drops $O(|b|^2)$ terms: use it as an analysis tool there. In the real regime
$b \equiv 0$ and the real-state field ($\theta \in \mathbb R^d$, ``state="real"``) is the same flow at half the cost.

Back-ends. ``"dense"``: ``jax.hessian`` and ``eigh`` at every evaluation ($O(d^3)$; $d$ up to a few thousand).
``"lanczos"``: the top-$k$ eigenpairs (largest $|\lambda|$) by Lanczos with full reorthogonalization (a fixed number
of iterations, default $\min(d, 2k + 20)$, on Hessian-vector products from ``jax.linearize`` of the gradient; the
Ritz pairs come from the full projection $V^\top H V$), and on the orthogonal complement the series truncated after
``terms`` $= P$ terms:

$$ \varphi(hH)\,g \approx \sum_{i \le k}\varphi(h\lambda_i)(g\cdot u_i)u_i + \sum_{p<P} a_p\,(h\,\Pi H \Pi)^p\,\Pi g,
   \qquad \Pi = I - \textstyle\sum_{i\le k} u_i u_i^\top, $$

($P - 1$ extra HVPs). With exact top-$k$ pairs the truncation error is at most
$\sum_{p\ge P}|a_p|\,|x_{k+1}|^p\,\|\Pi g\| \approx |a_P|\,|x_{k+1}|^P\|\Pi g\|/(1-\rho|x_{k+1}|)$, $x_{k+1} = h\lambda_{k+1}$
the largest $|h\lambda|$ left out and $\rho$ = 1 (GD) or $(1-\sqrt\beta)^{-2}$ (HB): it requires
$|x_{k+1}| < (1-\sqrt\beta)^2$ and falls like $|x_{k+1}|^P$ (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_finite_array, check_int_at_least, check_positive
from ..optimizers._spec import Optimizer
from ._modified import VectorField

BACKENDS = ("dense", "lanczos")
STATES = ("real", "complex")
DEFAULT_TERMS = 10


class TruncationWarning(UserWarning):
    """The Lanczos back-end's series on the residual directions converges slowly or not at all."""


# =====================================================================================================================
# Scalar functions of x = h lambda
# =====================================================================================================================
def _log1p_ratio(u):
    """log1p(u)/u with the limit 1 at u = 0."""
    small = jnp.abs(u) < 1e-8
    safe = jnp.where(small, 1.0, u)
    return jnp.where(small, 1.0 - u / 2.0 + u * u / 3.0, jnp.log1p(safe) / safe)


def log_root(x, beta):
    r"""$\operatorname{Log} r_*(x)$ and $\varphi(x) = \operatorname{Log} r_*(x)/x$ for real ``x`` (elementwise).

    Returns ``(log_abs, arg, phi_re, phi_im)``: $\log|r_*|$, $\arg r_* \in [0, \pi]$ and the real and imaginary parts
    of $\varphi$ (with $\varphi(0) = -1/(1-\beta)$). Accurate to rounding near $x = 0$ (no cancellation: on the real
    positive branch $r_* - 1 = x q$ with $q = -\tfrac12[1 + (2(1+\beta) - x)/(\sqrt{\Delta} + 1 - \beta)]$).
    """
    x = jnp.asarray(x, dtype=jnp.float64)
    beta = jnp.asarray(beta, dtype=jnp.float64)
    s = 1.0 + beta - x
    disc = s * s - 4.0 * beta
    real_roots = disc >= 0
    sq = jnp.sqrt(jnp.where(real_roots, disc, 0.0))
    sqi = jnp.sqrt(jnp.where(real_roots, 0.0, -disc))
    positive = real_roots & (s > 0)
    negative = real_roots & ~(s > 0)
    # real positive dominant root
    q = -0.5 * (1.0 + (2.0 * (1.0 + beta) - x) / (sq + 1.0 - beta))
    u = x * q
    lp = _log1p_ratio(u)
    phi_pos = q * lp
    log_pos = u * lp
    # negative dominant root: r_* = (s - sq)/2 < 0
    mod_neg = jnp.where(negative, 0.5 * (sq - s), 1.0)
    log_neg = jnp.log(mod_neg)
    # complex pair: |r_*| = sqrt(beta), arg = atan2(sqrt(-disc), s)
    log_cplx = 0.5 * jnp.log(jnp.where(real_roots, 1.0, beta))
    arg_cplx = jnp.arctan2(sqi, s)
    log_abs = jnp.where(positive, log_pos, jnp.where(negative, log_neg, log_cplx))
    arg = jnp.where(positive, 0.0, jnp.where(negative, jnp.pi, arg_cplx))
    x_safe = jnp.where(positive, 1.0, x)
    phi_re = jnp.where(positive, phi_pos, log_abs / x_safe)
    phi_im = jnp.where(positive, 0.0, arg / x_safe)
    return log_abs, arg, phi_re, phi_im


_log_root_jit = jax.jit(log_root)


def series_coefficients(beta, terms: int) -> jax.Array:
    r"""$a_0, \dots, a_{P-1}$ of $\varphi(x) = \operatorname{Log} r_*(x)/x = \sum_p a_p x^p$ (``beta`` may be traced).

    By the Legendre recursion $(p+1)P_{p+1}(t) = (2p+1)\,t\,P_p(t) - p\,P_{p-1}(t)$ at $t = (1+\beta)/(1-\beta)$
    (forward-stable: $t \ge 1$), $a_p = -P_p(t)/((p+1)(1-\beta)^{p+1})$. GD: $a_p = -1/(p+1)$.
    """
    terms = check_int_at_least("terms", terms, 1)
    beta = jnp.asarray(beta, dtype=jnp.float64)
    t = (1.0 + beta) / (1.0 - beta)
    u = 1.0 / (1.0 - beta)
    legendre = [jnp.ones_like(t), t]
    for p in range(1, terms):
        legendre.append(((2 * p + 1) * t * legendre[p] - p * legendre[p - 1]) / (p + 1))
    return jnp.stack([-legendre[p] * u ** (p + 1) / (p + 1) for p in range(terms)])


@functools.lru_cache(maxsize=1)
def _third_coefficient_function() -> Callable:
    r"""$\beta \mapsto$ the exact coefficient of $h^2 T[g, g]$ in the heavy-ball modified equation (GD at $\beta = 0$:
    $-1/12$), lambdified from the tree tables of :mod:`modeq.series._symbolic` (traceable in ``beta``)."""
    import sympy

    from ..series._symbolic import BETA, hb_modified_coefficients

    (record,) = [r for r in hb_modified_coefficients(3) if r.elementary_differential == "T3[g,g]"]
    return sympy.lambdify(BETA, record.coefficient, modules="jax")


# =====================================================================================================================
# Lanczos
# =====================================================================================================================
def lanczos_eigenpairs(matvec: Callable, dim: int, iterations: int, seed: int = 0):
    r"""All Ritz pairs of the symmetric operator ``matvec`` after ``iterations`` $= m$ Lanczos steps with full
    reorthogonalization (twice per step), from a Gaussian start vector $v_0$ drawn with ``seed`` (a constant of the
    traced program, so the result is a deterministic function of the operator).

    jit-friendly (one ``lax.fori_loop``, fixed $m$). On breakdown (an invariant subspace: $\|w\| \le 10^{-10}$ times
    the largest $\|Hv\|$ seen) the next basis vector is a cyclic shift of $v_0$ orthogonalized against the basis (the
    shifts of a Gaussian vector span $\mathbb R^d$ almost surely). The Ritz pairs are those of the full projection
    $V H V^\top$ (symmetrized), so they are exact when $m = d$. Returns ``(values, vectors)``, ascending, ``vectors``
    of shape ``(dim, m)``.
    """
    m = int(iterations)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    v0 = jnp.asarray(v0 / np.linalg.norm(v0))
    basis = jnp.zeros((m + 1, dim), dtype=jnp.float64).at[0].set(v0)
    images = jnp.zeros((m, dim), dtype=jnp.float64)

    def orthogonalize(v, basis):
        v = v - basis.T @ (basis @ v)
        return v - basis.T @ (basis @ v)

    def body(j, carry):
        basis, images, scale = carry
        w = matvec(basis[j])
        images = images.at[j].set(w)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w = orthogonalize(w, basis)
        norm = jnp.linalg.norm(w)

        def fresh(_):
            r = orthogonalize(jnp.roll(v0, j + 1), basis)
            return r / jnp.maximum(jnp.linalg.norm(r), 1e-300)

        nxt = jax.lax.cond(norm <= 1e-10 * scale, fresh, lambda _: w / jnp.where(norm > 0, norm, 1.0), None)
        basis = basis.at[j + 1].set(nxt)
        return basis, images, scale

    basis, images, _ = jax.lax.fori_loop(0, m, body, (basis, images, jnp.zeros((), jnp.float64)))
    basis = basis[:m]
    projected = basis @ images.T
    values, vectors = jnp.linalg.eigh(0.5 * (projected + projected.T))
    return values, basis.T @ vectors


def _top_k(matvec, dim, k, iterations, seed):
    values, vectors = lanczos_eigenpairs(matvec, dim, iterations, seed)
    order = jnp.argsort(-jnp.abs(values))[:k]
    return values[order], vectors[:, order]


def _residual_series(matvec, basis, vectors, coefficients, h):
    r"""$\sum_{p<P} a_p (h \Pi H \Pi)^p \Pi v$ for each row $v$ of ``vectors`` (shape (r, d))."""

    def project(v):
        return v - (v @ basis) @ basis.T

    r0 = project(vectors)
    coefficients = jnp.asarray(coefficients)

    def body(p, carry):
        r, acc = carry
        r = project(h * jax.vmap(matvec)(r))
        return r, acc + coefficients[p] * r

    _, acc = jax.lax.fori_loop(1, coefficients.shape[0], body, (r0, coefficients[0] * r0))
    return acc


# =====================================================================================================================
# Checks
# =====================================================================================================================
def _beta_of(optimizer) -> float:
    """The momentum of the principal flow (0 for GD), asked of the optimizer
    (:meth:`~modeq.optimizers.Optimizer.principal_flow_momentum`); ``RegimeError`` naming ``optimizer`` if none."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a modeq.optimizers.Optimizer, got {type(optimizer).__name__}")
    beta = optimizer.principal_flow_momentum()
    if beta is None:
        from .._errors import RegimeError

        raise RegimeError(
            f"optimizer: the principal flow is defined for gradient descent and heavy-ball (optimizers whose "
            f"principal_flow_momentum() is not None), got {optimizer.name}"
        )
    return float(beta)


def _check_options(backend, k, terms, iterations, state):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    terms = check_int_at_least("terms", terms, 1)
    if backend == "dense":
        if k is not None:
            raise ValueError("k: only the 'lanczos' backend takes k (the dense backend uses every eigenpair)")
        if iterations is not None:
            raise ValueError("iterations: only the 'lanczos' backend takes iterations")
        return k, terms, iterations
    if k is None:
        raise ValueError("k: the 'lanczos' backend needs k, the number of top eigenpairs (an integer >= 1)")
    k = check_int_at_least("k", k, 1)
    if iterations is not None:
        iterations = check_int_at_least("iterations", iterations, k)
    return k, terms, iterations


def _check_dim(k, iterations, dim):
    """Static (trace-time) checks against the dimension; returns the iteration count."""
    if k is None:
        return None
    if k > dim:
        raise ValueError(f"k must be <= d = {dim} (the number of parameters), got {k}")
    if iterations is None:
        return min(dim, 2 * k + 20)
    if iterations > dim:
        raise ValueError(f"iterations must be <= d = {dim}, got {iterations}")
    return iterations


def check_hessian(loss: Callable, theta, *, backend: str = "dense", seed: int = 0) -> None:
    """Raise ``ValueError`` (naming ``loss``) if the gradient or Hessian of ``loss`` at ``theta`` is not finite or the
    Hessian is not symmetric (relative asymmetry above 1e-8: e.g. a custom derivative rule that is not a gradient).
    Dense: the full Hessian; Lanczos: two random probes $u^\\top H v$ vs $v^\\top H u$."""
    theta = jnp.asarray(theta, dtype=jnp.float64)
    grad = jax.grad(loss)
    g = grad(theta)
    if not bool(jnp.all(jnp.isfinite(g))):
        raise ValueError("loss: its gradient at theta0 is not finite")
    if backend == "dense":
        hess = np.asarray(jax.hessian(loss)(theta))
        if not np.all(np.isfinite(hess)):
            raise ValueError("loss: its Hessian at theta0 has non-finite entries")
        asym = float(np.max(np.abs(hess - hess.T))) if hess.size else 0.0
        size = float(np.max(np.abs(hess))) if hess.size else 0.0
        if asym > 1e-8 * size:
            raise ValueError(f"loss: its Hessian at theta0 is not symmetric (max |H - H^T| = {asym:.3g}, max |H| = {size:.3g})")
        return
    rng = np.random.default_rng(seed + 1)
    u, v = (jnp.asarray(rng.standard_normal(theta.shape)) for _ in range(2))
    hu = jax.jvp(grad, (theta,), (u,))[1]
    hv = jax.jvp(grad, (theta,), (v,))[1]
    if not (bool(jnp.all(jnp.isfinite(hu))) and bool(jnp.all(jnp.isfinite(hv)))):
        raise ValueError("loss: its Hessian-vector products at theta0 are not finite")
    asym = abs(float(u @ hv - v @ hu))
    size = float(jnp.linalg.norm(u) * jnp.linalg.norm(hv) + jnp.linalg.norm(v) * jnp.linalg.norm(hu))
    if asym > 1e-8 * size:
        raise ValueError(f"loss: its Hessian at theta0 is not symmetric (|u.Hv - v.Hu| = {asym:.3g})")


# =====================================================================================================================
# Complex state helpers
# =====================================================================================================================
def to_complex_state(theta, imag=None):
    r"""$y = (\operatorname{Re}\theta, \operatorname{Im}\theta) \in \mathbb R^{2d}$, the state of ``state="complex"``
    fields (imaginary part 0 by default)."""
    theta = jnp.asarray(theta, dtype=jnp.float64)
    imag = jnp.zeros_like(theta) if imag is None else jnp.asarray(imag, dtype=jnp.float64)
    return jnp.concatenate([theta, imag], axis=-1)


def real_part(y):
    """$\\operatorname{Re}\\theta$ from a complex state (last axis of length 2d)."""
    return y[..., : y.shape[-1] // 2]


def imag_part(y):
    """$\\operatorname{Im}\\theta$ from a complex state (last axis of length 2d)."""
    return y[..., y.shape[-1] // 2 :]


# =====================================================================================================================
# Vector fields
# =====================================================================================================================
def _cached(factory, loss, *options):
    """``factory(loss, *options)`` through its ``lru_cache`` when ``loss`` is hashable (one compiled program per loss and
    options), else uncached (e.g. an equinox module holding arrays)."""
    try:
        hash(loss)
    except TypeError:
        return factory.__wrapped__(loss, *options)
    return factory(loss, *options)


class PrincipalField(VectorField):
    r"""A :class:`VectorField` whose momentum $\beta$ is an array field too (``fn(theta, h, beta)``): fields that
    differ only in ``h`` or ``beta`` (GD is $\beta = 0$) share one compiled solve."""

    beta: jax.Array = eqx.field(default_factory=lambda: jnp.zeros((), dtype=jnp.float64))

    def __call__(self, theta):
        return self.fn(theta, self.h, self.beta)

    def term(self, t, y, args):
        """The field in diffrax's ``ODETerm`` signature ``(t, y, args) -> f(y)`` (autonomous: ``t`` is ignored)."""
        return self.fn(y, self.h, self.beta)


@functools.lru_cache(maxsize=64)
def _field_function(loss, backend, k, terms, iterations, state, third, seed):
    """The field's ``fn(theta, h, beta)``, cached so that fields with the same options (any ``h`` and ``beta``) share
    one compiled solve."""
    grad = jax.grad(loss)

    def tgg(theta):
        g = grad(theta)
        return jax.jvp(lambda z: jax.jvp(grad, (z,), (g,))[1], (theta,), (g,))[1]

    def spectrum(theta):
        """g, hvp, eigenvalues, eigenvectors (columns): all of them (dense) or the top k (Lanczos)."""
        dim = theta.shape[-1]
        if backend == "dense":
            g = grad(theta)
            hess = jax.hessian(loss)(theta)
            lam, vecs = jnp.linalg.eigh(0.5 * (hess + hess.T))
            return g, None, lam, vecs
        m = _check_dim(k, iterations, dim)
        g, hvp = jax.linearize(grad, theta)
        lam, vecs = _top_k(hvp, dim, k, m, seed)
        return g, hvp, lam, vecs

    def real_field(theta, hh, beta):
        g, hvp, lam, vecs = spectrum(theta)
        _, _, phi_re, _ = log_root(hh * lam, beta)
        out = vecs @ (phi_re * (vecs.T @ g))
        if hvp is not None:
            out = out + _residual_series(hvp, vecs, g[None], series_coefficients(beta, terms), hh)[0]
        if third:
            out = out + _third_coefficient_function()(beta) * hh**2 * tgg(theta)
        return out

    def complex_field(y, hh, beta):
        a, b = real_part(y), imag_part(y)
        g, hvp, lam, vecs = spectrum(a)
        log_abs, arg, phi_re, phi_im = log_root(hh * lam, beta)
        cg, cb = vecs.T @ g, vecs.T @ b
        da = vecs @ (phi_re * cg - (arg / hh) * cb)
        db = vecs @ (phi_im * cg + (log_abs / hh) * cb)
        if hvp is not None:
            res = _residual_series(hvp, vecs, jnp.stack([g, hvp(b)]), series_coefficients(beta, terms), hh)
            da, db = da + res[0], db + res[1]
        if third:
            c3 = _third_coefficient_function()(beta) * hh**2
            value, along_b = jax.jvp(tgg, (a,), (b,))
            da, db = da + c3 * value, db + c3 * along_b
        return jnp.concatenate([da, db])

    return real_field if state == "real" else complex_field


def principal_flow(
    optimizer: Optimizer,
    loss: Callable,
    *,
    h,
    backend: str = "dense",
    k: Optional[int] = None,
    terms: int = DEFAULT_TERMS,
    iterations: Optional[int] = None,
    state: str = "real",
    third: bool = False,
    seed: int = 0,
    check_at=None,
) -> PrincipalField:
    r"""The principal flow $\theta' = \varphi(hH)\,g$ of ``optimizer`` (``gd()`` or ``heavy_ball(beta)``) on ``loss``.

    Args:
        optimizer: ``modeq.optimizers.gd()``, ``heavy_ball(beta)`` or ``heavy_ball_two_step(beta)``.
        loss: $L(\theta)$ on a flat vector.
        h: step size $> 0$ (an array field of the result: swapping it does not retrace).
        backend: ``"dense"`` (Hessian + ``eigh``) or ``"lanczos"`` (top-``k`` Lanczos pairs + series with ``terms``
            terms on the rest; see the module docstring for the truncation error).
        k: number of Lanczos eigenpairs, $1 \le k \le d$ (Lanczos only).
        terms: $P \ge 1$, terms of the series $\sum_{p<P} a_p x^p$ on the non-top directions (Lanczos only).
        iterations: Lanczos steps $m$, $k \le m \le d$ (default $\min(d, 2k+20)$).
        state: ``"real"``: the field on $\theta \in \mathbb R^d$, $\operatorname{Re}\varphi(hH)\,g$; it *is* the PF
            while every $r_*(h\lambda_i) > 0$ (GD: $h\lambda < 1$), elsewhere it is the modulus ("envelope") flow and
            misses the oscillation (check with :func:`principal_diagnostics`). ``"complex"``: the field on
            $y = (a, b) \in \mathbb R^{2d}$, $\theta = a + ib$ (:func:`to_complex_state`), exact PF in every regime on
            quadratics.
        third: add the third-derivative term $c_3 h^2 T[g, g]$ (:func:`principal_flow_third`).
        seed: seed of the Lanczos start vector (fixed across evaluations, so the field is deterministic).
        check_at: optional $\theta$: validate $k \le d$ and the Hessian (finite, symmetric) there, eagerly.

    Returns a :class:`PrincipalField` (a :class:`VectorField` with ``beta`` an array field too) named ``"principal"``
    (theoretical order 2) or ``"principal+third"`` (order 3), with ``":complex"`` appended for the complex state.
    """
    beta = _beta_of(optimizer)
    if not isinstance(h, jax.core.Tracer):
        check_positive("h", h)
    k, terms, iterations = _check_options(backend, k, terms, iterations, state)
    if check_at is not None:
        theta = jnp.asarray(check_finite_array("theta0", check_at))
        _check_dim(k, iterations, theta.shape[-1])
        check_hessian(loss, theta, backend=backend, seed=seed)
    fn = _cached(_field_function, loss, backend, k, terms, iterations, state, bool(third), int(seed))
    name = ("principal+third" if third else "principal") + ("" if state == "real" else ":complex")
    return PrincipalField(
        fn, jnp.asarray(h, dtype=jnp.float64), name=name, order=3 if third else 2,
        beta=jnp.asarray(beta, dtype=jnp.float64),
    )


def principal_flow_third(optimizer: Optimizer, loss: Callable, *, h, **options) -> PrincipalField:
    r"""The principal flow plus the first term it misses, $c_3 h^2 T[g, g]$ with $T[g, g] = \frac{d^2}{ds^2}
    \nabla L(\theta + s g)|_{s=0}$ (nested ``jax.jvp``): $c_3 = -1/12$ for GD (docs/theory/bea.md#gd), and
    $-(1 + 10\beta + \beta^2)/(12(1-\beta)^5)$ for heavy-ball. Global order 3 on non-quadratic losses (PF: 2).
    Options as :func:`principal_flow`."""
    return principal_flow(optimizer, loss, h=h, third=True, **options)


# =====================================================================================================================
# Diagnostics
# =====================================================================================================================
@dataclasses.dataclass(frozen=True)
class PrincipalDiagnostics:
    r"""Regime of the principal flow at each saved point.

    ``h_lambda_max``/``h_lambda_min``: extreme $h\lambda$ of the Hessian; ``spectral_radius``: $\max_i |r_*(h\lambda_i)|$
    (above 1: the iterates grow); ``phase``: $\arg r_*(h\lambda_{\max})/\pi$ (0 real, 1 sign flip); ``regime``:
    ``"real"`` ($h\lambda_{\max} \le (1-\sqrt\beta)^2$; GD: $\le 1$), ``"complex"`` (HB complex roots),
    ``"oscillatory"`` (negative dominant root, still stable; GD: $1 < h\lambda_{\max} < 2$), ``"divergent"``
    ($h\lambda_{\max} \ge$ ``edge`` $= 2(1+\beta)$); ``crossed_edge[n]``: $h\lambda_{\max}$ crossed the edge of
    stability between points $n-1$ and $n$.
    """

    h: float
    beta: float
    edge: float
    h_lambda_max: np.ndarray
    h_lambda_min: np.ndarray
    spectral_radius: np.ndarray
    phase: np.ndarray
    regime: tuple
    crossed_edge: np.ndarray

    @property
    def crossings(self) -> list:
        """Indices $n$ where the edge of stability was crossed (between $n-1$ and $n$)."""
        return [int(i) for i in np.flatnonzero(self.crossed_edge)]

    @property
    def complex(self) -> bool:
        """Whether the PF is complex somewhere (some point not in the real regime)."""
        return any(r != "real" for r in self.regime)

    def to_dict(self) -> dict:
        """JSON-ready record of every field (arrays as lists), with ``crossings`` and ``edge_of_stability``."""
        return {
            "h": self.h,
            "beta": self.beta,
            "edge_of_stability": self.edge,
            "h_lambda_max": self.h_lambda_max.tolist(),
            "h_lambda_min": self.h_lambda_min.tolist(),
            "spectral_radius": self.spectral_radius.tolist(),
            "phase_over_pi": self.phase.tolist(),
            "regime": list(self.regime),
            "edge_crossings": self.crossings,
        }


def _regime(x_max: float, beta: float) -> str:
    sb = math.sqrt(beta)
    if x_max >= 2.0 * (1.0 + beta):
        return "divergent"
    if x_max <= (1.0 - sb) ** 2:
        return "real"
    if x_max < (1.0 + sb) ** 2:
        return "complex"
    return "oscillatory"


@functools.lru_cache(maxsize=64)
def _extremes_function(loss, backend, iterations, seed):
    """jitted ``thetas -> (lambda_min, lambda_max)`` per point (cached per loss and options)."""
    if backend == "dense":

        def extremes(theta):
            lam = jnp.linalg.eigvalsh(jax.hessian(loss)(theta))
            return lam[0], lam[-1]

    else:
        ritz = _cached(_ritz_function, loss, iterations, seed)

        def extremes(theta):
            lam = ritz(theta)
            return lam[0], lam[-1]

    return jax.jit(lambda thetas: jax.lax.map(extremes, thetas))


@functools.lru_cache(maxsize=64)
def _ritz_function(loss, iterations, seed):
    """jitted ``theta -> `` the ``iterations`` Ritz values of the Hessian (ascending)."""
    grad = jax.grad(loss)
    return jax.jit(
        lambda theta: lanczos_eigenpairs(jax.linearize(grad, theta)[1], theta.shape[-1], iterations, seed)[0]
    )


@functools.lru_cache(maxsize=64)
def _batched_loss(loss):
    return jax.jit(jax.vmap(loss))


def principal_diagnostics(
    loss: Callable, thetas, h, optimizer: Optional[Optimizer] = None, *, backend: str = "dense",
    iterations: Optional[int] = None, seed: int = 0,
) -> PrincipalDiagnostics:
    r"""Per point of ``thetas`` (shape (n, d), or one point): the extreme $h\lambda$, the root modulus and phase, the
    regime of the principal flow and the edge-of-stability crossings (see :class:`PrincipalDiagnostics`).
    ``optimizer``: ``gd()`` (default) or ``heavy_ball(beta)``. ``backend="lanczos"``: extreme Ritz values after
    ``iterations`` steps (default $\min(d, 30)$) instead of a dense ``eigvalsh``."""
    from ..optimizers._catalog import gd

    beta = _beta_of(gd() if optimizer is None else optimizer)
    h = check_positive("h", h)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    thetas = jnp.atleast_2d(jnp.asarray(check_finite_array("thetas", thetas)))
    dim = thetas.shape[-1]
    m = None
    if backend == "lanczos":
        m = min(dim, 30) if iterations is None else check_int_at_least("iterations", iterations, 1)
        if m > dim:
            raise ValueError(f"iterations must be <= d = {dim}, got {m}")
    lo, hi = _cached(_extremes_function, loss, backend, m, int(seed))(thetas)
    x_min, x_max = np.asarray(h * lo), np.asarray(h * hi)
    if not (np.all(np.isfinite(x_min)) and np.all(np.isfinite(x_max))):
        raise ValueError("loss: its Hessian is not finite at some point of thetas")
    log_lo, _, _, _ = _log_root_jit(x_min, beta)
    log_hi, arg_hi, _, _ = _log_root_jit(x_max, beta)
    radius = np.exp(np.maximum(np.asarray(log_lo), np.asarray(log_hi)))
    edge = 2.0 * (1.0 + beta)
    stable = x_max < edge
    crossed = np.zeros(x_max.shape, dtype=bool)
    crossed[1:] = stable[1:] != stable[:-1]
    return PrincipalDiagnostics(
        h=h, beta=beta, edge=edge, h_lambda_max=x_max, h_lambda_min=x_min, spectral_radius=radius,
        phase=np.asarray(arg_hi) / np.pi, regime=tuple(_regime(float(x), beta) for x in x_max), crossed_edge=crossed,
    )


# =====================================================================================================================
# Solve
# =====================================================================================================================
@dataclasses.dataclass(frozen=True)
class PrincipalFlowResult:
    r"""A principal-flow solution on the grid $t = nh$, $n = 0..N$: ``theta`` the real part (compare it with the
    iterates), ``imag`` the imaginary part (0 on quadratics and in the real regime), ``loss`` $L(\operatorname{Re}
    \theta(nh))$, ``diagnostics`` at the real parts, ``solver_steps`` the accepted ODE steps."""

    ts: np.ndarray
    theta: np.ndarray
    imag: np.ndarray
    loss: np.ndarray
    diagnostics: Optional[PrincipalDiagnostics]
    h: float
    optimizer: str
    beta: float
    backend: str
    k: Optional[int]
    terms: int
    state: str
    third: bool
    solver_steps: int

    @property
    def max_imag(self) -> float:
        """$\\max_n \\|\\operatorname{Im}\\theta(nh)\\| / \\max(\\|\\operatorname{Re}\\theta(nh)\\|, 10^{-300})$."""
        re = np.maximum(np.linalg.norm(self.theta, axis=-1), 1e-300)
        return float(np.max(np.linalg.norm(self.imag, axis=-1) / re))

    def to_dict(self) -> dict:
        """JSON-ready record: the options (``flow``, ``optimizer``, ``beta``, ``h``, backend, ...), the trajectory
        and the diagnostics."""
        out = {
            "flow": "principal+third" if self.third else "principal",
            "optimizer": self.optimizer,
            "beta": self.beta,
            "h": self.h,
            "T": float(self.ts[-1]),
            "steps": int(self.ts.shape[0] - 1),
            "backend": self.backend,
            "k": self.k,
            "terms": self.terms,
            "state": self.state,
            "solver_steps": self.solver_steps,
            "theta_final": self.theta[-1].tolist(),
            "loss": self.loss.tolist(),
            "max_relative_imag_at_grid": self.max_imag,
        }
        if self.diagnostics is not None:
            out["diagnostics"] = self.diagnostics.to_dict()
        return out


def principal_flow_solve(
    optimizer: Optimizer,
    loss: Callable,
    theta0,
    *,
    h,
    T,
    backend: str = "dense",
    k: Optional[int] = None,
    terms: int = DEFAULT_TERMS,
    iterations: Optional[int] = None,
    state: str = "complex",
    third: bool = False,
    rtol: float = 1e-12,
    atol: Optional[float] = None,
    max_steps: int = 100_000,
    diagnostics: bool = True,
    seed: int = 0,
) -> PrincipalFlowResult:
    r"""Integrate the principal flow from ``theta0`` (real) on $[0, Nh]$, $N = \mathrm{round}(T/h) \ge 1$, saving at
    every $t = nh$ (Dopri8, which lands on every save time; :func:`modeq.solve.solve_ode`), and return the real part.

    For heavy-ball the flow corresponds to the iterates started on the invariant manifold (on a quadratic
    $m_0 = \operatorname{Re}[(1 - r_*)/(h r_*)]$ per eigendirection). ``state="complex"`` (default) is correct in every
    regime on quadratics (see the module docstring for non-quadratic losses); ``"real"`` is half the cost and exact
    only in the real regime. The Hessian is checked (finite, symmetric) at ``theta0``; with ``backend="lanczos"`` a
    :class:`TruncationWarning` is issued when $|h\lambda_{k+1}|$ at ``theta0`` exceeds half the series' radius of
    convergence. Raises :class:`modeq.solve.SolveError` with the time reached if the solve fails. Other options as
    :func:`principal_flow`; ``rtol``, ``atol``, ``max_steps`` go to the ODE solver.
    """
    from .._pytree import flatten_loss
    from ..solve._ode import solve_ode

    beta = _beta_of(optimizer)
    h = check_positive("h", h)
    T = check_positive("T", T)
    loss, theta0, _ = flatten_loss(loss, theta0)  # a loss on a pytree: solved on the flat vector, as simulate
    theta0 = jnp.asarray(check_finite_array("theta0", theta0), dtype=jnp.float64)
    if theta0.ndim != 1:
        raise ValueError(f"theta0 must be a flat vector, got shape {tuple(theta0.shape)}")
    steps = int(round(T / h))
    if steps < 1:
        raise ValueError(f"T must be at least h/2 (one step), got T = {T:g}, h = {h:g}")
    field = principal_flow(
        optimizer, loss, h=h, backend=backend, k=k, terms=terms, iterations=iterations, state=state, third=third,
        seed=seed, check_at=theta0,
    )
    if backend == "lanczos":
        _warn_truncation(loss, theta0, h, beta, k, iterations, seed)
    ts = np.arange(steps + 1) * h
    y0 = to_complex_state(theta0) if state == "complex" else theta0
    sol = solve_ode(field, y0, ts, rtol=rtol, atol=atol, max_steps=max_steps)
    ys = np.asarray(sol.ys)
    re = np.asarray(real_part(ys)) if state == "complex" else ys
    im = np.asarray(imag_part(ys)) if state == "complex" else np.zeros_like(ys)
    losses = np.asarray(_cached(_batched_loss, loss)(jnp.asarray(re)))
    diag = principal_diagnostics(loss, re, h, optimizer, backend=backend, seed=seed) if diagnostics else None
    return PrincipalFlowResult(
        ts=ts, theta=re, imag=im, loss=losses, diagnostics=diag, h=h, optimizer=optimizer.name, beta=beta,
        backend=backend, k=k, terms=terms, state=state, third=third, solver_steps=sol.steps,
    )


def _warn_truncation(loss, theta0, h, beta, k, iterations, seed):
    dim = theta0.shape[0]
    if k >= dim:
        return
    m = _check_dim(k, iterations, dim)
    values = _cached(_ritz_function, loss, m, seed)(theta0)
    x_next = h * float(np.sort(np.abs(np.asarray(values)))[::-1][k]) if m > k else float("nan")
    radius = (1.0 - math.sqrt(beta)) ** 2
    if not x_next < 0.5 * radius:
        warnings.warn(
            f"lanczos: |h lambda_(k+1)| ~ {x_next:.3g} at theta0 is not below half the radius of convergence "
            f"{radius:.3g} of the series on the residual directions: increase k (or terms)",
            TruncationWarning,
            stacklevel=3,
        )


def principal_flow_values(
    optimizer: Optimizer,
    loss: Callable,
    theta_start,
    h,
    steps: int,
    *,
    third: bool = False,
    rtol: float = 1e-12,
    pad_to: Optional[int] = None,
    max_steps: int = 100_000,
):
    r"""$\operatorname{Re}\theta(nh)$, $n = 0..$``steps``, of the principal flow (``third``: plus $c_3h^2T[g,g]$) started
    at the real ``theta_start``, and an estimate of its numerical error: ``(values, floor)``.

    The flow is integrated in the complex state (:func:`to_complex_state`; dense back-end), which is the principal
    flow in every regime: on a quadratic $\operatorname{Re}\theta(nh)$ equals the iterates started on the slow
    manifold by :func:`modeq.series.slow_manifold_start` (GD: any $h\lambda < 2$; heavy-ball: real, complex and
    negative dominant roots, mixed), and in the real regime the imaginary part stays 0 (the real-state field). It is
    solved twice, saving on the grid $nh$ and on the grid $nh/2$ (Dopri8 lands on every save time): the finer solution
    is returned (shape (steps+1, d), real) and ``floor`` is the largest difference between the two at $t = nh$.
    ``pad_to`` (>= ``steps``) pads the save times so that sweeps over ``h`` reuse one compiled solve. Raises
    :class:`~modeq._errors.RegimeError` for an optimizer without a principal flow and :class:`modeq.solve.SolveError` if a
    solve fails.
    """
    from ..solve._ode import solve_ode

    _beta_of(optimizer)
    h = check_positive("h", h)
    steps = check_int_at_least("steps", steps, 1)
    pad = max(steps, 0 if pad_to is None else int(pad_to))
    theta_start = jnp.asarray(check_finite_array("theta_start", theta_start), dtype=jnp.float64)
    field = principal_flow(optimizer, loss, h=h, state="complex", third=third)
    y0 = to_complex_state(theta_start)
    coarse = solve_ode(field, y0, np.arange(steps + 1) * h, rtol=rtol, pad_to=2 * pad + 1, max_steps=max_steps)
    fine = solve_ode(field, y0, np.arange(2 * steps + 1) * (h / 2), rtol=rtol, pad_to=2 * pad + 1, max_steps=max_steps)
    values = np.asarray(real_part(fine.ys[::2]))
    floor = float(np.max(np.linalg.norm(values - np.asarray(real_part(coarse.ys)), axis=-1)))
    return values, floor
