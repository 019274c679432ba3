r"""Stochastic modified equations (SMEs) built from an optimizer and a gradient oracle.

SDE time is $t = k\eta$ (docs/theory/sme.md#time-scales). With $\Sigma(\theta)$ = ``oracle.covariance(theta)`` (the covariance of the
stochastic gradient itself, $\sigma^2\Sigma_{\rm NGOS}$):

* order 1 (Li, Tai & E; docs/theory/sme.md#sme): $dX = -\lambda_t\nabla L\,dt + \lambda_t\sqrt\eta\,\Sigma^{1/2}(X)\,dW$;
* order 2: drift $-\nabla(L + \frac\eta4\|\nabla L\|^2) = -\nabla L - \frac\eta2 \nabla^2 L\,\nabla L$ (constant LR only);
* SGDM with fixed $\beta$ (index $\alpha = 0 < 1$, docs/theory/sme.md#sgd-vs-sgdm): the SGD SDE with the averaged (effective) LR,
  $\eta$ itself for the normalized form, $\gamma(1-\tau)/(1-\mu)$ for the standard form, $h/(1-\beta)$ for heavy ball.
* SGDM with $1-\beta = \gamma\eta$ (index $\alpha = 1$, Wang et al. arXiv 2307.15196 App. B.2 eqs. 52-53;
  docs/theory/sme.md#sgd-vs-sgdm), :func:`momentum_sde`: $dX = -\lambda_t M\,dt$,
  $dM = \gamma(\nabla L(X) - M)\,dt + \gamma\sqrt\eta\,\Sigma^{1/2}(X)\,dW$ on the state $(X, M)$; not the SGD limit.

$\lambda_t$ is an optional LR schedule, $\eta_k = \eta\lambda_{k\eta}$. $\Sigma^{1/2}$ is the symmetric square root
(eigendecomposition, clipped at 0); for a :class:`~modeq.problems.GaussianNGOS` its own square root is used (any
square root gives the same law).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from .._validation import check_positive
from ..problems._oracles import GaussianNGOS, Oracle


class _ById:
    """Hashable-by-identity holder so that jitted solvers cache on the same (loss, oracle) objects."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ById) and other.obj is self.obj


