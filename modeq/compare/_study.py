r"""Compare a flow with the discrete iterates along the trajectory, over a sweep of step sizes.

For each step size $h$: run the optimizer for $N = \mathrm{round}(T/h)$ steps, integrate the flow (or iterate the
memoryless map) from the same point, and record $e_n = \|\theta_n - \theta(nh)\|_2$ for $n \le N$; then fit
$\max_n e_n \approx C h^p$ (:func:`modeq.compare.fit_order`).

Start of a momentum method (the choice decides the measured order; THEORY.md A3, D5):

* ``init="manifold"`` (default): $m_0 = M_h(\theta_0)$, the slow manifold at $\theta_0$ (fixed-point iterate with
  ``max(R + 2, 6)`` sweeps, far more accurate than $h^R$). On the manifold the optimizer *is* the memoryless map, whose
  modified field of order $R$ is exact to $O(h^R)$: the measured order equals $R$.
* ``init="rest"``: $m_0 = 0$ (optax's default). Off the manifold, the transient decays like $\beta^n$ but leaves a
  permanent $O(h)$ shift, so a flow started at $\theta_0$ is only first-order accurate, whatever $R$. With a burn-in of
  $n_0$ steps the comparison starts at $\theta_{n_0}$, where the state is within $O(\beta^{n_0})$ of the manifold; the
  default burn-in makes $\beta^{n_0} \le 10^{-2} h^{R+1}$ so that the order $R$ is measured again. The burn-in is a
  fixed time $t_0 = n_0 h$, the same for every $h$ (``burn_in`` counts steps of the largest $h$), so that every
  comparison window starts at the same point of the trajectory.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_at_least, check_positive
from ..flows._modified import gradient_field, memoryless_map, modified_field
from ..flows._principal import principal_flow, principal_flow_third
from ..optimizers._simulate import simulate
from ..optimizers._spec import Optimizer
from ..series._manifold import manifold_point
from ..solve._ode import SolveError, solve_ode
from ._order import OrderFit, fit_order


class AccuracyWarning(UserWarning):
    """A measurement is not trustworthy: solver floor too close to the error, or step sizes outside the asymptotic
    regime."""


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """A parsed ``--flow`` value: ``kind`` in {gradient, modified, memoryless, principal, principal+third}, ``order``
    the theoretical global order."""

    kind: str
    order: int

    @property
    def label(self) -> str:
        """The flow's name as ``--flow`` spells it: ``"modified:3"``, ``"memoryless:2"``, ``"principal"``, ..."""
        return self.kind if self.kind in ("gradient", "principal", "principal+third") else f"{self.kind}:{self.order}"


def parse_flow(text: str) -> FlowSpec:
    """Parse ``gradient``, ``modified:R``, ``memoryless:R``, ``principal`` or ``principal+third``."""
    kind, _, order = text.strip().partition(":")
    if kind == "gradient" and not order:
        return FlowSpec("gradient", 1)
    if kind in ("modified", "memoryless"):
        try:
            r = int(order)
        except ValueError:
            raise ValueError(f"flow: {text!r} needs an integer order, e.g. {kind}:2") from None
        check_int_at_least("order", r, 1)
        return FlowSpec(kind, r)
    if kind == "principal" and not order:
        return FlowSpec("principal", 2)
    if kind == "principal+third" and not order:
        return FlowSpec("principal+third", 3)
    raise ValueError(
        f"flow must be gradient, modified:R, memoryless:R, principal or principal+third, got {text!r}"
    )


# ODE flows beyond the modified fields: kind -> builder(optimizer, loss, h) -> VectorField (extension point).
FLOW_BUILDERS: dict[str, Callable] = {
    "principal": lambda optimizer, loss, h: principal_flow(optimizer, loss, h=h),
    "principal+third": lambda optimizer, loss, h: principal_flow_third(optimizer, loss, h=h),
}


@dataclasses.dataclass
class FlowResult:
    r"""One flow compared with the iterates over a sweep of step sizes (returned by :func:`compare_flow`).

    ``flow`` is the label (``"modified:3"``), ``order`` the theoretical global order $R$. Per step size ``h[i]``:
    ``max_error[i]`` $= \max_{n \le N}\|\theta_n - \theta(nh)\|_2$, ``curves[i]`` the pair (times $nh$, errors $e_n$),
    ``trajectories[i]`` the pair (iterates, flow values) and ``solver_floor[i]`` the solver's error floor (largest
    difference between solves saved on the grids $nh$ and $nh/2$; 0 for memoryless maps). ``fit`` is the least-squares
    fit $\max_n e_n \approx C h^p$ (:func:`modeq.compare.fit_order`; ``None`` with fewer than two step sizes or a zero
    error) and ``warnings`` the :class:`AccuracyWarning` messages raised for this flow (solver floor within 100x of the
    error, or $h\lambda_{\max}/(1-\beta)^2 > 0.05$).
    """

    flow: str
    order: int
    h: list
    max_error: list
    fit: Optional[OrderFit]
    curves: list  # per h: (times, errors)
    trajectories: list  # per h: (iterates, flow values) as numpy arrays
    solver_floor: list
    warnings: list

    def to_dict(self) -> dict:
        """JSON-ready record: ``flow``, ``order``, ``h``, ``max_error``, the fit's fields (``fitted_order``,
        ``fitted_order_ci``, ``error_constant``, ...), ``solver_error_floor`` and ``warnings``."""
        out = {"flow": self.flow, "order": self.order, "h": self.h, "max_error": self.max_error}
        if self.fit is not None:
            out.update(self.fit.to_dict())
        else:
            out.update({"fitted_order": None, "fitted_order_ci": [None, None], "error_constant": None})
        out["solver_error_floor"] = self.solver_floor
        out["warnings"] = self.warnings
        return out


