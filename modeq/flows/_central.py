r"""The central flow of gradient descent at the edge of stability (Cohen, Damian, Talwalkar, Kolter & Lee 2025).

Gradient descent $\theta_{n+1} = \theta_n - h\nabla L(\theta_n)$ with a step past $2/\lambda_{\max}$ does not diverge
on neural-network losses: the sharpness $S_1(\theta) = \lambda_{\max}(\nabla^2 L)$ rises to $2/h$ and hovers there
while the iterates oscillate along the top eigenvectors and the loss keeps falling ("edge of stability", Cohen et al.
2021). The *central flow* is an ODE for the time-averaged iterates. In time $t = nh$,

$$\theta' = -\Big[\nabla L(\theta) + \tfrac12 \sum_{i=1}^k \sigma_i^2\, \nabla S_i(\theta)\Big],
\qquad \nabla S_i = D^3L(\theta)[u_i, u_i],$$

with $(S_i, u_i)$ the top-$k$ eigenpairs of $\nabla^2 L(\theta)$ and $\sigma_i^2 \ge 0$ (the variance of the
oscillation along $u_i$) fixed by the complementarity conditions

$$\sigma_i^2 \ge 0, \qquad S_i \le 2/h, \qquad \sigma_i^2\,(2/h - S_i) = 0, \qquad
\sigma_i^2 > 0 \Rightarrow \tfrac{d}{dt} S_i = 0 .$$

Below the edge every $\sigma_i^2 = 0$ and the flow is gradient flow; on the edge $\frac{d}{dt}S_i =
-\nabla S_i\cdot\nabla L - \frac12\sum_j (\nabla S_i\cdot\nabla S_j)\sigma_j^2$ is a linear complementarity problem
(LCP) in $\sigma^2$ with the positive semi-definite Gram matrix $G_{ij} = \nabla S_i\cdot\nabla S_j$. The flow
predicts GD's time-averaged loss $\bar L = L(\theta) + \frac12 \sum_i \sigma_i^2 S_i$ (the second moment of the
oscillation along $u_i$ costs $\frac12\sigma_i^2 S_i$) and its sharpness, pinned at $2/h$.

**Integration (the paper's scheme, made higher order).** The reference code (github.com/alex-damian/
central_flows_jax, ``flows.py``) does forward-Euler substeps $dt$ and solves, at each, the complementarity problem
for the *predicted* gap $a_i^{+} = (2/h - S_i) + dt\,(-\dot S_i)$: $\sigma^2 \ge 0$, $a^+ \ge 0$,
$\sigma^2\cdot a^+ = 0$, i.e. $\mathrm{LCP}(q, M)$ with $q = (2/h - S) + \tau\,\nabla S\,\nabla L$ and
$M = \frac\tau2 G$, $\tau = dt$. We use the same relaxed field inside a classical Runge-Kutta step (``method="rk4"``,
default; ``"euler"`` is the paper's scheme). On the edge ($S_i = 2/h$) $q$ and $M$ both scale with $\tau$, so the
relaxed field *equals* the exact central-flow field and the edge manifold is invariant; off the edge it pulls $S_i$
back with time constant $\tau$ (Baumgarte stabilisation), so the drift of the discretisation never accumulates. The
relaxation starts pushing when an eigenvalue is predicted to reach the edge within $\tau$: the entry into the edge is
smoothed over a time $O(\tau)$, an $O(\tau)$ error in the trajectory (measured in ``tests/test_central.py``). Below
the edge (every $a_i > \tau|\dot S_i|$) the field is exactly $-\nabla L$: the scheme is RK4 of gradient flow.

The LCP is solved exactly by enumerating the $2^k$ active sets (``k <= 8``) and keeping the one with the smallest
violation of $\sigma^2 \ge 0$, $a^+ \ge 0$ (zero up to rounding when the LCP is solvable; it always is when $G$ is
positive definite). Entering and leaving the edge are the changes of the active set $\{i : \sigma_i^2 > 0\}$.

**Validity.** The central flow is the paper's ansatz (time-averaging over a period-2 oscillation plus a third-order
Taylor expansion of the loss along it); its accuracy against GD is an empirical claim, measured by
:func:`modeq.studies._central.central_flow_study`. It needs simple top eigenvalues (:math:`\nabla S_i` is the
gradient of a simple eigenvalue). With several eigenvalues *equal* at the edge the paper replaces the diagonal
$\sigma_i^2$ by a positive semi-definite matrix $X$ (a semidefinite complementarity problem with off-diagonal terms
$D^3L[u_i, u_j]$); that matrix form is not implemented here: the diagonal form is exact when the off-diagonal
third derivatives $D^3L[u_i, u_j]\cdot\theta'$, $i \ne j$, vanish (as in the decoupled two-edge example) and
otherwise only corrected step by step by the relaxation.

**Heavy-ball.** Not implemented (:class:`~modeq._errors.RegimeError`): its edge is $h\lambda = 2(1+\beta)$ and the same
period-2 averaging suggests $\theta' = -[\nabla L + \frac12\sum\sigma_i^2\nabla S_i]/(1-\beta)$ with
$S_i \le 2(1+\beta)/h$, but the momentum's own oscillation and the $O(h)$ corrections of the slow manifold at
$h\lambda = O(1)$ are not accounted for; see ``docs/builders/central_flow.md``.

References: J. Cohen, A. Damian, A. Talwalkar, J. Z. Kolter, J. D. Lee, "Understanding optimization in deep learning
with central flows", ICLR 2025, arXiv:2410.24206; J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, "Gradient
descent on neural networks typically occurs at the edge of stability", ICLR 2021, arXiv:2103.00065.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import InputError, RegimeError
from .._validation import check_finite_array, check_positive
from ..optimizers._spec import Optimizer
from ._principal import lanczos_eigenpairs

BACKENDS = ("dense", "lanczos")
METHODS = ("rk4", "euler")
MAX_K = 8


# =====================================================================================================================
# The linear complementarity problem
# =====================================================================================================================
def solve_lcp(M, q):
    r"""Solve $\mathrm{LCP}(q, M)$: find $s \ge 0$ with $w = q + Ms \ge 0$ and $s\cdot w = 0$, exactly, by enumerating
    the $2^k$ active sets $A$ ($M_{AA} s_A = -q_A$, $s_{A^c} = 0$) and keeping the one with the smallest violation
    $\max(\max_i(-s_i), \max_i(-w_i), 0)$. For $M$ positive semi-definite the LCP is the KKT system of the convex
    quadratic program $\min_{s\ge0} \frac12 s^\top M s + q^\top s$ (its solution is unique when $M$ is positive
    definite). Returns ``(s, violation)``; ``violation`` is 0 up to rounding when the LCP is solvable. jit-friendly;
    $k \le 8$.
    """
    k = q.shape[0]
    masks = jnp.asarray(list(itertools.product([False, True], repeat=k)), dtype=bool)  # (2^k, k), all-False first
    scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(M))), 1e-300)

    def candidate(mask):
        both = mask[:, None] & mask[None, :]
        A = jnp.where(both, M, 0.0) + jnp.diag(jnp.where(mask, 1e-13 * scale, 1.0))
        s = jnp.where(mask, jnp.linalg.solve(A, jnp.where(mask, -q, 0.0)), 0.0)
        w = q + M @ s
        viol = jnp.maximum(jnp.max(jnp.maximum(-s, 0.0)), jnp.max(jnp.where(mask, 0.0, jnp.maximum(-w, 0.0))))
        return jnp.maximum(s, 0.0), viol

    ss, viols = jax.vmap(candidate)(masks)
    best = jnp.argmin(viols)  # ties: the smallest active set (argmin takes the first)
    return ss[best], viols[best]


# =====================================================================================================================
# The field
# =====================================================================================================================
class CentralState(eqx.Module):
    """Everything the field computes at one point: the top-``k`` eigenvalues ``sharpness`` (descending), the
    oscillation variances ``sigma2``, the LCP ``violation``, the loss and the predicted time-averaged loss
    ``loss_avg`` $= L + \\frac12\\sum_i \\sigma_i^2 S_i$, and ``next_sharpness``, the $(k+1)$-th eigenvalue
    (which the flow assumes below the edge)."""

    velocity: jax.Array
    sharpness: jax.Array
    sigma2: jax.Array
    violation: jax.Array
    loss: jax.Array
    loss_avg: jax.Array
    next_sharpness: jax.Array


class CentralFlow(eqx.Module):
    r"""The central-flow field of GD with step ``h`` on ``loss`` (built by :func:`central_flow`).

    ``flow.state(theta, tau)`` evaluates the relaxed field (module docstring) with relaxation time ``tau``;
    ``flow(theta)`` is the exact field on the edge and below it (``tau -> 0`` limit: ``tau = 1e-8 h``).
    """

    loss: Callable = eqx.field(static=True)
    h: float
    k: int = eqx.field(static=True)
    backend: str = eqx.field(static=True)
    iterations: int | None = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    edge_factor: float = eqx.field(static=True, default=2.0)  # the edge is edge_factor / h
    rate: float = eqx.field(static=True, default=1.0)  # theta' = -rate [grad L + ...]

    @property
    def edge(self):
        """The stability edge $2/h$ of the sharpness."""
        return self.edge_factor / self.h

    def eigenpairs(self, theta):
        r"""Top-``k`` eigenvalues (descending) and eigenvectors (columns) of $\nabla^2 L(\theta)$, and the
        $(k+1)$-th eigenvalue (the $k$-th when $k = d$): dense ``eigh`` of the Hessian, or ``iterations`` Lanczos steps
        on Hessian-vector products (matrix-free; Ritz values)."""
        grad = jax.grad(self.loss)
        if self.backend == "dense":
            values, vectors = jnp.linalg.eigh(jax.hessian(self.loss)(theta))
        else:
            hvp = jax.linearize(grad, theta)[1]
            values, vectors = lanczos_eigenpairs(hvp, theta.shape[-1], self.iterations, self.seed)
        return values[::-1][: self.k], vectors[:, ::-1][:, : self.k], values[::-1][min(self.k, values.shape[0] - 1)]

    def eigen_gradients(self, theta, vectors):
        r"""$\nabla S_i = \nabla_\theta\,[u_i^\top \nabla^2 L(\theta) u_i] = D^3L(\theta)[u_i, u_i]$ for each column
        $u_i$ (the derivative of a simple eigenvalue, Hellmann-Feynman): a gradient of a Hessian-vector product."""
        grad = jax.grad(self.loss)

        def quad(th, u):
            return jnp.dot(u, jax.jvp(grad, (th,), (u,))[1])

        return jax.vmap(lambda u: jax.grad(quad)(theta, u))(vectors.T)  # (k, d)

    def state(self, theta, tau) -> CentralState:
        r"""The relaxed field at ``theta``: $\theta' = -\mathrm{rate}\,[\nabla L + \frac12 \nabla S^\top\sigma^2]$
        with $\sigma^2 = \mathrm{LCP}(q, M)$, $q = (2/h - S) + \tau\,\mathrm{rate}\,\nabla S\nabla L$,
        $M = \frac\tau2\,\mathrm{rate}\,G$."""
        value, g = jax.value_and_grad(self.loss)(theta)
        values, vectors, next_value = self.eigenpairs(theta)
        gs = self.eigen_gradients(theta, vectors)
        q = (self.edge - values) + tau * self.rate * (gs @ g)
        M = 0.5 * tau * self.rate * (gs @ gs.T)
        sigma2, violation = solve_lcp(M, q)
        velocity = -self.rate * (g + 0.5 * gs.T @ sigma2)
        return CentralState(velocity, values, sigma2, violation, value, value + 0.5 * jnp.dot(sigma2, values),
                            next_value)

    def __call__(self, theta):
        """$\\theta'$ of the central flow at ``theta`` (the relaxation time is ``1e-8 h``: the exact field)."""
        return self.state(theta, 1e-8 * self.h).velocity


