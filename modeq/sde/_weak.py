r"""Weak-error studies: $E\varphi(x_k)$ of SGD/SGDM iterates against $E\varphi(X_{k\eta})$ of an SME, over a grid of
learning rates, with a fitted weak order (``modeq.compare.fit_order``, 95% interval).

* :func:`exact_weak_study`: quadratic loss + gradient noise with constant covariance (linear-Gaussian, THEORY.md B4.5).
  SGD's mean and covariance follow the exact linear recursion $m \leftarrow (I-\eta A)m - \eta g_0$,
  $P \leftarrow (I-\eta A)P(I-\eta A)^\top + \eta^2 C$; the SME's follow a linear ODE solved exactly in the eigenbasis
  of $A$. No Monte Carlo: the measured orders are deterministic.
* :func:`weak_error_study`: Monte Carlo for any loss/oracle/optimizer, with standard errors; warns
  (:class:`MonteCarloWarning`) when the standard error of a difference is larger than the difference itself.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_at_least, check_positive
from ..compare._order import OrderFit, fit_order
from ..problems._oracles import GaussianNGOS
from ..optimizers import gd, simulate
from ._em import simulate_sde
from ._sme import sme


class MonteCarloWarning(RuntimeWarning):
    """A Monte Carlo standard error exceeds the bias it is meant to resolve."""


def _steps(T: float, eta: float) -> int:
    k = T / eta
    n = int(round(k))
    if n < 1 or abs(k - n) > 1e-9 * max(1.0, k):
        raise ValueError(f"eta: T/eta must be a positive integer, got T={T}, eta={eta}")
    return n


@dataclasses.dataclass(frozen=True)
class WeakStudy:
    """One row per LR: ``errors[name][i]`` = |E phi(x_k) - E phi(X_{k eta})| at k = T/eta, ``stderr`` its Monte Carlo
    standard error (zeros for exact studies), ``fits[name]`` the fitted weak order."""

    etas: tuple
    T: float
    order: int
    method: str
    errors: dict
    stderr: dict
    fits: dict
    discrete: dict = dataclasses.field(default_factory=dict)
    continuous: dict = dataclasses.field(default_factory=dict)
    paths: int = 0
    warnings: tuple = ()

    def to_dict(self) -> dict:
        """JSON-ready study: LRs, errors, standard errors, discrete and SDE values, fitted orders, warnings."""
        return {
            "method": self.method,
            "sme_order": self.order,
            "T": self.T,
            "etas": list(self.etas),
            "paths": self.paths,
            "errors": {k: list(map(float, v)) for k, v in self.errors.items()},
            "stderr": {k: list(map(float, v)) for k, v in self.stderr.items()},
            "discrete": {k: list(map(float, v)) for k, v in self.discrete.items()},
            "sde": {k: list(map(float, v)) for k, v in self.continuous.items()},
            "fits": {k: (f.to_dict() if f is not None else None) for k, f in self.fits.items()},
            "warnings": list(self.warnings),
        }


def _check_etas(etas) -> tuple:
    etas = tuple(float(e) for e in etas)
    if len(etas) < 2:
        raise ValueError(f"etas: need at least 2 learning rates, got {len(etas)}")
    for e in etas:
        check_positive("eta", e)
    return etas


# ----------------------------------------------------------------------------------------------------------------
# exact linear-Gaussian moments


def sgd_moments(A, g0, C, x0, eta: float, steps: int):
    r"""Exact mean and covariance of SGD $x_{k+1} = x_k - \\eta(Ax_k + g_0 + \\xi_k)$, Cov $\\xi$ = C, after ``steps``."""
    A, g0, C = np.asarray(A, float), np.asarray(g0, float), np.asarray(C, float)
    M = np.eye(A.shape[0]) - eta * A
    m, P = np.asarray(x0, float).copy(), np.zeros_like(A)
    for _ in range(steps):
        m = M @ m - eta * g0
        P = M @ P @ M.T + eta**2 * C
    return m, P


def sme_moments(A, g0, C, x0, eta: float, t: float, order: int = 1):
    r"""Exact mean/covariance at time $t$ of the order-1/2 SME of that SGD (linear drift $-K x - k_0$,
    $K = A$ or $A + \frac\eta2 A^2$, diffusion $\sqrt\eta C^{1/2}$), from the eigendecomposition of $A$."""
    A, g0, C = np.asarray(A, float), np.asarray(g0, float), np.asarray(C, float)
    a, V = np.linalg.eigh(0.5 * (A + A.T))
    k = a if order == 1 else a + 0.5 * eta * a**2
    pre = np.ones_like(a) if order == 1 else 1.0 + 0.5 * eta * a
    k0 = pre * (V.T @ g0)
    m0 = V.T @ np.asarray(x0, float)
    # phi_1(z) = (1 - e^{-z t})/z, with the z -> 0 limit t
    def phi1(z):
        z = np.asarray(z, float)
        out = np.empty_like(z)
        small = np.abs(z * t) < 1e-12
        out[small] = t
        out[~small] = -np.expm1(-z[~small] * t) / z[~small]
        return out

    m = np.exp(-k * t) * m0 - phi1(k) * k0
    ks = k[:, None] + k[None, :]
    P = eta * (V.T @ C @ V) * phi1(ks.ravel()).reshape(ks.shape)
    return V @ m, V @ P @ V.T


def sgdm_moments(A, g0, C, x0, m0, eta: float, beta: float, steps: int):
    r"""Exact mean and covariance of normalized SGDM on a quadratic with constant noise covariance ``C``:
    $m_{k+1} = \beta m_k + (1-\beta)(Ax_k + g_0 + \xi_k)$, $x_{k+1} = x_k - \eta m_{k+1}$, as the linear recursion
    of the stacked state $z = (x, m)$. Returns (mean, covariance) of $z$ after ``steps`` steps (size $2d$)."""
    A, g0, C = np.asarray(A, float), np.asarray(g0, float), np.asarray(C, float)
    d = A.shape[0]
    I = np.eye(d)
    b1 = 1.0 - beta
    # m' = beta m + b1 A x + b1 g0 + b1 xi;  x' = x - eta m'
    T = np.block([[I - eta * b1 * A, -eta * beta * I], [b1 * A, beta * I]])
    c = np.concatenate([-eta * b1 * g0, b1 * g0])
    N = np.concatenate([-eta * b1 * I, b1 * I])
    Q = N @ C @ N.T
    z = np.concatenate([np.asarray(x0, float), np.asarray(m0, float)])
    P = np.zeros((2 * d, 2 * d))
    for _ in range(steps):
        z = T @ z + c
        P = T @ P @ T.T + Q
    return z, P


def linear_sde_moments(F, f, GGt, z0, t: float):
    r"""Exact mean and covariance at time $t$ of the linear SDE $dZ = (FZ + f)\,dt + G\,dW$, $Z_0 = z_0$ (deterministic):
    the mean from $\exp$ of the augmented matrix $[[F, f], [0, 0]]$, the covariance
    $\int_0^t e^{Fs}GG^\top e^{F^\top s}ds$ by Van Loan's block exponential (Van Loan 1978)."""
    from scipy.linalg import expm

    F, f, GGt = np.asarray(F, float), np.asarray(f, float), np.asarray(GGt, float)
    n = F.shape[0]
    aug = np.zeros((n + 1, n + 1))
    aug[:n, :n], aug[:n, n] = F, f
    mean = (expm(aug * t) @ np.concatenate([np.asarray(z0, float), [1.0]]))[:n]
    vl = np.block([[-F, GGt], [np.zeros((n, n)), F.T]])
    E = expm(vl * t)
    Phi = E[n:, n:].T
    cov = Phi @ E[:n, n:]
    return mean, 0.5 * (cov + cov.T)


