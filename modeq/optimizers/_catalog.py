r"""Constructors, one per algorithm, each returning an :class:`~modeq.optimizers.Optimizer`.

Conventions (float64; $h$ is the step size, passed to the simulator, never stored here). Names follow optax
(``b1``, ``b2``, ``eps``, ``eps_root``, ``weight_decay``), ``beta`` for the momentum of HB, Nesterov and SGDM.
Mapping to optax (tested to 1e-12 relative over 200 steps in ``tests/test_optax_equivalence.py``):

=====================================  ==========================================================================
modeq                                  optax (learning_rate = h)
=====================================  ==========================================================================
``heavy_ball(beta)``                   ``sgd(h, momentum=beta)``
``nesterov(beta)``                     ``sgd(h, momentum=beta, nesterov=True)``
``sgdm_standard(beta, dampening=0)``   ``sgd(h, momentum=beta)`` (PyTorch buffer); with dampening: no optax twin
``sgdm(beta)`` (normalized)            ``sgd(h (1 - beta), momentum=beta)``: $\eta = \gamma/(1-\mu)$
``adam(b1, b2, eps, eps_root)``        ``adam(h, b1, b2, eps, eps_root)``
``adamw(..., weight_decay)``           ``adamw(h, b1, b2, eps, eps_root, weight_decay)``
``rmsprop(decay, eps, eps_in_sqrt)``   ``rmsprop(h, decay, eps, eps_in_sqrt=..., bias_correction=...)``
``nadam(..., weight_decay)``           ``nadamw(h, b1, b2, eps, eps_root, weight_decay)`` (``nadam`` if 0)
``lion(b1, b2, weight_decay)``         ``lion(h, b1, b2, weight_decay)`` (K = l1, the sign)
=====================================  ==========================================================================

Epsilon: ``eps`` is added outside the square root (optax/PyTorch), ``eps_root`` inside (Cattaneo, Klusowski &
Shigida 2024 put it inside; docs/theory/optimizers.md#adaptive). A smooth modified equation of order >= 2 needs ``eps_root > 0`` (or
``eps > 0`` away from zero gradient components).
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp

from .._validation import check_nonnegative, check_positive, check_unit_interval
from ._spec import AdaptiveForm, HeavyBallForm, LionForm, MomentumVariable, Optimizer, bias_factor


def _g(g, theta):
    return g


def _g2(g, theta):
    return g * g


def _theta(g, theta):
    return theta


def _f(x) -> jnp.ndarray:
    return jnp.asarray(x, dtype=jnp.float64)


@functools.lru_cache(maxsize=None)
def _ema(hkey: str) -> Callable[[dict], jnp.ndarray]:
    # cached: the same function object for the same key, so rebuilding an optimizer does not recompile simulate
    return lambda hyper: 1.0 - hyper[hkey]


# --- GD ------------------------------------------------------------------------------------------------------------


def _gd_direction(opt, new, old, g, theta, h, n):
    return g


class GradientDescent(Optimizer):
    """Gradient descent (family of :func:`gd`)."""

    cli_name = "gd"
    is_gradient_descent = True

    def principal_flow_momentum(self):
        return 0.0

    def sme_lr_factor(self):
        return 1.0

    def symbolic_series(self):
        return "gd"


def gd() -> Optimizer:
    r"""Gradient descent $\theta_{n+1} = \theta_n - h g_n$: explicit Euler for $\theta' = -\nabla L$."""
    return GradientDescent(name="gd", hyper={}, momenta=(), direction_fn=_gd_direction)


# --- heavy-ball family ---------------------------------------------------------------------------------------------


def _first_momentum(opt, new, old, g, theta, h, n):
    return new[0]


class HeavyBall(Optimizer):
    """Heavy-ball in momentum-sum form (family of :func:`heavy_ball`)."""

    cli_name = "hb"

    def principal_flow_momentum(self):
        return float(self.hyper["beta"])

    def sme_lr_factor(self):
        return 1.0 / (1.0 - float(self.hyper["beta"]))

    def heavy_ball_form(self):
        return HeavyBallForm(float(self.hyper["beta"]), 0.0, False)

    def symbolic_series(self):
        return "hb"


class HeavyBallTwoStep(HeavyBall):
    """Heavy-ball in two-step form (family of :func:`heavy_ball_two_step`): same iterates as :class:`HeavyBall`."""

    cli_name = "heavy_ball_two_step"

    def slowest_decay(self):
        return float(self.hyper["beta"])  # the stored previous iterate has decay 0, the transient decays like beta^n

    def reduction_obstacle(self):
        return "the two-step HB form divides by h; build modified equations from heavy_ball (same iterates)"