def central_flow(optimizer: Optimizer, loss: Callable, *, h, k: int = 1, backend: str = "dense",
                 iterations: int | None = None, seed: int = 0) -> CentralFlow:
    r"""The central flow of ``optimizer`` (gradient descent only) with step ``h`` on ``loss``: a :class:`CentralFlow`
    field in time $t = nh$ (module docstring for the formula, its source and validity).

    Args:
        optimizer: ``modeq.optimizers.gd()`` (anything with ``is_gradient_descent``); heavy-ball and the rest raise
            :class:`~modeq._errors.RegimeError` (the momentum analogue is open: ``docs/builders/central_flow.md``).
        loss: $L(\theta)$ on a flat float64 vector.
        h: the step size, $> 0$; the edge is $S_i = 2/h$.
        k: how many top eigenvalues are kept below the edge (1..8); the $(k+1)$-th must stay below $2/h$.
        backend: ``"dense"`` (Hessian + ``eigh``, small $d$) or ``"lanczos"`` (Hessian-vector products only).
        iterations: Lanczos steps (``backend="lanczos"``; default ``min(d, max(4k, 30))`` when solving).
        seed: the Lanczos start vector.
    """
    if not isinstance(optimizer, Optimizer):
        raise InputError(f"optimizer: expected a modeq optimizer (e.g. modeq.optimizers.gd()), got {optimizer!r}")
    if not optimizer.is_gradient_descent:
        if optimizer.heavy_ball_form() is not None:
            raise RegimeError(
                f"central flow: {optimizer.name} is heavy-ball-like; its edge is h*lambda = 2(1+beta), but the "
                "momentum analogue of the central flow is not derived (open: see docs/builders/central_flow.md); "
                "use gd()"
            )
        raise RegimeError(f"central flow: only gradient descent is implemented (optimizer.is_gradient_descent), "
                          f"got {optimizer.name}")
    h = check_positive("h", h)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= int(k) <= MAX_K:
        raise InputError(f"k: the number of tracked eigenvalues must be an integer in [1, {MAX_K}], got {k!r}")
    if backend not in BACKENDS:
        raise InputError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "dense" and iterations is not None:
        raise InputError("iterations: only the 'lanczos' backend takes iterations")
    if iterations is not None and (not isinstance(iterations, (int, np.integer)) or int(iterations) < int(k)):
        raise InputError(f"iterations: Lanczos steps must be an integer >= k = {k}, got {iterations!r}")
    return CentralFlow(loss=loss, h=float(h), k=int(k), backend=backend,
                       iterations=None if iterations is None else int(iterations), seed=int(seed))


