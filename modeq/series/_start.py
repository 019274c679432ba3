r"""One start policy on the slow manifold: :func:`slow_manifold_start`.

A momentum method started on its invariant (slow) manifold $m = M_h(\theta)$ is the memoryless map, whose modified
equations and principal flow the package builds (Kovachki & Stuart, JMLR 22 (2021); Cattaneo & Shigida, arXiv
2502.02132 and 2509.08483). Every front end starts its iterates here, with one policy:

**Quadratic losses** (detected numerically, :func:`quadratic_model`): exact per eigen-direction. For an optimizer that
is linear in the gradient and its momenta (:meth:`~modeq.optimizers.Optimizer.heavy_ball_form` not ``None``) the
gradient component $\gamma = u_i\cdot g$ and the momenta along an eigenvector $u_i$ of $H$ (eigenvalue $\lambda_i$)
evolve by a constant matrix $S(h\lambda_i)$; the slow manifold is its dominant eigenvector $(1, c_i)$ (eigenvalue
$r_*$ of largest modulus; equal moduli: $\operatorname{Im} r_* > 0$, the convention of
:func:`modeq.flows.principal_flow`). For heavy-ball in momentum-sum form $S = \begin{pmatrix}1-h\lambda & -h\lambda\beta\\
1 & \beta\end{pmatrix}$, $r_*$ the dominant root of $r^2 - (1+\beta-h\lambda)r + \beta = 0$ and $c = 1/(r_* - \beta)$,
i.e. $m = (1-r_*)/(h r_*)\,(\theta - \theta^*)$ along $u_i$. The start is $m_0 = \sum_i \operatorname{Re}(c_i)\,
(u_i\cdot g_0)\,u_i$. Where $r_*$ is complex no real invariant manifold exists; this $m_0$ is then the sum of the two
conjugate complex manifolds, and the iterates are $\operatorname{Re}(r_*^n)$ times the start along $u_i$: exactly the
real part of the (complex) principal flow started at the real $\theta_0$, at $t = nh$.

**Other losses**: the fixed point of the graph transform along the past orbit. The momenta at $\theta_0$ on the
manifold are those of the optimizer run for $K$ steps from a point $\theta_{-K}$ of the past slow orbit, started there
on an approximate manifold $M^{(2)}$ (:func:`~modeq.series.manifold_iterate`): the off-manifold error decays like
$\rho^K$, $\rho = \beta/|r_*| < 1$ the fast multiplier. $\theta_{-K}$ is found by Newton's method on the landing
condition (shooting; the backward orbit of the memoryless map is its first guess); $K = 16, 24, 36, \dots$ (factors 1.5) until two
successive values agree to ``tol`` (relative). The loop is rolled (one compiled program for every $K$), unlike the
$2^k$-gradient unrolled tree of :func:`~modeq.series.manifold_point` (whose rounding errors also grow like
$(2/(1-\beta))^k$); Newton's linear systems are dense up to ``MAX_SHOOTING_DIM`` parameters and solved by GMRES on
Jacobian-vector products beyond. When the increments do not shrink a
:class:`~modeq._errors.RegimeError` names $h$ and $h\lambda_{\max}/(1-\beta)^2$; when the past orbit leaves the region where
it can be followed before ``tol`` is reached, the best estimate is returned with its accuracy in ``residual`` and a
note.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import RegimeError
from ..optimizers._spec import Optimizer
from ._manifold import manifold_iterate

METHODS = ("none", "exact quadratic", "fixed point")
#: largest dimension for the dense Hessian of the quadratic test
MAX_DENSE_DIM = 2000
#: largest dimension for a dense Jacobian of the shooting map (GMRES beyond)
MAX_SHOOTING_DIM = 256


@dataclasses.dataclass(frozen=True)
class StartResult:
    r"""The start of an optimizer on its slow manifold at $\theta_0$.

    ``momenta``: one array per momentum variable (``()`` without momenta); ``method``: ``"none"`` (no momenta),
    ``"exact quadratic"`` or ``"fixed point"``; ``residual``: estimated relative error of the momenta (the misfit of the
    quadratic model for the exact start, the last increment of the fixed point); ``complex``: some eigen-direction is
    in the complex regime (no real invariant manifold: the start reproduces the real part of the principal flow);
    ``expansion``: $h\lambda_{\max}/(1-\beta)^2$ at $\theta_0$ (``None`` without momenta); ``notes``: sentences.
    """

    momenta: tuple
    method: str
    residual: float
    complex: bool
    h: float
    expansion: Optional[float]
    notes: tuple = ()

    def to_dict(self) -> dict:
        """Strict-JSON-ready record (momenta as lists)."""
        from .._verdict import jsonable

        return jsonable({"method": self.method, "residual": self.residual, "complex": self.complex, "h": self.h,
                         "expansion_parameter": self.expansion, "notes": list(self.notes),
                         "momenta": [np.asarray(m).tolist() for m in self.momenta]})


# =====================================================================================================================
# Quadratic detection
# =====================================================================================================================
def _cached(factory):
    """``factory(loss)`` memoized per hashable loss (one compiled program per loss, at most 64 kept), uncached for an
    unhashable loss."""
    cached = functools.lru_cache(maxsize=64)(factory)

    def get(loss):
        try:
            hash(loss)
        except TypeError:
            return factory(loss)
        return cached(loss)

    return get


_hessian_function = _cached(lambda loss: jax.jit(jax.hessian(loss)))
_grad_function = _cached(lambda loss: jax.jit(jax.grad(loss)))
_loss_function = _cached(jax.jit)  # compiled once: an eager loss compiles each of its operations


# =====================================================================================================================
# Quadratic detection (numerical)
# =====================================================================================================================
def quadratic_model(loss: Callable, theta0, *, rtol: float = 1e-11, max_dim: int = MAX_DENSE_DIM, seed: int = 0):
    r"""``(H, g0, misfit)`` if ``loss`` is a quadratic $\tfrac12\theta^\top A\theta - b^\top\theta + c$, else ``None``.

    Checked numerically: the Hessian at $\theta_0$ equals the Hessian at a random second point, and the quadratic
    model $L_0 + g_0\cdot d + \tfrac12 d^\top H d$ reproduces the loss at two random points, both to ``rtol``
    (relative to $|L| + |d|^\top|H||d|$). ``misfit`` is the largest relative misfit seen. ``None`` above ``max_dim``
    parameters (dense Hessians) or when the loss is not finite there.
    """
    theta0 = jnp.asarray(theta0, jnp.float64)
    if theta0.ndim != 1 or theta0.size > max_dim:
        return None
    hess = _hessian_function(loss)
    H0 = np.asarray(hess(theta0))
    g0 = np.asarray(_grad_function(loss)(theta0))
    loss_value = _loss_function(loss)
    L0 = float(loss_value(theta0))
    if not (np.all(np.isfinite(H0)) and np.all(np.isfinite(g0)) and math.isfinite(L0)):
        return None
    rng = np.random.default_rng(seed)
    theta0_host = np.asarray(theta0)
    scale = 1.0 + float(np.max(np.abs(theta0_host)))
    misfit = 0.0
    for _ in range(2):
        d = rng.standard_normal(theta0.shape) * 0.5 * scale
        model = L0 + g0 @ d + 0.5 * d @ H0 @ d
        Lp = float(loss_value(jnp.asarray(theta0_host + d)))
        ref = max(abs(Lp), abs(L0), float(np.abs(d) @ np.abs(H0) @ np.abs(d)), 1e-300)
        misfit = max(misfit, abs(Lp - model) / ref)
        if not misfit <= rtol:
            return None
    H1 = np.asarray(hess(jnp.asarray(theta0_host + d)))
    size = float(np.max(np.abs(H0))) + 1e-300
    misfit = max(misfit, float(np.max(np.abs(H1 - H0))) / size)
    if not misfit <= rtol:
        return None
    return 0.5 * (H0 + H0.T), g0, misfit


# =====================================================================================================================
# Exact start on quadratics
# =====================================================================================================================
@eqx.filter_jit
def _step_matrices_and_probe(optimizer, h, lams, z):
    k = len(optimizer.momenta)

    def step(z, lam):
        g = z[0:1]
        ms = tuple(z[i + 1 : i + 2] for i in range(k))
        theta = jnp.zeros(1, jnp.float64)
        new = optimizer.update_momenta(ms, g, theta)
        d = optimizer.direction(new, ms, g, theta, h, None)
        return jnp.concatenate([g - h * lam * d, *new])

    S = jax.vmap(lambda lam: jax.jacfwd(step)(jnp.zeros(k + 1, jnp.float64), lam))(lams)
    return S, jax.vmap(lambda lam: step(z, lam))(lams)


def _one_step_matrices(optimizer: Optimizer, h: float, lams: np.ndarray) -> np.ndarray:
    r"""$S(h\lambda)$ for each $\lambda$: the one-step map of $(\gamma, m_1, \dots, m_k)$ along an eigenvector, with
    $\gamma$ the gradient component (shape (n, k+1, k+1)). ``None`` if the step is not linear in $(\gamma, m)$."""
    k = len(optimizer.momenta)
    z = np.random.default_rng(1).standard_normal(k + 1)
    S, direct = _step_matrices_and_probe(optimizer, jnp.asarray(h, jnp.float64), jnp.asarray(lams, jnp.float64),
                                         jnp.asarray(z))
    S, direct = np.asarray(S), np.asarray(direct)
    if not np.allclose(direct, S @ z, rtol=1e-12, atol=1e-12 * np.abs(direct).max()):
        return None
    return S


def exact_quadratic_momenta(optimizer: Optimizer, H, g0, h: float):
    r"""``(momenta, complex)``: the exact start $m_\ell = \sum_i \operatorname{Re}(c_{\ell,i})(u_i\cdot g_0)u_i$ on a
    quadratic with Hessian ``H`` (see the module docstring), or ``None`` when the optimizer is not linear in its
    gradient and momenta or an eigen-direction has no dominant eigenvector with a gradient component."""
    if optimizer.heavy_ball_form() is None or not optimizer.momenta:
        return None
    lam, vecs = np.linalg.eigh(np.asarray(H))
    S = _one_step_matrices(optimizer, h, lam)
    if S is None:
        return None
    k = len(optimizer.momenta)
    coefficients = np.zeros((k, lam.shape[0]), dtype=complex)
    is_complex = False
    for i in range(lam.shape[0]):
        values, vectors = np.linalg.eig(S[i])
        mod = np.abs(values)
        top = np.flatnonzero(mod >= mod.max() * (1.0 - 1e-12))
        j = top[np.argmax(values[top].imag)] if top.size > 1 else top[0]
        v = vectors[:, j]
        if abs(v[0]) <= 1e-12 * np.linalg.norm(v):
            return None
        coefficients[:, i] = v[1:] / v[0]
        is_complex |= abs(values[j].imag) > 1e-9 * max(mod[j], 1e-300)
    comps = vecs.T @ np.asarray(g0)
    momenta = tuple(jnp.asarray(vecs @ (coefficients[l].real * comps)) for l in range(k))
    return momenta, bool(is_complex)


# =====================================================================================================================
# Fixed point along the past orbit (shooting)
# =====================================================================================================================
def _forward_impl(optimizer, loss, theta_past, h, steps):
    """The optimizer run ``steps`` steps from ``theta_past`` with momenta ``M^(2)(theta_past)``: (theta, momenta)."""
    grad = jax.grad(loss)
    momenta = manifold_iterate(optimizer, grad, 2)(theta_past, h)

    def body(_, carry):
        theta, m = carry
        return optimizer.step(theta, m, grad(theta), h, None)

    return jax.lax.fori_loop(0, steps, body, (theta_past, momenta))


_forward = eqx.filter_jit(_forward_impl)


@eqx.filter_jit
def _landing_jacobian(optimizer, loss, theta_past, h, steps):
    return jax.jacfwd(lambda t: _forward_impl(optimizer, loss, t, h, steps)[0])(theta_past)


@eqx.filter_jit
def _landing_jvp(optimizer, loss, theta_past, h, steps, tangent):
    return jax.jvp(lambda t: _forward_impl(optimizer, loss, t, h, steps)[0], (theta_past,), (tangent,))[1]


def _newton_direction(optimizer, loss, theta_past, h, steps, miss):
    """$J^{-1}$ ``miss`` for the Jacobian $J$ of the landing point: dense up to ``MAX_SHOOTING_DIM`` parameters, GMRES on
    Jacobian-vector products beyond."""
    if miss.shape[0] <= MAX_SHOOTING_DIM:
        return np.linalg.solve(np.asarray(_landing_jacobian(optimizer, loss, theta_past, h, steps)), miss)
    from scipy.sparse.linalg import LinearOperator, gmres

    d = miss.shape[0]
    op = LinearOperator((d, d), dtype=np.float64, matvec=lambda v: np.array(
        _landing_jvp(optimizer, loss, theta_past, h, steps, jnp.asarray(np.ravel(v), jnp.float64))))
    delta, info = gmres(op, np.array(miss), rtol=1e-13, atol=0.0, restart=min(d, 50), maxiter=20)
    return delta if info == 0 else np.full(d, np.nan)


@eqx.filter_jit
def _backward_guess(optimizer, loss, theta, h, steps):
    """``steps`` steps of the memoryless map run backward (explicit: ``theta + h D(M^(1))``), a first guess of the past
    orbit."""
    grad = jax.grad(loss)
    manifold = manifold_iterate(optimizer, grad, 1)

    def body(_, t):
        m = manifold(t, h)
        return 2.0 * t - optimizer.step(t, m, grad(t), h, None)[0]  # t + h D: the step reversed

    return jax.lax.fori_loop(0, steps, body, theta)


@eqx.filter_jit
def _shoot_dense(optimizer, loss, theta0, theta_past, h, steps, tol):
    """Newton on the landing condition in one compiled loop (dense Jacobians: up to ``MAX_SHOOTING_DIM`` parameters):
    the same iteration as :func:`_shoot`'s host loop (at most 30 steps, stop at ``|miss| <= tol``, at a non-finite
    miss or step; keep the best point seen), one dispatch instead of two per Newton step. Returns ``(theta_past,
    momenta, |miss|)`` of the best point (``|miss|`` infinite if none was finite)."""

    def landing(t):
        theta, momenta = _forward_impl(optimizer, loss, t, h, steps)
        return theta, (theta, momenta)

    # placeholders of the momenta's structure (the optimizer's state at rest; replaced at the first finite point)
    zeros = jax.tree.map(jnp.zeros_like, optimizer.initial_momenta(theta_past, jnp.zeros_like(theta_past), "zero"))
    inf = jnp.asarray(jnp.inf, theta_past.dtype)

    def cond(state):
        it, _, _, _, _, go = state
        return go & (it < 30)

    def body(state):
        it, tp, best_tp, best_m, best_norm, _ = state
        jac, (theta, momenta) = jax.jacfwd(landing, has_aux=True)(tp)
        miss = theta - theta0
        norm = jnp.linalg.norm(miss)
        finite = jnp.isfinite(norm)
        better = finite & (norm < best_norm)
        best_tp = jnp.where(better, tp, best_tp)
        best_m = jax.tree.map(lambda a, b: jnp.where(better, a, b), momenta, best_m)
        best_norm = jnp.where(better, norm, best_norm)
        delta = jnp.linalg.solve(jac, miss)
        go = finite & (norm > tol) & jnp.all(jnp.isfinite(delta))
        return it + 1, jnp.where(go, tp - delta, tp), best_tp, best_m, best_norm, go

    state = (jnp.asarray(0), theta_past, theta_past, zeros, inf, jnp.asarray(True))
    _, _, best_tp, best_m, best_norm, _ = jax.lax.while_loop(cond, body, state)
    return best_tp, best_m, best_norm


def _shoot(optimizer, loss, theta0, theta_past, h, steps, scale):
    """Newton on the landing condition; returns (theta_past, momenta at theta0, |miss|) or None on failure."""
    steps_j = jnp.asarray(steps)
    h = jnp.asarray(h, jnp.float64)
    if np.size(theta0) <= MAX_SHOOTING_DIM:
        tp, momenta, norm = _shoot_dense(optimizer, loss, jnp.asarray(theta0), jnp.asarray(theta_past), h, steps_j,
                                         jnp.asarray(1e-14 * scale))
        norm = float(norm)
        return (tp, momenta, norm) if math.isfinite(norm) else None
    best = None
    for _ in range(30):
        theta, momenta = _forward(optimizer, loss, theta_past, h, steps_j)
        miss = np.asarray(theta) - np.asarray(theta0)
        norm = float(np.linalg.norm(miss))
        if not math.isfinite(norm):
            return best
        if best is None or norm < best[2]:
            best = (theta_past, momenta, norm)
        if norm <= 1e-14 * scale:
            break
        try:
            delta = _newton_direction(optimizer, loss, theta_past, h, steps_j, miss)
        except np.linalg.LinAlgError:
            return best
        if not np.all(np.isfinite(delta)):
            return best
        theta_past = jnp.asarray(np.asarray(theta_past) - delta)
    return best


def _expansion(optimizer, H) -> float:
    beta = optimizer.slowest_decay()
    lam_max = float(np.max(np.abs(np.linalg.eigvalsh(np.asarray(H))))) if np.size(H) else 0.0
    return lam_max / (1.0 - beta) ** 2


def _regime_error(optimizer, h, eta, what):
    return RegimeError(
        f"h: the slow manifold of {optimizer.name} could not be computed at h = {h:g} ({what}; "
        f"h*lambda_max/(1-beta)^2 = {eta:.3g}, the reduction to a memoryless flow needs it << 1): use a smaller h, "
        "or start the momenta at rest (modeq compare --init rest)"
    )


def _past_orbit_start(optimizer, loss, theta0, h, tol, eta, max_steps):
    scale = 1.0 + float(np.max(np.abs(np.asarray(theta0))))
    theta_past, done, previous, increments = theta0, 0, None, []
    notes = []
    steps = 16
    while steps <= max_steps:
        theta_past = _backward_guess(optimizer, loss, theta_past, jnp.asarray(h, jnp.float64), jnp.asarray(steps - done))
        shot = _shoot(optimizer, loss, theta0, theta_past, h, steps, scale)
        if shot is None or shot[2] > 1e-10 * scale:
            break
        theta_past, momenta, _ = shot
        done = steps
        if previous is not None:
            size = max(float(sum(np.linalg.norm(np.asarray(m)) for m in momenta)), 1e-300)
            inc = float(sum(np.linalg.norm(np.asarray(a) - np.asarray(b)) for a, b in zip(momenta, previous))) / size
            increments.append(inc)
            if inc <= tol:
                return momenta, inc, notes
            if len(increments) >= 3 and increments[-1] >= increments[-2] >= increments[-3]:
                raise _regime_error(optimizer, h, eta, f"the fixed-point increments do not shrink ({increments[-1]:.2g})")
        previous = momenta
        steps = int(steps * 1.5)
    if previous is None or not increments:
        raise _regime_error(optimizer, h, eta, "the past orbit could not be followed")
    if increments[-1] > 1e-3:
        raise _regime_error(optimizer, h, eta, f"the fixed point did not converge (last relative increment "
                            f"{increments[-1]:.2g})")
    notes.append(f"fixed point not converged to tol = {tol:.1g}: the past orbit could be followed for {done} steps only; "
                 f"estimated relative error of the momenta {increments[-1]:.2g}")
    return previous, increments[-1], notes


def slow_manifold_start(optimizer: Optimizer, loss: Callable, theta0, h, *, tol: float = 1e-12,
                        max_steps: int = 4096) -> StartResult:
    r"""The momenta that start ``optimizer`` on its slow manifold at ``theta0`` with step size ``h``.

    Exact per eigen-direction on quadratic losses (complex regime included: the iterates are then the real part of
    the principal flow at $t = nh$); elsewhere the fixed point of the graph transform along the past orbit, converged
    to ``tol`` (relative) over at most ``max_steps`` past steps. See the module docstring for the formulas and sources.

    Raises :class:`~modeq._errors.RegimeError` when the optimizer has no slow-manifold reduction
    (:meth:`~modeq.optimizers.Optimizer.reduction_obstacle`), or when the fixed point does not converge (naming
    ``h`` and $h\lambda_{\max}/(1-\beta)^2$).
    """
    from .._validation import check_finite_array, check_positive

    h = check_positive("h", h)
    if not optimizer.momenta:
        return StartResult((), "none", 0.0, False, h, None, ("no momenta: nothing to start",))
    obstacle = optimizer.reduction_obstacle()
    if obstacle is not None:
        raise RegimeError(f"optimizer: {optimizer.name} has no slow-manifold reduction: {obstacle}")
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")
    theta0 = jnp.asarray(check_finite_array("theta0", theta0), jnp.float64)
    quad = quadratic_model(loss, theta0)
    notes = []
    if quad is not None:
        H, g0, misfit = quad
        eta = h * _expansion(optimizer, H)
        exact = exact_quadratic_momenta(optimizer, H, g0, h)
        if exact is not None:
            momenta, is_complex = exact
            if is_complex:
                notes.append("complex regime in some eigen-direction: no real invariant manifold; the start is the sum "
                             "of the two conjugate manifolds, and the iterates are the real part of the principal flow")
            return StartResult(momenta, "exact quadratic", max(misfit, 1e-16), is_complex, h, eta, tuple(notes))
        notes.append("quadratic loss, but the optimizer is not linear in its gradient and momenta: fixed point")
    else:
        H = np.asarray(_hessian_function(loss)(theta0)) if theta0.size <= MAX_DENSE_DIM else np.zeros((0, 0))
        eta = h * _expansion(optimizer, H) if H.size else None
    eta_value = float("nan") if eta is None else eta
    momenta, residual, more = _past_orbit_start(optimizer, loss, theta0, h, tol, eta_value, max_steps)
    return StartResult(tuple(momenta), "fixed point", residual, False, h, eta, tuple(notes + more))
