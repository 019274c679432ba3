r"""The central-flow study: GD at the edge of stability against its central flow, gradient flow and the principal flow.

GD's iterates oscillate at the edge, so the flow is compared with GD's *time averages*: a centred trapezoidal moving
average over ``window`` steps (weights $\frac12, 1, \dots, 1, \frac12$ over $\mathrm{window}+1$ iterates, divided by
``window``; for an even window it cancels a period-2 oscillation of constant amplitude exactly) of the iterates
$\bar\theta_n$, of the loss $\bar L_n = \mathrm{avg}\,L(\theta_m)$ and of the sharpness $\bar S_n$. The central flow
predicts $\bar L$ by $L(\theta(t)) + \frac12\sum_i\sigma_i^2 S_i$ and $\bar S$ by its pinned top eigenvalue
(Cohen, Damian, Talwalkar, Kolter & Lee, ICLR 2025, arXiv:2410.24206, section 3).

Error metrics, over the saved times $t_n = nh$ *on the edge*: from ``burn_in`` steps (default 300) after GD's
averaged sharpness first reaches $0.95\cdot 2/h$ to the end (``errors``; the same over every interior time
``window/2 <= n <= N - window/2`` in ``errors_all``). The burn-in excludes GD's first arrival, where its sharpness
overshoots $2/h$ while the oscillation grows from nothing (a delay the central flow does not model, as the paper
says), and the catapults that follow it:

* loss: $\max_n |\bar L_n - L^{\rm flow}_n| / \bar L_n$ (relative: the loss spans decades);
* sharpness: $\max_n |\bar S_n - S^{\rm flow}_n| / (2/h)$ (relative to the edge);
* iterates: $\max_n \|\bar\theta_n - \theta^{\rm flow}_n\| / \max_n \|\bar\theta_n - \theta_0\|$ (relative to the
  distance travelled).

Verdict: ``"consistent"`` when the central flow's loss and sharpness errors on the edge are within ``tolerance``
(default: loss 0.1, sharpness 0.02, see :data:`DEFAULT_TOLERANCE` for the justification), ``"not consistent"``
otherwise;
``"diverged"`` when GD diverged; ``"outside the asymptotic regime"`` when GD never reached the edge (its averaged
sharpness stays below $0.95\cdot 2/h$: then there is nothing beyond gradient flow to test) or reached it too late for
the burn-in.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import InputError
from .._validation import check_finite_array, check_positive
from ..flows._central import CentralFlowResult, central_flow, central_flow_solve
from ..optimizers import DivergenceWarning, gd, simulate
from ..problems import Problem
from ._verdict import (
    CONSISTENT,
    DIVERGED,
    NOT_CONSISTENT,
    OUTSIDE_REGIME,
    Verdict,
    jsonable,
)

#: Tolerances of the verdict. The central flow is a leading-order model (time-averaging over a period-2 oscillation
#: and a third-order expansion of the loss along it): the paper shows agreement in figures, without a rate in h. On the
#: edge-of-stability MLP (:func:`edge_mlp`, h = 0.2, 1000 steps) the measured errors on the edge are 0.046 (loss) and
#: 0.011 (sharpness), against 0.56 and 0.62 for gradient flow: each tolerance is about twice the measured error and
#: a fifth (loss) to a thirtieth (sharpness) of gradient flow's gap (docs/builders/central_flow.md).
DEFAULT_TOLERANCE = {"loss": 0.1, "sharpness": 0.02}


# =====================================================================================================================
# Problems
# =====================================================================================================================
def edge_mlp(n: int = 32, inputs: int = 4, width: int = 8, seed: int = 0) -> tuple:
    r"""The edge-of-stability problem: a tanh MLP with two hidden layers,
    $f(\theta, x) = w_3^\top\tanh(W_2\tanh(W_1x + b_1) + b_2) + b_3$ (``inputs`` -> ``width`` -> ``width`` -> 1,
    $d = 121$ by default), on $n$ Gaussian inputs with Gaussian random labels, $L = \frac1{2n}\sum_i (f_i - y_i)^2$,
    LeCun-normal start (the setting of the central-flow paper's MLP example, smaller). Trained by GD with $h = 0.2$
    ($2/h = 10$): the sharpness starts at 3.2, rises (progressive sharpening), overshoots to 13 at the first arrival
    (step ~100: GD's oscillation grows from nothing) and from step ~200 on hovers at the edge while the loss keeps
    falling. Returns ``(problem, h, T)`` with $T = 1000h$."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, inputs)))
    y = jnp.asarray(rng.standard_normal(n))
    shapes = [(width, inputs), (width,), (width, width), (width,), (width,), ()]
    sizes = [int(np.prod(s)) for s in shapes]

    def loss(theta):
        parts, i = [], 0
        for shape, size in zip(shapes, sizes):
            parts.append(theta[i : i + size].reshape(shape))
            i += size
        w1, b1, w2, b2, w3, b3 = parts
        out = jnp.tanh(jnp.tanh(x @ w1.T + b1) @ w2.T + b2) @ w3 + b3
        return 0.5 * jnp.mean((out - y) ** 2)

    theta0 = np.concatenate([
        rng.standard_normal(sizes[0]) / math.sqrt(inputs), np.zeros(width),
        rng.standard_normal(sizes[2]) / math.sqrt(width), np.zeros(width),
        rng.standard_normal(width) / math.sqrt(width), np.zeros(1),
    ])
    problem = Problem(name="edge_mlp", loss=loss, theta0=jnp.asarray(theta0),
                      description=f"tanh MLP {inputs}-{width}-{width}-1 on {n} random labels, d = {sum(sizes)}")
    return problem, 0.2, 1000 * 0.2


def closed_form_loss(theta, slope: float = 1.0, force: float = 1.0):
    r"""$L(x, z, y) = -c\,x + \frac12 (z - x)^2 + \frac12 a\,x\,y^2$ (``slope`` $= a$, ``force`` $= c$): a constant
    force $c$ drives $x$, and with it the sharpness, up. On $y = 0$ the Hessian is the $(x, z)$-block
    $\begin{pmatrix}1&-1\\-1&1\end{pmatrix}$ (eigenvalues 0, 2) plus $S = a x$ along $e_y$ (the top eigenvalue once
    $a x > 2$), with $\nabla S = (a, 0, 0)$. See :func:`closed_form_central_flow`."""
    x, z, y = theta[0], theta[1], theta[2]
    return -force * x + 0.5 * (z - x) ** 2 + 0.5 * slope * x * y**2


def closed_form_central_flow(ts, h: float, slope: float = 1.0, force: float = 1.0, start=(1.0, 1.0)):
    r"""The central flow of GD with step ``h`` on :func:`closed_form_loss` from $(x_0, z_0, 0)$, in closed form.

    Below the edge ($a x < 2/h$) $y = 0$, $u = z - x$ obeys $u' = -2u - c$ and $x' = c + u$:
    $u(t) = -\frac c2 + (u_0 + \frac c2)e^{-2t}$, $x(t) = x_0 + \frac c2 t + \frac12(u_0 + \frac c2)(1 - e^{-2t})$.
    The edge is reached at $t_e$ with $a\,x(t_e) = 2/h$ (a scalar root). On the edge $S = a x$ is pinned, so
    $x' = c + (z - x) - \frac12\sigma^2 a = 0$: $\sigma^2 = 2(c + z - x_*)/a$, $x = x_* = 2/(ha)$, and
    $z' = -(z - x_*)$: $z(t) = x_* + (z_e - x_*)e^{-(t - t_e)}$, so $\sigma^2 \to 2c/a$. It never leaves the edge
    ($\sigma^2 > 0$ since $z_e - x_* = u(t_e) > -c$). Returns ``(theta, sigma2, t_e)``, arrays over ``ts``.
    """
    import scipy.optimize

    x0, z0 = (float(v) for v in start)
    c = float(force)
    u0 = z0 - x0
    xs = 2.0 / (h * slope)

    def x_of(t):
        return x0 + 0.5 * c * t + 0.5 * (u0 + 0.5 * c) * (1.0 - math.exp(-2.0 * t))

    def u_of(t):
        return -0.5 * c + (u0 + 0.5 * c) * math.exp(-2.0 * t)

    if x0 >= xs or c <= 0 or u0 + c <= 0:
        raise InputError(f"start: need x0 < x* = 2/(h a) = {xs:g}, force > 0 and z0 - x0 > -force")
    hi = 1.0
    while x_of(hi) < xs:
        hi *= 2.0
    te = scipy.optimize.brentq(lambda t: x_of(t) - xs, 0.0, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    ze = xs + u_of(te)
    theta, sigma2 = [], []
    for t in np.asarray(ts, dtype=float):
        if t <= te:
            x = x_of(t)
            theta.append([x, x + u_of(t), 0.0])
            sigma2.append(0.0)
        else:
            z = xs + (ze - xs) * math.exp(-(t - te))
            theta.append([xs, z, 0.0])
            sigma2.append(2.0 * (c + z - xs) / slope)
    return np.asarray(theta), np.asarray(sigma2), te


def two_edge_loss(theta):
    r"""Two decoupled copies of :func:`closed_form_loss`, slopes $a = 1$ and $a = 2$:
    $\theta = (x_1, z_1, y_1, x_2, z_2, y_2)$. The $a = 2$ copy reaches the edge first, the other later; then two
    eigenvalues sit at $2/h$ (and the off-diagonal third derivatives $D^3L[e_{y_1}, e_{y_2}]$ vanish, so the diagonal
    complementarity problem is exact). The closed form is :func:`closed_form_central_flow` for each copy."""
    return closed_form_loss(theta[:3], 1.0) + closed_form_loss(theta[3:], 2.0)


@dataclasses.dataclass(frozen=True)
class EdgeProblem:
    """A loss with the defaults of a central-flow study: start ``theta0``, step ``h``, horizon ``T``, tracked ``k``."""

    name: str
    loss: Callable
    theta0: jax.Array
    h: float
    T: float
    k: int


#: the built-in problems of the central-flow study (``modeq central-flow --loss NAME``)
EDGE_PROBLEMS = ("edge_mlp", "closed_form", "two_edge")


def resolve_edge_problem(spec: str, theta0=None) -> EdgeProblem:
    r"""A problem for :func:`central_flow_study`: ``"edge_mlp"`` (:func:`edge_mlp`), ``"closed_form"``
    (:func:`closed_form_loss` from $(1, 1, 0.01)$: the small $y_0$ seeds GD's oscillation; $h = 0.2$, $T = 60$),
    ``"two_edge"`` (:func:`two_edge_loss`, $y_0 = 0.01$ in both copies, $k = 2$, same $h$, $T$), or any ``--loss``
    spec of
    :func:`modeq.problems.resolve_problem` ($h = 0.1$, $T = 10$, $k = 1$ by default). ``theta0`` overrides the
    start. The two constructed problems check the *flow* against its closed form; GD on them does not self-stabilise
    (the oscillation along $e_y$ is seeded only by $y_0$, which decays below the edge, and the constant force then
    carries GD past it), so their study verdict is ``"diverged"`` or ``"not consistent"``: by design, not a defect
    of the flow."""
    from ..problems import resolve_problem

    if spec == "edge_mlp":
        problem, h, T = edge_mlp()
        out = EdgeProblem("edge_mlp", problem.loss, problem.theta0, h, T, 1)
    elif spec == "closed_form":
        out = EdgeProblem("closed_form", closed_form_loss, jnp.array([1.0, 1.0, 0.01]), 0.2, 60.0, 1)
    elif spec == "two_edge":
        out = EdgeProblem("two_edge", two_edge_loss, jnp.array([1.0, 1.0, 0.01, 1.0, 1.0, 0.01]), 0.2, 60.0, 2)
    else:
        problem = resolve_problem(spec, theta0)
        return EdgeProblem(problem.name, problem.loss, problem.theta0, 0.1, 10.0, 1)
    if theta0 is not None:
        th = jnp.asarray(check_finite_array("theta0", theta0), dtype=jnp.float64)
        if th.shape != out.theta0.shape:
            raise InputError(f"theta0: {spec} needs {out.theta0.shape[0]} numbers, got {th.shape}")
        out = dataclasses.replace(out, theta0=th)
    return out


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
    principal_flow: dict | None
    errors: dict
    errors_all: dict
    settled_from: float
    burn_in: int
    verdict: Verdict
    edge_reached_at: float | None
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
            "errors": self.errors, "errors_all": self.errors_all, "settled_from": self.settled_from,
            "burn_in": self.burn_in, "verdict": self.verdict.to_dict(), "edge_reached_at": self.edge_reached_at,
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
    iterations: int | None = None,
    principal: bool = True,
    burn_in: int = 300,
    tolerance: dict | None = None,
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
    if not isinstance(burn_in, (int, np.integer)) or isinstance(burn_in, bool) or burn_in < 0:
        raise InputError(f"burn_in: steps after GD first reaches the edge must be an integer >= 0, got {burn_in!r}")
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
    top_one = jax.jit(lambda ths: jax.lax.map(lambda th: flow.eigenpairs(th)[0][0], ths, batch_size=16))

    def top(ths):  # batches of 16: memory 16 d^2 for the dense backend, not N d^2
        return top_one(ths)

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
                res = principal_flow_solve(gd(), loss, theta0, h=h, T=steps * h, rtol=1e-8, diagnostics=False,
                                          max_steps=20_000)
            pth = np.asarray(res.theta)
            pf = {"theta": pth, "loss": np.asarray(res.loss), "sharpness": np.asarray(top(jnp.asarray(pth)))}
        except Exception as exc:  # noqa: BLE001  (a failed contrast is a note, not a failed study)
            notes.append(f"principal flow skipped: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        seconds["principal_flow"] = time.perf_counter() - t0

    # --- errors and verdict ------------------------------------------------------------------------------------
    reached = np.nonzero(gd_rec["sharpness_avg"][sl] >= 0.95 * edge)[0]
    edge_at = float(ts[sl][reached[0]]) if reached.size else None
    start = half if edge_at is None else min(int(round(edge_at / h)) + int(burn_in), steps + 1 - half)
    settled = slice(start, steps + 1 - half)
    flows = {"central": (central.loss_avg, central.sharpness[:, 0], central.theta),
             "gradient_flow": (gf["loss"], gf["sharpness"], gf["theta"])}
    if pf is not None:
        flows["principal_flow"] = (pf["loss"], pf["sharpness"], pf["theta"])
    rec = (gd_rec["loss_avg"], gd_rec["sharpness_avg"], gd_rec["theta_avg"], np.asarray(theta0), edge)
    errors_all = {name: _errors(sl, *rec, *f) for name, f in flows.items()}
    errors = {name: _errors(settled, *rec, *f) for name, f in flows.items()} if start < steps + 1 - half else None
    if traj.diverged:
        verdict = Verdict(None, None, None, DIVERGED, f"GD diverged at step {int(traj.diverged_at)}")
    elif edge_at is None:
        verdict = Verdict(None, None, None, OUTSIDE_REGIME,
                          f"GD's averaged sharpness stays below 0.95 * 2/h = {0.95 * edge:.4g}: no edge of stability")
    elif errors is None:
        verdict = Verdict(None, None, None, OUTSIDE_REGIME,
                          f"GD reached the edge at t = {edge_at:g}, too late for a burn-in of {burn_in} steps: "
                          "increase T")
    else:
        ce, ge = errors["central"], errors["gradient_flow"]
        ok = ce["loss"] <= tol["loss"] and ce["sharpness"] <= tol["sharpness"]
        verdict = Verdict(
            None, None, None, CONSISTENT if ok else NOT_CONSISTENT,
            f"on the edge (t >= {ts[start]:g}): central flow vs GD's time averages, loss error {ce['loss']:.3g} "
            f"(tolerance {tol['loss']:g}), sharpness error {ce['sharpness']:.3g} (tolerance {tol['sharpness']:g}); "
            f"gradient flow {ge['loss']:.3g} / {ge['sharpness']:.3g}",
        )
    if errors is None:
        errors = {}
    return CentralFlowStudy(
        h=h, T=steps * h, k=central.sharpness.shape[1], window=int(window), tolerance=tol, ts=ts, gd=gd_rec,
        central=central, gradient_flow=gf, principal_flow=pf, errors=errors, errors_all=errors_all,
        settled_from=float(ts[start]), burn_in=int(burn_in), verdict=verdict, edge_reached_at=edge_at, notes=notes,
        seconds=seconds,
    )
