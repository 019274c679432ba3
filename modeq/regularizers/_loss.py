r"""Implicit regularizers: the modified loss $\tilde L = L + \sum_i c_i R_i$ whose (preconditioned) gradient flow or
gradient-descent map reproduces an optimizer to second order in $h$ (docs/theory/regularizers.md).

Two forms, ``form=``:

* ``"ode"`` (default): the order-2 modified equation $\theta' = -s\,P\nabla\tilde L - \lambda'\theta$ (global error
  $O(h^2)$ against the optimizer started on its slow manifold). GD: $\tilde L = L + \frac h4\|g\|^2$ (IGR, Barrett &
  Dherin); heavy-ball: $s = 1/(1-\beta)$, $\tilde L = L + \frac{h(1+\beta)}{4(1-\beta)^2}\|g\|^2$ (IGR-M, Ghosh et al.);
  Nesterov: $\frac{h(1-\beta+2\beta^2)}{4(1-\beta)^2}\|g\|^2$.
* ``"memoryless"``: the first-order memoryless iteration of Cattaneo & Shigida (arXiv 2502.02132),
  $\theta_{n+1} = \theta_n - h\,[s\,P\nabla\tilde L + \lambda'\theta_n]$. Heavy-ball: GD with step $h/(1-\beta)$ on
  $L + \frac{h\beta}{2(1-\beta)^2}\|g\|^2$.

Adaptive methods (Adam, AdamW, NAdam, RMSProp, Lion) are written in the $\varepsilon\to0$ preconditioned form
$P = \mathrm{diag}(1/(\sqrt{g^2+\epsilon_{root}}+\epsilon))$ with the perturbed one-norm
$\|g\|_{1,\delta} = \sum_j\sqrt{g_j^2+\delta}$, $\delta = \epsilon_{root}$ (docs/theory/regularizers.md#adaptive). With $\epsilon>0$ the
true correction has a second, differently preconditioned part (weight $\epsilon/s^3$) that is *not* the preconditioned
gradient of any scalar; it is returned by :meth:`ModifiedLoss.remainder` (so that scalar part + remainder equals the
series engine's field exactly) and ``exact=True`` refuses the limit with a ``ValueError`` naming the reason.

Coefficients are exact rational functions of the decays, evaluated in exact arithmetic (``fractions.Fraction`` of the
decimal value of each hyperparameter) and reported both as floats and as exact strings.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from .._pytree import pytree_method, with_pytrees
from .._validation import check_int_at_least, check_positive
from ..optimizers._spec import Optimizer

FORMS = ("ode", "memoryless")
REGULARIZING = "regularizing"
ANTI = "anti-regularizing"
NEUTRAL = "none"

_IGR = "Barrett & Dherin 2021 (IGR), arXiv 2009.11162"
_IGRM = "Ghosh, Lyu, Zhang, Zhang 2023 (IGR-M), ICLR; Kovachki & Stuart 2021"
_CS = "Cattaneo & Shigida 2025, arXiv 2502.02132"
_CKS = ("Cattaneo, Klusowski & Shigida 2024 (implicit bias of Adam), arXiv 2309.00079; "
        "Cattaneo & Shigida, arXiv 2502.02132")


def _frac(x) -> Fraction:
    return Fraction(repr(float(x)))


def _sign(c: Fraction) -> str:
    return REGULARIZING if c > 0 else (ANTI if c < 0 else NEUTRAL)


@dataclasses.dataclass(frozen=True)
class Term:
    r"""One implicit-regularization term $c\,R(\theta)$ of a modified loss.

    Attributes:
        name: short identifier (``"grad_norm_sq"``, ``"one_norm"``, ...).
        formula: the functional $R$ in words/ASCII math (``"||grad L||^2"``).
        coefficient: $c$ as a float (includes the step size $h$).
        coefficient_exact: $c$ as an exact expression (``"h * 9/2"``: exact rational times $h$).
        fn: $\theta\mapsto R(\theta)$ (without the coefficient).
        sign: ``"regularizing"`` ($c>0$: the flow descends $R$), ``"anti-regularizing"`` ($c<0$) or ``"none"``.
        source: the paper the term comes from.
    """

    name: str
    formula: str
    coefficient: float
    coefficient_exact: str
    fn: Callable = dataclasses.field(repr=False)
    sign: str
    source: str

    def value(self, theta):
        """The term's contribution $c\\,R(\\theta)$ to the modified loss at ``theta``."""
        return self.coefficient * self.fn(theta)

    def to_dict(self) -> dict:
        """JSON-ready record of the term (everything but ``fn``)."""
        return {
            "name": self.name,
            "formula": self.formula,
            "coefficient": self.coefficient,
            "coefficient_exact": self.coefficient_exact,
            "sign": self.sign,
            "source": self.source,
        }