class Nesterov(Optimizer):
    """Nesterov momentum, PyTorch form (family of :func:`nesterov`)."""

    cli_name = "nesterov"

    def heavy_ball_form(self):
        return HeavyBallForm(float(self.hyper["beta"]), 0.0, True)


class SGDM(Optimizer):
    r"""Normalized SGD with momentum (family of :func:`sgdm`): heavy-ball with step $\eta(1-\beta)$."""

    cli_name = "sgdm"

    def sme_lr_factor(self):
        return 1.0

    def heavy_ball_form(self):
        b = float(self.hyper["beta"])
        return HeavyBallForm(b, b, False)


class SGDMStandard(Optimizer):
    r"""Standard (PyTorch) SGD with momentum and dampening (family of :func:`sgdm_standard`): heavy-ball with step
    $\gamma(1-\tau)$."""

    cli_name = "sgdm_standard"

    def sme_lr_factor(self):
        return (1.0 - float(self.hyper["dampening"])) / (1.0 - float(self.hyper["beta"]))

    def heavy_ball_form(self):
        return HeavyBallForm(float(self.hyper["beta"]), float(self.hyper["dampening"]), False)


def heavy_ball(beta: float = 0.9) -> Optimizer:
    r"""Heavy-ball (Polyak) momentum, momentum-sum form $m_{n+1} = \beta m_n + g_n$, $\theta_{n+1} = \theta_n - h m_{n+1}$.

    The paper form of Cattaneo & Shigida (arXiv 2509.08483), $\theta_{n+1} = \theta_n - h g_n + h\beta v_n$,
    $v_{n+1} = \beta v_n - g_n$, is the same recursion with $v = -m$; optax ``sgd(h, momentum=beta)`` and PyTorch
    SGD (dampening 0) are identical. At rest: $m_0 = 0$ ($\theta_{-1} = \theta_0$).
    """
    check_unit_interval("beta", beta)
    return HeavyBall(
        name="heavy_ball",
        hyper={"beta": _f(beta)},
        momenta=(MomentumVariable("m", _g, "beta"),),
        direction_fn=_first_momentum,
    )


def _two_step_direction(opt, new, old, g, theta, h, n):
    # new[0] = theta_n, old[0] = theta_{n-1}: theta_{n+1} = theta_n - h g_n + beta (theta_n - theta_{n-1})
    return g - opt.hyper["beta"] * (new[0] - old[0]) / h


def heavy_ball_two_step(beta: float = 0.9) -> Optimizer:
    r"""Heavy-ball in two-step form $\theta_{n+1} = \theta_n - h g_n + \beta(\theta_n - \theta_{n-1})$.

    Written in momentum-variable form with one variable that stores the previous iterate ($s = \theta$, decay 0).
    At rest: $\theta_{-1} = \theta_0$. Equal to :func:`heavy_ball` with $m_n = (\theta_{n-1} - \theta_n)/h$.
    """
    check_unit_interval("beta", beta)
    return HeavyBallTwoStep(
        name="heavy_ball_two_step",
        hyper={"beta": _f(beta)},
        momenta=(MomentumVariable("previous", _theta, 0.0, rest=lambda theta0, g0: theta0),),
        direction_fn=_two_step_direction,
    )


def _nesterov_direction(opt, new, old, g, theta, h, n):
    return g + opt.hyper["beta"] * new[0]


def nesterov(beta: float = 0.9) -> Optimizer:
    r"""Nesterov momentum in PyTorch form: $b_{n+1} = \beta b_n + g_n$, $\theta_{n+1} = \theta_n - h(g_n + \beta b_{n+1})$
    (Cattaneo & Shigida, arXiv 2502.02132, Example 1.2)."""
    check_unit_interval("beta", beta)
    return Nesterov(
        name="nesterov",
        hyper={"beta": _f(beta)},
        momenta=(MomentumVariable("b", _g, "beta"),),
        direction_fn=_nesterov_direction,
    )


