r"""Jobs 4 and 5: the SME weak-error study and the slow-SDE study, each with a verdict.

* :func:`sme_weak_study` (the one call behind ``modeq sde``): $|E\varphi(x_{T/\eta}) - E\varphi(X_T)|$ of SGD/SGDM
  iterates against their order-1 or order-2 SME over a grid of learning rates, by Monte Carlo with common random
  numbers where the oracle allows it. **Expected weak order** (Li, Tai & E, JMLR 2019, Thms. 3 and 4): 1 for the
  order-1 SME, 2 for the order-2 SME (SGD with a constant learning rate). **Discretisation**: the SME is solved by
  Euler--Maruyama (weak order 1 in its step $\Delta t$) at $s$, $2s$ and $4s$ substeps per learning-rate step, all on
  one Brownian path, and combined by Talay--Tubaro (Richardson) extrapolation $2E\varphi(X^{\Delta t/2}) -
  E\varphi(X^{\Delta t})$, weak order 2 in $\Delta t$ (Talay & Tubaro, Stoch. Anal. Appl. 8, 1990). The remaining
  discretisation bias is estimated from the two extrapolations, $|R_{s,2s} - R_{2s,4s}|/3$, and $s$ is doubled
  (up to ``max_substeps``) until it is below a tenth of the measured weak error or below its Monte Carlo standard
  error: the study's own bias never masquerades as the SME's (with plain Euler--Maruyama at 4 substeps the
  order-2 SME fits 0.5-1; with this rule it fits 2.0-2.1).
* :func:`exact_weak_study`: the same errors from exact Gaussian moments (quadratic loss, constant noise covariance):
  no Monte Carlo, no discretisation.
* :func:`slow_sde_study` (the one call behind ``modeq slow-sde``): the mean of SGD/SGDM after $T/\eta_{\rm eff}^2$
  steps against the mean of the slow SDE on the manifold of minimizers at slow time $T$ (Li, Wang & Arora, ICLR
  2022; for SGDM with $1-\beta = c\,\eta^\alpha$, $\alpha\in[0, 2)$, the same limit: Wang et al. arXiv 2307.15196,
  Thm. 5.5). **Expected order**: no theorem gives the rate of this mean; LWA prove convergence in distribution and
  Gu, Lyu, Huang & Arora (ICLR 2023, arXiv 2303.01215) bound the weak error of the slow-SDE approximation by
  $\tilde O(\eta^{1/4})$. The study therefore tests a *lower bound*: the error must vanish at least like
  $\eta^{1/4}$ (measured on smooth toy problems: order 1-2).

Verdicts (:func:`~modeq.studies.order_verdict`): ``"diverged"`` when any run is non-finite or the optimizer is
linearly unstable at $\theta_0$ (:func:`modeq.sde.step_radius` > 1; then nothing is fitted), ``"Monte Carlo error too
large to tell"`` when fewer than two learning rates resolve their error above 3 standard errors, else
``"consistent"``/``"not consistent"``. Runs too short to compare are refused (``ValueError`` naming ``T``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_at_least, check_positive
from ..compare._order import OrderFit, fit_order
from ..optimizers import gd
from ..sde._sme import effective_lr_factor
from ..sde._weak import (
    MonteCarloWarning,
    _default_phi,
    _linear_gaussian,
    _steps,
    sgd_moments,
    sme_moments,
    weak_samples,
)
from ._verdict import (
    CONSISTENT,
    DIVERGED,
    MC_TOO_LARGE,
    NOT_CONSISTENT,
    Verdict,
    check_sweep,
    jsonable,
    order_verdict,
)

#: expected weak order of the order-1 and order-2 SME (Li, Tai & E 2019)
SME_EXPECTED = {1: 1.0, 2: 2.0}
#: the rate the slow-SDE approximation is guaranteed to reach at least (Gu et al. 2023): a lower bound
SLOW_SDE_GUARANTEED_ORDER = 0.25
#: a learning rate's error is resolved when it exceeds this many Monte Carlo standard errors
RESOLVE = 3.0
DISCRETISATION = ("Euler-Maruyama at s, 2s, 4s substeps per learning-rate step on one Brownian path, Talay-Tubaro "
                  "(Richardson) extrapolated: weak order 2 in the SDE step; s doubled until the estimated remaining "
                  "bias is below a tenth of the measured error or below its Monte Carlo standard error")


def default_sme_etas(order: int) -> tuple:
    r"""Default learning rates of :func:`sme_weak_study`: $0.1, 0.05, 0.025$ (order 1: at $0.2$ the order-1 error of
    the default quadratic is still pre-asymptotic) and $0.2, 0.1, 0.05$ (order 2: the $O(\eta^2)$ error stays above
    the Monte Carlo error of 2000 paths)."""
    return (0.1, 0.05, 0.025) if order == 1 else (0.2, 0.1, 0.05)


def default_sme_paths(order: int) -> int:
    r"""Default Monte Carlo paths of :func:`sme_weak_study`: 2000 (order 1) and 20000 (order 2: the $O(\eta^2)$ errors
    are then resolved to about 3% at $\eta = 0.05$, so three learning rates fit the order to about $\pm 0.1$)."""
    return 2000 if order == 1 else 20000


def _problem_parts(problem_or_loss, theta0):
    loss = getattr(problem_or_loss, "loss", problem_or_loss)
    if not callable(loss):
        raise TypeError("problem_or_loss: expected a Problem or a loss callable")
    if theta0 is None:
        theta0 = getattr(problem_or_loss, "theta0", None)
        if theta0 is None:
            raise ValueError("theta0: give the initial point (the loss is not a Problem with a theta0)")
    return loss, jnp.asarray(theta0, dtype=jnp.float64)


# ----------------------------------------------------------------------------------------------------------------
# SME weak-error study


@dataclasses.dataclass(frozen=True)
class WeakStudy:
    r"""One row per learning rate: ``errors[name][i]`` = $|E\varphi(x_k) - E\varphi(X_{k\eta})|$ at $k = T/\eta$,
    ``stderr`` its Monte Carlo standard error (zeros for exact studies), ``fits[name]`` the fitted weak order (``None``
    when nothing was fitted), ``expected`` the SME's weak order, ``verdict`` (of the first test function),
    ``discretisation`` how the SME was solved, ``substeps[i]`` the finest substep count used at ``etas[i]``,
    ``discretisation_bias[i]`` its estimated remaining bias, ``sme_eta[i]`` the SME's (effective) learning rate,
    ``optimizer`` the optimizer in CLI syntax, ``hyper`` its hyperparameters, ``diverged`` whether a run diverged."""

    etas: tuple
    T: float
    order: int
    method: str
    errors: dict
    stderr: dict
    fits: dict
    discrete: dict = dataclasses.field(default_factory=dict)
    continuous: dict = dataclasses.field(default_factory=dict)
    paths: int = 0
    warnings: tuple = ()
    expected: float = 1.0
    verdict: Optional[Verdict] = None
    discretisation: str = ""
    substeps: tuple = ()
    discretisation_bias: tuple = ()
    sme_eta: tuple = ()
    optimizer: str = ""
    hyper: dict = dataclasses.field(default_factory=dict)
    diverged: bool = False
    radius: tuple = ()

    def to_dict(self) -> dict:
        """Strict-JSON study (``None`` never NaN): learning rates, errors, standard errors, discrete and SDE values,
        fitted orders, expected order, verdict, discretisation, warnings."""
        return jsonable({
            "method": self.method,
            "sme_order": self.order,
            "expected_order": self.expected,
            "T": self.T,
            "etas": list(self.etas),
            "paths": self.paths,
            "optimizer": self.optimizer,
            "hyper": self.hyper,
            "sme_eta": list(self.sme_eta),
            "errors": {k: list(map(float, v)) for k, v in self.errors.items()},
            "stderr": {k: list(map(float, v)) for k, v in self.stderr.items()},
            "discrete": {k: list(map(float, v)) for k, v in self.discrete.items()},
            "sde": {k: list(map(float, v)) for k, v in self.continuous.items()},
            "fits": {k: (f.to_dict() if f is not None else None) for k, f in self.fits.items()},
            "discretisation": self.discretisation,
            "substeps": list(self.substeps),
            "discretisation_bias": list(self.discretisation_bias),
            "diverged": self.diverged,
            "stability_radius": list(self.radius),
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "warnings": list(self.warnings),
        })


def _check_etas(etas, T: float) -> tuple:
    etas = tuple(float(e) for e in etas)
    if len(etas) < 2:
        raise ValueError(f"eta: need at least 2 learning rates, got {len(etas)}")
    return tuple(check_sweep(etas, T, name="eta", min_steps=1))


def _safe_fit(etas, errs) -> Optional[OrderFit]:
    try:
        return fit_order(etas, errs)
    except ValueError:
        return None


def sme_weak_study(
    problem_or_loss,
    oracle,
    theta0=None,
    etas: Optional[Sequence[float]] = None,
    T: float = 1.0,
    *,
    paths: Optional[int] = None,
    key=None,
    seed: int = 0,
    order: int = 1,
    optimizer: Any = None,
    phi: Optional[Callable] = None,
    substeps: int = 4,
    max_substeps: int = 64,
    coupling: str = "auto",
) -> WeakStudy:
    r"""Monte Carlo weak error $|E\varphi(x_{T/\eta}) - E\varphi(X_T)|$ of ``optimizer`` (default SGD) against its
    order-``order`` SME (:func:`modeq.sde.sme`), with the fitted weak order, its 95% interval and a verdict against the
    expected order 1 or 2 (Li, Tai & E 2019). See the module docstring for the discretisation rule.

    Args:
        problem_or_loss: a :class:`~modeq.problems.Problem` or a loss $L$ on a flat vector.
        oracle: gradient oracle with ``covariance(theta)``.
        theta0: the initial point (default: the problem's).
        etas: learning rates (default :func:`default_sme_etas`); $T/\eta$ must be an integer for each.
        paths: Monte Carlo paths (>= 2; default :func:`default_sme_paths`); ``key`` (or ``seed``) the random key.
        phi: test function (default $\|x\|^2$).
        substeps: the starting substep count $s$; ``max_substeps``: the largest $4s$ allowed.
        coupling: ``"auto"``, ``"crn"`` or ``"independent"`` (see :func:`modeq.sde.weak_samples`).

    Emits :class:`~modeq.sde.MonteCarloWarning` where the standard error exceeds the measured error.
    """
    loss, theta0 = _problem_parts(problem_or_loss, theta0)
    if order not in SME_EXPECTED:
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    T = check_positive("T", T)
    etas = _check_etas(default_sme_etas(order) if etas is None else etas, T)
    paths = check_int_at_least("paths", default_sme_paths(order) if paths is None else paths, 2)
    substeps = check_int_at_least("substeps", substeps, 1)
    max_substeps = check_int_at_least("max_substeps", max_substeps, 4 * substeps)
    key = jax.random.key(seed) if key is None else key
    optimizer = gd() if optimizer is None else optimizer
    c = effective_lr_factor(optimizer)  # raises for optimizers without an SME
    phi = _default_phi if phi is None else phi
    errs, ses, disc, cont, warns, used, biases, radii = [], [], [], [], [], [], [], []
    diverged, kind = False, "independent"
    for i, eta in enumerate(etas):
        s = substeps
        while True:
            ws = weak_samples(loss, oracle, theta0, eta, T, paths=paths, key=jax.random.fold_in(key, i),
                              order=order, optimizer=optimizer, phi=phi, substeps=(s, 2 * s, 4 * s),
                              coupling=coupling)
            kind = ws.coupling
            d, lv = ws.discrete, ws.sde
            finite = np.all(np.isfinite(d)) and all(np.all(np.isfinite(v)) for v in lv.values())
            if ws.diverged or ws.radius > 1.0 + 1e-12 or not finite:
                diverged = True
                why = (f"{ws.diverged} of {paths} runs became non-finite" if ws.diverged else
                       f"the optimizer is linearly unstable at theta0 (one-step spectral radius {ws.radius:.3g} > 1)")
                warns.append(f"eta={eta:g}: diverged: {why}; nothing is fitted")
                break
            r1 = 2 * lv[2 * s] - lv[s]
            r2 = 2 * lv[4 * s] - lv[2 * s]
            diff = d - r2
            err = abs(float(diff.mean()))
            se = float(np.std(diff, ddof=1) / math.sqrt(paths))
            bias = abs(float((r1 - r2).mean())) / 3.0
            if bias <= max(0.1 * err, se) or 8 * s > max_substeps:
                if bias > max(0.1 * err, se):
                    warns.append(f"eta={eta:g}: the estimated discretisation bias {bias:.3g} of the SME is not below "
                                 f"a tenth of the measured error {err:.3g} at {4 * s} substeps (max_substeps="
                                 f"{max_substeps}); raise max_substeps")
                break
            s *= 2
        radii.append(ws.radius)
        if diverged:
            errs.append(float("nan"))
            ses.append(float("nan"))
            disc.append(float(np.mean(ws.discrete)))
            cont.append(float(np.mean(ws.sde[4 * s])))
            used.append(4 * s)
            biases.append(float("nan"))
            continue
        errs.append(err)
        ses.append(se)
        disc.append(float(d.mean()))
        cont.append(float(r2.mean()))
        used.append(4 * s)
        biases.append(bias)
        if se > err:
            msg = (f"eta={eta:g}: Monte Carlo standard error {se:.3g} exceeds the measured bias {err:.3g}; "
                   f"increase paths")
            warns.append(msg)
            warnings.warn(msg, MonteCarloWarning, stacklevel=2)
    expected = SME_EXPECTED[order]
    if diverged:
        fit = None
        verdict = Verdict(expected, None, None, DIVERGED,
                          "; ".join(w.split(": ", 1)[1] for w in warns if ": diverged: " in w) or "a run diverged")
    else:
        fit = _safe_fit(etas, errs)
        resolved = [e > RESOLVE * s_ for e, s_ in zip(errs, ses)]
        verdict = order_verdict(expected, fit, resolved=resolved)
    return WeakStudy(
        etas, T, order, f"monte-carlo[{getattr(optimizer, 'name', 'sgd')}, {kind}]", {"phi": errs}, {"phi": ses},
        {"phi": fit}, {"phi": disc}, {"phi": cont}, paths, tuple(warns), expected=expected, verdict=verdict,
        discretisation=DISCRETISATION, substeps=tuple(used), discretisation_bias=tuple(biases),
        sme_eta=tuple(c * e for e in etas), optimizer=optimizer.cli_spec(),
        hyper={k: float(v) for k, v in optimizer.hyper.items()}, diverged=diverged, radius=tuple(radii),
    )


def weak_error_study(loss: Callable, oracle, theta0, etas: Sequence[float], T: float = 1.0, **kwargs) -> WeakStudy:
    """The Monte Carlo weak-error study of earlier versions: :func:`sme_weak_study` with a loss, ``theta0`` and
    ``etas`` given (same keywords)."""
    return sme_weak_study(loss, oracle, theta0, etas, T, **kwargs)


def exact_weak_study(loss: Callable, oracle, theta0, etas: Sequence[float], T: float = 1.0, *,
                     order: int = 1) -> WeakStudy:
    r"""Weak error of the order-``order`` SME for SGD on a quadratic loss with constant noise covariance, from exact
    Gaussian moments (:func:`modeq.sde.sgd_moments`, :func:`modeq.sde.sme_moments`). Test functions: ``mean``
    ($\|E x_k - E X_{k\eta}\|_\infty$) and ``second_moment`` ($|E\|x_k\|^2 - E\|X_{k\eta}\|^2|$) at $k = T/\eta$.
    Expected weak order ``order`` (Li, Tai & E 2019); the verdict is on ``mean``."""
    if order not in SME_EXPECTED:
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    T = check_positive("T", T)
    etas = tuple(float(e) for e in etas)
    if len(etas) < 2:
        raise ValueError(f"eta: need at least 2 learning rates, got {len(etas)}")
    for e in etas:
        check_positive("eta", e)
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    A, g0, C = _linear_gaussian(loss, oracle, theta0)
    x0 = np.asarray(theta0)
    errs = {"mean": [], "second_moment": []}
    disc = {"second_moment": []}
    cont = {"second_moment": []}
    for eta in etas:
        n = _steps(T, eta)
        m, P = sgd_moments(A, g0, C, x0, eta, n)
        ms, Ps = sme_moments(A, g0, C, x0, eta, T, order)
        s_d, s_c = float(m @ m + np.trace(P)), float(ms @ ms + np.trace(Ps))
        errs["mean"].append(float(np.max(np.abs(m - ms))))
        errs["second_moment"].append(abs(s_d - s_c))
        disc["second_moment"].append(s_d)
        cont["second_moment"].append(s_c)
    fits = {k: _safe_fit(etas, v) for k, v in errs.items()}
    zeros = {k: [0.0] * len(etas) for k in errs}
    expected = SME_EXPECTED[order]
    return WeakStudy(etas, T, order, "exact-gaussian", errs, zeros, fits, disc, cont, expected=expected,
                     verdict=order_verdict(expected, fits["mean"]), discretisation="exact Gaussian moments",
                     sme_eta=etas, optimizer=gd().cli_spec())


# ----------------------------------------------------------------------------------------------------------------
# slow-SDE study


@dataclasses.dataclass(frozen=True)
class SlowSDERow:
    r"""One learning rate: ``eta``, ``steps`` = round($T/\eta_{\rm eff}^2$), ``slow_time`` = steps $\eta_{\rm eff}^2$,
    ``hyper`` the hyperparameters used there (``beta`` for SGDM with ``alpha``), the ensemble ``mean`` of $x_k$, its
    Monte Carlo standard error ``stderr`` (per coordinate), ``error`` = $\|E x_k - E Y_T\|_2$, ``error_stderr`` the
    standard error of that difference ($\|({\rm se}_x^2 + {\rm se}_Y^2)^{1/2}\|_2$), ``diverged`` runs."""

    eta: float
    steps: int
    slow_time: float
    hyper: dict
    mean: Optional[list]
    stderr: Optional[list]
    error: Optional[float]
    error_stderr: Optional[float]
    diverged: int = 0

    def to_dict(self) -> dict:
        """The row as a dict for strict JSON: every field (eta, steps, hyperparameters, mean, standard error, error), with
        ``None`` for a missing value, never NaN."""
        return jsonable(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class SlowSDEStudy:
    r"""Result of :func:`slow_sde_study`: the slow-SDE ``target`` mean at slow time ``T`` and its standard error
    (zeros for the deterministic label-noise flow), how it was computed (``target_method``), $\Phi(\theta_0)$, one
    :class:`SlowSDERow` per learning rate, the fit of the errors in $\eta$, the ``expected`` order (a lower bound:
    ``expected_kind = "at least"``), ``verdict`` and ``warnings``."""

    T: float
    paths: int
    optimizer: str
    noise: str
    target_method: str
    phi_theta0: list
    target: list
    target_stderr: list
    rows: tuple
    fit: Optional[OrderFit]
    expected: float
    verdict: Verdict
    warnings: tuple = ()
    expected_kind: str = "at least"
    manifold_dim: Optional[int] = None

    @property
    def etas(self) -> tuple:
        """The learning rates, largest first."""
        return tuple(r.eta for r in self.rows)

    def to_dict(self) -> dict:
        """Strict-JSON study (``None`` never NaN)."""
        return jsonable({
            "T": self.T, "paths": self.paths, "optimizer": self.optimizer, "noise": self.noise,
            "target_method": self.target_method, "phi_theta0": self.phi_theta0, "slow_sde_mean": self.target,
            "slow_sde_stderr": self.target_stderr, "rows": [r.to_dict() for r in self.rows],
            "fit": None if self.fit is None else self.fit.to_dict(), "expected_order": self.expected,
            "expected_kind": self.expected_kind, "verdict": self.verdict.to_dict(), "warnings": list(self.warnings),
            "manifold_dim": self.manifold_dim,
        })


def _loss_name(problem_or_loss) -> str:
    """The name of a Problem (``problem.name``) or of a loss callable, for error messages."""
    name = getattr(problem_or_loss, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(problem_or_loss, "__name__", None) or type(problem_or_loss).__name__


def manifold_dimension(loss: Callable, y, *, rank_tol: float = 1e-6, name: Optional[str] = None) -> int:
    r"""$\dim\Gamma = d - {\rm rank}\,\nabla^2L(y)$ at a minimizer $y$ (e.g. $\Phi(\theta_0)$ from
    :func:`modeq.sde.phi`): on a manifold of minimizers the Hessian's kernel is the tangent space (Li, Wang & Arora,
    arXiv 2110.06914, Assumption 3.1 / Lemma C.1). Rank = number of eigenvalues above ``rank_tol`` times the largest.

    Raises :class:`~modeq._errors.RegimeError` naming the loss (``name``) when the rank is full, i.e. the minimizer
    is isolated: then there is no manifold and the slow SDE is trivial ($Y_t = \Phi(\theta_0)$)."""
    from .._errors import RegimeError

    check_positive("rank_tol", rank_tol)
    y = jnp.asarray(y, dtype=jnp.float64)
    H = np.asarray(jax.hessian(loss)(y))
    w = np.linalg.eigvalsh(0.5 * (H + H.T))
    top = float(np.max(np.abs(w)))
    rank = int(np.sum(np.abs(w) > rank_tol * top)) if top > 0 else 0
    d = int(y.shape[0])
    if rank == d:
        raise RegimeError(f"loss {name or 'loss'}: no manifold of minimizers: the slow SDE is trivial (the Hessian at "
                          f"the gradient-flow limit Phi(theta0) has full rank {d}, smallest eigenvalue "
                          f"{float(np.min(np.abs(w))):.3g} > {rank_tol:g} x largest {top:.3g}: an isolated minimizer)")
    return d - rank


def _lower_bound_verdict(expected: float, fit, *, resolved, diverged: bool, slack: float = 0.1,
                         tolerance: float = 0.2, max_width: float = 1.0) -> Verdict:
    """``order_verdict`` for diverged / unresolved runs; otherwise "consistent" unless the fitted order (its 95%
    interval, widened by ``slack``; with two learning rates the order itself, within ``tolerance``) lies below the
    guaranteed rate ``expected``."""
    v = order_verdict(expected, fit, resolved=resolved, diverged=diverged)
    if v.verdict not in (CONSISTENT, NOT_CONSISTENT) or v.measured is None:
        return v
    if v.interval is None:
        ok = v.measured >= expected - tolerance
        why = f"two step sizes, no interval: fitted {v.measured:.3g} {'>=' if ok else '<'} {expected:g} - {tolerance:g}"
    else:
        lo, hi = v.interval
        if hi - lo > max_width:  # a one-sided check passes any wide interval: say that it proves nothing
            return Verdict(expected, v.measured, v.interval, MC_TOO_LARGE,
                           f"the 95% interval [{lo:.3g}, {hi:.3g}] is wider than {max_width:g}: the Monte Carlo error "
                           "is too large to tell whether the error vanishes at the guaranteed rate (use more paths)")
        ok = hi + slack >= expected
        why = (f"the error vanishes {'at least' if ok else 'slower than'} eta^{expected:g}: 95% interval "
               f"[{lo:.3f}, {hi:.3f}] (+- {slack:g})")
    return Verdict(expected, v.measured, v.interval, CONSISTENT if ok else NOT_CONSISTENT, why)


def slow_sde_study(
    problem_or_loss,
    oracle,
    theta0=None,
    etas: Sequence[float] = (0.02, 0.01, 0.005),
    T: float = 1.0,
    *,
    paths: int = 16,
    optimizer: Any = None,
    alpha: Optional[float] = None,
    scale: float = 1.0,
    seed: int = 0,
    key=None,
    target_steps: int = 200,
    target_paths: Optional[int] = None,
    min_steps: int = 100,
    project: bool = True,
    rank_tol: float = 1e-6,
) -> SlowSDEStudy:
    r"""SGD/SGDM at small learning rates against the slow SDE on the manifold of minimizers at slow time $T$.

    Each learning rate $\eta$ runs ``paths`` independent runs of $N = \mathrm{round}(T/\eta_{\rm eff}^2)$ steps,
    $\eta_{\rm eff} = c\,\eta$ with $c$ = ``optimizer.sme_lr_factor()`` (1 for SGD and normalized SGDM, $1/(1-\beta)$
    for heavy ball), and compares their mean with the slow SDE's mean at $T$: for a
    :class:`~modeq.problems.LabelNoise` oracle the deterministic flow $\dot Y = -\frac c4P_\parallel\nabla{\rm tr}\,
    \nabla^2L$, $c = \delta^2/n$ (:func:`modeq.sde.label_noise_flow`, standard error 0); otherwise ``target_paths``
    (default ``max(paths, 64)``) paths of the projected-noise scheme with ``target_steps`` steps
    (:func:`modeq.sde.slow_sde`). ``alpha``: momentum $1-\beta = $ ``scale`` $\eta^\alpha$ at each $\eta$ (Wang et al.
    arXiv 2307.15196, Def. 4.1; the slow SDE is SGD's for $\alpha\in[0,2)$, Thm. 5.5), for optimizers in normalized
    heavy-ball form only. Expected order in $\eta$: at least 1/4 (see the module docstring). Any loss works whose
    minimizers form a manifold $\Gamma$: its dimension ``manifold_dim`` is found numerically
    (:func:`manifold_dimension` at $\Phi(\theta_0)$, eigenvalues above ``rank_tol`` times the largest).

    Raises ``ValueError`` naming ``T`` when the largest learning rate would run fewer than ``min_steps`` steps (too
    short to compare), naming ``optimizer`` when it has no SGD-type SDE, naming ``alpha`` when the schedule does not
    apply, :class:`~modeq._errors.RegimeError` naming the loss when $\nabla^2L(\Phi(\theta_0))$ has full rank (an
    isolated minimizer: no manifold, the slow SDE is trivial). Divergent runs give the verdict ``"diverged"``.
    """
    from ..problems._oracles import LabelNoise
    from ..sde import beta_for, endpoints, label_noise_flow, phi, slow_sde
    from ..sde._slow import _phi_raw

    loss, theta0 = _problem_parts(problem_or_loss, theta0)
    T = check_positive("T", T)
    paths = check_int_at_least("paths", paths, 2)
    min_steps = check_int_at_least("min_steps", min_steps, 1)
    optimizer = gd() if optimizer is None else optimizer
    effective_lr_factor(optimizer)  # raises for optimizers without an SGD-type SDE
    etas = tuple(float(e) for e in etas)
    if len(etas) < 2:
        raise ValueError(f"eta: need at least 2 learning rates, got {len(etas)}")
    for e in etas:
        check_positive("eta", e)
    if len(set(etas)) != len(etas):
        raise ValueError("eta: duplicate learning rates: each must appear once")
    etas = tuple(sorted(etas, reverse=True))
    if alpha is not None:
        form = optimizer.heavy_ball_form() if hasattr(optimizer, "heavy_ball_form") else None
        if form is None or form.nesterov or abs(form.step_reduction - form.beta) > 1e-15:
            raise ValueError("alpha: the schedule 1 - beta = scale * eta^alpha (Wang et al. 2023, Def. 4.1) applies to "
                             "normalized SGDM (--optimizer sgdm) only")

    def opt_at(e):
        return optimizer if alpha is None else optimizer.with_hyper(beta=beta_for(e, float(alpha), scale))

    plan = []
    for e in etas:
        o = opt_at(e)
        eff = effective_lr_factor(o) * e
        n = int(round(T / eff**2))
        plan.append((e, o, eff, n))
    if plan[0][3] < min_steps:
        raise ValueError(f"T: slow time T = {T:g} is only {plan[0][3]} step(s) at eta = {etas[0]:g} (need at least "
                         f"{min_steps} to leave the fast transient): use a longer T or smaller learning rates")
    key = jax.random.key(seed) if key is None else key
    y0 = np.asarray(phi(loss, theta0))
    dim_gamma = manifold_dimension(loss, y0, rank_tol=rank_tol, name=_loss_name(problem_or_loss))
    if isinstance(oracle, LabelNoise):
        c = float(oracle.delta) ** 2 / max(int(oracle.problem.n_examples), 1)
        target = np.asarray(label_noise_flow(loss, theta0, [0.0, T], c).ys[-1])
        target_se = np.zeros_like(target)
        method = f"label-noise flow (deterministic, c = delta^2/n = {c:g}), Dopri8"
        noise = "label"
    else:
        tp = max(paths, 64) if target_paths is None else check_int_at_least("target_paths", target_paths, 2)
        res = slow_sde(loss, oracle.covariance, theta0, T, target_steps, paths=tp, key=jax.random.fold_in(key, 0))
        ends = np.asarray(res.ys[:, -1])
        target, target_se = ends.mean(0), ends.std(0, ddof=1) / math.sqrt(tp)
        method = f"slow SDE, projected-noise scheme, {target_steps} steps, {tp} paths"
        noise = type(oracle).__name__
    rows, warns, diverged = [], [], False
    for i, (e, o, eff, n) in enumerate(plan):
        hyper = {k: float(v) for k, v in o.hyper.items()}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ends = np.asarray(endpoints(o, loss, theta0, n, h=e, oracle=oracle, paths=paths,
                                            key=jax.random.fold_in(key, i + 1)))
        except FloatingPointError as exc:
            diverged = True
            warns.append(f"eta={e:g}: diverged: {str(exc).splitlines()[0]}")
            rows.append(SlowSDERow(e, n, n * eff**2, hyper, None, None, None, None, paths))
            continue
        if project:  # Phi(x_k): removes the O(sqrt(eta)) normal fluctuations, keeps the limit (LWA 2022, Thm. 4.6)
            ends = np.asarray(jax.vmap(lambda x: _phi_raw(loss, x, jnp.asarray(200.0), 1e-12, 1e-14)[0])(
                jnp.asarray(ends)))
        mean, se = ends.mean(0), ends.std(0, ddof=1) / math.sqrt(paths)
        err = float(np.linalg.norm(mean - target))
        err_se = float(np.linalg.norm(np.hypot(se, target_se)))
        if err_se > err:
            warns.append(f"eta={e:g}: Monte Carlo standard error {err_se:.3g} exceeds the measured error {err:.3g}; "
                         "increase paths")
        if abs(n * eff**2 - T) > 1e-6 * T:
            warns.append(f"eta={e:g}: {n} steps reach slow time {n * eff**2:.6g}, not T = {T:g} (T/eta^2 is not an "
                         "integer)")
        rows.append(SlowSDERow(e, n, n * eff**2, hyper, mean.tolist(), se.tolist(), err, err_se))
    expected = SLOW_SDE_GUARANTEED_ORDER
    if diverged:
        fit = None
        verdict = Verdict(expected, None, None, DIVERGED,
                          "; ".join(w.split(": ", 1)[1] for w in warns if ": diverged: " in w) + ": nothing is fitted")
    else:
        fit = _safe_fit([r.eta for r in rows], [r.error for r in rows])
        resolved = [r.error > RESOLVE * r.error_stderr for r in rows]
        verdict = _lower_bound_verdict(expected, fit, resolved=resolved, diverged=False)
    spec = optimizer.cli_spec()
    if alpha is not None:  # beta varies with eta: name the schedule instead
        head, *params = spec.split(" --param ")
        spec = " --param ".join([head] + [q for q in params if not q.startswith("beta=")])
        spec += f" --param alpha={float(alpha):g} --param scale={float(scale):g}"
    return SlowSDEStudy(T, paths, spec, noise, method, y0.tolist(), target.tolist(),
                        target_se.tolist(), tuple(rows), fit, expected, verdict, tuple(warns), manifold_dim=dim_gamma)