@dataclasses.dataclass(frozen=True)
class ModifiedLoss:
    r"""$\tilde L(\theta) = L(\theta) + \sum_i$ ``terms[i].value(theta)``, with the dynamics it defines:

    ``form="ode"``: $\theta' = $ :meth:`field`
    $= -\,$``scale``$\,P(\theta)\nabla\tilde L(\theta) - $``weight_decay``$\,\theta$;
    ``form="memoryless"``: $\theta_{n+1} = $ :meth:`step` $= \theta_n + h\,$:meth:`field`$(\theta_n)$.
    $P = $ ``preconditioner(theta)`` (``None``: identity). ``remainder(theta)`` (or ``None``) is the part of the series
    field that is not of this form (adaptive methods with $\epsilon > 0$); ``limit`` names the limit taken.
    """

    optimizer: str
    loss: Callable = dataclasses.field(repr=False)
    h: float
    form: str
    scale: float
    scale_exact: str
    terms: tuple
    weight_decay: float = 0.0
    preconditioner: Optional[Callable] = dataclasses.field(default=None, repr=False)
    preconditioner_formula: str = "I"
    remainder: Optional[Callable] = dataclasses.field(default=None, repr=False)
    limit: str = ""
    note: str = ""
    rebuild: Optional[Callable] = dataclasses.field(default=None, repr=False, compare=False)
    """``flat_loss -> ModifiedLoss`` of the same optimizer on a flattened loss: lets every method take a pytree
    ``theta`` (set by :func:`modified_loss`; see :mod:`modeq._pytree`)."""

    @pytree_method()
    def __call__(self, theta):
        out = self.loss(theta)
        for term in self.terms:
            out = out + term.value(theta)
        return out

    def term(self, name: str) -> Term:
        """The :class:`Term` called ``name`` (``KeyError`` listing the terms if there is none)."""
        for t in self.terms:
            if t.name == name:
                return t
        raise KeyError(f"no term {name!r}; terms: {[t.name for t in self.terms]}")

    @pytree_method(unravel=True)
    def grad(self, theta):
        r"""$\nabla\tilde L(\theta)$, the gradient of the modified loss (by autodiff)."""
        return jax.grad(self.__call__)(theta)

    @pytree_method(unravel=True)
    def field(self, theta):
        r"""$-s\,P\nabla\tilde L - \lambda'\theta$ (the ODE field, or minus the memoryless direction)."""
        g = self.grad(theta)
        if self.preconditioner is not None:
            g = self.preconditioner(theta) * g
        return -self.scale * g - self.weight_decay * theta

    @pytree_method(unravel=True)
    def step(self, theta):
        r"""One step of the memoryless iteration $\theta + h\,$ ``field(theta)`` (``form="memoryless"``)."""
        return theta + self.h * self.field(theta)

    @pytree_method()
    def values(self, theta) -> dict:
        """``{"loss": L, term names..., "modified_loss": L~}`` at ``theta`` (floats)."""
        out = {"loss": float(self.loss(theta))}
        for t in self.terms:
            out[t.name] = float(t.value(theta))
        out["modified_loss"] = float(self(theta))
        return out

    def to_dict(self) -> dict:
        """JSON-ready record: optimizer, ``h``, form, scale (float and exact), weight decay, preconditioner formula,
        limit, note and every term's record."""
        return {
            "optimizer": self.optimizer,
            "h": self.h,
            "form": self.form,
            "scale": self.scale,
            "scale_exact": self.scale_exact,
            "weight_decay": self.weight_decay,
            "preconditioner": self.preconditioner_formula,
            "limit": self.limit,
            "note": self.note,
            "terms": [t.to_dict() for t in self.terms],
        }

    def describe(self) -> str:
        """A few human-readable lines: $\\tilde L$ with its coefficients, the dynamics, each term's exact coefficient,
        sign and source."""
        parts = ["L"] + [f"({t.coefficient:+.6g}) * {t.formula}" for t in self.terms]
        lines = [f"{self.optimizer} [{self.form}], h = {self.h:g}: L~ = " + " + ".join(parts)]
        lines.append(f"  dynamics: -{self.scale_exact} * {self.preconditioner_formula} grad L~"
                     + (f" - {self.weight_decay:g} theta" if self.weight_decay else ""))
        for t in self.terms:
            lines.append(f"  {t.name}: {t.coefficient_exact} = {t.coefficient:.6g}, {t.sign} ({t.source})")
        if self.limit:
            lines.append(f"  limit: {self.limit}")
        return "\n".join(lines)