def momentum_sde_moments(A, g0, C, x0, m0, eta: float, gamma: float, t: float, lam: float = 1.0):
    r"""Exact moments of :func:`~modeq.sde.momentum_sde` on $L = \frac12x^\top Ax + g_0^\top x$ with constant gradient
    covariance $C$: $F = [[0, -\lambda I], [\gamma A, -\gamma I]]$, $f = (0, \gamma g_0)$,
    $GG^\top = {\rm diag}(0, \gamma^2\eta C)$. Returns (mean, covariance) of $(X_t, M_t)$."""
    A, g0, C = np.asarray(A, float), np.asarray(g0, float), np.asarray(C, float)
    d = A.shape[0]
    Z, I = np.zeros((d, d)), np.eye(d)
    F = np.block([[Z, -lam * I], [gamma * A, -gamma * I]])
    f = np.concatenate([np.zeros(d), gamma * g0])
    GGt = np.block([[Z, Z], [Z, gamma**2 * eta * C]])
    return linear_sde_moments(F, f, GGt, np.concatenate([np.asarray(x0, float), np.asarray(m0, float)]), t)


def gaussian_gradient_variances(eta: float, beta: float, sigma: float, k: int) -> dict:
    r"""Wang et al. (arXiv 2307.15196) Section 4.1, i.i.d. gradients $g_k \sim N(c, \sigma^2 I)$, per coordinate
    (THEORY B1.7): SGD endpoint variance $k\eta^2\sigma^2$; normalized SGDM (same $\eta$, $m_0$ deterministic)
    endpoint variance $\eta^2\sigma^2\sum_{j=1}^k(1-\beta^j)^2$ (summed exactly with ``fractions`` when the inputs are
    rational, else in float); its last-step variance $\eta^2\sigma^2\frac{1-\beta}{1+\beta}(1-\beta^{2k})$; and the
    limiting gap $\eta^2\sigma^2\beta(2+\beta)/(1-\beta^2)$."""
    k = check_int_at_least("k", k, 1)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    s2 = eta**2 * sigma**2
    closed = k - 2 * beta * (1 - beta**k) / (1 - beta) + beta**2 * (1 - beta ** (2 * k)) / (1 - beta**2)
    return {
        "sgd_endpoint": k * s2,
        "sgdm_endpoint": s2 * closed,
        "sgdm_endpoint_sum": s2 * math.fsum((1 - beta**j) ** 2 for j in range(1, k + 1)),
        "sgd_step": s2,
        "sgdm_step": s2 * (1 - beta) / (1 + beta) * (1 - beta ** (2 * k)),
        "gap_limit": s2 * beta * (2 + beta) / (1 - beta**2),
    }