def sgdm(beta: float = 0.9) -> Optimizer:
    r"""SGD with momentum, normalized form (Wang et al., arXiv 2307.15196, Def. 3.3):
    $m_{k+1} = \beta m_k + (1-\beta) g_k$, $x_{k+1} = x_k - \eta m_{k+1}$ ($\eta$ is the step size ``h``).

    Equal to :func:`sgdm_standard` with $\gamma = \eta(1-\beta)$, $\mu = \beta$ and $b = m/(1-\beta)$
    (see :func:`standard_to_normalized`)."""
    check_unit_interval("beta", beta)
    return SGDM(
        name="sgdm",
        hyper={"beta": _f(beta)},
        momenta=(MomentumVariable("m", _g, "beta", _ema("beta")),),
        direction_fn=_first_momentum,
    )


def sgdm_standard(beta: float = 0.9, dampening: float = 0.0) -> Optimizer:
    r"""SGD with momentum, standard (PyTorch) form: $b_{k+1} = \mu b_k + (1-\tau) g_k$, $x_{k+1} = x_k - \gamma b_{k+1}$,
    with $\mu$ = ``beta`` and $\tau$ = ``dampening`` (Wang et al., arXiv 2307.15196, Def. A.1)."""
    check_unit_interval("beta", beta)
    check_unit_interval("dampening", dampening)
    return SGDMStandard(
        name="sgdm_standard",
        hyper={"beta": _f(beta), "dampening": _f(dampening)},
        momenta=(MomentumVariable("b", _g, "beta", lambda hp: 1.0 - hp["dampening"]),),
        direction_fn=_first_momentum,
    )


def standard_to_normalized(gamma: float, beta: float, dampening: float = 0.0) -> tuple[float, float]:
    r"""Map standard SGDM $(\gamma, \mu, \tau)$ with a zero buffer to normalized SGDM $(\eta, \beta)$.

    Lemma A.2 of Wang et al. (arXiv 2307.15196) with $c_0 = (1-\tau)/(1-\mu)$, constant in $k$:
    $\beta = \mu$, $\eta = \gamma (1-\tau)/(1-\mu)$, and $b_k = c\, m_k$. (docs/theory/optimizers.md#sgdm.)
    """
    check_positive("gamma", gamma)
    check_unit_interval("beta", beta)
    check_unit_interval("dampening", dampening)
    return gamma * (1.0 - dampening) / (1.0 - beta), beta


# --- adaptive methods ----------------------------------------------------------------------------------------------


def _denominator(opt, v_hat):
    hp = opt.hyper
    return jnp.sqrt(v_hat + hp["eps_root"]) + hp["eps"]


def _adam_direction(opt, new, old, g, theta, h, n):
    hp = opt.hyper
    m, v = new
    if opt.bias_correction:
        m = m / bias_factor(hp["b1"], n)
        v = v / bias_factor(hp["b2"], n)
    return m / _denominator(opt, v) + hp["weight_decay"] * theta


class Adam(Optimizer):
    """Adam / AdamW (family of :func:`adam` and :func:`adamw`)."""

    cli_name = "adam"

    def adaptive_form(self):
        hp = self.hyper
        return AdaptiveForm(float(hp["b1"]), float(hp["b2"]), float(hp["eps"]), float(hp["eps_root"]),
                            float(hp["weight_decay"]), False)

    def cli_params(self):
        out = super().cli_params()
        if self.name == "adam":  # adam() has no weight decay argument (it is 0)
            out.pop("weight_decay", None)
        return out if self.bias_correction else out | {"bias_correction": False}

    def cli_spec(self, h=None):
        if self.name == "adamw":
            return super().cli_spec(h).replace("--optimizer adam", "--optimizer adamw", 1)
        return super().cli_spec(h)


class NAdam(Adam):
    """The NAdam(W) family (of :func:`nadam`): Adam with the Nesterov numerator $b_1 m + (1-b_1) g$, so its
    :meth:`adaptive_form` has ``nesterov=True``."""

    cli_name = "nadam"

    def adaptive_form(self):
        return super().adaptive_form()._replace(nesterov=True)


class RMSProp(Optimizer):
    """RMSProp (family of :func:`rmsprop`)."""

    cli_name = "rmsprop"

    def adaptive_form(self):
        hp = self.hyper
        return AdaptiveForm(0.0, float(hp["decay"]), float(hp["eps"]), float(hp["eps_root"]), 0.0, False)

    def cli_params(self):
        hp = self.hyper
        inside = float(hp["eps_root"]) > 0 or float(hp["eps"]) == 0
        out = {"decay": float(hp["decay"]), "eps": float(hp["eps_root"] if inside else hp["eps"])}
        out = out if inside else out | {"eps_in_sqrt": False}
        return out | {"bias_correction": True} if self.bias_correction else out


