r"""Compare a flow with the discrete iterates along the trajectory, over a sweep of step sizes.

For each step size $h$: run the optimizer for $N = \mathrm{round}(T/h)$ steps, integrate the flow (or iterate the
memoryless map) from the same point, and record $e_n = \|\theta_n - \theta(nh)\|_2$ for $n \le N$; then fit
$\max_n e_n \approx C h^p$ (:func:`modeq.compare.fit_order`).

Start of a momentum method (the choice decides the measured order; docs/theory/manifold.md#initialization):

* ``init="manifold"`` (default): $m_0 = M_h(\theta_0)$, the slow manifold at $\theta_0$ (fixed-point iterate with
  ``max(R + 2, 6)`` sweeps, far more accurate than $h^R$). On the manifold the optimizer *is* the memoryless map, whose
  modified field of order $R$ is exact to $O(h^R)$: the measured order equals $R$.
* ``init="rest"``: $m_0 = 0$ (optax's default). Off the manifold, the transient decays like $\beta^n$ but leaves a
  permanent $O(h)$ shift, so a flow started at $\theta_0$ is only first-order accurate, whatever $R$. With a burn-in of
  $n_0$ steps the comparison starts at $\theta_{n_0}$, where the state is within $O(\beta^{n_0})$ of the manifold; the
  default burn-in makes $\beta^{n_0} \le 10^{-2} h^{R+1}$ so that the order $R$ is measured again. The burn-in is a
  fixed time $t_0 = n_0 h$, the same for every $h$ (``burn_in`` counts steps of the largest $h$), so that every
  comparison window starts at the same point of the trajectory.
* ``init="shadow"``: $m_0 = 0$ with the optimizer's own step-count dependence (bias correction kept), and the flow
  started at the shadow start $\tilde\theta_0$ (:func:`modeq.series.shadow_start`: $n_0$ true steps, then the flow
  backward by $n_0 h$), the base point of the start's stable fibre. The run covers $0 \le n \le n_0 + T/h$; the
  verdict uses the window $n \ge n_0$ (order $R$), and the whole-run error (bounded below by about
  $\|\tilde\theta_0 - \theta_0\|$, $O(h^2)$ for Adam with bias correction) is recorded beside it
  (docs/theory/bias_correction.md).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import warnings
from typing import Callable, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import RegimeError
from .._pytree import flatten_loss
from .._validation import check_flow_order, check_int_at_least, check_positive
from ..flows._modified import gradient_field, memoryless_map, modified_field, top_hessian_eigenvalue
from ..flows._principal import principal_flow, principal_flow_third, principal_flow_values
from ..optimizers._simulate import DivergenceWarning, Trajectory, simulate
from ..optimizers._spec import Optimizer
from ..series._manifold import manifold_point
from ..series._shadow import default_burn_in  # noqa: F401  (re-exported by modeq.compare)
from ..solve._ode import SolveError, solve_on_grid, solve_on_grid_stacked
from .._verdict import REGIME_LIMIT, Verdict, check_sweep, finite_or_none, order_verdict
from ._fit import fit_order_corrected
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
        check_flow_order("order", r)
        return FlowSpec(kind, r)
    if kind == "principal" and not order:
        return FlowSpec("principal", 2)
    if kind == "principal+third" and not order:
        return FlowSpec("principal+third", 3)
    if kind == "central":
        from .._errors import InputError

        raise InputError(
            "flow: 'central' cannot be compared with the iterates: the central flow predicts GD's time-averaged "
            "trajectory at the edge of stability, not the iterates, and has no order in h to fit; use "
            "`modeq central-flow` (central_flow_study), which compares it with GD's time averages")
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

    ``flow`` is the label (``"modified:3"``), ``order`` the theoretical global order $R$. Per step size ``h[i]``
    (largest first): ``max_error[i]`` $= \max_{n \le N}\|\theta_n - \theta(nh)\|_2$ (``None`` if the run diverged),
    ``curves[i]`` the pair (times $nh$, errors $e_n$), ``trajectories[i]`` the pair (iterates, flow values) and
    ``solver_floor[i]`` the solver's error floor (0 for memoryless maps). ``fit`` is the least-squares fit
    $\max_n e_n \approx C h^p$ (:func:`modeq.compare.fit_order`; ``None`` when it cannot be made), ``corrected_fit``
    the fit with the next term of the error expansion (four or more step sizes; :mod:`modeq.compare._fit`), on which
    the verdict is based when it exists, ``verdict`` the
    :class:`~modeq.studies.Verdict` (expected $R$ vs fitted order and its interval), ``regime`` the expansion parameter
    $h\lambda_{\max}/(1-\beta)^2$ at the largest $h$, ``start`` how the momenta were started at each $h$, and
    ``warnings`` the :class:`AccuracyWarning` messages raised for this flow.
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
    verdict: Optional[Verdict] = None
    regime: Optional[float] = None
    start: list = dataclasses.field(default_factory=list)
    diverged_at: list = dataclasses.field(default_factory=list)
    corrected_fit: Optional[OrderFit] = None
    whole_run_error: list = dataclasses.field(default_factory=list)  # init="shadow": max over 0 <= n <= n0 + N
    whole_run_fit: Optional[OrderFit] = None
    start_shift: list = dataclasses.field(default_factory=list)  # init="shadow": |theta~_0 - theta_0| per h
    composite_error: list = dataclasses.field(default_factory=list)  # init="shadow": whole run, flow + boundary layer
    composite_fit: Optional[OrderFit] = None

    @property
    def local_orders(self) -> list:
        r"""Slopes $\log(e_i/e_{i+1})/\log(h_i/h_{i+1})$ between consecutive step sizes, in the order of ``h``."""
        out = []
        for (h1, e1), (h2, e2) in zip(zip(self.h, self.max_error), zip(self.h[1:], self.max_error[1:])):
            ok = e1 is not None and e2 is not None and e1 > 0 and e2 > 0
            out.append(math.log(e1 / e2) / math.log(h1 / h2) if ok else None)
        return out

    def to_dict(self) -> dict:
        """JSON-ready record (strict JSON: ``None`` where a number is missing, never NaN): ``flow``, ``order``, ``h``,
        ``max_error``, the fit (``fitted_order``, ``fitted_order_stderr``, ``fitted_order_ci``, ``error_constant``),
        ``local_orders`` (in the order of ``h``), ``verdict``, ``regime``, ``start``, ``solver_error_floor``,
        ``diverged_at`` and ``warnings``; with ``init="shadow"`` also ``whole_run_max_error`` (max over the whole run
        from $n = 0$, the boundary layer included), its ``whole_run_fitted_order`` and ``start_shift``
        (the distance from the shadow start to $\theta_0$, per $h$), and for the Adam family ``composite_max_error`` /
        ``composite_fitted_order`` (whole run against the flow plus the leading boundary-layer term,
        :func:`modeq.series.boundary_layer`); empty lists and ``None`` otherwise."""
        out = {"flow": self.flow, "order": self.order, "h": self.h,
               "max_error": [finite_or_none(e) for e in self.max_error]}
        fit = self.fit
        out["fitted_order"] = None if fit is None else finite_or_none(fit.order)
        out["fitted_order_stderr"] = None if fit is None else finite_or_none(fit.stderr)
        out["fitted_order_ci"] = None if fit is None else [finite_or_none(x) for x in fit.ci]
        if out["fitted_order_ci"] is not None and None in out["fitted_order_ci"]:
            out["fitted_order_ci"] = None
        out["error_constant"] = None if fit is None else finite_or_none(fit.constant)
        out["local_orders"] = [finite_or_none(x) for x in self.local_orders]
        cf = self.corrected_fit
        out["corrected_fit"] = None if cf is None else {
            "order": finite_or_none(cf.order), "stderr": finite_or_none(cf.stderr),
            "ci": [finite_or_none(x) for x in cf.ci], "correction": finite_or_none(cf.correction)}
        out["verdict"] = None if self.verdict is None else self.verdict.to_dict()
        out["regime"] = finite_or_none(self.regime)
        out["start"] = list(self.start)
        out["solver_error_floor"] = [finite_or_none(x) for x in self.solver_floor]
        out["diverged_at"] = list(self.diverged_at)
        out["warnings"] = list(self.warnings)
        out["whole_run_max_error"] = [finite_or_none(e) for e in self.whole_run_error]
        out["whole_run_fitted_order"] = None if self.whole_run_fit is None else finite_or_none(self.whole_run_fit.order)
        out["start_shift"] = [finite_or_none(e) for e in self.start_shift]
        out["composite_max_error"] = [finite_or_none(e) for e in self.composite_error]
        out["composite_fitted_order"] = None if self.composite_fit is None else finite_or_none(self.composite_fit.order)
        return out


def expansion_parameter(optimizer: Optimizer, loss: Callable, theta, h: float, iterations: int = 30) -> float:
    r"""$h\lambda_{\max}/(1-\beta)^2$ at ``theta`` ($\lambda_{\max}$ by power iteration on Hessian-vector products,
    $\beta$ the slowest momentum decay, :meth:`~modeq.optimizers.Optimizer.slowest_decay`): the asymptotic series in
    $h$ are reliable when it is below about 0.05 (docs: builders/modified_field.md, "Validity")."""
    lam = float(top_hessian_eigenvalue(loss, jnp.asarray(theta, jnp.float64), iterations))
    beta = optimizer.slowest_decay()
    return h * lam / (1.0 - beta) ** 2


def _start_momenta(optimizer, loss, theta0, h, init, order):
    """``(m0, how)``: the momenta the optimizer starts from at step size ``h`` and a word on how they were found."""
    if not optimizer.momenta:
        return (), "no momenta"
    if init != "manifold":
        return "zero", "rest (m0 = 0)"
    try:
        from ..series._start import slow_manifold_start
    except ImportError:  # pragma: no cover - the start policy module is part of the package
        slow_manifold_start = None
    if slow_manifold_start is not None:
        start = slow_manifold_start(optimizer, loss, theta0, h)
        return start.momenta, start.method
    m0 = manifold_point(optimizer, loss, theta0, h=h, sweeps=max(order + 2, 6))
    if not all(bool(jnp.all(jnp.isfinite(m))) for m in m0):
        eta = expansion_parameter(optimizer, loss, theta0, h)
        raise RegimeError(
            f"h: the slow-manifold iteration of {optimizer.name} diverges at h = {h:g} "
            f"(h*lambda_max/(1-beta)^2 = {eta:.3g}; the reduction to a memoryless flow needs it << 1): "
            "use smaller step sizes, a smaller beta, or --init rest"
        )
    return m0, "fixed point"


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

    ODE flows: one adaptive Dopri8 solve with dense output (:func:`modeq.solve.solve_on_grid`; its step is capped
    at a quarter of the free solve's so that the degree-6 interpolant stays at rounding level), and ``floor``, the
    largest distance to a reference solve with half that step (an estimate of the returned values' own error).
    Memoryless maps are iterated (``floor`` 0). ``pad_to`` (the largest step count of the sweep) keeps one
    compilation for the whole sweep.
    """
    flow = eqx.tree_at(lambda f: f.h, flow, jnp.asarray(h, dtype=jnp.float64))
    if spec.kind == "memoryless":  # iterate pad_to steps (one compilation per sweep) and keep the first ones
        return np.asarray(_iterate_map(flow, theta_start, max(steps, pad_to)))[: steps + 1], 0.0
    values, floor = solve_on_grid(flow, theta_start, h, steps, rtol=rtol, pad_to=pad_to)
    return np.asarray(values), float(floor)