@eqx.filter_jit
def _top_eigenvalue(loss, theta, iterations: int):
    grad = jax.grad(loss)

    def body(_, carry):
        v, _lam = carry
        w = jax.jvp(grad, (theta,), (v,))[1]
        lam = jnp.linalg.norm(w)
        return jnp.where(lam > 0, w / jnp.where(lam > 0, lam, 1.0), v), lam

    v0 = jnp.ones_like(theta) / math.sqrt(theta.size)
    return jax.lax.fori_loop(0, iterations, body, (v0, jnp.zeros(())))[1]


def expansion_parameter(optimizer: Optimizer, loss: Callable, theta, h: float, iterations: int = 30) -> float:
    r"""$h\lambda_{\max}/(1-\beta)^2$ at ``theta`` ($\lambda_{\max}$ by power iteration on Hessian-vector products,
    $\beta$ the largest momentum decay): the asymptotic series in $h$ are reliable when it is below about 0.05
    (THEORY.md A3)."""
    lam = float(_top_eigenvalue(loss, jnp.asarray(theta, jnp.float64), iterations))
    beta = max([float(var.beta(optimizer.hyper)) for var in optimizer.momenta] or [0.0])
    return h * lam / (1.0 - beta) ** 2


def _start_momenta(optimizer, loss, theta0, h, init, order):
    if not optimizer.momenta:
        return ()
    if init == "manifold":
        m0 = manifold_point(optimizer, loss, theta0, h=h, sweeps=max(order + 2, 6))
        if not all(bool(jnp.all(jnp.isfinite(m))) for m in m0):
            eta = expansion_parameter(optimizer, loss, theta0, h)
            raise ValueError(
                f"h: the slow-manifold iteration of {optimizer.name} diverges at h = {h:g} "
                f"(h*lambda_max/(1-beta)^2 = {eta:.3g}; the reduction to a memoryless flow needs it << 1): "
                "use smaller step sizes, a smaller beta, or --init rest"
            )
        return m0
    return "zero"


def default_burn_in(optimizer: Optimizer, h: float, order: int) -> int:
    r"""Smallest $n_0$ with $\beta^{n_0} \le 10^{-2} h^{R+1}$ ($\beta$ the slowest momentum decay)."""
    beta = max([float(var.beta(optimizer.hyper)) for var in optimizer.momenta] or [0.0])
    if beta == 0.0:
        return 0
    return int(math.ceil(math.log(1e-2 * h ** (order + 1)) / math.log(beta)))


def build_flow(spec: FlowSpec, optimizer, loss, h, truncation: str):
    """The flow object of ``spec``: a :class:`~modeq.flows.VectorField` (ODE flows) or a map (memoryless)."""
    if spec.kind == "memoryless":
        return memoryless_map(optimizer, loss, h=h, order=spec.order, truncation=truncation)
    if spec.kind == "gradient":
        return gradient_field(optimizer, loss, h=h)
    if spec.kind == "modified":
        return modified_field(optimizer, loss, h=h, order=spec.order, truncation=truncation)
    if spec.kind not in FLOW_BUILDERS:
        raise ValueError(f"flow {spec.kind!r} is not available (its module did not register a builder)")
    return FLOW_BUILDERS[spec.kind](optimizer, loss, h)


@eqx.filter_jit
def _iterate_map(step, theta, steps: int):
    def body(x, _):
        return step(x), x

    last, xs = jax.lax.scan(body, theta, None, length=steps)
    return jnp.concatenate([xs, last[None]])