def sym_sqrt(cov: jax.Array) -> jax.Array:
    """Symmetric PSD square root by eigendecomposition (negative eigenvalues clipped to 0)."""
    cov = 0.5 * (cov + cov.T)
    w, v = jnp.linalg.eigh(cov)
    return (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T


def noise_sqrt(oracle: Oracle, theta: jax.Array) -> jax.Array:
    r"""A square root $S$ with $SS^\top$ = ``oracle.covariance(theta)``."""
    if isinstance(oracle, GaussianNGOS):
        return oracle.sigma * oracle.sqrt(theta)
    return sym_sqrt(oracle.covariance(theta))


def effective_lr_factor(optimizer: Any) -> float:
    r"""Factor $c$ with effective LR $= c\,h$ for the optimizers whose $\alpha<1$ SDE is the SGD SDE: asks
    ``optimizer.sme_lr_factor()`` (1 for SGD and normalized SGDM, $1/(1-\beta)$ for heavy ball,
    $(1-\tau)/(1-\mu)$ for standard SGDM with dampening $\tau$; Li, Tai & E 2019; Wang et al. arXiv 2307.15196,
    Thm. 4.5). ``None`` (plain SGD) gives 1. Raises ``ValueError`` naming the optimizer when it has no SME."""
    if optimizer is None:
        return 1.0
    ask = getattr(optimizer, "sme_lr_factor", None)
    c = ask() if callable(ask) else None
    if c is None:
        from ..optimizers import OPTIMIZERS

        have = []
        for key, ctor in sorted(OPTIMIZERS.items()):
            try:
                if ctor().sme_lr_factor() is not None:
                    have.append(key)
            except Exception:  # noqa: BLE001 - constructors needing arguments are simply not listed
                pass
        raise ValueError(f"optimizer: no SME for {getattr(optimizer, 'name', optimizer)!r} (its sme_lr_factor() is "
                         f"None); supported: {', '.join(have)}")
    return float(c)


class _OracleSDE(eqx.Module):
    """Shared parts of the SDEs built from a loss, a gradient oracle and an optional LR schedule."""

    eta: jax.Array
    _loss: _ById = eqx.field(static=True)
    _oracle: _ById = eqx.field(static=True)
    _schedule: _ById = eqx.field(static=True)

    @property
    def loss(self):
        """The loss $L$ (a JAX callable on a flat vector)."""
        return self._loss.obj

    @property
    def oracle(self):
        r"""The gradient oracle whose ``covariance(theta)`` gives $\Sigma$."""
        return self._oracle.obj

    def lam(self, t):
        r"""The LR schedule factor $\lambda_t$ ($\eta_k = \eta\lambda_{k\eta}$; 1 without a schedule)."""
        s = self._schedule.obj
        return jnp.asarray(1.0) if s is None else s(t)

    def diffusion(self, t, x):  # pragma: no cover - overridden
        raise NotImplementedError

    def noise_dim(self, x0) -> int:
        """Number of Brownian components $m$ (columns of the diffusion matrix at ``x0``)."""
        return int(jax.eval_shape(lambda x: self.diffusion(0.0, x), x0).shape[1])


class SDE(_OracleSDE):
    r"""An Ito SDE $dX = b(t, X)\,dt + \sigma(t, X)\,dW$ in SDE time $t = k\eta$.

    ``drift(t, x) -> (d,)``, ``diffusion(t, x) -> (d, m)``. ``eta`` is a (traced) array so sweeping it does not
    recompile; ``loss``, ``oracle`` and ``schedule`` are static (compared by identity).
    """

    order: int = eqx.field(static=True, default=1)
    name: str = eqx.field(static=True, default="sme")

    def drift(self, t, x):
        r"""$b(t, x) = -\lambda_t\nabla L(x)$ (order 1) or $-\nabla L - \frac\eta2\nabla^2L\,\nabla L$ (order 2)."""
        g = jax.grad(self.loss)(x)
        lam = self.lam(t)
        if self.order == 1:
            return -lam * g
        # order 2: -grad L - (eta/2) H grad L  (= -grad(L + eta/4 |grad L|^2))
        hg = jax.jvp(jax.grad(self.loss), (x,), (g,))[1]
        return -g - 0.5 * self.eta * hg

    def diffusion(self, t, x):
        r"""$\sigma(t, x) = \lambda_t\sqrt\eta\,\Sigma^{1/2}(x)$, a $d\times m$ matrix."""
        return (self.lam(t) * jnp.sqrt(self.eta)) * noise_sqrt(self.oracle, x)

    def to_dict(self) -> dict:
        """JSON-ready description (name, LR and the other scalar parameters)."""
        return {"name": self.name, "order": self.order, "eta": float(self.eta),
                "schedule": self._schedule.obj is not None}


def sme(
    loss: Callable,
    oracle: Oracle,
    eta: float,
    *,
    order: int = 1,
    optimizer: Any = None,
    schedule: Optional[Callable] = None,
) -> SDE:
    r"""The SME of SGD (or of SGDM/heavy ball with fixed momentum, through the averaged LR) with LR ``eta``.

    Args:
        loss: $L(\theta)$ on a flat vector.
        oracle: gradient oracle with ``covariance(theta)``.
        eta: the learning rate $h$ of ``optimizer`` (> 0); the SDE uses the effective LR.
        order: 1 or 2 (order 2: SGD with a constant LR only).
        optimizer: ``None``/``gd()`` (SGD), ``sgdm(beta)``, ``sgdm_standard(beta, dampening)``, ``heavy_ball(beta)``.
        schedule: optional $t\mapsto\lambda_t$ with $\eta_k = \eta\lambda_{k\eta}$.
    """
    eta = check_positive("eta", eta)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    c = effective_lr_factor(optimizer)
    name = getattr(optimizer, "name", "sgd") if optimizer is not None else "sgd"
    if order == 2 and ((optimizer is not None and not getattr(optimizer, "is_gradient_descent", False))
                       or schedule is not None):
        raise ValueError("order: the order-2 SME is implemented for SGD with a constant learning rate only")
    if not callable(getattr(oracle, "covariance", None)):
        raise TypeError("oracle must provide covariance(theta)")
    return SDE(
        eta=jnp.asarray(c * eta, dtype=jnp.float64),
        _loss=_ById(loss),
        _oracle=_ById(oracle),
        _schedule=_ById(schedule),
        order=order,
        name=f"sme{order}[{name}]",
    )


class MomentumSDE(_OracleSDE):
    r"""The $\alpha = 1$ limit of normalized SGDM (Wang et al., arXiv 2307.15196, App. B.2 eqs. 52-53), on the
    stacked state $z = (x, m) \in \mathbb R^{2d}$, SDE time $t = k\eta$:

    $$dX = -\lambda_t M\,dt,\qquad dM = \gamma\,(\nabla L(X) - M)\,dt + \gamma\sqrt\eta\,\Sigma^{1/2}(X)\,dW,$$

    with $1-\beta = \gamma\eta$ and $\Sigma$ = ``oracle.covariance`` (the covariance of the stochastic gradient, so
    NGOS scaling $\sigma = \eta^{-1/2}$ gives $\gamma\,\Sigma_{\rm NGOS}^{1/2}dW$). Same interface as :class:`SDE`.
    """

    gamma: jax.Array = None
    name: str = eqx.field(static=True, default="momentum-sde")

    def drift(self, t, z):
        r"""$(-\lambda_t m,\ \gamma(\nabla L(x) - m))$ on $z = (x, m)$."""
        d = z.shape[0] // 2
        x, m = z[:d], z[d:]
        return jnp.concatenate([-self.lam(t) * m, self.gamma * (jax.grad(self.loss)(x) - m)])

    def diffusion(self, t, z):
        r"""$(0;\ \gamma\sqrt\eta\,\Sigma^{1/2}(x))$, a $2d\times m$ matrix (noise enters the momentum only)."""
        d = z.shape[0] // 2
        S = (self.gamma * jnp.sqrt(self.eta)) * noise_sqrt(self.oracle, z[:d])
        return jnp.concatenate([jnp.zeros_like(S), S])

    def to_dict(self) -> dict:
        """JSON-ready description (name, LR and the other scalar parameters)."""
        return {"name": self.name, "eta": float(self.eta), "gamma": float(self.gamma),
                "schedule": self._schedule.obj is not None}


def momentum_sde(
    loss: Callable,
    oracle: Oracle,
    eta: float,
    *,
    beta: Optional[float] = None,
    gamma: Optional[float] = None,
    schedule: Optional[Callable] = None,
) -> MomentumSDE:
    r"""The momentum SDE of normalized SGDM (``modeq.optimizers.sgdm``) in the $\alpha = 1$ regime
    $1-\beta = \gamma\eta$ (Wang et al. 2023, App. B.2; docs/theory/sme.md#sgd-vs-sgdm). Give either ``beta`` (then
    $\gamma = (1-\beta)/\eta$) or ``gamma`` directly. Simulate it with :func:`~modeq.sde.simulate_sde` from
    $z_0 = (x_0, m_0)$; the position is ``xs[..., :d]``.
    """
    eta = check_positive("eta", eta)
    if (beta is None) == (gamma is None):
        raise ValueError("give exactly one of beta (in [0, 1)) or gamma (> 0)")
    if beta is not None:
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        gamma = (1.0 - float(beta)) / eta
    gamma = check_positive("gamma", gamma)
    if not callable(getattr(oracle, "covariance", None)):
        raise TypeError("oracle must provide covariance(theta)")
    return MomentumSDE(
        eta=jnp.asarray(eta, dtype=jnp.float64),
        gamma=jnp.asarray(gamma, dtype=jnp.float64),
        _loss=_ById(loss),
        _oracle=_ById(oracle),
        _schedule=_ById(schedule),
    )