# =====================================================================================================================
# The solver
# =====================================================================================================================
@dataclasses.dataclass(frozen=True)
class CentralFlowResult:
    r"""The central flow on the grid $t_n = nh$, $n = 0..N$.

    ``theta[n]``; ``loss[n]`` $= L(\theta(t_n))$; ``loss_avg[n]`` $= L + \frac12\sum_i\sigma_i^2 S_i$ (GD's predicted
    time-averaged loss); ``sharpness[n, i]`` the top-$k$ eigenvalues (descending); ``sigma2[n, i]``; ``active[n, i]``
    $= \sigma_i^2 > 0$; ``violation[n]`` the LCP residual; ``next_sharpness[n]`` the $(k+1)$-th eigenvalue;
    ``entered`` / ``left``: ``(t, i)`` where eigenvalue $i$
    joins / leaves the active set (between two saved times, the later one is given); ``h``, ``substeps`` (solver
    steps per GD step), ``method``, ``tau`` (relaxation time).
    """

    ts: np.ndarray
    theta: np.ndarray
    loss: np.ndarray
    loss_avg: np.ndarray
    sharpness: np.ndarray
    sigma2: np.ndarray
    active: np.ndarray
    violation: np.ndarray
    next_sharpness: np.ndarray
    h: float
    substeps: int
    method: str
    tau: float
    warnings: tuple = ()

    @property
    def edge(self) -> float:
        """The stability edge $2/h$ of GD: the sharpness the central flow holds fixed on the edge."""
        return 2.0 / self.h

    @property
    def entered(self) -> list:
        """``(t, i)``: eigenvalue ``i`` became active (its $\\sigma_i^2 > 0$) at saved time ``t``."""
        a = self.active.astype(int)
        d = np.diff(a, axis=0)
        return [(float(self.ts[n + 1]), int(i)) for n, i in zip(*np.nonzero(d > 0))]

    @property
    def left(self) -> list:
        """``(t, i)``: eigenvalue ``i`` left the edge at saved time ``t``."""
        a = self.active.astype(int)
        d = np.diff(a, axis=0)
        return [(float(self.ts[n + 1]), int(i)) for n, i in zip(*np.nonzero(d < 0))]

    def active_set(self, n: int) -> list:
        """The indices of the eigenvalues at the edge at saved time ``n``."""
        return [int(i) for i in np.nonzero(self.active[n])[0]]

    def to_dict(self) -> dict:
        """Strict-JSON record (``None``, never NaN)."""
        from .._verdict import jsonable

        return jsonable({
            "h": self.h, "edge": self.edge, "substeps": self.substeps, "method": self.method, "tau": self.tau,
            "t": self.ts, "theta": self.theta, "loss": self.loss, "loss_avg": self.loss_avg,
            "sharpness": self.sharpness, "sigma2": self.sigma2, "active": self.active.astype(bool).tolist(),
            "violation": self.violation, "next_sharpness": self.next_sharpness, "entered": self.entered,
            "left": self.left, "warnings": list(self.warnings),
        })


