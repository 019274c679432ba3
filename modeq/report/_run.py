"""Run the analyses of a report: convergence study, principal flow, implicit regularizer."""

from __future__ import annotations

import math

import dataclasses
import time
import warnings
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..compare import AccuracyWarning, parse_flow
from ..studies import default_horizon, default_step_sizes, flow_study
from ..optimizers import DivergenceWarning, simulate
from ..optimizers._spec import Optimizer
from ..problems import Problem

# Errors a section may raise on a valid command line (the optimizer diverges, a solve fails, an optimizer has no
# smooth modified equation, ...): the section reports it and the other sections still run.
_SECTION_ERRORS = (ValueError, TypeError, FloatingPointError, ArithmeticError, RuntimeError, KeyError)


@dataclasses.dataclass
class Section:
    """One analysis: ``result`` when it ran, else ``skipped`` (why it does not apply) or ``error`` (why it failed)."""

    name: str
    result: Any = None
    skipped: Optional[str] = None
    error: Optional[str] = None
    seconds: float = 0.0


@dataclasses.dataclass
class Report:
    """Everything a report page shows: the optimizer and problem, the convergence-study settings (``hs``, ``T``,
    ``flows``), the three :class:`Section` results and the other ``settings`` (init, truncation, principal-flow and
    regularizer step sizes)."""

    optimizer: Optimizer
    problem: Problem
    loss_spec: str
    hs: list
    T: float
    flows: list
    convergence: Section
    principal: Section
    regularizer: Section
    settings: dict

    def to_dict(self) -> dict:
        """JSON-ready summary (what ``modeq report --json`` prints)."""
        out = {
            "optimizer": self.optimizer.name,
            "params": {k: float(v) for k, v in self.optimizer.hyper.items()},
            "loss": self.loss_spec,
            "problem": self.problem.name,
            "theta0": np.asarray(self.problem.theta0).tolist(),
            "h": self.hs,
            "T": self.T,
            "settings": self.settings,
        }
        for sec in (self.convergence, self.principal, self.regularizer):
            entry = {"seconds": sec.seconds, "skipped": sec.skipped, "error": sec.error}
            if sec.result is not None:
                if sec.name == "convergence":
                    entry["results"] = [r.to_dict() for r in sec.result]
                elif sec.name == "principal":
                    entry.update(sec.result.to_dict())
                else:
                    entry.update(sec.result.to_dict())
            out[sec.name] = entry
        return out


def default_flows(optimizer: Optimizer) -> list:
    """Gradient flow (order 1) and the order-2 and -3 modified equations; for a momentum method the order-3 flow is
    the memoryless modified map (cheap: iterated, not integrated)."""
    if optimizer.momenta:
        return ["gradient", "modified:2", "memoryless:3"]
    return ["gradient", "modified:2", "modified:3"]


def default_hs(optimizer: Optimizer, loss: Optional[Callable] = None, theta0=None) -> list:
    r"""Three step sizes $h, h/2, h/4$ inside the asymptotic regime (:func:`modeq.studies.default_step_sizes`)."""
    return default_step_sizes(optimizer, loss, theta0, count=3)