def _linear_gaussian(loss, oracle, theta0):
    d = theta0.shape[0]
    A = np.asarray(jax.hessian(loss)(jnp.zeros(d)))
    g0 = np.asarray(jax.grad(loss)(jnp.zeros(d)))
    C = np.asarray(oracle.covariance(theta0))
    C2 = np.asarray(oracle.covariance(theta0 + 1.0))
    A2 = np.asarray(jax.hessian(loss)(theta0 + 1.0))
    if not (np.allclose(A, A2, rtol=1e-10, atol=1e-12) and np.allclose(C, C2, rtol=1e-10, atol=1e-12)):
        raise ValueError("loss/oracle: the exact study needs a quadratic loss and a constant noise covariance")
    return A, g0, C


def exact_weak_study(loss: Callable, oracle, theta0, etas: Sequence[float], T: float = 1.0, *,
                     order: int = 1) -> WeakStudy:
    r"""Weak error of the order-``order`` SME for SGD on a quadratic loss with constant noise covariance, from exact
    Gaussian moments. Test functions: ``mean`` ($\|E x_k - E X_{k\eta}\|_\infty$) and ``second_moment``
    ($|E\|x_k\|^2 - E\|X_{k\eta}\|^2|$) at $k = T/\eta$."""
    etas = _check_etas(etas)
    T = check_positive("T", T)
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    A, g0, C = _linear_gaussian(loss, oracle, theta0)
    x0 = np.asarray(theta0)
    errs = {"mean": [], "second_moment": []}
    disc = {"second_moment": []}
    cont = {"second_moment": []}
    for eta in etas:
        n = _steps(T, eta)
        m, P = sgd_moments(A, g0, C, x0, eta, n)
        ms, Ps = sme_moments(A, g0, C, x0, eta, T, order)
        s_d, s_c = float(m @ m + np.trace(P)), float(ms @ ms + np.trace(Ps))
        errs["mean"].append(float(np.max(np.abs(m - ms))))
        errs["second_moment"].append(abs(s_d - s_c))
        disc["second_moment"].append(s_d)
        cont["second_moment"].append(s_c)
    fits = {k: fit_order(etas, v) for k, v in errs.items()}
    zeros = {k: [0.0] * len(etas) for k in errs}
    return WeakStudy(etas, T, order, "exact-gaussian", errs, zeros, fits, disc, cont)


# ----------------------------------------------------------------------------------------------------------------
# Monte Carlo


def _default_phi(x):
    return x @ x


@eqx.filter_jit
def _coupled_em(sde, x0, keys, dt, steps: int, substeps: int, m: int):
    r"""Euler--Maruyama of ``sde`` driven by the *same* normals as a :class:`~modeq.problems.GaussianNGOS` run with
    path key ``k``: LR step $n$ uses $z_n$ = ``normal(fold_in(k, n))``, split into ``substeps`` i.i.d. $N(0, I)$
    increments $\zeta_j = -z_n/\sqrt s + u_j - \bar u$ (so $\sum_j\zeta_j/\sqrt s = -z_n$ exactly: the iterate's noise
    is $-\eta\sigma S z_n$)."""
    sq = jnp.sqrt(dt)  # dt: SDE time of one substep

    def one(key):
        def lr_step(x, n):
            z = jax.random.normal(jax.random.fold_in(key, n), (m,), dtype=x.dtype)
            u = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, n), 0x5EED), (substeps, m),
                                  dtype=x.dtype)
            zeta = -z / jnp.sqrt(substeps) + u - u.mean(0)  # the iterate moves by -eta * sigma S z

            def sub(x, j):
                t = (n * substeps + j) * dt
                return x + sde.drift(t, x) * dt + (sde.diffusion(t, x) @ zeta[j]) * sq, None

            x, _ = jax.lax.scan(sub, x, jnp.arange(substeps))
            return x, None

        return jax.lax.scan(lr_step, x0, jnp.arange(steps))[0]

    return jax.vmap(one)(keys)


