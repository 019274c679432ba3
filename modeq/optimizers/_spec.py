r"""One specification format for every optimizer: the momentum-variable form.

Cattaneo & Shigida (arXiv 2502.02132, Remark 3.2; docs/theory/optimizers.md) observe that GD, heavy-ball, Nesterov, SGDM,
RMSProp, Adam(W), NAdam(W) and Lion-K are all "functions of momentum variables":

$$ m_\ell^{(n+1)} = \beta_\ell\, m_\ell^{(n)} + b_\ell\, s_\ell(g_n, \theta_n), \qquad
   \theta_{n+1} = \theta_n - h\, D\big(m^{(n+1)}, m^{(n)}, g_n, \theta_n; n\big), $$

with $g_n$ the (possibly stochastic) gradient at $\theta_n$. An :class:`Optimizer` lists the momentum variables
(what is averaged: $s_\ell$; with which decay: $\beta_\ell$; with which input weight: $b_\ell$) and the update
direction $D$. The same record drives the discrete simulator (:func:`modeq.optimizers.simulate`) and every builder of
modified equations (``n = None`` means the stationary regime: bias-correction factors equal to 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import equinox as eqx
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MomentumVariable:
    r"""One momentum variable $m \leftarrow \beta m + b\, s(g, \theta)$.

    Attributes:
        name: short name (``"m"``, ``"v"``, ...).
        source: $s(g, \theta)$, what is averaged (``g``, ``g**2``, ``theta``, ...).
        decay: the key of $\beta$ in ``Optimizer.hyper``, or a number.
        input_weight: $b$ as a function of the hyperparameters (``1`` for a sum, ``1 - beta`` for an EMA).
        rest: the value of this variable for a start "at rest" as a function of $(\theta_0, g_0)$; ``None`` = zero.
    """

    name: str
    source: Callable[[Any, Any], Any]
    decay: Any
    input_weight: Callable[[dict], Any] = lambda hyper: 1.0
    rest: Optional[Callable[[Any, Any], Any]] = None

    def beta(self, hyper: dict):
        r"""The decay $\beta$ of this variable under the hyperparameters ``hyper``."""
        return hyper[self.decay] if isinstance(self.decay, str) else self.decay

    def weight(self, hyper: dict):
        r"""The input weight $b$ of this variable under the hyperparameters ``hyper``."""
        return self.input_weight(hyper)


class HeavyBallForm(NamedTuple):
    r"""The optimizer is heavy-ball (``nesterov=False``) or Nesterov (``nesterov=True``) with momentum ``beta`` and step
    $(1 - \delta) h$, $\delta$ = ``step_reduction`` (0 for heavy-ball, $\beta$ for normalized SGDM, the dampening for
    standard SGDM): what the closed-form modified losses need to know (kept as $\delta$ so that $1-\delta$ is exact
    in rational arithmetic)."""

    beta: float
    step_reduction: float
    nesterov: bool

    @property
    def scale(self) -> float:
        r"""The step multiplier $1 - \delta$."""
        return 1.0 - self.step_reduction


class AdaptiveForm(NamedTuple):
    r"""An Adam-family optimizer $D = N(m, g)/(\sqrt{v+\epsilon_{root}}+\epsilon) + \lambda\theta$ with
    $m$ an EMA of $g$ (decay ``b1``; ``b1 = 0`` for RMSProp), $v$ an EMA of $g^2$ (decay ``b2``); ``nesterov``: NAdam's
    numerator $b_1 m + (1-b_1) g$."""

    b1: float
    b2: float
    eps: float
    eps_root: float
    weight_decay: float
    nesterov: bool


class LionForm(NamedTuple):
    r"""Lion-K: ``K`` is ``"l1"``, ``"smooth_l1"`` (with ``eps``), ``"quadratic"`` or ``"custom"``."""

    b1: float
    b2: float
    weight_decay: float
    K: str
    eps: Optional[float]


class Optimizer(eqx.Module):
    r"""A discrete optimizer in momentum-variable form (see the module docstring).

    ``hyper`` holds the hyperparameters other than the step size $h$ (a dict of float64 scalars: a pytree, so an
    optimizer can be vmapped over its hyperparameters). $h$ is always passed separately: to the simulator and to the
    builders of modified equations.

    **Capabilities.** Every other module asks the optimizer what it can do instead of comparing names (the diffrax
    ``AbstractSolver`` pattern): :meth:`slowest_decay`, :meth:`reduction_obstacle` (reducible to a slow manifold),
    ``smooth`` / ``smooth_reason``, :meth:`principal_flow_momentum`, :meth:`sme_lr_factor`, :meth:`heavy_ball_form`,
    :meth:`adaptive_form`, :meth:`lion_form`, :attr:`is_gradient_descent`, :meth:`symbolic_series` and
    :meth:`cli_spec`. Each family of :mod:`modeq.optimizers` (one subclass per algorithm) overrides the ones it has;
    the base class answers "no" to each.
    """

    #: the name of this family in ``modeq.optimizers.OPTIMIZERS`` (the CLI's ``--optimizer``)
    cli_name: ClassVar[str] = ""
    #: True for plain gradient descent $\theta - h g$ (no momentum, no preconditioner)
    is_gradient_descent: ClassVar[bool] = False
    #: True when :meth:`direction` and the momentum variables' ``source`` exist (the closed-form builders need them;
    #: optimizers given by their state dynamics, :func:`modeq.optimizers.from_optax`, have ``False``)
    has_momentum_form: ClassVar[bool] = True

    name: str = eqx.field(static=True)
    hyper: dict
    momenta: tuple = eqx.field(static=True)
    direction_fn: Callable = eqx.field(static=True)
    bias_correction: bool = eqx.field(static=True, default=False)
    smooth: bool = eqx.field(static=True, default=True)
    smooth_reason: str = eqx.field(static=True, default="")

    def direction(self, new, old, g, theta, h, n=None):
        r"""The update direction $D$ with $\theta_{n+1} = \theta_n - hD$. ``n = None``: stationary regime."""
        return self.direction_fn(self, tuple(new), tuple(old), g, theta, h, n)

    def update_momenta(self, momenta, g, theta):
        r"""$m_\ell \leftarrow \beta_\ell m_\ell + b_\ell s_\ell(g, \theta)$ for every momentum variable."""
        return tuple(
            var.beta(self.hyper) * m + var.weight(self.hyper) * var.source(g, theta)
            for var, m in zip(self.momenta, momenta)
        )

    def step(self, theta, momenta, g, h, n=None):
        """One step: returns ``(theta_next, momenta_next)``."""
        new = self.update_momenta(momenta, g, theta)
        return theta - h * self.direction(new, momenta, g, theta, h, n), new

    def slow_state(self, g, theta, h, change=None):
        r"""The momenta $m$ whose one-step change at fixed $\theta$ is ``change``: $\beta m + b\,s(g, \theta) - m = r$,
        i.e. $m = (b\,s - r)/(1-\beta)$ (``change=None``: $r = 0$, the stationary momenta). The inner solve of the
        slow-manifold iteration (:func:`modeq.series.manifold_iterate`); optimizers given by their state dynamics
        (:func:`modeq.optimizers.from_optax`) solve the same equation for their own state."""
        if change is None:
            return self.stationary_momenta(g, theta)
        return tuple(
            (var.weight(self.hyper) * var.source(g, theta) - r) / (1.0 - var.beta(self.hyper))
            for var, r in zip(self.momenta, change)
        )

    def stationary_momenta(self, g, theta):
        r"""The fixed point of each momentum variable under a constant input, $b_\ell s_\ell/(1-\beta_\ell)$."""
        return tuple(
            var.weight(self.hyper) * var.source(g, theta) / (1.0 - var.beta(self.hyper)) for var in self.momenta
        )

    def initial_momenta(self, theta0, g0, mode="zero"):
        """Initial momentum variables.

        ``mode``: ``"zero"`` (at rest: zero buffers, as optax and PyTorch; for the two-step HB form the previous
        iterate equals ``theta0``), ``"first"`` (the stationary value for the first gradient: the warm start
        $m_0 = b\\,s(g_0, \\theta_0)/(1-\\beta)$), or a tuple of arrays given by the user.
        """
        if isinstance(mode, str):
            if mode == "zero":
                return tuple(
                    (var.rest(theta0, g0) if var.rest is not None else jnp.zeros_like(var.source(g0, theta0)))
                    for var in self.momenta
                )
            if mode == "first":
                return self.stationary_momenta(g0, theta0)
            raise ValueError(f"m0 must be 'zero', 'first' or a tuple of arrays, got {mode!r}")
        given = tuple(jnp.asarray(m, dtype=jnp.float64) for m in mode)
        if len(given) != len(self.momenta):
            raise ValueError(f"m0 must have {len(self.momenta)} arrays for {self.name}, got {len(given)}")
        return given

    # --- capabilities (overridden by the families in _catalog.py) ------------------------------------------------

    def slowest_decay(self) -> float:
        r"""The largest momentum decay $\max_\ell \beta_\ell$ (0 without momentum): the fast variables relax like
        $\beta^n$, and the asymptotic series in $h$ are governed by $h\lambda_{\max}/(1-\beta)^2$."""
        return max([float(var.beta(self.hyper)) for var in self.momenta] or [0.0])

    def reduction_obstacle(self) -> Optional[str]:
        """Why this optimizer has no slow manifold usable by the series engine (``None``: it has one)."""
        return None

    def principal_flow_momentum(self) -> Optional[float]:
        r"""$\beta$ of the principal flow of Rosca et al. / Cattaneo & Shigida (0 for GD); ``None``: no principal
        flow is defined for this optimizer."""
        return None

    def sme_lr_factor(self) -> Optional[float]:
        r"""$c$ such that the optimizer's $\alpha < 1$ SDE is the SGD SDE with learning rate $c\,h$ (Li, Tai & E;
        Wang et al.); ``None``: no SME is implemented for it."""
        return None

    def heavy_ball_form(self) -> Optional[HeavyBallForm]:
        """Heavy-ball / Nesterov equivalent, or ``None``."""
        return None

    def adaptive_form(self) -> Optional[AdaptiveForm]:
        """Adam-family description, or ``None``."""
        return None

    def lion_form(self) -> Optional[LionForm]:
        """Lion-K description, or ``None``."""
        return None

    def symbolic_series(self) -> Optional[str]:
        """Which exact (rooted-tree) series of :mod:`modeq.series` covers this optimizer: ``"gd"``, ``"hb"`` or
        ``None``."""
        return None

    def cli_params(self) -> dict:
        """The hyperparameters in the CLI's ``--param`` names (floats)."""
        return {k: float(v) for k, v in self.hyper.items()}

    def cli_spec(self, h=None) -> str:
        """This optimizer in the CLI's own syntax, e.g. ``--optimizer hb --param beta=0.9`` (with ``h`` if given)."""
        params = ({"h": float(h)} if h is not None else {}) | self.cli_params()
        text = f"--optimizer {self.cli_name or self.name}"
        return text + "".join(
            f" --param {k}={str(v).lower() if isinstance(v, bool) else format(v, 'g')}" for k, v in params.items()
        )

    def with_hyper(self, **changes) -> "Optimizer":
        """A copy with some hyperparameters replaced."""
        return dataclasses.replace(self, hyper={**self.hyper, **{k: jnp.asarray(v, jnp.float64) for k, v in changes.items()}})


def bias_factor(beta, n, shift: int = 1):
    r"""$1 - \beta^{n + \mathrm{shift}}$, or $1$ in the stationary regime (``n is None``)."""
    if n is None:
        return 1.0
    return 1.0 - beta ** (n + shift)