def is_quadratic(loss: Callable, theta0) -> bool:
    r"""Whether ``loss`` is a quadratic (numerically: :func:`modeq.series.quadratic_model`)."""
    from ..series._start import quadratic_model

    return quadratic_model(loss, theta0) is not None


_PRINCIPAL_KINDS = ("principal", "principal+third")


#: (optimizer, loss, theta0, h, init, steps) -> (how, trajectory) of the last few started runs: the flows of one study
#: share the iterates at each h (the start and the run are deterministic, and the start does not depend on the flow's
#: order: ``order`` only sizes the fallback ``manifold_point``), so they are computed once. The
#: optimizer (a dict inside: unhashable) and the loss are matched by identity; each entry holds them, so their ids
#: cannot be reused while it is kept.
_RUNS: "collections.OrderedDict" = collections.OrderedDict()
_RUNS_KEPT = 16
_RUNS_MAX_ELEMENTS = 1_000_000  # larger trajectories are not kept (memory: at most 16 x 8 MB held)
_PAD_MAX_ELEMENTS = 1_000_000  # larger runs are not padded (the extra steps would cost more than a compilation)


def _started_run(optimizer, loss, theta0, h, init, order, steps, pad_to=None):
    """``(how, trajectory)``: the momenta started by :func:`_start_momenta` and ``steps`` steps of
    :func:`~modeq.optimizers.simulate` from them, memoized over the flows of a study. ``pad_to`` (small problems:
    at most ``_PAD_MAX_ELEMENTS`` state entries) runs ``pad_to`` steps and keeps the first ``steps``, so that a sweep
    over step sizes compiles one scan."""
    flat = np.asarray(theta0)
    key = (id(optimizer), id(loss), flat.dtype.str, flat.shape, flat.tobytes(), float(h), init, int(steps))
    entry = _RUNS.get(key)
    if entry is not None and entry[0] is optimizer and entry[1] is loss:
        _RUNS.move_to_end(key)
        how, traj = entry[2], entry[3]
        if traj.diverged:  # the same warning as a fresh run
            warnings.warn(f"{optimizer.name}: the iterates diverged at step {int(traj.diverged_at)}; the trajectory is "
                          "frozen there", DivergenceWarning, stacklevel=3)
        return how, traj
    m0, how = _start_momenta(optimizer, loss, theta0, h, init, order)
    if pad_to is not None and pad_to > steps and flat.size * pad_to <= _PAD_MAX_ELEMENTS:
        # one compiled scan for the whole sweep: run pad_to steps, keep the first `steps` (a divergence after them
        # is not part of this run)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            long = simulate(optimizer, loss, theta0, pad_to, h=h, m0=m0, record=False)
        at = int(long.diverged_at)
        at = at if 0 <= at < steps else -1

        def cut(a):  # host (NumPy) arrays: a device slice or transfer compiles once per length
            return np.asarray(a)[: steps + 1]

        traj = Trajectory(cut(long.theta), tuple(cut(m) for m in long.momenta), cut(long.loss), cut(long.grad_norm),
                          np.asarray(at, np.asarray(long.diverged_at).dtype), long.unravel, long.save_every)
        if at >= 0:
            warnings.warn(f"{optimizer.name}: the iterates diverged at step {at}; the trajectory is frozen there",
                          DivergenceWarning, stacklevel=3)
    else:
        traj = simulate(optimizer, loss, theta0, steps, h=h, m0=m0, record=False)
    if traj.theta.size <= _RUNS_MAX_ELEMENTS:
        _RUNS[key] = (optimizer, loss, how, traj)
        while len(_RUNS) > _RUNS_KEPT:
            _RUNS.popitem(last=False)
    return how, traj


