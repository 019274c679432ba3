r"""The central-flow study: GD at the edge of stability against its central flow, gradient flow and the principal flow.

GD's iterates oscillate at the edge, so the flow is compared with GD's *time averages*: a centred trapezoidal moving
average over ``window`` steps (weights $\frac12, 1, \dots, 1, \frac12$ over $\mathrm{window}+1$ iterates, divided by
``window``; for an even window it cancels a period-2 oscillation of constant amplitude exactly) of the iterates
$\bar\theta_n$, of the loss $\bar L_n = \mathrm{avg}\,L(\theta_m)$ and of the sharpness $\bar S_n$. The central flow
predicts $\bar L$ by $L(\theta(t)) + \frac12\sum_i\sigma_i^2 S_i$ and $\bar S$ by its pinned top eigenvalue
(Cohen, Damian, Talwalkar, Kolter & Lee, ICLR 2025, arXiv:2410.24206, section 3).

Error metrics, over the interior saved times $t_n = nh$ (``window/2 <= n <= N - window/2``):

* loss: $\max_n |\bar L_n - L^{\rm flow}_n| / \bar L_n$ (relative: the loss spans decades);
* sharpness: $\max_n |\bar S_n - S^{\rm flow}_n| / (2/h)$ (relative to the edge);
* iterates: $\max_n \|\bar\theta_n - \theta^{\rm flow}_n\| / \max_n \|\bar\theta_n - \theta_0\|$ (relative to the
  distance travelled).

Verdict: ``"consistent"`` when the central flow's loss and sharpness errors are within ``tolerance`` (default: loss
0.1, sharpness 0.02, see :data:`DEFAULT_TOLERANCE` for the justification), ``"not consistent"`` otherwise;
``"diverged"`` when GD diverged; ``"outside the asymptotic regime"`` when GD never reached the edge (its averaged
sharpness stays below $0.95\cdot 2/h$: then there is nothing beyond gradient flow to test).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import InputError
from .._validation import check_finite_array, check_positive
from ..flows._central import CentralFlowResult, central_flow, central_flow_solve
from ..optimizers import DivergenceWarning, gd, simulate
from ..problems import Problem, mlp
from ._verdict import CONSISTENT, DIVERGED, NOT_CONSISTENT, OUTSIDE_REGIME, Verdict, jsonable

#: Tolerances of the verdict. The central flow is a leading-order model (time-averaging over a period-2 oscillation
#: and a third-order expansion of the loss along it): the paper shows agreement in figures, without a rate. The
#: measured errors on the edge-of-stability MLP (``edge_mlp``, h = 0.74) are about 0.02 (loss) and 0.005
#: (sharpness): the tolerance leaves a margin of about 4-5 while staying far below the gaps of gradient flow, which
#: misses the loss by a factor (the oscillation's $\frac12\sigma^2 S$) and the sharpness by its overshoot past 2/h.
DEFAULT_TOLERANCE = {"loss": 0.1, "sharpness": 0.02}


# =====================================================================================================================
# Problems
# =====================================================================================================================
def edge_mlp() -> tuple:
    r"""The edge-of-stability problem: the built-in 2-layer tanh MLP (``mlp(d=121, n=32, inputs=8)``, width 12,
    $d = 121$) trained by GD with $h = 0.74$ ($2/h = 2.70$). Its sharpness starts at 2.23, rises under GD (progressive
    sharpening) and reaches $2/h$ near $t = 100$; then GD oscillates and its sharpness hovers at the edge. Returns
    ``(problem, h, T)`` with $T = 800h$."""
    return mlp(d=121, n=32, inputs=8, seed=0), 0.74, 800 * 0.74


def closed_form_loss(theta, slope: float = 1.0):
    r"""$L(x, z, y) = x(z-1) + \frac12 z^2 + \frac12 a\,x\,y^2$ (``slope`` $= a$): on $y = 0$ the top Hessian
    eigenvalue is $S = a x$ (eigenvector $e_y$, once $a x > (1+\sqrt5)/2$), with $\nabla S = (a, 0, 0)$. See
    :func:`closed_form_central_flow`."""
    x, z, y = theta[0], theta[1], theta[2]
    return x * (z - 1.0) + 0.5 * z**2 + 0.5 * slope * x * y**2


def closed_form_central_flow(ts, h: float, slope: float = 1.0, start=(1.0, 0.0)):
    r"""The central flow of GD with step ``h`` on :func:`closed_form_loss` from $(x_0, z_0, 0)$, in closed form.

    Below the edge ($a x < 2/h$) $y = 0$ and $(x, z)' = (1 - z, -(x + z))$: $v(t) = v_* + e^{At}(v_0 - v_*)$ with
    $A = \begin{pmatrix}0&-1\\-1&-1\end{pmatrix}$, $v_* = (-1, 1)$. The edge is reached at $t_e$ with
    $a\,x(t_e) = 2/h$ (a scalar root). On the edge $S = a x$ is pinned, so $x' = -(z - 1) - \frac12\sigma^2 a = 0$:
    $\sigma^2 = 2(1 - z)/a$, $x = x_* = 2/(ha)$ and $z' = -(x_* + z)$:
    $z(t) = -x_* + (z_e + x_*)e^{-(t - t_e)}$. It stays on the edge while $z < 1$ (always, since $z \to -x_*$).
    Returns ``(theta, sigma2, t_e)``: arrays over ``ts``.
    """
    import scipy.linalg
    import scipy.optimize

    A = np.array([[0.0, -1.0], [-1.0, -1.0]])
    vs = np.array([-1.0, 1.0])
    v0 = np.asarray(start, dtype=float)
    xs = 2.0 / (h * slope)

    def gf(t):
        return vs + scipy.linalg.expm(A * t) @ (v0 - vs)

    if v0[0] >= xs:
        raise InputError(f"start: x0 = {v0[0]:g} must be below the edge x* = 2/(h a) = {xs:g}")
    hi = 1.0
    while gf(hi)[0] < xs:
        hi *= 2.0
        if hi > 1e4:
            raise InputError("closed form: the edge is never reached from this start")
    te = scipy.optimize.brentq(lambda t: gf(t)[0] - xs, 0.0, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    ze = gf(te)[1]
    theta, sigma2 = [], []
    for t in np.asarray(ts, dtype=float):
        if t <= te:
            x, z = gf(t)
            theta.append([x, z, 0.0])
            sigma2.append(0.0)
        else:
            z = -xs + (ze + xs) * math.exp(-(t - te))
            theta.append([xs, z, 0.0])
            sigma2.append(2.0 * (1.0 - z) / slope)
    return np.asarray(theta), np.asarray(sigma2), te


def two_edge_loss(theta):
    r"""Two decoupled copies of :func:`closed_form_loss`, slopes $a = 1$ and $a = 2$:
    $\theta = (x_1, z_1, y_1, x_2, z_2, y_2)$. The $a = 2$ copy reaches the edge first, the other later; then two
    eigenvalues sit at $2/h$ (and the off-diagonal third derivatives $D^3L[e_{y_1}, e_{y_2}]$ vanish, so the diagonal
    complementarity problem is exact). The closed form is :func:`closed_form_central_flow` for each copy."""
    return closed_form_loss(theta[:3], 1.0) + closed_form_loss(theta[3:], 2.0)


# =====================================================================================================================
# The study
# =====================================================================================================================
def time_average(values, window: int):
    r"""Centred trapezoidal moving average over ``window`` steps (even, >= 2) along axis 0: weights
    $\frac12, 1, \dots, 1, \frac12$ over $\mathrm{window}+1$ entries, divided by ``window``. The first and last
    ``window/2`` entries are NaN (not enough neighbours)."""
    v = np.asarray(values, dtype=float)
    half = window // 2
    w = np.ones(window + 1)
    w[0] = w[-1] = 0.5
    w /= window
    n = v.shape[0]
    out = np.full_like(v, np.nan)
    if n > window:
        out[half : n - half] = sum(w[j] * v[j : n - window + j] for j in range(window + 1))  # window + 1 shifts
    return out


@dataclasses.dataclass
class CentralFlowStudy:
    r"""The result of :func:`central_flow_study`.

    ``ts`` ($t_n = nh$); ``gd`` (``loss``, ``loss_avg``, ``sharpness``, ``sharpness_avg``, ``theta_avg``), ``central``
    (a :class:`~modeq.flows._central.CentralFlowResult`), ``gradient_flow`` and ``principal_flow`` (``theta``,
    ``loss``, ``sharpness``; ``None`` if skipped); ``errors[name] = {"loss", "sharpness", "theta"}`` for ``"central"``,
    ``"gradient_flow"``, ``"principal_flow"``; ``verdict``; ``notes``; ``seconds`` per part.
    """

    h: float
    T: float
    k: int
    window: int
    tolerance: dict
    ts: np.ndarray
    gd: dict
    central: CentralFlowResult
    gradient_flow: dict
    principal_flow: Optional[dict]
    errors: dict
    verdict: Verdict
    edge_reached_at: Optional[float]
    notes: list
    seconds: dict

    def to_dict(self) -> dict:
        """Strict-JSON record (``None``, never NaN)."""
        return jsonable({
            "h": self.h, "edge": 2.0 / self.h, "T": self.T, "k": self.k, "window": self.window,
            "tolerance": self.tolerance, "t": self.ts,
            "gd": {k: v for k, v in self.gd.items() if k != "theta_avg"},
            "central": {k: v for k, v in self.central.to_dict().items() if k != "theta"},
            "gradient_flow": None if self.gradient_flow is None
            else {k: v for k, v in self.gradient_flow.items() if k != "theta"},
            "principal_flow": None if self.principal_flow is None
            else {k: v for k, v in self.principal_flow.items() if k != "theta"},
            "errors": self.errors, "verdict": self.verdict.to_dict(), "edge_reached_at": self.edge_reached_at,
            "notes": self.notes, "seconds": self.seconds,
        })


def _errors(sl, gd_loss, gd_sharp, gd_theta, theta0, edge, loss, sharp, theta):
    travelled = np.nanmax(np.linalg.norm(gd_theta[sl] - theta0, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "loss": float(np.nanmax(np.abs(gd_loss[sl] - loss[sl]) / np.abs(gd_loss[sl]))),
            "sharpness": float(np.nanmax(np.abs(gd_sharp[sl] - sharp[sl])) / edge),
            "theta": float(np.nanmax(np.linalg.norm(gd_theta[sl] - theta[sl], axis=-1)) / max(travelled, 1e-300)),
        }


def central_flow_study(
    loss: Callable,
    theta0,
    *,
    h,
    T,
    k: int = 1,
    window: int = 8,
    substeps: int = 4,
    method: str = "rk4",
    backend: str = "dense",
    iterations: Optional[int] = None,
    principal: bool = True,
    tolerance: Optional[dict] = None,
) -> CentralFlowStudy:
    r"""GD with step ``h`` for $N = \mathrm{round}(T/h)$ steps from ``theta0``, its time averages (module docstring)
    against the central flow (:func:`modeq.flows._central.central_flow_solve` with ``k``, ``substeps``, ``method``,
    ``backend``, ``iterations``), gradient flow (Dopri8, rtol 1e-10) and, with ``principal=True``, the principal flow
    of GD (:func:`modeq.flows.principal_flow_solve`, dense backend; skipped with a note when it fails or when
    $d > 200$). Sharpness of GD and of the comparison flows: the top eigenvalue by the same backend. Returns a
    :class:`CentralFlowStudy` with the error metrics and the verdict (module docstring).
    """
    from ..flows import gradient_field, principal_flow_solve
    from ..solve import solve_ode

    h = check_positive("h", h)
    T = check_positive("T", T)
    theta0 = jnp.asarray(check_finite_array("theta0", theta0), dtype=jnp.float64)
    if theta0.ndim != 1:
        raise InputError(f"theta0 must be a flat vector, got shape {tuple(theta0.shape)}")
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 2 or window % 2:
        raise InputError(f"window: the averaging window must be an even integer >= 2 (steps), got {window!r}")
    steps = int(round(T / h))
    if steps < 2 * window:
        raise InputError(f"T: need at least 2*window = {2 * window} steps of GD, got T/h = {T / h:g}")
    tol = dict(DEFAULT_TOLERANCE)
    if tolerance:
        unknown = set(tolerance) - set(tol)
        if unknown:
            raise InputError(f"tolerance: keys must be among {sorted(tol)}, got {sorted(unknown)}")
        tol.update({key: check_positive(f"tolerance[{key}]", v) for key, v in tolerance.items()})
    edge = 2.0 / h
    notes: list = []
    seconds: dict = {}

    # --- central flow (also validates k, backend, iterations, substeps, method) -------------------------------
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        central = central_flow_solve(gd(), loss, theta0, h=h, T=steps * h, k=k, backend=backend,
                                     iterations=iterations, substeps=substeps, method=method)
    notes.extend(f"central flow: {w.message}" for w in caught)
    seconds["central"] = time.perf_counter() - t0
    flow = central_flow(gd(), loss, h=h, k=1, backend=backend,
                        iterations=None if backend == "dense" else (iterations or min(theta0.shape[0], 30)))
    top = jax.jit(jax.vmap(lambda th: flow.eigenpairs(th)[0][0]))

    # --- GD ----------------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        traj = simulate(gd(), loss, theta0, steps, h=h)
    thetas = np.asarray(traj.theta)
    gd_loss = np.asarray(traj.loss)
    gd_sharp = np.asarray(top(jnp.asarray(thetas)))
    seconds["gd"] = time.perf_counter() - t0
    gd_rec = {
        "loss": gd_loss, "loss_avg": time_average(gd_loss, window), "sharpness": gd_sharp,
        "sharpness_avg": time_average(gd_sharp, window), "theta_avg": time_average(thetas, window),
    }
    ts = np.arange(steps + 1) * h
    half = window // 2
    sl = slice(half, steps + 1 - half)

    # --- gradient flow -----------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    sol = solve_ode(gradient_field(gd(), loss), theta0, ts, rtol=1e-10)
    gf_theta = np.asarray(sol.ys)
    gf = {"theta": gf_theta, "loss": np.asarray(jax.vmap(loss)(jnp.asarray(gf_theta))),
          "sharpness": np.asarray(top(jnp.asarray(gf_theta)))}
    seconds["gradient_flow"] = time.perf_counter() - t0

    # --- principal flow ----------------------------------------------------------------------------------------
    pf = None
    if principal and theta0.shape[0] > 200:
        notes.append(f"principal flow skipped: d = {theta0.shape[0]} > 200 (dense backend too costly)")
    elif principal:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = principal_flow_solve(gd(), loss, theta0, h=h, T=steps * h, rtol=1e-8, diagnostics=False)
            pth = np.asarray(res.theta)
            pf = {"theta": pth, "loss": np.asarray(res.loss), "sharpness": np.asarray(top(jnp.asarray(pth)))}
        except Exception as exc:  # noqa: BLE001  (a failed contrast is a note, not a failed study)
            notes.append(f"principal flow skipped: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        seconds["principal_flow"] = time.perf_counter() - t0

    # --- errors and verdict ------------------------------------------------------------------------------------
    args = (sl, gd_rec["loss_avg"], gd_rec["sharpness_avg"], gd_rec["theta_avg"], np.asarray(theta0), edge)
    errors = {"central": _errors(*args, central.loss_avg, central.sharpness[:, 0], central.theta),
              "gradient_flow": _errors(*args, gf["loss"], gf["sharpness"], gf["theta"])}
    if pf is not None:
        errors["principal_flow"] = _errors(*args, pf["loss"], pf["sharpness"], pf["theta"])
    reached = np.nonzero(gd_rec["sharpness_avg"][sl] >= 0.95 * edge)[0]
    edge_at = float(ts[sl][reached[0]]) if reached.size else None
    ce = errors["central"]
    if traj.diverged:
        verdict = Verdict(None, None, None, DIVERGED, f"GD diverged at step {int(traj.diverged_at)}")
    elif edge_at is None:
        verdict = Verdict(None, None, None, OUTSIDE_REGIME,
                          f"GD's averaged sharpness stays below 0.95 * 2/h = {0.95 * edge:.4g}: no edge of stability")
    else:
        ok = ce["loss"] <= tol["loss"] and ce["sharpness"] <= tol["sharpness"]
        ge = errors["gradient_flow"]
        verdict = Verdict(
            None, None, None, CONSISTENT if ok else NOT_CONSISTENT,
            f"central flow vs GD's time averages: loss error {ce['loss']:.3g} (tolerance {tol['loss']:g}), sharpness "
            f"error {ce['sharpness']:.3g} (tolerance {tol['sharpness']:g}); gradient flow: {ge['loss']:.3g} / "
            f"{ge['sharpness']:.3g}",
        )
    return CentralFlowStudy(
        h=h, T=steps * h, k=central.sharpness.shape[1], window=int(window), tolerance=tol, ts=ts, gd=gd_rec,
        central=central, gradient_flow=gf, principal_flow=pf, errors=errors, verdict=verdict, edge_reached_at=edge_at,
        notes=notes, seconds=seconds,
    )