def flow_values(spec: FlowSpec, flow, theta_start, h: float, steps: int, rtol: float, pad_to: int):
    r"""Values of the flow at $t = nh$, $n = 0..$``steps``, and an estimate of their numerical error.

    ODE flows are solved twice, saving on the grid $nh$ and on the grid $nh/2$ (diffrax lands on every save time);
    the finer solution is returned and the largest difference between the two at the common times is reported as the
    solver error floor (an upper bound for the finer solution's error).
    """
    flow = eqx.tree_at(lambda f: f.h, flow, jnp.asarray(h, dtype=jnp.float64))
    if spec.kind == "memoryless":  # iterate pad_to steps (one compilation per sweep) and keep the first ones
        return np.asarray(_iterate_map(flow, theta_start, max(steps, pad_to)))[: steps + 1], 0.0
    ts = np.arange(steps + 1) * h
    coarse = solve_ode(flow, theta_start, ts, rtol=rtol, pad_to=2 * pad_to + 1)  # same shape: one compilation
    fine = solve_ode(flow, theta_start, np.arange(2 * steps + 1) * (h / 2), rtol=rtol, pad_to=2 * pad_to + 1)
    values = fine.ys[::2]
    floor = float(np.max(np.linalg.norm(values - coarse.ys, axis=-1)))
    return values, floor


def compare_flow(
    optimizer: Optimizer,
    loss: Callable,
    theta0,
    flow: str,
    hs: Sequence[float],
    T: float,
    *,
    init: str = "manifold",
    burn_in: Optional[int] = None,
    truncation: str = "direct",
    rtol: float = 1e-12,
    progress: Optional[Callable] = None,
) -> FlowResult:
    """Convergence study of one flow against the optimizer's iterates over the step sizes ``hs`` on $[0, T]$.

    Returns per-$h$ error curves, the maximum errors and the fitted order. Warns (:class:`AccuracyWarning`, also
    recorded in the result) when the solver's error floor is within a factor 100 of a measured error, and when
    $h\\lambda_{\\max}/(1-\\beta)^2 > 0.05$ at the largest $h$. ``truncation`` selects the modified-field truncation
    (``"direct"`` by default here: same order as ``"taylor"``, far cheaper; see :mod:`modeq.flows`).
    """
    spec = parse_flow(flow) if isinstance(flow, str) else flow
    check_positive("T", T)
    if init not in ("manifold", "rest"):
        raise ValueError(f"init must be 'manifold' or 'rest', got {init!r}")
    hs = [check_positive("h", h) for h in hs]
    if burn_in is not None:
        burn_in = check_int_at_least("burn_in", burn_in, 0)
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    if init == "manifold" and optimizer.bias_correction:
        # On the manifold the momenta are already at their stationary values: bias correction (a start-up device
        # for zero buffers) would distort them. The modified equations are those of the stationary optimizer.
        optimizer = dataclasses.replace(optimizer, bias_correction=False)
    notes: list[str] = []
    eta = expansion_parameter(optimizer, loss, theta0, max(hs))
    if eta > 0.05:
        notes.append(
            f"h*lambda_max/(1-beta)^2 = {eta:.3g} > 0.05 at h = {max(hs):g}: outside the asymptotic regime, "
            "fitted orders may be off"
        )
    max_errors, curves, trajectories, floors = [], [], [], []
    flow_obj = build_flow(spec, optimizer, loss, hs[0], truncation)
    pad = max(max(1, int(round(T / h))) for h in hs)
    # The burn-in is a fixed *time*, the same for every h, so that every comparison window starts at the same point
    # of the trajectory (otherwise the error constant would change with h and bias the fitted order).
    burn_time = 0.0
    if init == "rest" and optimizer.momenta:
        if burn_in is None:
            burn_time = max(default_burn_in(optimizer, h, spec.order) * h for h in hs)
        else:
            burn_time = burn_in * max(hs)
    for i, h in enumerate(hs):
        steps = max(1, int(round(T / h)))
        n0 = int(math.ceil(burn_time / h - 1e-9))
        m0 = _start_momenta(optimizer, loss, theta0, h, init, spec.order)
        traj = simulate(optimizer, loss, theta0, n0 + steps, h=h, m0=m0, record=False)
        if traj.diverged:
            raise FloatingPointError(f"the optimizer diverged at step {int(traj.diverged_at)} for h = {h:g}")
        iterates = np.asarray(traj.theta[n0:])
        try:
            values, floor = flow_values(spec, flow_obj, jnp.asarray(iterates[0]), h, steps, rtol, pad)
        except SolveError as exc:
            raise SolveError(f"{spec.label}, h = {h:g}: {exc}", exc.t_failed) from None
        errors = np.linalg.norm(iterates - values, axis=-1)
        max_errors.append(float(errors.max()))
        curves.append((np.arange(steps + 1) * h, errors))
        trajectories.append((iterates, values))
        floors.append(floor)
        if floor > 0 and errors.max() < 100 * floor:
            notes.append(
                f"h = {h:g}: solver error floor {floor:.2e} is within 100x of the measured error {errors.max():.2e}"
            )
        if progress is not None:
            progress(i + 1, len(hs))
    fit = fit_order(hs, max_errors) if len(hs) >= 2 and all(e > 0 for e in max_errors) else None
    for note in notes:
        warnings.warn(note, AccuracyWarning, stacklevel=2)
    return FlowResult(spec.label, spec.order, list(hs), max_errors, fit, curves, trajectories, floors, notes)