def _shadow_errors(optimizer, loss, theta0, spec, flow_obj, traj, h, n0, steps, rtol, pad, result):
    r"""``init="shadow"`` at one step size: the flow from the shadow start $\tilde\theta_0 = \Phi_{-n_0h}
    (\theta_{n_0})$ (:func:`modeq.series.pull_back` of the run from rest, the same field as the comparison) on the
    whole run $0 \le n \le n_0 + N$. Returns the window errors ($n \ge n_0$, for the fit), the flow values and the
    solver floor; appends the whole-run maximum and the shift to ``result``, and for the Adam family the whole-run
    error of the composite flow + leading boundary-layer term (:func:`modeq.series.boundary_layer`)."""
    from ..series._shadow import boundary_layer, pull_back

    start = pull_back(flow_obj, jnp.asarray(traj.theta[n0]), h, n0, rtol=rtol) if n0 else jnp.asarray(theta0)
    values, floor = flow_values(spec, flow_obj, start, h, n0 + steps, rtol, pad)
    iterates = np.asarray(traj.theta[: n0 + steps + 1])
    errors = np.linalg.norm(iterates - values, axis=-1)
    result.whole_run_error.append(float(errors.max()))
    result.start_shift.append(float(np.linalg.norm(np.asarray(start) - np.asarray(theta0))))
    if optimizer.adaptive_form() is not None and n0:
        layer, _ = boundary_layer(optimizer, loss, theta0, h, n0 + steps)
        result.composite_error.append(float(np.linalg.norm(iterates - values - layer, axis=-1).max()))
    return errors[n0:], values, floor


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
    on_step_size: Optional[Callable] = None,
) -> FlowResult:
    r"""Convergence study of one flow against the optimizer's iterates over the step sizes ``hs`` on $[0, T]$.

    Returns per-$h$ error curves, the maximum errors, the fitted order and a verdict
    (:func:`modeq.studies.order_verdict`: expected $R$ against the fitted order and its 95% interval; "outside the
    asymptotic regime" when $h\lambda_{\max}/(1-\beta)^2 > 0.05$ at the largest $h$; "diverged" when the optimizer
    diverges at some $h$). A principal flow on a quadratic loss is exact: its verdict is "consistent" when every error
    is at the solver's precision, in every regime. Refused before anything runs (``ValueError`` naming the parameter):
    duplicate step sizes, horizons $\mathrm{round}(T/h)\,h$ that differ between step sizes (choose $T$ a multiple of
    every $h$), fewer than 2 steps. Warns (:class:`AccuracyWarning`, also recorded in the result) when the solver's
    error floor is within a factor 100 of a measured error and outside the asymptotic regime. ``truncation`` selects
    the modified-field truncation (``"direct"`` by default here: same order as ``"taylor"``, far cheaper; see
    :mod:`modeq.flows`). ``on_step_size(result_so_far)`` is called after each step size (for partial results).
    """
    spec = parse_flow(flow) if isinstance(flow, str) else flow

    def one(results):
        if on_step_size is not None:
            on_step_size(results[0])

    return compare_flows(optimizer, loss, theta0, [spec], hs, T, init=init, burn_in=burn_in, truncation=truncation,
                         rtol=rtol, progress=progress, on_step_size=one, _stacklevel=3)[0]