def _adam_like(name, direction, b1, b2, eps, eps_root, weight_decay, bias_correction) -> Optimizer:
    check_unit_interval("b1", b1)
    check_unit_interval("b2", b2)
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    check_nonnegative("weight_decay", weight_decay)
    if eps == 0 and eps_root == 0:
        raise ValueError("eps and eps_root must not both be 0 (the update divides by sqrt(v))")
    family = NAdam if direction is _nadam_direction else Adam
    return family(
        name=name,
        hyper={"b1": _f(b1), "b2": _f(b2), "eps": _f(eps), "eps_root": _f(eps_root), "weight_decay": _f(weight_decay)},
        momenta=(MomentumVariable("m", _g, "b1", _ema("b1")), MomentumVariable("v", _g2, "b2", _ema("b2"))),
        direction_fn=direction,
        bias_correction=bias_correction,
        smooth=eps_root > 0,
        smooth_reason="" if eps_root > 0 else "with eps_root = 0 the update g/(|g| + eps) is not smooth at g_j = 0",
    )


def adam(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, *, bias_correction: bool = True) -> Optimizer:
    r"""Adam (Kingma & Ba): $m \leftarrow b_1 m + (1-b_1) g$, $v \leftarrow b_2 v + (1-b_2) g^2$,
    $D = \hat m/(\sqrt{\hat v + \epsilon_{root}} + \epsilon)$, $\hat m = m/(1-b_1^{n+1})$, $\hat v = v/(1-b_2^{n+1})$."""
    return _adam_like("adam", _adam_direction, b1, b2, eps, eps_root, 0.0, bias_correction)


def adamw(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-4, *, bias_correction: bool = True) -> Optimizer:
    r"""AdamW (Loshchilov & Hutter): Adam's direction plus decoupled weight decay, $D = \hat m/(\sqrt{\hat v+\epsilon_{root}}
    + \epsilon) + \lambda\theta$ (Cattaneo & Shigida, arXiv 2502.02132, Example 1.3)."""
    return _adam_like("adamw", _adam_direction, b1, b2, eps, eps_root, weight_decay, bias_correction)


def _nadam_direction(opt, new, old, g, theta, h, n):
    hp = opt.hyper
    m, v = new
    b1 = hp["b1"]
    if opt.bias_correction:
        numerator = b1 * m / bias_factor(b1, n, 2) + (1.0 - b1) * g / bias_factor(b1, n, 1)
        v = v / bias_factor(hp["b2"], n)
    else:
        numerator = b1 * m + (1.0 - b1) * g
    return numerator / _denominator(opt, v) + hp["weight_decay"] * theta


def nadam(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=0.0, *, bias_correction: bool = True) -> Optimizer:
    r"""NAdam(W) (Dozat 2016), optax's bias-correction convention:
    $D = [b_1 m/(1-b_1^{n+2}) + (1-b_1) g/(1-b_1^{n+1})]/(\sqrt{\hat v+\epsilon_{root}}+\epsilon) + \lambda\theta$
    (Cattaneo & Shigida, arXiv 2502.02132, Example 1.4: numerator $\beta_1\hat m + (1-\beta_1) g$)."""
    return _adam_like("nadam", _nadam_direction, b1, b2, eps, eps_root, weight_decay, bias_correction)


def _rmsprop_direction(opt, new, old, g, theta, h, n):
    hp = opt.hyper
    (v,) = new
    if opt.bias_correction:
        v = v / bias_factor(hp["decay"], n)
    return g / _denominator(opt, v)


def rmsprop(decay=0.9, eps=1e-8, *, eps_in_sqrt: bool = True, bias_correction: bool = False) -> Optimizer:
    r"""RMSProp (Tieleman & Hinton): $v \leftarrow \rho v + (1-\rho) g^2$, $D = g/\sqrt{\hat v + \epsilon}$
    (optax's default, ``eps_in_sqrt=True``) or $g/(\sqrt{\hat v} + \epsilon)$."""
    check_unit_interval("decay", decay)
    check_positive("eps", eps)
    return RMSProp(
        name="rmsprop",
        hyper={
            "decay": _f(decay),
            "eps": _f(0.0 if eps_in_sqrt else eps),
            "eps_root": _f(eps if eps_in_sqrt else 0.0),
        },
        momenta=(MomentumVariable("v", _g2, "decay", _ema("decay")),),
        direction_fn=_rmsprop_direction,
        bias_correction=bias_correction,
        smooth=eps_in_sqrt,
        smooth_reason="" if eps_in_sqrt else "eps outside the root: g/(|g| + eps) is not smooth at g_j = 0",
    )