# --- functionals -----------------------------------------------------------------------------------------------------


def grad_norm_sq(loss: Callable) -> Callable:
    r"""$\theta\mapsto\|\nabla L(\theta)\|^2$, the implicit gradient regularizer of GD and heavy-ball (Barrett &
    Dherin 2021; Ghosh et al. 2023)."""
    grad = jax.grad(loss)
    return lambda theta: jnp.sum(grad(theta) ** 2)


def grad_hess_grad(loss: Callable) -> Callable:
    r"""$\theta\mapsto\nabla L^\top\nabla^2L\,\nabla L$ (one Hessian-vector product)."""
    grad = jax.grad(loss)

    def fn(theta):
        g, hg = jax.jvp(grad, (theta,), (grad(theta),))
        return jnp.dot(g, hg)

    return fn


def one_norm(loss: Callable, delta: float = 0.0) -> Callable:
    r"""$\theta\mapsto\|\nabla L(\theta)\|_{1,\delta} = \sum_j\sqrt{g_j^2+\delta}$ ($\delta = 0$: the one-norm)."""
    grad = jax.grad(loss)
    if delta == 0:
        return lambda theta: jnp.sum(jnp.abs(grad(theta)))
    return lambda theta: jnp.sum(jnp.sqrt(grad(theta) ** 2 + delta))


def decay_coupling(loss: Callable) -> Callable:
    r"""$\theta\mapsto\nabla L(\theta)^\top\theta - L(\theta)$ (its gradient is $\nabla^2L\,\theta$)."""
    grad = jax.grad(loss)
    return lambda theta: jnp.dot(grad(theta), theta) - loss(theta)


# --- builders --------------------------------------------------------------------------------------------------------


def _exact(c: Fraction, h_power: int = 1) -> str:
    hs = "h" if h_power == 1 else f"h^{h_power}"
    return f"{hs} * {c}" if h_power else f"{c}"


def _sq_term(loss, c: Fraction, h: float, source: str, h_power: int = 1) -> Term:
    return Term("grad_norm_sq", "||grad L||^2", float(c) * h**h_power, _exact(c, h_power), grad_norm_sq(loss),
                _sign(c), source)


def _momentum_like(optimizer: Optimizer) -> Optional[tuple[Fraction, Fraction, str]]:
    """(beta, effective step multiplier a, kind) when the optimizer is HB/Nesterov with step a*h (normalized SGDM:
    a = 1 - beta; standard SGDM: a = 1 - dampening), else ``None``; asked of the optimizer
    (:meth:`~modeq.optimizers.Optimizer.heavy_ball_form`)."""
    form = optimizer.heavy_ball_form()
    if form is None:
        return None
    return _frac(form.beta), 1 - _frac(form.step_reduction), "nesterov" if form.nesterov else "hb"