@eqx.filter_jit
def _integrate_path(flow: CentralFlow, theta0, steps: int, substeps: int, method: str):
    dt = flow.h / substeps
    tau = dt

    def vel(th):
        return flow.state(th, tau).velocity

    # RK4 as a scan over its four stages, so that the field (Hessian, eigh, LCP) is compiled once, not four times
    coefficients = jnp.array([[0.0, 1 / 6], [0.5, 1 / 3], [0.5, 1 / 3], [1.0, 1 / 6]])

    def substep(th):
        if method == "euler":
            return th + dt * vel(th)

        def stage(carry, c):
            k_prev, acc = carry
            k = vel(th + c[0] * dt * k_prev)
            return (k, acc + c[1] * k), None

        (_, acc), _ = jax.lax.scan(stage, (jnp.zeros_like(th), jnp.zeros_like(th)), coefficients)
        return th + dt * acc

    def record(th):
        out = flow.state(th, tau)
        return th, out.sharpness, out.sigma2, out.violation, out.loss, out.loss_avg, out.next_sharpness

    def one_step(th, _):
        rec = record(th)
        th = jax.lax.fori_loop(0, substeps, lambda i, x: substep(x), th)
        return th, rec

    theta_end, rec = jax.lax.scan(one_step, theta0, None, length=steps)
    last = record(theta_end)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]], axis=0), rec, last)


