r"""The slow SDE on the manifold $\Gamma$ of minimizers (Li, Wang & Arora 2022; docs/theory/slow_sde.md), slow time
$t = \eta^2 k$.

* :func:`phi`: $\Phi(x)$, the limit of gradient flow (Dopri8, tight tolerances), with a convergence check that raises
  ``ValueError`` when the flow does not reach a minimizer.
* :func:`manifold_operators`: $\partial\Phi = P_\parallel$, $P_\perp$, $H^+$ from the eigendecomposition of
  $\nabla^2 L$ on $\Gamma$ (relative eigenvalue threshold).
* :func:`d2phi_closed` (docs/theory/slow_sde.md#explicit), :func:`d2phi_variational` (#computing there, forward sensitivity ODE) and
  :func:`d2phi_fd` (central differences of $\Phi$): three independent computations of $\partial^2\Phi(x)[\Sigma]$.
* :func:`label_noise_flow`: the deterministic label-noise limit $\dot Y = -\frac c4 P_\parallel\nabla\,{\rm tr}\nabla^2L$.
* :func:`slow_drift`: the drift $\frac12\partial^2\Phi[\Sigma]$ of LWA's explicit form.
* :func:`slow_sde`: ensembles of the slow SDE, by the projected-noise scheme
  $Y \leftarrow \Phi(Y + \sqrt{dt}\,\Sigma^{1/2}(Y)\xi)$ (no third derivatives; never nearest-point projection) or by
  Euler--Maruyama on LWA's explicit form $dY = P_\parallel\Sigma^{1/2}dW + \frac12\partial^2\Phi[\Sigma]dt$
  followed by $\Phi$ to stay on $\Gamma$.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_at_least, check_positive
from ._sme import sym_sqrt

_RTOL = 1e-12
_ATOL = 1e-14


# ----------------------------------------------------------------------------------------------------------------
# Phi: the limit of gradient flow


def _short(x) -> str:
    """A vector for a message: in full up to 8 entries, else its size, norm and first entries."""
    a = np.ravel(np.asarray(x))
    if a.size <= 8:
        return str(a.tolist())
    return f"[{', '.join(f'{v:.4g}' for v in a[:4])}, ...] (size {a.size}, norm {np.linalg.norm(a):.4g})"


def _gf_term(t, y, loss):
    return -jax.grad(loss)(y)


@eqx.filter_jit
def _phi_raw(loss, x, t_max, rtol, atol):
    import diffrax

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_gf_term), diffrax.Dopri8(), 0.0, t_max, None, x, args=loss,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=100_000, throw=False,
    )
    y = sol.ys[-1]
    ok = sol.result == diffrax.RESULTS.successful
    return y, ok


def phi(loss: Callable, x, *, t_max: float = 200.0, gtol: float = 1e-8, rtol: float = _RTOL,
        atol: float = _ATOL, check: bool = True) -> jax.Array:
    r"""$\Phi(x) = \lim_{t\to\infty}\phi(x, t)$, $\dot\phi = -\nabla L(\phi)$, integrated to ``t_max``.

    Raises ``ValueError`` naming ``x`` if the solve fails, the end point is not finite, $\|\nabla L\| >$ ``gtol`` at
    ``t_max`` (not attracted to a critical point in time), or the end point has a negative Hessian eigenvalue
    (a saddle, not a minimizer)."""
    x = jnp.asarray(x, dtype=jnp.float64)
    y, ok = _phi_raw(loss, x, jnp.asarray(float(t_max)), rtol, atol)
    if check:
        g = float(jnp.linalg.norm(jax.grad(loss)(y)))
        if not bool(ok) or not bool(jnp.all(jnp.isfinite(y))):
            raise ValueError(f"x: gradient flow from x = {np.asarray(x).tolist()} does not converge (solver failed "
                             f"or blew up before t = {t_max:g})")
        if not g <= gtol:
            raise ValueError(f"x: gradient flow from x = {_short(x)} is not attracted to a minimizer: "
                             f"|grad L| = {g:.3g} > gtol = {gtol:g} at t = {t_max:g}")
        w = np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(y)))
        if w[0] < -1e-6 * max(1.0, abs(w[-1])):
            raise ValueError(f"x: gradient flow from x = {np.asarray(x).tolist()} ends at a saddle "
                             f"(Hessian eigenvalue {w[0]:.3g} < 0)")
    return y


# ----------------------------------------------------------------------------------------------------------------
# operators on Gamma


@dataclasses.dataclass(frozen=True)
class ManifoldOperators:
    r"""Operators at a point of $\Gamma$ from the eigendecomposition $\nabla^2L = V{\rm diag}(\lambda)V^\top$
    (Li, Wang & Arora 2022; docs/theory/slow_sde.md#operators): $P_\parallel = \partial\Phi$ (kernel), $P_\perp = HH^+$, $H^+$, the
    eigenpairs and the mask of normal (nonzero) eigenvalues."""

    p_par: jax.Array
    p_perp: jax.Array
    h_pinv: jax.Array
    eigvals: jax.Array
    eigvecs: jax.Array
    normal: jax.Array  # boolean mask of nonzero (normal) eigenvalues


def manifold_operators(loss: Callable, x, rel_tol: float = 1e-8) -> ManifoldOperators:
    r"""$P_\\parallel = \\partial\\Phi(x)$ (kernel of the Hessian), $P_\\perp$, $H^+$ at a point ``x`` of $\\Gamma$."""
    H = jax.hessian(loss)(x)
    w, V = jnp.linalg.eigh(0.5 * (H + H.T))
    nz = jnp.abs(w) > rel_tol * jnp.max(jnp.abs(w))
    inv = jnp.where(nz, 1.0 / jnp.where(nz, w, 1.0), 0.0)
    p_perp = (V * nz) @ V.T
    return ManifoldOperators(jnp.eye(x.shape[0]) - p_perp, p_perp, (V * inv) @ V.T, w, V, nz)


def third_contract(loss: Callable, x, A) -> jax.Array:
    r"""$\partial^2(\nabla L)(x)[A] = \nabla_x\langle A, \nabla^2 L(x)\rangle$ with $A$ held fixed."""
    A = jax.lax.stop_gradient(A)
    return jax.grad(lambda y: jnp.vdot(A, jax.hessian(loss)(y)))(x)


def lyapunov_inverse(ops: ManifoldOperators, S) -> jax.Array:
    r"""$L_H^{-1}(S) = \sum_{\lambda_i,\lambda_j\ne0} \frac{v_i^\top S v_j}{\lambda_i+\lambda_j} v_iv_j^\top$."""
    V, w, nz = ops.eigvecs, ops.eigvals, ops.normal
    mask = nz[:, None] & nz[None, :]
    den = jnp.where(mask, w[:, None] + w[None, :], 1.0)
    return V @ jnp.where(mask, (V.T @ S @ V) / den, 0.0) @ V.T


def d2phi_closed(loss: Callable, x, sigma, rel_tol: float = 1e-8, *, terms: bool = False):
    r"""Closed form (docs/theory/slow_sde.md#explicit) of $\partial^2\Phi(x)[\Sigma]$ at $x \in \Gamma$:
    $-H^+\partial^2(\nabla L)[\Sigma_\parallel] - 2P_\parallel\partial^2(\nabla L)[H^+\Sigma_{\perp\parallel}]
    - P_\parallel\partial^2(\nabla L)[L_H^{-1}(\Sigma_\perp)]$. With ``terms=True`` also return the three terms."""
    x = jnp.asarray(x, dtype=jnp.float64)
    sigma = 0.5 * (sigma + sigma.T)
    ops = manifold_operators(loss, x, rel_tol)
    Pp, Pn, Hp = ops.p_par, ops.p_perp, ops.h_pinv
    t1 = -Hp @ third_contract(loss, x, Pp @ sigma @ Pp)
    t2 = -2.0 * Pp @ third_contract(loss, x, Hp @ (Pn @ sigma @ Pp))
    t3 = -Pp @ third_contract(loss, x, lyapunov_inverse(ops, Pn @ sigma @ Pn))
    total = t1 + t2 + t3
    return (total, (t1, t2, t3)) if terms else total


def _var_term(t, state, args):
    loss, sigma = args
    y, J, K = state
    hvp = lambda v: jax.jvp(jax.grad(loss), (y,), (v,))[1]
    HJ = jax.vmap(hvp, in_axes=1, out_axes=1)(J)
    HK = hvp(K)
    return -jax.grad(loss)(y), -HJ, -HK - third_contract(loss, y, J @ sigma @ J.T)


@eqx.filter_jit
def _variational(loss, x, sigma, t_max, rtol, atol):
    import diffrax

    d = x.shape[0]
    state0 = (x, jnp.eye(d), jnp.zeros(d))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_var_term), diffrax.Dopri8(), 0.0, t_max, None, state0, args=(loss, sigma),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=200_000, throw=False,
    )
    return jax.tree.map(lambda a: a[-1], sol.ys), sol.result == diffrax.RESULTS.successful


def d2phi_variational(loss: Callable, x, sigma, *, t_max: float = 200.0, rtol: float = _RTOL, atol: float = _ATOL):
    r"""$(\Phi(x), \partial\Phi(x), \partial^2\Phi(x)[\Sigma])$ from the variational equations (docs/theory/slow_sde.md#computing):
    $\dot J = -HJ$, $\dot K = -HK - \partial^2(\nabla L)[J\Sigma J^\top]$, integrated with gradient flow to
    ``t_max``. Valid anywhere in the basin, not only on $\Gamma$."""
    x = jnp.asarray(x, dtype=jnp.float64)
    (y, J, K), ok = _variational(loss, x, 0.5 * (sigma + sigma.T), jnp.asarray(float(t_max)), rtol, atol)
    if not bool(ok):
        raise ValueError(f"x: the variational solve from x = {np.asarray(x).tolist()} failed")
    return y, J, K


def d2phi_fd(loss: Callable, x, sigma, *, h: float = 1e-3, t_max: float = 200.0):
    r"""Central finite differences: $\sum_r s_r(\Phi(x+hu_r) - 2\Phi(x) + \Phi(x-hu_r))/h^2$ over the eigenpairs
    $(s_r, u_r)$ of $\Sigma$."""
    x = jnp.asarray(x, dtype=jnp.float64)
    s, U = jnp.linalg.eigh(0.5 * (sigma + sigma.T))
    p0 = phi(loss, x, t_max=t_max, check=False)
    out = jnp.zeros_like(x)
    for r in range(x.shape[0]):
        pp = phi(loss, x + h * U[:, r], t_max=t_max, check=False)
        pm = phi(loss, x - h * U[:, r], t_max=t_max, check=False)
        out = out + s[r] * (pp - 2 * p0 + pm) / h**2
    return out


# ----------------------------------------------------------------------------------------------------------------
# label-noise flow


def _ln_term(t, y, args):
    loss, c, rel_tol = args
    ops = manifold_operators(loss, y, rel_tol)
    grad_tr = third_contract(loss, y, jnp.eye(y.shape[0]))
    return -0.25 * c * ops.p_par @ grad_tr


@dataclasses.dataclass(frozen=True)
class SlowFlow:
    """The deterministic label-noise slow flow: states ``ys[j]`` at slow times ``ts[j]``, noise constant ``c``."""

    ts: np.ndarray
    ys: np.ndarray
    c: float

    def to_dict(self) -> dict:
        """JSON-ready: times, states and c."""
        return {"t": self.ts.tolist(), "y": self.ys.tolist(), "c": self.c}


def label_noise_flow(loss: Callable, x0, ts, c: float, *, rel_tol: float = 1e-8, rtol: float = 1e-12,
                     atol: float = 1e-14) -> SlowFlow:
    r"""Deterministic slow limit under label noise ($\Sigma = cH$ on $\Gamma$; $c = \delta^2$ for one example,
    $\delta^2/B$ for batch $B$, $\delta^2/n$ full batch): $\dot Y = -\frac c4 P_\parallel\nabla{\rm tr}\nabla^2L(Y)$,
    $Y_0 = \Phi(x_0)$, saved at slow times ``ts`` (ts[0] = 0)."""
    from .._pytree import flatten_loss

    loss, x0, _ = flatten_loss(loss, x0, name="x0")  # a loss on a pytree: the flat vector, as simulate
    c = check_positive("c", c)
    ts = np.asarray(ts, dtype=float)
    y0 = phi(loss, x0)
    ys = _ln_solve(loss, y0, jnp.asarray(ts), jnp.asarray(c), rel_tol, rtol, atol)
    return SlowFlow(ts, np.asarray(ys), c)


@eqx.filter_jit
def _ln_solve(loss, y0, ts, c, rel_tol, rtol, atol):
    import diffrax

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(_ln_term), diffrax.Dopri8(), ts[0], ts[-1], None, y0,
        args=(loss, c, rel_tol), saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=100_000,
    )
    return sol.ys


# ----------------------------------------------------------------------------------------------------------------
# slow SDE ensembles


@dataclasses.dataclass(frozen=True)
class SlowPaths:
    """Slow-SDE ensemble: ``ys[p, j]`` = path ``p`` at slow time ``ts[j]``; ``scheme`` and step ``dt``."""

    ts: np.ndarray
    ys: jax.Array  # (paths, len(ts), d)
    scheme: str
    dt: float

    def to_dict(self) -> dict:
        """JSON-ready summary: scheme, dt, paths, times, ensemble mean and standard deviation."""
        ys = np.asarray(self.ys)
        return {"scheme": self.scheme, "dt": self.dt, "paths": int(ys.shape[0]), "t": self.ts.tolist(),
                "mean": ys.mean(0).tolist(), "std": ys.std(0, ddof=1).tolist()}


def slow_drift(loss: Callable, y, sigma, rel_tol: float = 1e-8, *, normal_regularization: bool = True):
    r"""The drift of LWA's explicit slow SDE at $y \in \Gamma$: $\frac12\partial^2\Phi(y)[\Sigma]$ (Li, Wang & Arora
    2022, Thm. 4.6), from :func:`d2phi_closed`; ``normal_regularization=False`` drops the normal regularization term
    $-\frac12P_\parallel\partial^2(\nabla L)[L_H^{-1}(\Sigma_\perp)]$ (a control tests must be able to reject)."""
    total, (t1, t2, t3) = d2phi_closed(loss, y, sigma, rel_tol, terms=True)
    return 0.5 * (total if normal_regularization else t1 + t2)


def _slow_step(loss, cov_fn, y, xi, dt, t_max, scheme, rel_tol, normal_term=True):
    r"""One step of the slow-SDE scheme from $y$ with the standard normal vector ``xi``: ``"projected"``
    $\Phi(y + \sqrt{dt}\,\Sigma^{1/2}\xi)$ or ``"em"`` $\Phi(y + b\,dt + \sqrt{dt}\,P_\parallel\Sigma^{1/2}\xi)$ with
    $b$ = :func:`slow_drift`."""
    S = sym_sqrt(cov_fn(y))
    if scheme == "projected":
        z = y + jnp.sqrt(dt) * (S @ xi)
    else:
        ops = manifold_operators(loss, y, rel_tol)
        drift = slow_drift(loss, y, cov_fn(y), rel_tol, normal_regularization=normal_term)
        z = y + drift * dt + jnp.sqrt(dt) * (ops.p_par @ (S @ xi))
    return _phi_raw(loss, z, t_max, _RTOL, _ATOL)[0]


@eqx.filter_jit
def _slow_scan(loss, cov_fn, y0, keys, dt, n_save, save_every, t_max, scheme, rel_tol, normal_term=True):
    def one(key):
        def step(y, n):
            m = jax.eval_shape(lambda v: sym_sqrt(cov_fn(v)), y).shape[1]
            xi = jax.random.normal(jax.random.fold_in(key, n), (m,))
            return _slow_step(loss, cov_fn, y, xi, dt, t_max, scheme, rel_tol, normal_term), None

        def block(y, j):
            y, _ = jax.lax.scan(step, y, j * save_every + jnp.arange(save_every))
            return y, y

        _, ys = jax.lax.scan(block, y0, jnp.arange(n_save))
        return jnp.concatenate([y0[None], ys])

    return jax.vmap(one)(keys)


def slow_sde(loss: Callable, covariance: Callable, x0, t1: float, steps: int, *, paths: int, key,
             scheme: str = "projected", save_every: Optional[int] = None, t_max: float = 50.0,
             rel_tol: float = 1e-8, normal_regularization: bool = True) -> SlowPaths:
    r"""Ensemble of the slow SDE $Y_t$ (slow time $t = \eta^2 k$) from $Y_0 = \Phi(x_0)$, with ``covariance(y)`` the
    gradient-noise covariance $\Sigma$ (e.g. ``oracle.covariance``). ``scheme``: ``"projected"``
    ($Y\leftarrow\Phi(Y+\sqrt{dt}\Sigma^{1/2}\xi)$, weak order 1) or ``"em"`` (Euler--Maruyama on LWA's explicit
    form, re-projected by $\Phi$). ``t_max``: gradient-flow horizon used inside each step (>> 1/smallest nonzero
    Hessian eigenvalue). ``normal_regularization=False`` (scheme ``"em"`` only) drops LWA's normal-regularization
    term $-\frac12P_\parallel\partial^2(\nabla L)[L_H^{-1}(\Sigma_\perp)]$: a control that tests must be able to
    reject (docs/theory/slow_sde.md#uv)."""
    from .._pytree import flatten_loss

    loss, x0, _ = flatten_loss(loss, x0, name="x0")  # a loss on a pytree: the flat vector, as simulate
    check_positive("t1", t1)
    if not normal_regularization and scheme != "em":
        raise ValueError("normal_regularization=False needs scheme='em' (the projected scheme has no separate terms)")
    steps = check_int_at_least("steps", steps, 1)
    paths = check_int_at_least("paths", paths, 2)
    save_every = steps if save_every is None else check_int_at_least("save_every", save_every, 1)
    if steps % save_every:
        raise ValueError(f"save_every must divide steps={steps}, got {save_every}")
    if scheme not in ("projected", "em"):
        raise ValueError(f"scheme must be 'projected' or 'em', got {scheme!r}")
    y0 = phi(loss, x0)
    dt = float(t1) / steps
    n_save = steps // save_every
    keys = jax.random.split(key, paths)
    ys = _slow_scan(loss, covariance, y0, keys, jnp.asarray(dt), n_save, save_every, jnp.asarray(float(t_max)),
                    scheme, rel_tol, bool(normal_regularization))
    return SlowPaths(dt * save_every * np.arange(n_save + 1), ys, scheme, dt)