def _not_gradient_hb(name: str, order: int) -> ValueError:
    return ValueError(
        f"order: the order-{order} modified equation of {name} is not a gradient flow (its h^2 coefficients violate "
        "the potential condition c([[o]]) = 2 c([o,o]); docs/theory/hb_trees.md#not-gradient), so there is no scalar modified loss; "
        f"use modeq.flows.modified_field(optimizer, loss, h=h, order={order}) for the vector field"
    )


@with_pytrees
def modified_loss(
    optimizer: Optimizer, loss: Callable, *, h, form: str = "ode", order: int = 2, exact: bool = False
) -> ModifiedLoss:
    r"""The implicit regularizer of ``optimizer`` on ``loss`` at step size ``h`` as a :class:`ModifiedLoss`.

    Args:
        optimizer: a :mod:`modeq.optimizers` optimizer (gd, heavy_ball, nesterov, sgdm, sgdm_standard, adam, adamw,
            nadam, rmsprop, lion with K = l1 or smooth_l1).
        loss: $L(\theta)$ on a flat vector or on a pytree of arrays (an equinox model's parameters, a params dict):
            the methods of the result then take pytrees of that structure, flattened with
            ``jax.flatten_util.ravel_pytree`` as in :func:`modeq.optimizers.simulate`.
        h: the step size.
        form: ``"ode"`` (order-2 modified equation: memory + discretization) or ``"memoryless"`` (memory only:
            the Cattaneo-Shigida memoryless iteration).
        order: 1 (no correction: $\tilde L = L$) or 2; ``form="memoryless"`` also accepts 3 for GD and heavy-ball
            (on-manifold HB map: $+\,h^2\beta(1+\beta)/(2(1-\beta)^4)\,g^\top Hg$). Other orders raise
            ``ValueError`` because the correction is not a gradient.
        exact: refuse limits: for adaptive methods the scalar form exists only as $\epsilon\to0$, so ``exact=True``
            raises ``ValueError`` naming the reason.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a modeq.optimizers.Optimizer, got {type(optimizer).__name__}")
    h = check_positive("h", h)
    order = check_int_at_least("order", order, 1)
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    name = optimizer.name
    if optimizer.is_gradient_descent:
        return _gd(loss, h, form, order)
    hb = _momentum_like(optimizer)
    if hb is not None:
        return _heavy_ball(name, loss, h, form, order, *hb)
    if optimizer.adaptive_form() is not None:
        return _adaptive(optimizer, loss, h, form, order, exact)
    if optimizer.lion_form() is not None:
        return _lion(optimizer, loss, h, form, order, exact)
    raise ValueError(f"optimizer: no modified loss is implemented for {name!r}; use modeq.flows.modified_field")


def _gd(loss, h, form, order) -> ModifiedLoss:
    terms: tuple = ()
    if form == "ode":
        if order >= 3:
            raise ValueError(
                f"order: GD's order-{order} modified equation is not a gradient flow (its h^2 term contains "
                "(1/12) H grad(||g||^2), not a gradient; docs/theory/bea.md#gd), so there is no scalar modified loss; use "
                f"modeq.flows.modified_field(gd(), loss, h=h, order={order})"
            )
        if order == 2:
            terms = (_sq_term(loss, Fraction(1, 4), h, _IGR),)
    elif order >= 2:
        pass  # GD is memoryless: its memoryless iteration is itself, L~ = L exactly at every order
    return ModifiedLoss("gd", loss, h, form, 1.0, "1", terms)


def _heavy_ball(name, loss, h, form, order, beta, a, kind) -> ModifiedLoss:
    # HB/Nesterov with step a*h; "ode" time is n*h, so the field of HB(h_eff = a h) is multiplied by a.
    he = float(a) * h
    scale = a / (1 - beta)
    terms: list = []
    source = _IGRM if form == "ode" else _CS
    if form == "ode":
        if order >= 3:
            raise _not_gradient_hb(name, order)
        if order == 2:
            if kind == "hb":
                c = (1 + beta) / (4 * (1 - beta) ** 2)
            else:
                c = (1 - beta + 2 * beta**2) / (4 * (1 - beta) ** 2)
                source = "docs/theory/regularizers.md#nesterov (derived, measured); " + _CS
            terms.append(_sq_term(loss, c * a, h, source))
    else:
        if order >= 4 or (order == 3 and kind != "hb"):
            raise ValueError(
                f"order: no scalar memoryless modified loss of order {order} is implemented for {name} "
                "(the on-manifold map is GD on a modified loss only through h^3 for heavy-ball here); use "
                f"modeq.flows.memoryless_map(optimizer, loss, h=h, order={order})"
            )
        if order >= 2:
            c = (beta if kind == "hb" else beta**2) / (2 * (1 - beta) ** 2)
            terms.append(_sq_term(loss, c * a, h, _CS))
        if order == 3:
            c3 = beta * (1 + beta) / (2 * (1 - beta) ** 4)
            terms.append(Term("grad_hess_grad", "grad L^T Hess L grad L", float(c3 * a * a) * h * h,
                              _exact(c3 * a * a, 2), grad_hess_grad(loss), _sign(c3),
                              "docs/theory/hb_trees.md#map (on-manifold HB map, derived); Cattaneo & Shigida arXiv 2509.08483"))
    note = ""
    if a != 1:
        note = f"mapped to heavy-ball with step {a} h = {he:g}"
    return ModifiedLoss(name, loss, h, form, float(scale), str(scale), tuple(terms), note=note)


def _adaptive_setup(optimizer):
    form = optimizer.adaptive_form()
    return _frac(form.b1), _frac(form.b2), form.weight_decay, form.eps, form.eps_root


def _precond(loss, eps, eps_root):
    grad = jax.grad(loss)
    return lambda theta: 1.0 / (jnp.sqrt(grad(theta) ** 2 + eps_root) + eps)


def _eps_refusal(name: str, eps: float, eps_root: float) -> ValueError:
    return ValueError(
        f"exact: with eps = {eps:g}, eps_root = {eps_root:g} > 0 the memory correction of {name} is "
        "h [c/s + eps b2/((1-b2) s^3)] * grad(||g||_{1,eps} + lambda (g.theta - L)): its two parts carry different "
        "preconditioners (1/s and eps/s^3), so it is not the preconditioned gradient of any scalar; the modified loss "
        "exists only in the eps -> 0 limit (pass exact=False), and the exact vector field is "
        "modeq.flows.modified_field(optimizer, loss, h=h, order=2)"
    )


def _adaptive(optimizer, loss, h, form, order, exact) -> ModifiedLoss:
    name = optimizer.name
    b1, b2, lam, eps, eps_root = _adaptive_setup(optimizer)
    if exact and (eps > 0 or eps_root > 0):
        raise _eps_refusal(name, eps, eps_root)
    if order >= 3:
        raise ValueError(f"order: only order <= 2 modified losses exist for {name} (eps -> 0 form); use "
                         "modeq.flows.modified_field for higher orders")
    grad = jax.grad(loss)
    w1 = b1**2 / (1 - b1) if optimizer.adaptive_form().nesterov else b1 / (1 - b1)
    c = w1 - b2 / (1 - b2)
    terms: list = []
    wd = lam
    if order == 2:
        src = _CKS
        terms.append(Term("one_norm", f"||grad L||_1,delta (delta = eps_root = {eps_root:g})", float(c) * h,
                          _exact(c), one_norm(loss, eps_root), _sign(c), src))
        if lam > 0:
            cl = c * _frac(lam)
            terms.append(Term("decay_coupling", "grad L . theta - L", float(cl) * h, _exact(cl),
                              decay_coupling(loss), _sign(cl), src))
        if form == "ode" and lam > 0:
            # discretization: (h/2) grad F F with grad F -> lambda I as eps -> 0
            cd = _frac(lam) / 2
            terms.append(Term("discretization_decay", "L (from the discretization of the weight decay)",
                              float(cd) * h, _exact(cd), loss, _sign(cd), _CS + " Sec. 5.1 recipe"))
            wd = lam * (1 + lam * h / 2)
    # remainder: the O(eps) part dropped by the limit (closed form for eps inside the root, eps = 0)
    remainder = None
    if order == 2 and eps == 0.0 and eps_root > 0:
        e2 = float(b2 / (1 - b2))

        def remainder(theta):
            g = grad(theta)
            s = jnp.sqrt(g * g + eps_root)
            F = g / s + lam * theta
            HF = jax.jvp(grad, (theta,), (F,))[1]
            w = eps_root / s**3
            out = -h * e2 * w * HF
            if form == "ode":
                out = out - 0.5 * h * w * HF
            return out

    limit = ("eps -> 0: P = 1/(sqrt(g^2 + eps_root) + eps); dropped: the eps/s^3-weighted part "
             "(see remainder), which vanishes as eps -> 0")
    note = f"one-norm coefficient {w1} - {b2/(1-b2)} = {c} (beta1 {'<' if b1 < b2 else '>='} beta2)"
    return ModifiedLoss(name, loss, h, form, 1.0, "1", tuple(terms), weight_decay=wd,
                        preconditioner=_precond(loss, eps, eps_root),
                        preconditioner_formula="diag(1/(sqrt(g^2+eps_root)+eps))",
                        remainder=remainder, limit=limit, note=note)


def _lion(optimizer, loss, h, form, order, exact) -> ModifiedLoss:
    name = optimizer.name
    lf = optimizer.lion_form()
    rho1, rho2, lam = _frac(lf.b1), _frac(lf.b2), lf.weight_decay
    if lf.K not in ("l1", "smooth_l1"):
        raise ValueError(f"optimizer: the modified loss of {name} (K other than l1 / smooth_l1) is not implemented; "
                         "use modeq.flows.modified_field")
    grad = jax.grad(loss)
    delta = 0.0
    if lf.K == "smooth_l1":
        delta = float(lf.eps)  # K = sum sqrt(x^2 + eps)
        if exact:
            raise ValueError(
                f"exact: Lion-K with K = ||.||_(1,eps), eps = {delta:g} > 0, has the memory correction "
                "h rho1/(1-rho2) eps/s^3 * grad(||g||_{1,eps} + lambda (g.theta - L)), preconditioned by eps/s^3 "
                "rather than 1/s: not the preconditioned gradient of a scalar; the modified loss exists only as "
                "eps -> 0 (exact=False), the field is modeq.flows.modified_field(optimizer, loss, h=h, order=2)"
            )
    if order >= 3:
        raise ValueError(f"order: only order <= 2 modified losses exist for {name}; use modeq.flows.modified_field")
    # eps -> 0: the memory term vanishes; the one-norm coefficient is 0 (no anti-regularization)
    terms: list = []
    wd = lam
    if order == 2:
        terms.append(Term("one_norm", f"||grad L||_1,delta (delta = {delta:g})", 0.0, "0 (memory term ~ eps/s^3 -> 0)",
                          one_norm(loss, delta), NEUTRAL, _CS + " Sec. 4 (Lion-K)"))
        if form == "ode" and lam > 0:
            cd = _frac(lam) / 2
            terms.append(Term("discretization_decay", "L (from the discretization of the weight decay)",
                              float(cd) * h, _exact(cd), loss, _sign(cd), _CS + " Sec. 5.1 recipe"))
            wd = lam * (1 + lam * h / 2)
    remainder = None
    if order == 2 and delta > 0:
        cm = float(rho1 / (1 - rho2))

        def remainder(theta):
            g = grad(theta)
            s = jnp.sqrt(g * g + delta)
            F = g / s + lam * theta
            HF = jax.jvp(grad, (theta,), (F,))[1]
            w = delta / s**3
            if form == "ode":
                return -h * (cm + 0.5) * w * HF
            return -h * cm * w * HF

    return ModifiedLoss(name, loss, h, form, 1.0, "1", tuple(terms), weight_decay=wd,
                        preconditioner=_precond(loss, 0.0, delta),
                        preconditioner_formula="diag(1/sqrt(g^2+delta))",
                        remainder=remainder,
                        limit="eps -> 0: the memory correction h rho1/(1-rho2) eps/s^3 * grad(...) vanishes "
                              "(see remainder); positive (regularizing) for eps > 0",
                        note=f"one-norm coefficient 0 in the limit (rho1/(1-rho2) = {rho1/(1-rho2)} times eps/s^3)")