def _joint_ode(spec: "FlowSpec", init: str) -> bool:
    """Whether the flow's values can come from one stacked solve with the other flows of a study (an ODE flow of
    :func:`build_flow` started at the comparison's first iterate)."""
    return init != "shadow" and spec.kind in ("gradient", "modified")


def compare_flows(
    optimizer: Optimizer,
    loss: Callable,
    theta0,
    flows: Sequence,
    hs: Sequence[float],
    T: float,
    *,
    init: str = "manifold",
    burn_in: Optional[int] = None,
    truncation: str = "direct",
    rtol: float = 1e-12,
    progress: Optional[Callable] = None,
    on_step_size: Optional[Callable] = None,
    _stacklevel: int = 2,
) -> list:
    r""":func:`compare_flow` for several flows at once (one :class:`FlowResult` each, in order): the same results,
    computed step size by step size. At each $h$ the start and the iterates are computed once for all flows, and the
    ODE flows that start from the same point are integrated as one uncoupled system
    (:func:`modeq.solve.solve_on_grid_stacked`: one traced and compiled solve instead of one per flow; each flow held
    to the tolerance it gets alone, so the errors agree with separate solves to within the solver floor). If that
    solve fails, each flow is solved alone, so that the failure names its flow. ``progress(done, len(hs))`` and
    ``on_step_size(results_so_far)`` are called after each step size.
    """
    specs = [parse_flow(f) if isinstance(f, str) else f for f in flows]
    loss, theta0, _ = flatten_loss(loss, theta0)  # a loss on a pytree: compared on the flat vector, as simulate
    check_positive("T", T)
    if init not in ("manifold", "rest", "shadow"):
        raise ValueError(f"init must be 'manifold', 'rest' or 'shadow', got {init!r}")
    for spec in specs:
        if init == "shadow" and spec.kind not in ("gradient", "modified"):
            raise ValueError(f"init: 'shadow' starts an ODE flow (gradient or modified:R) at a point pulled back "
                             f"along it; {spec.label} has no such start (use init='rest' or 'manifold')")
    hs = check_sweep(hs, T)
    if burn_in is not None:
        burn_in = check_int_at_least("burn_in", burn_in, 0)
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    if init == "manifold" and optimizer.bias_correction:
        # On the manifold the momenta are already at their stationary values: bias correction (a start-up device
        # for zero buffers) would distort them. The modified equations are those of the stationary optimizer.
        optimizer = dataclasses.replace(optimizer, bias_correction=False)
    eta = expansion_parameter(optimizer, loss, theta0, max(hs))
    quadratic = None
    pad = max(max(1, int(round(T / h))) for h in hs)
    flows_state = []
    for spec in specs:
        notes: list[str] = []
        if spec.kind in _PRINCIPAL_KINDS and quadratic is None:
            quadratic = is_quadratic(loss, theta0)
        exact = spec.kind in _PRINCIPAL_KINDS and bool(quadratic)
        if eta > REGIME_LIMIT and not exact:
            notes.append(
                f"h*lambda_max/(1-beta)^2 = {eta:.3g} > {REGIME_LIMIT:g} at h = {max(hs):g}: outside the asymptotic "
                "regime, the fitted order says nothing about R"
            )
        result = FlowResult(spec.label, spec.order, list(hs), [], None, [], [], [], notes, None, eta, [], [])
        flow_obj = build_flow(spec, optimizer, loss, hs[0], truncation)
        # The burn-in is a fixed *time*, the same for every h, so that every comparison window starts at the same
        # point of the trajectory (otherwise the error constant would change with h and bias the fitted order).
        burn_time = 0.0
        if init in ("rest", "shadow") and optimizer.momenta:
            if burn_in is None:
                burn_time = max(default_burn_in(optimizer, h, spec.order) * h for h in hs)
            else:
                burn_time = burn_in * max(hs)
        sim_pad = max(max(1, int(round(T / h))) + int(math.ceil(burn_time / h - 1e-9)) for h in hs)
        flows_state.append(dict(spec=spec, notes=notes, result=result, flow=flow_obj, burn_time=burn_time,
                                sim_pad=sim_pad, exact=exact, diverged=False))
    results = [st["result"] for st in flows_state]
    for i, h in enumerate(hs):
        steps = max(1, int(round(T / h)))
        runs = []
        for st in flows_state:
            spec = st["spec"]
            n0 = int(math.ceil(st["burn_time"] / h - 1e-9))
            how, traj = _started_run(optimizer, loss, theta0, h, "rest" if init == "shadow" else init, spec.order,
                                     n0 + steps, st["sim_pad"])
            runs.append((n0, how, traj))
        # ODE flows from the same first iterate: one stacked solve
        joint: dict = {}
        groups: dict = {}
        for k, (st, (n0, how, traj)) in enumerate(zip(flows_state, runs)):
            if _joint_ode(st["spec"], init) and not traj.diverged:
                groups.setdefault((n0, id(traj)), []).append(k)
        for (n0, _), members in groups.items():
            if len(members) < 2:
                continue
            start = np.asarray(runs[members[0]][2].theta)[n0]  # host indexing: no eager JAX op
            fields = [eqx.tree_at(lambda f: f.h, flows_state[k]["flow"], jnp.asarray(h, dtype=jnp.float64))
                      for k in members]
            try:
                values, floors = solve_on_grid_stacked(fields, start, h, steps, rtol=rtol, pad_to=pad)
            except SolveError:
                continue  # each flow alone below: the failure is reported with its flow
            joint.update({k: (v, f) for k, v, f in zip(members, values, floors)})
        for k, (st, (n0, how, traj)) in enumerate(zip(flows_state, runs)):
            spec, result, notes, flow_obj, exact = st["spec"], st["result"], st["notes"], st["flow"], st["exact"]
            if init == "shadow":
                how = "shadow start (burn-in from rest, flow pulled back)" if n0 else "shadow start = theta0"
            result.start.append(how)
            if traj.diverged:
                st["diverged"] = True
                result.diverged_at.append(int(traj.diverged_at))
                result.max_error.append(None)
                result.curves.append((np.arange(steps + 1) * h, np.full(steps + 1, np.nan)))
                result.trajectories.append((np.asarray(traj.theta[n0:]), None))
                result.solver_floor.append(None)
                notes.append(f"h = {h:g}: the optimizer diverged at step {int(traj.diverged_at)} (non-finite iterates)")
                continue
            result.diverged_at.append(None)
            iterates = np.asarray(traj.theta[n0:])
            try:
                if init == "shadow":
                    errors, values, floor = _shadow_errors(optimizer, loss, theta0, spec, flow_obj, traj, h, n0,
                                                           steps, rtol, st["sim_pad"], result)
                    iterates = np.asarray(traj.theta[: n0 + steps + 1])
                elif spec.kind in _PRINCIPAL_KINDS:  # the complex-state flow: exact in every regime on quadratics
                    values, floor = principal_flow_values(optimizer, loss, jnp.asarray(iterates[0]), h, steps,
                                                          third=spec.kind == "principal+third", rtol=rtol, pad_to=pad)
                elif k in joint:
                    values, floor = joint[k]
                else:
                    values, floor = flow_values(spec, flow_obj, jnp.asarray(iterates[0]), h, steps, rtol, pad)
            except SolveError as exc:
                hint = "" if optimizer.smooth else (f"; {optimizer.name} is not smooth ({optimizer.smooth_reason}): "
                                                    "its order-1 field is discontinuous, so an ODE solver stalls where "
                                                    "it switches")
                raise SolveError(f"{spec.label}, h = {h:g}: {exc}{hint}", exc.t_failed) from None
            if init != "shadow":
                errors = np.linalg.norm(iterates - values, axis=-1)
            result.max_error.append(float(errors.max()))
            result.curves.append((np.arange(steps + 1) * h, errors))
            result.trajectories.append((iterates, values))
            result.solver_floor.append(floor)
            if floor > 0 and errors.max() < 100 * floor and not exact:
                notes.append(
                    f"h = {h:g}: solver error floor {floor:.2e} is within 100x of the measured error {errors.max():.2e}"
                )
        if on_step_size is not None:
            on_step_size(results)
        if progress is not None:
            progress(i + 1, len(hs))
    for st in flows_state:
        _finish(st["result"], st["spec"], hs, theta0, eta, st["exact"], st["diverged"])
        for note in st["notes"]:
            warnings.warn(note, AccuracyWarning, stacklevel=_stacklevel)
    return results