def default_T(optimizer: Optimizer) -> float:
    """Time horizon of the convergence study (:func:`modeq.studies.default_horizon`)."""
    return default_horizon(optimizer)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def run_report(
    optimizer: Optimizer,
    problem: Problem,
    *,
    loss_spec: str = "",
    hs: Optional[Sequence[float]] = None,
    T: Optional[float] = None,
    flows: Optional[Sequence[str]] = None,
    init: str = "manifold",
    truncation: str = "direct",
    principal_h: Optional[float] = None,
    principal_T: Optional[float] = None,
    regularizer_h: Optional[float] = None,
    regularizer_steps: int = 200,
    form: str = "ode",
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> Report:
    """Run the convergence study, the principal flow and the regularizer terms for ``optimizer`` on ``problem``.

    ``hs`` (default :func:`default_hs`) and ``T`` (default :func:`default_T`): the step sizes and time horizon of the
    convergence study (as ``modeq compare``); ``flows`` default :func:`default_flows`. The principal flow runs at
    ``principal_h`` (default the largest ``h``) on ``[0, principal_T]`` (default ``T`` clipped to 20..200 steps);
    the regularizer run takes
    ``regularizer_steps`` steps at ``regularizer_h`` (default the largest ``h``). ``progress(label, done, total)`` is
    called as work units complete (one per step size and flow, one for each other section). A section that fails
    records its error and the others still run; bad arguments (unknown flow, non-positive ``h``) raise
    ``ValueError`` before anything runs.
    """
    from ..regularizers import regularizer_report
    from ..studies import principal_flow_study

    hs = sorted((float(h) for h in (hs if hs is not None else default_hs(optimizer, problem.loss, problem.theta0))),
                reverse=True)
    if not hs or any(not h > 0 for h in hs):
        raise ValueError(f"h: give positive step sizes, got {hs}")
    T = float(T) if T is not None else default_T(optimizer)
    if not T > 0:
        raise ValueError(f"T must be > 0, got {T}")
    if init not in ("manifold", "rest", "shadow"):
        raise ValueError(f"init must be 'manifold', 'rest' or 'shadow', got {init!r}")
    flows = list(flows) if flows else default_flows(optimizer)
    specs = [parse_flow(f) for f in flows]
    h_big = hs[0]
    ph = float(principal_h) if principal_h is not None else h_big
    pT = float(principal_T) if principal_T is not None else min(max(T, 20 * ph), 200 * ph)
    rh = float(regularizer_h) if regularizer_h is not None else h_big
    total = len(specs) * len(hs) + 2
    done = [0]

    def tick(label: str, n: int = 1):
        done[0] += n
        if progress is not None:
            progress(label, done[0], total)

    if progress is not None:
        progress(f"convergence: {specs[0].label}", 0, total)

    # 1. convergence study (as `modeq compare`)
    conv = Section("convergence")
    start = time.perf_counter()
    study = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AccuracyWarning)
            study = flow_study(
                optimizer, problem.loss, problem.theta0, flows, hs, T, problem=problem.name, init=init,
                truncation=truncation, progress=lambda label, i, n: tick(f"convergence: {label}", i - done[0]),
            )
        conv.result = study.results
    except _SECTION_ERRORS as exc:
        conv.error = _first_line(exc)
        tick("convergence", len(specs) * len(hs) - done[0])
    conv.seconds = time.perf_counter() - start

    # 2. principal flow (as `modeq principal-flow`)
    if progress is not None:
        progress("principal flow", done[0], total)
    pf = Section("principal")
    start = time.perf_counter()
    if optimizer.principal_flow_momentum() is None:
        pf.skipped = (
            f"skipped: modeq defines the principal flow for gradient descent and heavy-ball only (docs/theory/principal_flow.md: "
            f"it sums the principal terms of the modified equation in closed form through the root r_*(h lambda) of "
            f"GD's / heavy-ball's characteristic polynomial on each Hessian eigendirection); there is no such flow "
            f"for {optimizer.name}."
        )
    else:
        try:
            pf.result = principal_flow_study(optimizer, problem.loss, problem.theta0, h=ph, T=pT)
        except _SECTION_ERRORS as exc:
            pf.error = _first_line(exc)
    pf.seconds = time.perf_counter() - start
    tick("regularizer")

    # 3. implicit regularizer (as `modeq regularizer`)
    reg = Section("regularizer")
    start = time.perf_counter()
    if not optimizer.has_momentum_form:
        reg.skipped = (
            f"skipped: the closed-form modified losses are written for the catalog's optimizers; {optimizer.name} is "
            "given by its state dynamics: use modeq.regularizers.implicit_regularizer (numerical, exists for linear "
            "filters of past gradients) or the modified field (docs/builders/from_optax.md)."
        )
    else:
        try:
            reg.result = regularizer_report(optimizer, problem.loss, problem.theta0, h=rh, steps=regularizer_steps,
                                            form=form)
        except (_SECTION_ERRORS + (NotImplementedError,)) as exc:
            reg.error = _first_line(exc)
    reg.seconds = time.perf_counter() - start
    tick("done")

    settings = {"init": init, "truncation": truncation, "principal_h": ph, "principal_T": pT,
                "regularizer_h": rh, "regularizer_steps": int(regularizer_steps), "form": form}
    return Report(optimizer, problem, loss_spec or problem.name, hs, float(T), [s.label for s in specs], conv, pf,
                  reg, settings)