# --- Lion-K --------------------------------------------------------------------------------------------------------


def _lion_grad_k(kind, eps):
    if callable(kind):
        return jax.grad(lambda x: jnp.sum(kind(x)))
    if kind == "l1":
        return jnp.sign
    if kind == "smooth_l1":
        return lambda x: x / jnp.sqrt(x * x + eps)
    if kind == "quadratic":
        return lambda x: x
    raise ValueError(f"K must be 'l1', 'smooth_l1', 'quadratic' or a callable, got {kind!r}")


class Lion(Optimizer):
    """Lion-K (family of :func:`lion`); ``kind`` is ``"l1"``, ``"smooth_l1"``, ``"quadratic"`` or ``"custom"``."""

    cli_name = "lion"
    kind: str = eqx.field(static=True, default="l1")
    kind_eps: Optional[float] = eqx.field(static=True, default=None)

    def lion_form(self):
        hp = self.hyper
        return LionForm(float(hp["b1"]), float(hp["b2"]), float(hp["weight_decay"]), self.kind, self.kind_eps)

    def cli_spec(self, h=None):
        text = super().cli_spec(h)
        return text.replace("--optimizer lion", "--optimizer lion_k", 1) if self.kind == "smooth_l1" else text

    def cli_params(self):
        out = super().cli_params()
        if self.kind == "smooth_l1":
            out["eps"] = float(self.kind_eps)
        return out


def lion(
    b1=0.9, b2=0.99, weight_decay=1e-3, *, K: Union[str, Callable] = "l1", eps: Optional[float] = None
) -> Optimizer:
    r"""Lion-K (Chen et al. 2023; Cattaneo & Shigida, arXiv 2502.02132, Example 1.5).

    $c_n = b_1 m_n + (1-b_1) g_n$, $m_{n+1} = b_2 m_n + (1-b_2) g_n$,
    $\theta_{n+1} = \theta_n - h\,[-\nabla K(-c_n) + \lambda\theta_n]$.
    ``K``: ``"l1"`` ($\nabla K$ = sign, ordinary Lion, optax ``lion``), ``"smooth_l1"``
    ($K(x) = \sum_j\sqrt{x_j^2+\epsilon}$), ``"quadratic"`` ($K = \|x\|^2/2$; with $b_1 = b_2$, $\lambda = 0$ this is
    normalized SGDM) or a callable $K$ (summed over coordinates). Only smooth K admit modified equations beyond order 1.
    """
    check_unit_interval("b1", b1)
    check_unit_interval("b2", b2)
    check_nonnegative("weight_decay", weight_decay)
    if K == "smooth_l1":
        eps = check_positive("eps", 1e-2 if eps is None else eps)
    grad_k = _lion_grad_k(K, eps)

    def direction(opt, new, old, g, theta, h, n):
        hp = opt.hyper
        c = hp["b1"] * old[0] + (1.0 - hp["b1"]) * g
        return -grad_k(-c) + hp["weight_decay"] * theta

    name = "lion" if K == "l1" else f"lion_{K if isinstance(K, str) else 'custom'}"
    return Lion(
        name=name,
        hyper={"b1": _f(b1), "b2": _f(b2), "weight_decay": _f(weight_decay)},
        momenta=(MomentumVariable("m", _g, "b2", _ema("b2")),),
        direction_fn=direction,
        smooth=K != "l1",
        smooth_reason="" if K != "l1" else "Lion with K = l1 updates by sign(c): no smooth expansion beyond order 1",
        kind=K if isinstance(K, str) else "custom",
        kind_eps=None if eps is None else float(eps),
    )


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "gd": gd,
    "hb": heavy_ball,
    "heavy_ball": heavy_ball,
    "heavy_ball_two_step": heavy_ball_two_step,
    "nesterov": nesterov,
    "sgd": gd,
    "sgdm": sgdm,
    "sgdm_standard": sgdm_standard,
    "adam": adam,
    "adamw": adamw,
    "nadam": nadam,
    "nadamw": nadam,
    "rmsprop": rmsprop,
    "lion": lion,
    "lion_k": lambda **kw: lion(**{"K": "smooth_l1", **kw}),
}