def _finish(result: FlowResult, spec: "FlowSpec", hs: list, theta0, eta: float, exact: bool, diverged: bool) -> None:
    """The fit over the sweep and the verdict of one flow (:func:`compare_flows`)."""
    errs = result.max_error
    if not diverged and len(hs) >= 2 and all(e is not None and e > 0 for e in errs):
        # An error within 10x of the solver's own error floor measures the solver, not the flow: such step sizes are
        # left out of the fit (and said so), so that a correct flow is not judged on rounding errors.
        keep = [i for i, (e, f) in enumerate(zip(errs, result.solver_floor)) if not f or e > 10 * f or exact]
        if len(keep) < len(hs) and len(keep) >= 2:
            dropped = ", ".join(f"{hs[i]:g}" for i in range(len(hs)) if i not in keep)
            result.warnings.append(f"h = {dropped}: error within 10x of the solver floor, left out of the fit")
        fit_hs, fit_errs = ([hs[i] for i in keep], [errs[i] for i in keep]) if len(keep) >= 2 else (hs, errs)
        result.fit = fit_order(fit_hs, fit_errs)
        if len(fit_hs) >= 4:
            result.corrected_fit = fit_order_corrected(fit_hs, fit_errs)
        if result.whole_run_error and all(e is not None and e > 0 for e in result.whole_run_error):
            result.whole_run_fit = fit_order(hs, result.whole_run_error)  # init="shadow": the boundary layer included
        if len(result.composite_error) == len(hs) and all(e > 0 for e in result.composite_error):
            result.composite_fit = fit_order(hs, result.composite_error)
    if exact and not diverged:
        scale = 1.0 + float(jnp.max(jnp.abs(theta0)))
        worst = max(errs)
        ok = worst <= 1e-9 * scale
        result.verdict = Verdict(  # measured: None, an order fitted to rounding errors means nothing
            spec.order, None, None, "consistent" if ok else "not consistent",
            f"the principal flow is exact on a quadratic loss: max error {worst:.2e} "
            f"{'<=' if ok else '>'} 1e-9 x {scale:.3g} at every h (fitted orders mean nothing here)",
        )
    else:
        judged = result.corrected_fit if result.corrected_fit is not None else result.fit
        result.verdict = order_verdict(spec.order, judged, regime=eta, diverged=diverged)
        if result.corrected_fit is not None:
            result.verdict = dataclasses.replace(
                result.verdict, reason=result.verdict.reason + "; fit log e = a + p log h + c h/h_max (the h^(R+1) "
                "term of the error expansion)")
