r"""The shadow start: where the modified flow must start so that it follows an optimizer started from rest.

An optimizer started from rest (zero buffers, optax's default), with or without bias correction, is not on its slow
manifold: for $O(1/(1-\beta))$ steps (a boundary layer in $t = nh$) its state relaxes towards the manifold, and with
bias correction the iteration itself depends on $n$ through $1 - \beta^{n+1}$. Both are fast variables of an
*autonomous* extended system $(\theta, m, p)$ with $p_\ell = \beta_\ell^n$ ($p \mapsto \beta p$, $p \to 0$), whose
slow manifold $\{m = M_h(\theta), p = 0\}$ carries the stationary optimizer, i.e. the modified field of order $R$
(:func:`modeq.flows.modified_field`). Every start lies on the stable fibre of exactly one point of that manifold
(Fenichel 1979 for flows, Hirsch, Pugh & Shub 1977 for maps; the attracting manifold of momentum methods: Kovachki &
Stuart 2021, JMLR 22(17)):
its base point $\tilde\theta_0$ (the *asymptotic phase* of $\theta_0$) is the start whose manifold trajectory the
iterates approach like $\beta^n$. The modified flow from $\tilde\theta_0$ therefore matches $\theta_n$ to $O(h^R)$ for
every $n$ past the boundary layer, while the flow from $\theta_0$ is off by the transported shift
$\tilde\theta_0 - \theta_0$ for ever.

:func:`shadow_start` computes $\tilde\theta_0$ generically, for any optimizer that ``simulate`` can run from rest
(catalog or :func:`modeq.optimizers.from_optax`): run $n_b$ true steps from rest, with $\beta^{n_b} \le 10^{-2}
h^{R+1}$ (:func:`default_burn_in`), then integrate the order-$R$ modified field backward in time by
$n_b h$ from $\theta_{n_b}$. The pull-back time $n_bh = O(h\log(1/h))$ is short, so the error of $\tilde\theta_0$ is
$O(h^{R+1}\log(1/h)) + O(\beta^{n_b})$ (measured against the exact answer for heavy-ball on a quadratic: slopes
2.9, 3.9, 4.9 for $R = 2, 3, 4$).

The size of the shift decides the best accuracy over the *whole* run (docs/theory/bias_correction.md):

* Adam / AdamW (and RMSProp) **with** bias correction: a constant gradient gives $\hat m = g$, $\hat v = g^2$
  exactly, so the start-up deficit is only the lag mismatch and the shift is $O(h^2)$, with leading term
  (:func:`leading_shift`)
  $\tilde\theta_0 - \theta_0 = h^2\big[\Lambda(\beta_1)\,\partial_m D\,(H D) + 2\Lambda(\beta_2)\,\partial_v D\,
  (g \odot H D)\big] + O(h^3)$ with $\Lambda(\beta) = \sum_{k\ge1} k\beta^k/(1-\beta^k)$;
* NAdam with optax's bias correction: the numerator $\beta_1\hat m_{n+1}/(1-\beta_1^{n+2}) +
  (1-\beta_1) g/(1-\beta_1^{n+1})$ exceeds $g$ for constant $g$ by
  $(1-\beta_1)[\varphi(n+1) - \varphi(n+2)]$, $\varphi(k) = \beta_1^k/(1-\beta_1^k)$, which telescopes to
  $\beta_1$: the shift is $-h\beta_1\,g/(\sqrt{g^2+\epsilon_{root}}+\epsilon) + O(h^2)$, first order;
* without bias correction: $-h\sum_n (D_n - D_\infty)$ at frozen $g$, first order.

No autonomous flow started at a point is better over the whole run than $O(h^{\min(R, p)})$, $p$ the power of the
shift; the flow from $\tilde\theta_0$ plus the leading boundary-layer term (:func:`boundary_layer`) is
$O(h^{\min(R, p+1)})$ over the whole run (order 3 for Adam/AdamW with $R = 3$, measured).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import DivergenceError, InputError
from .._pytree import flatten_loss
from .._validation import check_flow_order, check_int_at_least, check_positive
from .._verdict import jsonable
from ..optimizers._simulate import simulate
from ..optimizers._spec import Optimizer


@dataclasses.dataclass(frozen=True)
class ShadowStart:
    r"""The result of :func:`shadow_start`.

    ``theta``: the corrected start $\tilde\theta_0$ (flat float64 vector); ``theta0`` the optimizer's start;
    ``burn_in`` the $n_b$ true steps taken from rest; ``shift_norm`` $= \|\tilde\theta_0 - \theta_0\|_2$; ``h``,
    ``order`` ($R$); ``notes``: how it was obtained and what it is good for."""

    theta: np.ndarray
    theta0: np.ndarray
    burn_in: int
    shift_norm: float
    h: float
    order: int
    notes: tuple = ()

    @property
    def shift(self) -> np.ndarray:
        r"""$\tilde\theta_0 - \theta_0$."""
        return self.theta - self.theta0

    def to_dict(self) -> dict:
        """Strict-JSON record (``None``, never NaN)."""
        return jsonable({"theta": np.asarray(self.theta).tolist(), "theta0": np.asarray(self.theta0).tolist(),
                         "burn_in": int(self.burn_in), "shift_norm": float(self.shift_norm), "h": float(self.h),
                         "order": int(self.order), "notes": list(self.notes)})


class _Backward(eqx.Module):
    """$y \\mapsto -f(y)$: the flow of ``field`` run backward in time (a module, so one compilation serves every h)."""

    field: Callable

    def __call__(self, y):
        return -self.field(y)


def pull_back(field, theta, h: float, steps: int, *, rtol: float = 1e-12) -> jax.Array:
    r"""$\Phi_{-\,\mathrm{steps}\cdot h}(\theta)$: ``theta`` carried backward in time by ``steps`` $\cdot h$ along
    ``field`` (a :class:`~modeq.flows.VectorField`, whose ``h`` is set to ``h``, or a callable $y \mapsto f(y)$), by
    one Dopri8 solve (:func:`modeq.solve.solve_ode`, ``rtol``). Raises :class:`~modeq.solve.SolveError` if the backward solve fails."""
    from ..flows._modified import VectorField  # flows sits above series: imported on use
    from ..solve._ode import solve_ode

    theta = jnp.asarray(theta, jnp.float64)
    if steps == 0:
        return theta
    if isinstance(field, VectorField):  # a plain callable y -> f(y) is used as it is
        field = eqx.tree_at(lambda f: f.h, field, jnp.asarray(h, dtype=jnp.float64))
    sol = solve_ode(_Backward(field), theta, jnp.asarray([0.0, steps * float(h)]), rtol=rtol)
    return jnp.asarray(sol.ys[-1])


def default_burn_in(optimizer: Optimizer, h: float, order: int) -> int:
    r"""Smallest $n_0$ with $\beta^{n_0} \le 10^{-2} h^{R+1}$ ($\beta$ the slowest momentum decay): after $n_0$ steps
    from rest the fast variables are within $O(h^{R+1})$ of the slow manifold (also ``modeq.compare.default_burn_in``,
    the burn-in of ``compare_flow(init="rest")``)."""
    beta = optimizer.slowest_decay()
    if beta == 0.0:
        return 0
    return int(math.ceil(math.log(1e-2 * h ** (order + 1)) / math.log(beta)))


def shadow_start(
    optimizer: Optimizer,
    loss: Callable,
    theta0,
    h: float,
    *,
    order: int,
    burn_in: Optional[int] = None,
    field=None,
    truncation: str = "direct",
    rtol: float = 1e-12,
) -> ShadowStart:
    r"""The shadow start $\tilde\theta_0$ of ``optimizer`` started from rest at ``theta0``: the point from which the
    order-$R$ modified flow follows the iterates to $O(h^R)$ after the start-up transient.

    $\tilde\theta_0 = \Phi^{[R]}_{-n_b h}(\theta_{n_b})$: ``burn_in`` $= n_b$ steps of
    :func:`modeq.optimizers.simulate` from rest (``m0="zero"``: the optimizer's own zero state and its own
    step-count dependence, bias correction included), then the order-$R$ modified field
    (:func:`modeq.flows.modified_field`, the stationary regime) integrated backward by $n_b h$. Default $n_b$:
    :func:`default_burn_in` ($\beta^{n_b} \le 10^{-2}h^{R+1}$, $\beta$ the slowest decay); an
    optimizer without fast variables has $n_b = 0$ and $\tilde\theta_0 = \theta_0$ exactly.

    Validity: the stable-fibre (asymptotic-phase) base point of the start in the extended system with
    $p_\ell = \beta_\ell^n$ (Fenichel 1979; Kovachki & Stuart 2021, JMLR 22(17)); its error is
    $O(h^{R+1}\log(1/h)) + O(\beta^{n_b})$ inside the asymptotic regime $h\lambda_{\max}/(1-\beta)^2 \ll 1$
    (docs/theory/bias_correction.md#shadow-start). Over the whole run
    $0 \le n \le N$ no autonomous flow started at a point does better than $\|\tilde\theta_0 - \theta_0\|$ (at $n=0$
    it must be near $\theta_0$, later near the flow from $\tilde\theta_0$): $O(h^2)$ for Adam/AdamW with bias
    correction, $O(h)$ for NAdam (optax's correction) and for any optimizer without it
    (:func:`leading_shift`; docs/theory/bias_correction.md).

    Args:
        optimizer: any modeq optimizer (catalog or ``from_optax``), with or without bias correction.
        loss: $L(\theta)$ on a flat vector or a pytree (flattened as ``simulate`` does).
        theta0: the start of the run from rest.
        h: step size $> 0$.
        order: $R \ge 1$, the order of the modified field.
        burn_in: $n_b$ (default as above); 0 returns $\theta_0$.
        field: a prebuilt order-$R$ :class:`~modeq.flows.VectorField` of this optimizer and loss (its ``h`` is
            replaced; saves a compilation per call in sweeps).
        truncation: of the modified field (``"direct"`` or ``"taylor"``), when ``field`` is not given.
        rtol: tolerance of the backward Dopri8 solve.

    Raises :class:`~modeq.DivergenceError` when the run from rest diverges within $n_b$ steps and
    :class:`~modeq.solve.SolveError` when the backward solve fails.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a modeq.optimizers.Optimizer, got {type(optimizer).__name__}")
    check_positive("h", h)
    order = check_flow_order("order", order)
    flat_loss, flat0, _ = flatten_loss(loss, theta0)
    flat0 = jnp.asarray(flat0, jnp.float64)
    nb = default_burn_in(optimizer, float(h), order) if burn_in is None else check_int_at_least("burn_in", burn_in, 0)
    if nb == 0:
        why = "no fast variables" if burn_in is None else "burn_in = 0"
        return ShadowStart(np.asarray(flat0), np.asarray(flat0), 0, 0.0, float(h), order,
                           (f"{why}: the shadow start is theta0",))
    traj = simulate(optimizer, flat_loss, flat0, nb, h=float(h), m0="zero", record=False)
    if traj.diverged:
        raise DivergenceError(f"h = {float(h):g}: the run from rest diverged at step {int(traj.diverged_at)} of the "
                              f"burn-in ({nb} steps); no shadow start")
    if field is None:
        from ..flows._modified import modified_field

        field = modified_field(optimizer, flat_loss, h=float(h), order=order, truncation=truncation)
    theta = np.asarray(pull_back(field, traj.theta[-1], float(h), nb, rtol=rtol))
    shift = float(np.linalg.norm(theta - np.asarray(flat0)))
    beta = optimizer.slowest_decay()
    note = (f"{nb} steps from rest (beta^n_b = {beta ** nb:.1e}), then the modified:{order} field backward by "
            f"t = {nb * float(h):.6g}; error O(h^{order + 1} log(1/h)) + O(beta^n_b)")
    notes = (note,)
    return ShadowStart(theta, np.asarray(flat0), nb, shift, float(h), order, notes)


def lambert_lag(beta: float) -> float:
    r"""$\Lambda(\beta) = \sum_{k \ge 1} k\beta^k/(1-\beta^k)$ (a Lambert series, $\sum_k \sigma(k)\beta^k$;
    $\sim \pi^2/(6(1-\beta)^2)$ as $\beta \to 1$): the total lag deficit $\sum_{n\ge0}(L_\infty - L_n)$ of a
    bias-corrected EMA started from zero, $L_n$ its mean lag after $n+1$ inputs, $L_\infty - L_n =
    (n+1)\beta^{n+1}/(1-\beta^{n+1})$."""
    beta = float(beta)
    if not 0.0 <= beta < 1.0:
        raise InputError(f"beta must be in [0, 1), got {beta}")
    if beta == 0.0:
        return 0.0
    kmax = int(math.ceil(math.log(1e-18) / math.log(beta))) + 2
    k = np.arange(1, kmax + 1, dtype=np.float64)
    return float(np.sum(k * beta**k / -np.expm1(k * math.log(beta))))


def _lag_tail(beta: float, steps: int) -> np.ndarray:
    r"""$\Lambda_n(\beta) = \sum_{j > n} j\beta^j/(1-\beta^j)$ for $n = 0..$``steps`` ($\Lambda_0 = \Lambda$)."""
    if beta == 0.0:
        return np.zeros(steps + 1)
    kmax = max(int(math.ceil(math.log(1e-18) / math.log(beta))) + 2, steps + 2)
    j = np.arange(1, kmax + 1, dtype=np.float64)
    terms = j * beta**j / -np.expm1(j * math.log(beta))
    tail = np.cumsum(terms[::-1])[::-1]  # tail[i] = sum_{j >= i + 1}
    return tail[: steps + 1]


def boundary_layer(optimizer: Optimizer, loss: Callable, theta0, h: float, steps: int) -> tuple:
    r"""``(B, power)``: the leading term $B_n$, $n = 0..$``steps``, of $\theta_n - \Phi_{nh}(\tilde\theta_0)$ for an
    Adam-family optimizer (:meth:`~modeq.optimizers.Optimizer.adaptive_form`) started from rest, and its power of $h$
    ($B_0 = \theta_0 - \tilde\theta_0$; $B_n \to 0$ like $n\beta^n$). Adding it to the flow from the shadow start gives
    a composite approximation of the whole run, boundary layer included, with error $O(h^{\min(R,\,p+1)})$.

    With $D(m, v) = N(m, g)/(\sqrt{v+\epsilon_{root}}+\epsilon) + \lambda\theta$ at $\theta_0$,
    $g = \nabla L(\theta_0)$, $H = \nabla^2 L(\theta_0)$ (one Hessian-vector product) and $D_k(g)$ the direction at
    step $k$ from rest under the frozen gradient $g$ (bias factors included), $D_\infty(g)$ the stationary one:

    * $p = 1$, when the frozen-gradient deficit does not vanish (NAdam with optax's correction, any optimizer
      without bias correction): $B_n = h\sum_{k \ge n}\big(D_k(g) - D_\infty(g)\big)$; for NAdam with bias correction
      it telescopes to $B_n = h(1-\beta_1)\varphi(n+1)\,g/(\sqrt{g^2+\epsilon_{root}}+\epsilon)$,
      $\varphi(k) = \beta_1^k/(1-\beta_1^k)$;
    * $p = 2$, when it vanishes identically (Adam, AdamW, RMSProp with bias correction: $\hat m = g$, $\hat v = g^2$
      for a constant gradient): the lag mismatch,
      $B_n = -h^2\big[\Lambda_n(\beta_1)\,\partial_m D\,HD + 2\Lambda_n(\beta_2)\,\partial_v D\,(g\odot HD)\big]$,
      $\Lambda_n(\beta) = \sum_{j>n} j\beta^j/(1-\beta^j)$ (:func:`lambert_lag` is $\Lambda_0$).

    Derived in docs/theory/bias_correction.md; checked against :func:`shadow_start` and the measured whole-run orders
    in tests/test_bias_correction.py. Raises :class:`~modeq.InputError` for an optimizer without an adaptive form.
    """
    form = optimizer.adaptive_form()
    if form is None:
        raise InputError(f"optimizer: the boundary layer has closed forms for the Adam family only, not "
                         f"{optimizer.name}")
    steps = int(steps)
    flat_loss, flat0, _ = flatten_loss(loss, theta0)
    theta = jnp.asarray(flat0, jnp.float64)
    b1, b2, eps, er = form.b1, form.b2, form.eps, form.eps_root
    bc = bool(optimizer.bias_correction)
    grad = jax.grad(flat_loss)
    g = grad(theta)
    root = jnp.sqrt(g**2 + er)
    den = root + eps
    # frozen gradient from rest: m_{n+1} = (1 - b1^{n+1}) g, v_{n+1} = (1 - b2^{n+1}) g^2
    slow = max(b1, b2)
    kmax = int(math.ceil(math.log(1e-18) / math.log(slow))) + 2 if slow > 0 else 1
    n = np.arange(kmax, dtype=np.float64)
    f1 = 1.0 - b1 ** (n + 1)
    f2 = 1.0 - b2 ** (n + 1)
    c2 = np.ones_like(n) if bc else f2  # v_hat / g^2
    if b1 == 0.0:  # RMSProp: the numerator is g itself
        num = np.ones_like(n)
    elif form.nesterov:
        num = b1 * f1 / (1.0 - b1 ** (n + 2)) + (1.0 - b1) / f1 if bc else b1 * f1 + (1.0 - b1)
    else:
        num = np.ones_like(n) if bc else f1  # m_hat / g
    excess = np.asarray(num[:, None] * g[None, :] / (jnp.sqrt(jnp.asarray(c2)[:, None] * g[None, :] ** 2 + er) + eps)
                        - (g / den)[None, :])
    if np.max(np.abs(excess)) > 1e-14 * (float(jnp.max(jnp.abs(g / den))) + 1e-300):
        tail = np.cumsum(excess[::-1], axis=0)[::-1]  # tail[k] = sum_{j >= k}
        out = np.zeros((steps + 1, theta.size))
        m = min(steps + 1, kmax)
        out[:m] = h * tail[:m]
        return out, 1
    D = g / den + form.weight_decay * theta
    HD = jax.jvp(grad, (theta,), (D,))[1]
    u1 = np.asarray(HD / den)  # d_m D H D
    u2 = np.asarray(2.0 * (-g / (2.0 * root * den**2)) * g * HD)  # 2 d_v D (g * H D)
    out = -h**2 * (_lag_tail(b1, steps)[:, None] * u1[None, :] + _lag_tail(b2, steps)[:, None] * u2[None, :])
    return out, 2


def leading_shift(optimizer: Optimizer, loss: Callable, theta0, h: float) -> tuple:
    r"""``(shift, power)``: the leading term of $\tilde\theta_0 - \theta_0$ for an Adam-family optimizer started from
    rest and its power of $h$: $-B_0$ of :func:`boundary_layer`. Adam, AdamW, RMSProp with bias correction ($p = 2$):
    $h^2[\Lambda(\beta_1)\,\partial_m D\,HD + 2\Lambda(\beta_2)\,\partial_v D\,(g \odot HD)]$ (:func:`lambert_lag`);
    NAdam with optax's bias correction ($p = 1$): $-h\beta_1 g/(\sqrt{g^2+\epsilon_{root}}+\epsilon)$; without bias
    correction ($p = 1$): $-h\sum_{n\ge0}(D_n(g) - D_\infty(g))$ at frozen $g$. Relative error $O(h)$ (measured against
    :func:`shadow_start` in tests/test_bias_correction.py)."""
    layer, power = boundary_layer(optimizer, loss, theta0, h, 0)
    return -layer[0], power
