r"""Job 1: flows against the discrete iterates over a sweep of step sizes, with one verdict per flow.

:func:`flow_study` is the one call behind ``modeq compare`` and the convergence section of ``modeq report``: it picks
the defaults (step sizes inside the asymptotic regime, horizon, flows), refuses sweeps that cannot be fitted
(:func:`~modeq.studies.check_sweep`), starts momentum methods by one policy (:func:`modeq.compare.compare_flow`: exact
per eigen-direction on quadratics, the converged fixed point elsewhere, an error where neither exists) and returns a
:class:`FlowStudy` whose every number the front ends print.

The metric is $\max_{0 \le n \le N}\|\theta_n - \theta(nh)\|_2$ with $N = T/h$, fitted as $C h^p$ over the sweep.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from .._pytree import flatten_loss
from ..compare._study import compare_flows, expansion_parameter, parse_flow
from ..optimizers._spec import Optimizer
from ._verdict import REGIME_LIMIT, check_sweep, jsonable

METRIC = "max over 0 <= n <= T/h of |theta_n - theta(n h)|_2"


def default_flows(optimizer: Optimizer) -> list:
    """``modified:1, modified:2, modified:3`` (the optimizer's modified equations of orders 1-3)."""
    return ["modified:1", "modified:2", "modified:3"]


def default_step_sizes(optimizer: Optimizer, loss: Optional[Callable] = None, theta0=None, *, count: int = 4) -> list:
    r"""``count`` step sizes $h, h/2, h/4, \dots$ inside the asymptotic regime: $h = 0.01$ without momentum,
    $4\times10^{-4}$ with, lowered (to 1, 2 or 5 times a power of ten) until $h\lambda_{\max}/(1-\beta)^2 \le 0.05$ at
    ``theta0`` when the loss is given (:func:`modeq.compare.expansion_parameter`)."""
    h = 4e-4 if optimizer.momenta else 0.01
    if loss is not None and theta0 is not None:
        per_h = expansion_parameter(optimizer, loss, jnp.asarray(theta0, jnp.float64), 1.0)
        if per_h > 0 and h * per_h > REGIME_LIMIT:
            cap = REGIME_LIMIT / per_h
            k = math.floor(math.log10(cap))
            h = max(m * 10.0**k for m in (1, 2, 5) if m * 10.0**k <= cap)
    return [h / 2**i for i in range(count)]


def default_horizon(optimizer: Optimizer) -> float:
    """$T = 0.5$ without momentum, $0.1$ with (momentum methods need step sizes about 25x smaller)."""
    return 0.1 if optimizer.momenta else 0.5


@dataclasses.dataclass
class FlowStudy:
    r"""The result of :func:`flow_study`: one :class:`~modeq.compare.FlowResult` (errors, fit, verdict) per flow.

    ``complete`` is False when the study was interrupted; ``missing`` then lists the flows and step sizes not done.
    """

    optimizer: Optimizer
    problem: str
    theta0: list
    hs: list
    T: float
    init: str
    truncation: str
    flows: list
    results: list = dataclasses.field(default_factory=list)
    regime: Optional[float] = None
    complete: bool = True
    metric: str = METRIC

    @property
    def warnings(self) -> list:
        """Every flow's warnings, once each, in order."""
        out: list = []
        for r in self.results:
            out.extend(w for w in r.warnings if w not in out)
        return out

    @property
    def missing(self) -> list:
        """``"flow@h"`` for every (flow, step size) pair not computed."""
        done = {(r.flow, h) for r in self.results for h, e in zip(r.h, r.curves)}
        return [f"{f}@h={h:g}" for f in self.flows for h in self.hs if (f, h) not in done]

    def to_dict(self) -> dict:
        """Strict-JSON record (``None``, never NaN): settings, the metric, the per-flow results and verdicts."""
        return jsonable({
            "optimizer": self.optimizer.name,
            "optimizer_cli": self.optimizer.cli_spec(),
            "params": self.optimizer.cli_params(),
            "problem": self.problem,
            "theta0": self.theta0,
            "h": self.hs,
            "T": self.T,
            "init": self.init,
            "truncation": self.truncation,
            "metric": self.metric,
            "regime": self.regime,
            "complete": self.complete,
            "missing": self.missing,
            "results": [r.to_dict() for r in self.results],
            "warnings": self.warnings,
        })


def flow_study(
    optimizer: Optimizer,
    loss: Callable,
    theta0,
    flows: Optional[Sequence[str]] = None,
    hs: Optional[Sequence[float]] = None,
    T: Optional[float] = None,
    *,
    problem: str = "",
    init: str = "manifold",
    burn_in: Optional[int] = None,
    truncation: str = "direct",
    rtol: float = 1e-12,
    progress: Optional[Callable[[str, int, int], None]] = None,
    on_update: Optional[Callable[["FlowStudy"], None]] = None,
) -> FlowStudy:
    r"""Compare each flow in ``flows`` with the optimizer's iterates over the step sizes ``hs`` on $[0, T]$.

    Defaults: ``flows`` :func:`default_flows`, ``hs`` :func:`default_step_sizes` (inside the asymptotic regime),
    ``T`` :func:`default_horizon`. Everything is validated before any computation (flow names, step sizes, horizon,
    ``init``). ``progress(label, done, total)`` is called after each step size; ``on_update(study)`` after each step
    size with the partial study (so a front end can save what is finished if it is interrupted).

    ``init``: ``"manifold"`` (momenta on the slow manifold, bias correction off), ``"rest"`` (zero momenta, the
    optimizer's own bias correction, compared after a burn-in) or ``"shadow"`` (zero momenta with bias correction,
    the flow from the shadow start :func:`modeq.series.shadow_start`; the verdict on the window after the burn-in, the
    whole-run error recorded too; docs/theory/bias_correction.md); see :func:`modeq.compare.compare_flow`.
    """
    loss, theta0, _ = flatten_loss(loss, theta0)  # a loss on a pytree: studied on the flat vector, as simulate
    theta0 = jnp.asarray(theta0, jnp.float64)
    flows = [f.strip() for f in (flows or default_flows(optimizer)) if f.strip()]
    specs = [parse_flow(f) for f in flows]
    if init not in ("manifold", "rest", "shadow"):
        raise ValueError(f"init must be 'manifold', 'rest' or 'shadow', got {init!r}")
    if truncation not in ("direct", "taylor"):
        raise ValueError(f"truncation must be 'direct' or 'taylor', got {truncation!r}")
    T = float(T) if T is not None else default_horizon(optimizer)
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"T must be a positive finite number, got {T!r}")
    hs = check_sweep(hs if hs is not None else default_step_sizes(optimizer, loss, theta0), T)
    study = FlowStudy(optimizer, problem, np.asarray(theta0).tolist(), hs, T, init, truncation,
                      [s.label for s in specs])
    study.complete = False
    total = len(specs) * len(hs)

    def step(partial: list):
        study.results = list(partial)
        if on_update is not None:
            on_update(study)

    def tick(i, n):
        if progress is not None:
            progress(", ".join(s.label for s in specs), i * len(specs), total)

    # all flows at once, step size by step size: the start and the iterates are computed once per h, and the ODE flows
    # are integrated as one system (one traced and compiled solve for the study)
    study.results = compare_flows(optimizer, loss, theta0, specs, hs, T, init=init, burn_in=burn_in,
                                  truncation=truncation, rtol=rtol, progress=tick, on_step_size=step, _stacklevel=3)
    study.regime = study.results[-1].regime if study.results else None
    study.complete = True
    if on_update is not None:
        on_update(study)
    return study