def weak_error_study(
    loss: Callable,
    oracle,
    theta0,
    etas: Sequence[float],
    T: float = 1.0,
    *,
    paths: int = 1000,
    key=None,
    order: int = 1,
    optimizer: Any = None,
    phi: Optional[Callable] = None,
    substeps: int = 4,
    method: str = "scan",
    coupling: str = "auto",
) -> WeakStudy:
    r"""Monte Carlo weak error $|E\varphi(x_{T/\eta}) - E\varphi(X_T)|$ of SGD/SGDM iterates (``simulate`` vmapped
    over ``paths`` keys) against the SME (Euler--Maruyama with ``substeps`` steps per LR step). ``phi`` maps a flat
    vector to a scalar (default $\|x\|^2$). Emits :class:`MonteCarloWarning` where the standard error of the
    difference exceeds the difference.

    ``coupling``: ``"crn"`` drives the SDE with the same normals as the iterates (common random numbers; needs a
    :class:`~modeq.problems.GaussianNGOS` oracle, whose noise is $\sigma S(\theta)z$ with $z$ shared), and the
    standard error is that of the paired differences, far smaller than for independent runs; ``"independent"``
    uses separate streams; ``"auto"`` (default) picks ``"crn"`` whenever the oracle allows it."""
    etas = _check_etas(etas)
    T = check_positive("T", T)
    paths = check_int_at_least("paths", paths, 2)
    substeps = check_int_at_least("substeps", substeps, 1)
    if key is None:
        key = jax.random.key(0)
    phi = _default_phi if phi is None else phi
    optimizer = gd() if optimizer is None else optimizer
    if coupling not in ("auto", "crn", "independent"):
        raise ValueError(f"coupling must be 'auto', 'crn' or 'independent', got {coupling!r}")
    crn_ok = isinstance(oracle, GaussianNGOS)
    if coupling == "crn" and not crn_ok:
        raise ValueError("coupling: common random numbers need a GaussianNGOS oracle (shared normals)")
    crn = crn_ok and coupling != "independent"
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    errs, ses, disc, cont, warns = [], [], [], [], []
    for i, eta in enumerate(etas):
        n = _steps(T, eta)
        kd, ks = jax.random.split(jax.random.fold_in(key, i))
        keys = jax.random.split(kd, paths)
        end = jax.vmap(lambda k: simulate(optimizer, loss, theta0, n, h=eta, oracle=oracle, key=k,
                                          record=False).theta[-1])(keys)
        pd = np.asarray(jax.vmap(phi)(end))
        sde = sme(loss, oracle, eta, order=order, optimizer=optimizer)
        if crn:
            m = int(oracle.sqrt(theta0).shape[1])
            ends = _coupled_em(sde, theta0, keys, jnp.asarray(T / (n * substeps)), n, substeps, m)
            pc = np.asarray(jax.vmap(phi)(ends))
        else:
            res = simulate_sde(sde, theta0, T, n * substeps, paths=paths, key=ks, method=method)
            pc = np.asarray(jax.vmap(phi)(res.xs[:, -1]))
        md, mc = float(pd.mean()), float(pc.mean())
        if crn:
            se = float(np.std(pd - pc, ddof=1) / math.sqrt(paths))
        else:
            se = math.sqrt(pd.var(ddof=1) / paths + pc.var(ddof=1) / paths)
        bias = abs(md - mc)
        errs.append(bias)
        ses.append(se)
        disc.append(md)
        cont.append(mc)
        if se > bias:
            msg = (f"eta={eta:g}: Monte Carlo standard error {se:.3g} exceeds the measured bias {bias:.3g}; "
                   f"increase paths")
            warns.append(msg)
            warnings.warn(msg, MonteCarloWarning, stacklevel=2)
    try:
        fit: Optional[OrderFit] = fit_order(etas, errs)
    except ValueError:
        fit = None
    kind = "crn" if crn else "independent"
    return WeakStudy(etas, T, order, f"monte-carlo[{getattr(optimizer, 'name', 'sgd')}, {kind}]", {"phi": errs},
                     {"phi": ses}, {"phi": fit}, {"phi": disc}, {"phi": cont}, paths, tuple(warns))
