r"""The principal-flow study: the principal flow of GD / heavy-ball against the optimizer's own iterates.

:func:`principal_flow_study` integrates the principal flow (:func:`modeq.flows.principal_flow_solve`, complex state:
every regime), starts the iterates on the slow manifold with the package's one start policy
(:func:`modeq.series.slow_manifold_start`: on a quadratic exactly the flow's own start, complex regime included), and
measures $e_n = \|\theta_n - \operatorname{Re}\theta(nh)\|_2$ for $0 \le n \le N = \mathrm{round}(T/h)$.

What is claimed, and so what the verdict checks:

* **Quadratic loss**: the principal flow is exact (Rosca et al., TMLR 2023, for GD; the dominant characteristic root
  per eigen-direction for heavy-ball): $\max_n e_n$ must be at rounding / solver level. Verdict ``"consistent"`` iff
  $\max_n e_n \le 10^{-9}(1 + \max_n\|\theta_n\|_\infty)$, in every regime (real, complex, oscillating, divergent).
* **Other losses**: the principal flow sums the Hessian-only terms of the modified equation and misses the terms with
  third derivatives: global order 2 (3 with ``third``). The study repeats the comparison at $h/2$ and judges the
  observed order $\log_2(e(h)/e(h/2))$ (:func:`modeq.studies.order_verdict`, two step sizes; "outside the asymptotic
  regime" when $\max_n |h\lambda(\theta_n)|/(1-\beta)^2 > 0.05$). Where the flow is not
  in the real regime ($h\lambda_{\max} > (1-\sqrt\beta)^2$; GD: $h\lambda_{\max} > 1$) the complex state is continued
  to first order in the imaginary part: the flow is then an analysis tool (its real coefficients say which directions
  decay, oscillate or grow), not a simulator of the iterates; the verdict is ``"outside the asymptotic regime"`` and
  the notes say so.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Optional

import jax.numpy as jnp
import numpy as np

from ..flows._principal import PrincipalFlowResult, principal_flow_solve
from ..optimizers._simulate import DivergenceWarning, simulate
from ..optimizers._spec import Optimizer
from ..series._start import StartResult, quadratic_model, slow_manifold_start
from ._verdict import (
    CONSISTENT,
    DIVERGED,
    NOT_CONSISTENT,
    OUTSIDE_REGIME,
    Verdict,
    jsonable,
    order_verdict,
)

#: the error measured by the study
PRINCIPAL_METRIC = "max over 0 <= n <= T/h of |theta_n - Re theta(n h)|_2"
#: relative tolerance of the exactness claim on quadratics (times 1 + max_n |theta_n|_inf)
EXACT_TOLERANCE = 1e-9

NON_QUADRATIC_NOTE = (
    "on a non-quadratic loss outside the real regime the principal flow is continued to first order in its "
    "imaginary part: it is an analysis tool there (the real parts of its coefficients say which eigen-directions "
    "decay, oscillate or grow, and where the edge of stability is crossed), not a simulator of the iterates"
)


@dataclasses.dataclass
class PrincipalFlowStudy:
    r"""Result of :func:`principal_flow_study`.

    ``flow``: the principal-flow solution (real and imaginary parts at $t = nh$, diagnostics per point: regime,
    $h\lambda_{\max}$, edge crossings); ``start``: how the iterates were started; ``iterates`` and ``iterate_loss``;
    ``errors``: $e_n$; ``max_error``; ``quadratic``: the loss is quadratic (the exactness claim applies);
    ``half_step``: for non-quadratic losses, $\max_n e_n$ at $h/2$ (``None`` otherwise); ``diverged_at``: first
    non-finite iterate (``None``); ``warnings``, ``notes``: sentences; ``verdict``.
    """

    optimizer: Optimizer
    h: float
    T: float
    steps: int
    flow: PrincipalFlowResult
    start: StartResult
    iterates: np.ndarray
    iterate_loss: np.ndarray
    errors: np.ndarray
    max_error: Optional[float]
    scale: float
    quadratic: bool
    half_step: Optional[float]
    diverged_at: Optional[int]
    warnings: list
    notes: list
    verdict: Verdict
    metric: str = PRINCIPAL_METRIC

    @property
    def diagnostics(self):
        """The flow's :class:`~modeq.flows.PrincipalDiagnostics` (regime per point, $h\\lambda_{\\max}$, crossings)."""
        return self.flow.diagnostics

    def to_dict(self) -> dict:
        """Strict-JSON record: the options, the flow (``modeq.flows.PrincipalFlowResult.to_dict``), the start, the
        error curve, the verdict, warnings and notes."""
        out = self.flow.to_dict()
        out.update({
            "optimizer_cli": self.optimizer.cli_spec(self.h),
            "metric": self.metric,
            "start": self.start.to_dict(),
            "iterate_error": self.errors,
            "max_error": self.max_error,
            "error_scale": self.scale,
            "quadratic": self.quadratic,
            "max_error_half_step": self.half_step,
            "iterate_loss": self.iterate_loss,
            "iterates_diverged_at": self.diverged_at,
            "verdict": self.verdict.to_dict(),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        })
        return jsonable(out)