def central_flow_solve(optimizer: Optimizer, loss: Callable, theta0, *, h, T, k: int = 1, backend: str = "dense",
                       iterations: int | None = None, substeps: int = 4, method: str = "rk4",
                       seed: int = 0) -> CentralFlowResult:
    r"""Integrate the central flow of GD with step ``h`` from ``theta0`` on $[0, Nh]$, $N = \mathrm{round}(T/h)$,
    saving at every $t_n = nh$.

    ``substeps`` fixed solver steps of size $dt = h/\mathrm{substeps}$ per GD step (one ``lax.scan``), ``method``
    ``"rk4"`` (default) or ``"euler"`` (the paper's scheme, 4 substeps per step in its code); the relaxation time of
    the edge constraint is $\tau = dt$ (module docstring). Below the edge this is RK4 of gradient flow (error
    $O(dt^4)$); the entry into the edge costs $O(\tau)$. The fixed step must resolve the stiffest direction:
    $dt\,|\lambda| \lesssim 2.7$ for every Hessian eigenvalue $\lambda$ (RK4; $\le 2$ for Euler), which holds for the
    top ones at the edge when ``substeps >= 1``; a :class:`UserWarning` is issued when the tracked eigenvalue $k$
    reaches the edge (increase ``k``) or the LCP could not be solved (violation above $10^{-8}\cdot 2/h$).
    Other arguments as :func:`central_flow`.
    """
    flow = central_flow(optimizer, loss, h=h, k=k, backend=backend, iterations=iterations, seed=seed)
    T = check_positive("T", T)
    theta0 = jnp.asarray(check_finite_array("theta0", theta0), dtype=jnp.float64)
    if theta0.ndim != 1:
        raise InputError(f"theta0 must be a flat vector, got shape {tuple(theta0.shape)}")
    d = int(theta0.shape[0])
    if flow.k > d:
        raise InputError(f"k: at most d = {d} eigenvalues, got k = {flow.k}")
    if backend == "lanczos" and flow.iterations is None:
        flow = CentralFlow(loss=loss, h=flow.h, k=flow.k, backend=backend, iterations=min(d, max(4 * flow.k, 30)),
                           seed=flow.seed)
    if flow.iterations is not None and flow.iterations > d:
        raise InputError(f"iterations: at most d = {d} Lanczos steps, got {flow.iterations}")
    if not isinstance(substeps, (int, np.integer)) or isinstance(substeps, bool) or substeps < 1:
        raise InputError(f"substeps: solver steps per GD step must be an integer >= 1, got {substeps!r}")
    if method not in METHODS:
        raise InputError(f"method: expected one of {METHODS}, got {method!r}")
    steps = int(round(T / flow.h))
    if steps < 1:
        raise InputError(f"T must be at least h/2 (one step), got T = {T:g}, h = {flow.h:g}")
    theta, sharp, sigma2, viol, lo, lo_avg, nxt = (np.asarray(a) for a in _integrate_path(
        flow, theta0, steps, int(substeps), method))
    edge = flow.edge
    notes = []
    if not np.all(np.isfinite(theta)):
        bad = int(np.argmin(np.all(np.isfinite(theta), axis=1)))
        notes.append(f"the central flow became non-finite at t = {bad * flow.h:g}")
    if flow.k < d and np.nanmax(nxt) >= edge * (1 - 1e-3):
        notes.append(f"the first untracked eigenvalue (number k + 1) came within 0.1% of the edge 2/h = {edge:g} "
                     f"(max {np.nanmax(nxt):.6g}): increase k (now {flow.k})")
    if np.nanmax(viol) > 1e-8 * edge:
        notes.append(f"the complementarity problem was not solvable to 1e-8 (max violation {np.nanmax(viol):.3g}): "
                     "an eigenvalue at the edge has a vanishing or degenerate gradient")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return CentralFlowResult(
        ts=np.arange(steps + 1) * flow.h, theta=theta, loss=lo, loss_avg=lo_avg, sharpness=sharp, sigma2=sigma2,
        active=sigma2 > 0, violation=viol, next_sharpness=nxt, h=flow.h, substeps=int(substeps), method=method,
        tau=flow.h / substeps,
        warnings=tuple(notes),
    )
