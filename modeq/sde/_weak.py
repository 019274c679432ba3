r"""Primitives of the weak-error studies (the studies themselves, with fits and verdicts, are
:func:`modeq.studies.sme_weak_study`, :func:`~modeq.studies.exact_weak_study` and
:func:`~modeq.studies.weak_error_study`; this module imports nothing from :mod:`modeq.studies` or
:mod:`modeq.compare`).

* Exact linear-Gaussian moments (docs/theory/sme.md#gaussian): :func:`sgd_moments` (exact linear recursion
  $m \leftarrow (I-\eta A)m - \eta g_0$, $P \leftarrow (I-\eta A)P(I-\eta A)^\top + \eta^2 C$), :func:`sme_moments`
  (the SME's linear ODE solved exactly in the eigenbasis of $A$), :func:`sgdm_moments`, :func:`linear_sde_moments`,
  :func:`momentum_sde_moments`, :func:`gaussian_gradient_variances`.
* :func:`weak_samples`: Monte Carlo samples of $\varphi(x_{T/\eta})$ (the optimizer) and of $\varphi(X_T)$ (the SME by
  Euler--Maruyama at several substep counts, with common random numbers when the oracle allows it) at one learning
  rate, with the number of divergent paths and the linear stability of the optimizer at $\theta_0$.
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
from ..optimizers import gd, simulate
from ..problems._oracles import GaussianNGOS
from ._sme import sme


class MonteCarloWarning(RuntimeWarning):
    """A Monte Carlo standard error exceeds the bias it is meant to resolve."""


def _steps(T: float, eta: float) -> int:
    k = T / eta
    n = int(round(k))
    if n < 1 or abs(k - n) > 1e-9 * max(1.0, k):
        raise ValueError(f"eta: T/eta must be a positive integer, got T={T}, eta={eta}")
    return n


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
    (docs/theory/sme.md#gaussian): SGD endpoint variance $k\eta^2\sigma^2$; normalized SGDM (same $\eta$, $m_0$ deterministic)
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


# ----------------------------------------------------------------------------------------------------------------
# Monte Carlo


def _default_phi(x):
    return x @ x


@eqx.filter_jit
def _em_levels(sde, x0, keys, dt_lr, steps, finest: int, ratios: tuple, m: int):
    r"""Euler--Maruyama of ``sde`` at ``finest // r`` substeps per learning-rate step for each ``r`` in ``ratios``, all
    driven by one Brownian path per key (so the levels, and with the optimizer's keys the iterates, are coupled).

    Learning-rate step $n$ of path key ``k`` uses $z_n$ = ``normal(fold_in(k, n))`` (the draw of a
    :class:`~modeq.problems.GaussianNGOS` oracle at step $n$), split into ``finest`` i.i.d. $N(0, I)$ increments
    $\zeta_j = -z_n/\sqrt S + u_j - \bar u$ (so $\sum_j\zeta_j/\sqrt S = -z_n$: the iterate's noise $-\eta\sigma Sz_n$ is
    the SDE's Brownian increment over that step); a coarser level sums $r$ consecutive fine increments
    ($\sum_{i\le r}\zeta_i/\sqrt r$, again i.i.d. $N(0, I)$). Returns ``(len(ratios), paths, d)``."""

    def one(key):
        def lr_step(xs, n):
            z = jax.random.normal(jax.random.fold_in(key, n), (m,), dtype=x0.dtype)
            u = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, n), 0x5EED), (finest, m),
                                  dtype=x0.dtype)
            zeta = -z / jnp.sqrt(finest) + u - u.mean(0)
            out = []
            for x, r in zip(xs, ratios):
                s = finest // r
                dt = dt_lr / s
                inc = zeta.reshape(s, r, m).sum(1) / jnp.sqrt(r)

                def sub(x, j, dt=dt, s=s, inc=inc):
                    t = (n * s + j) * dt
                    return x + sde.drift(t, x) * dt + (sde.diffusion(t, x) @ inc[j]) * jnp.sqrt(dt), None

                out.append(jax.lax.scan(sub, x, jnp.arange(s))[0])
            return tuple(out), None

        # a traced trip count: one compilation serves every learning rate
        xs = jax.lax.fori_loop(0, steps, lambda n, xs: lr_step(xs, n)[0], tuple(x0 for _ in ratios))
        return jnp.stack(xs)

    return jnp.swapaxes(jax.vmap(one)(keys), 0, 1)


def step_radius(optimizer, loss: Callable, theta, h: float) -> float:
    r"""Spectral radius of the Jacobian of one deterministic step of ``optimizer`` (stationary regime, state
    $(\theta, m)$) on the quadratic model $\frac12(x-\theta)^\top H_+(x-\theta)$, $H_+$ the positive part of
    $\nabla^2L(\theta)$: above 1 the iteration is linearly unstable in a direction of positive curvature at
    $\theta$, so its iterates (and their moments) grow geometrically, whatever the noise. (For GD: $\max|1 - h\lambda_i|$.)"""
    from jax.flatten_util import ravel_pytree

    theta = jnp.asarray(theta, dtype=jnp.float64)
    H = jax.hessian(loss)(theta)
    w, V = jnp.linalg.eigh(0.5 * (H + H.T))
    Hp = (V * jnp.clip(w, 0.0)) @ V.T
    m0 = optimizer.initial_momenta(theta, jnp.zeros_like(theta), "zero")
    z0, unravel = ravel_pytree((theta, m0))

    def step(z):
        x, ms = unravel(z)
        x1, ms1 = optimizer.step(x, ms, Hp @ (x - theta), jnp.asarray(h, jnp.float64), None)
        return ravel_pytree((x1, tuple(ms1)))[0]

    J = np.asarray(jax.jacfwd(step)(z0))
    return float(np.max(np.abs(np.linalg.eigvals(J)))) if J.size else 0.0


@dataclasses.dataclass(frozen=True)
class WeakSamples:
    r"""Samples at one learning rate: ``discrete[p]`` = $\varphi(x_{T/\eta})$ of path $p$, ``sde[s][p]`` =
    $\varphi(X_T)$ by Euler--Maruyama with ``s`` substeps per learning-rate step (every level driven by the same
    Brownian path; with ``coupling == "crn"`` also the same normals as the iterates), ``diverged`` the number of
    paths whose iterates became non-finite, ``radius`` the linear-stability radius of the optimizer at $\theta_0$
    (:func:`step_radius`), ``steps`` = $T/\eta$."""

    eta: float
    steps: int
    discrete: np.ndarray
    sde: dict
    coupling: str
    diverged: int
    radius: float


def weak_samples(loss: Callable, oracle, theta0, eta: float, T: float, *, paths: int, key, order: int = 1,
                 optimizer: Any = None, phi: Optional[Callable] = None, substeps: Sequence[int] = (4,),
                 coupling: str = "auto") -> WeakSamples:
    r"""Monte Carlo samples of $\varphi(x_{T/\eta})$ for ``optimizer`` (``simulate`` vmapped over ``paths`` keys) and
    of $\varphi(X_T)$ for its order-``order`` SME (:func:`~modeq.sde.sme`), by Euler--Maruyama with each substep count
    in ``substeps`` (each must divide the largest). ``phi`` maps a flat vector to a scalar (default $\|x\|^2$).

    ``coupling``: ``"crn"`` drives the SDE with the same normals as the iterates (common random numbers; needs a
    :class:`~modeq.problems.GaussianNGOS` oracle, whose noise is $\sigma S(\theta)z$ with $z$ shared); the paired
    differences then have a far smaller variance than independent runs. ``"independent"`` uses a separate Brownian
    path; ``"auto"`` picks ``"crn"`` whenever the oracle allows it."""
    T = check_positive("T", T)
    n = _steps(T, eta)
    paths = check_int_at_least("paths", paths, 2)
    levels = tuple(check_int_at_least("substeps", s, 1) for s in substeps)
    finest = max(levels)
    if any(finest % s for s in levels):
        raise ValueError(f"substeps: every substep count must divide the largest, got {levels}")
    if coupling not in ("auto", "crn", "independent"):
        raise ValueError(f"coupling must be 'auto', 'crn' or 'independent', got {coupling!r}")
    crn_ok = isinstance(oracle, GaussianNGOS)
    if coupling == "crn" and not crn_ok:
        raise ValueError("coupling: common random numbers need a GaussianNGOS oracle (shared normals)")
    crn = crn_ok and coupling != "independent"
    phi = _default_phi if phi is None else phi
    optimizer = gd() if optimizer is None else optimizer
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    kd, ks = jax.random.split(key)
    keys = jax.random.split(kd, paths)

    def run(k):
        tr = simulate(optimizer, loss, theta0, n, h=eta, oracle=oracle, key=k, record=False, save_every=n)
        return tr.theta[-1], tr.diverged_at

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        end, div = jax.vmap(run)(keys)  # simulate's own jit caches across calls (an outer jit would not)
    sde = sme(loss, oracle, eta, order=order, optimizer=optimizer)
    m = sde.noise_dim(theta0)
    ends = _em_levels(sde, theta0, keys if crn else jax.random.split(ks, paths), jnp.asarray(T / n),
                      jnp.asarray(n), finest,
                      tuple(finest // s for s in levels), m)
    return WeakSamples(
        eta=float(eta), steps=n, discrete=np.asarray(jax.vmap(phi)(end)),
        sde={s: np.asarray(jax.vmap(phi)(ends[i])) for i, s in enumerate(levels)},
        coupling="crn" if crn else "independent", diverged=int(jnp.sum(div >= 0)),
        radius=step_radius(optimizer, loss, theta0, eta),
    )