def _run_iterates(optimizer, loss, theta0, h, steps, start):
    m0 = start.momenta if optimizer.momenta else "zero"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        traj = simulate(optimizer, loss, theta0, steps, h=h, m0=m0)
    diverged = int(traj.diverged_at) if traj.diverged else None
    return np.asarray(traj.theta), np.asarray(traj.loss), diverged


def _compare(optimizer, loss, theta0, h, T, backend, k, third):
    flow = principal_flow_solve(optimizer, loss, theta0, h=h, T=T, backend=backend, k=k, third=third, state="complex")
    steps = flow.ts.shape[0] - 1
    start = slow_manifold_start(optimizer, loss, theta0, h)
    iterates, iterate_loss, diverged = _run_iterates(optimizer, loss, theta0, h, steps, start)
    errors = np.linalg.norm(iterates - flow.theta, axis=-1)
    return flow, start, iterates, iterate_loss, diverged, errors


def principal_flow_study(
    optimizer: Optimizer,
    loss: Callable,
    theta0,
    *,
    h,
    T,
    backend: str = "dense",
    k: Optional[int] = None,
    third: bool = False,
) -> PrincipalFlowStudy:
    r"""The principal flow of ``optimizer`` (GD or heavy-ball: :meth:`~modeq.optimizers.Optimizer.principal_flow_momentum`)
    on ``loss`` from ``theta0`` over $[0, T]$ at step size ``h``, against the iterates started on the slow manifold.

    Returns a :class:`PrincipalFlowStudy` with the flow, the iterates, $e_n = \|\theta_n - \operatorname{Re}
    \theta(nh)\|_2$, the diagnostics, warnings, notes and a :class:`~modeq.studies.Verdict` (see the module docstring:
    exactness on quadratics, observed order from $h$ and $h/2$ elsewhere). ``backend``/``k``: as
    :func:`modeq.flows.principal_flow` (``k`` for ``"lanczos"``); ``third``: add the exact $h^2T[g,g]$ term.
    Raises :class:`~modeq._errors.RegimeError` for an optimizer without a principal flow or without a slow-manifold start at
    this $h$, ``ValueError`` naming the parameter for bad input.
    """
    from .._pytree import flatten_loss

    loss, theta0, _ = flatten_loss(loss, theta0)  # a loss on a pytree: studied on the flat vector, as simulate
    from .._validation import check_finite_array, check_positive
    from ..flows._principal import _beta_of

    beta = _beta_of(optimizer)
    h = check_positive("h", h)
    T = check_positive("T", T)
    theta0 = jnp.asarray(check_finite_array("theta0", theta0), jnp.float64)
    notes: list = []
    warns: list = []
    flow, start, iterates, iterate_loss, diverged, errors = _compare(optimizer, loss, theta0, h, T, backend, k, third)
    steps = flow.ts.shape[0] - 1
    quadratic = start.method == "exact quadratic" or (not optimizer.momenta and quadratic_model(loss, theta0) is not None)
    finite = np.isfinite(errors)
    max_error = float(errors[finite].max()) if finite.any() else None
    scale = 1.0 + float(np.max(np.abs(iterates[np.all(np.isfinite(iterates), axis=-1)])))
    diag = flow.diagnostics
    regimes = sorted(set(diag.regime)) if diag is not None else []
    if start.method != "none":
        notes.append(f"start: {start.method}" + (f" ({'; '.join(start.notes)})" if start.notes else ""))
    if diag is not None and diag.crossings:
        notes.append(f"the edge of stability h*lambda_max = {diag.edge:g} is crossed at steps {diag.crossings}")
    half = None
    if quadratic:
        if diverged is not None:
            notes.append(f"the iterates overflow at step {diverged} (h*lambda_max beyond the edge of stability): "
                         "compared up to there")
        ok = max_error is not None and max_error <= EXACT_TOLERANCE * scale
        reason = (f"the principal flow is exact on a quadratic loss: max error "
                  f"{'nan' if max_error is None else format(max_error, '.2e')} {'<=' if ok else '>'} "
                  f"{EXACT_TOLERANCE:g} x {scale:.3g} (regimes: {', '.join(regimes) or 'n/a'})")
        verdict = Verdict(0.0, max_error, None, CONSISTENT if ok else NOT_CONSISTENT, reason)
    else:
        expected = 3.0 if third else 2.0
        if any(r != "real" for r in regimes):
            notes.append(NON_QUADRATIC_NOTE)
            verdict = Verdict(expected, None, None, OUTSIDE_REGIME,
                              f"non-quadratic loss, regimes {', '.join(regimes)}: the principal flow is not claimed to "
                              "follow the iterates there")
        elif diverged is not None:
            verdict = Verdict(expected, None, None, DIVERGED, f"the iterates diverged at step {diverged}")
        else:
            _, _, _, _, d2, e2 = _compare(optimizer, loss, theta0, h / 2, steps * h, backend, k, third)
            half = float(np.max(e2)) if d2 is None and np.all(np.isfinite(e2)) else None
            fit = None
            if half is not None and max_error and half > 0:
                from ..compare._order import fit_order

                fit = fit_order([h, h / 2], [max_error, half])
            eta = None
            if diag is not None:
                eta = float(np.max(np.abs(np.concatenate([diag.h_lambda_max, diag.h_lambda_min])))) / (1.0 - beta) ** 2
            verdict = order_verdict(expected, fit, regime=eta, diverged=half is None)
            verdict = dataclasses.replace(
                verdict, reason=f"non-quadratic loss: observed order of the max error from h and h/2 against the "
                f"global order {expected:g} of the principal flow{' + third-derivative term' if third else ''}; "
                + verdict.reason)
            notes.append("on a non-quadratic loss the principal flow misses the terms of the modified equation with "
                         "third and higher derivatives: it follows the iterates to O(h^2) (O(h^3) with --third)")
    if start.residual > 1e-9 and start.method == "fixed point":
        warns.append(f"the slow-manifold start is accurate to {start.residual:.2g} (relative) only")
    for w in warns:
        warnings.warn(w, UserWarning, stacklevel=2)
    return PrincipalFlowStudy(
        optimizer=optimizer, h=h, T=float(steps * h), steps=steps, flow=flow, start=start, iterates=iterates,
        iterate_loss=iterate_loss, errors=errors, max_error=max_error, scale=scale, quadratic=quadratic,
        half_step=half, diverged_at=diverged, warnings=warns, notes=notes, verdict=verdict,
    )
