"""The ``modeq`` command line.

Every command prints one line ``error: ...`` and exits with code 2 on bad input. Every command that can run longer
than a second shows a progress bar on stderr (``--quiet`` hides it). ``--json PATH`` writes the results to PATH;
``--json`` alone (or ``--json -``) prints them to stdout as one JSON document and nothing else (no table, no
progress bar), so that ``modeq CMD --json | jq`` works. ``--plot PATH`` writes a PNG.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import List, Optional

import typer
from typer.core import TyperCommand

app = typer.Typer(add_completion=False, no_args_is_help=False, help="Modified equations of optimization algorithms.")


JSON_HELP = "write results as JSON to PATH; --json alone (or --json -) prints only JSON to stdout"
_STDOUT_JSON: dict = {"active": False, "payload": None}  # set while a command runs with --json to stdout


class _Command(TyperCommand):
    """Lets ``--json`` be given without a value: ``--json`` at the end or before another option means ``--json -``."""

    def parse_args(self, ctx, args):
        args = list(args)
        out = []
        for i, arg in enumerate(args):
            out.append(arg)
            if arg == "--json" and (i + 1 == len(args) or args[i + 1].startswith("--")):
                out.append("-")
        return super().parse_args(ctx, out)


def _command(name: str):
    return app.command(name, cls=_Command)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _guard(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        to_stdout = kwargs.get("json_path") == "-"
        _STDOUT_JSON.update(active=to_stdout, payload=None)
        try:
            if not to_stdout:
                return fn(*args, **kwargs)
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # the human-readable table: stdout is JSON only
                fn(*args, **kwargs)
            typer.echo(json.dumps(_STDOUT_JSON["payload"], indent=2))
        except (ValueError, TypeError, FloatingPointError) as exc:
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        finally:
            _STDOUT_JSON.update(active=False, payload=None)

    return wrapper


def _theta0(text: Optional[str]):
    if text is None:
        return None
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"theta0: expected comma-separated numbers, got {text!r}") from None


def _floats(name: str, text: str) -> list:
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{name}: give at least one value")
    return values


def _console(quiet: bool):
    from rich.console import Console

    return Console(stderr=True, quiet=quiet or _STDOUT_JSON["active"])


def _progress(quiet: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=_console(quiet), transient=True,
    )


@contextlib.contextmanager
def _stages(quiet: bool, names: List[str]):
    """A progress bar over the stages of a command made of a few long calls: ``stage()`` starts the next one."""
    with _progress(quiet) as bar:
        task = bar.add_task(names[0], total=len(names))
        count = [0]

        def stage():
            if count[0] > 0:
                bar.update(task, completed=count[0])
            bar.update(task, description=names[min(count[0], len(names) - 1)])
            count[0] += 1

        yield stage
        bar.update(task, completed=len(names))


def _write_json(path: Optional[str], payload) -> None:
    if path == "-":
        _STDOUT_JSON["payload"] = payload
    elif path:
        with open(path, "w") as fh:
            json.dump(payload, fh, indent=2)


def _jsonable_params(opt, h) -> dict:
    out = {"h": float(h)}
    out.update({k: float(v) for k, v in opt.hyper.items()})
    return out


@_command("problems")
@_guard
def problems_cmd(
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
):
    """List the built-in problems (use them as --loss NAME or NAME:key=value,...)."""
    import modeq  # noqa: F401
    from modeq.problems import PROBLEMS

    rows = []
    with _progress(quiet) as bar:
        task = bar.add_task("building the problems", total=len(PROBLEMS))
        for name, ctor in PROBLEMS.items():
            p = ctor()
            rows.append({"name": name, "dim": int(p.dim), "description": p.description,
                         "n_examples": int(p.n_examples) if p.is_finite_sum else None,
                         "manifold_known": p.manifold is not None})
            bar.update(task, advance=1)
    for r in rows:
        extra = []
        if r["n_examples"] is not None:
            extra.append(f"n={r['n_examples']}")
        if r["manifold_known"]:
            extra.append("manifold known")
        typer.echo(f"{r['name']:14s} d={r['dim']:<6d} {r['description']}" + (f" ({', '.join(extra)})" if extra else ""))
    _write_json(json_path, {"problems": rows})


@_command("run")
@_guard
def run_cmd(
    optimizer: str = typer.Option("hb", help="optimizer name (modeq.optimizers.OPTIMIZERS)"),
    param: List[str] = typer.Option([], "--param", help="hyperparameter k=v (h or learning_rate, beta, b1, ...)"),
    loss: str = typer.Option("product", help="built-in problem NAME[:k=v,...] or file.py:function or module:function"),
    steps: int = typer.Option(100, help="number of steps (>= 1)"),
    theta0: Optional[str] = typer.Option(None, help='initial point "a,b,..."'),
    m0: str = typer.Option("zero", help="initial momentum: zero or first"),
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
):
    """Run one optimizer and print a short table (step, loss, grad norm)."""
    import numpy as np

    import modeq  # noqa: F401
    from modeq._params import build_optimizer, parse_params
    from modeq._validation import check_int_at_least, check_positive
    from modeq.optimizers import simulate
    from modeq.problems import resolve_problem

    steps = check_int_at_least("steps", steps, 1)
    opt, h = build_optimizer(optimizer, parse_params(param), default_h=0.01)
    h = check_positive("h", h)
    problem = resolve_problem(loss, _theta0(theta0))
    chunks = min(steps, 20)
    bounds = np.linspace(0, steps, chunks + 1).astype(int)
    theta, momenta = problem.theta0, m0
    thetas, losses, norms, diverged = [np.asarray(theta)], [], [], -1
    import warnings

    from modeq.optimizers import DivergenceWarning

    warnings.simplefilter("ignore", DivergenceWarning)  # reported below as one line
    with _progress(quiet) as bar:
        task = bar.add_task(f"{opt.name} on {problem.name}", total=steps)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b == a:
                continue
            traj = simulate(opt, problem.loss, theta, int(b - a), h=h, m0=momenta, start=int(a))
            losses.extend(np.asarray(traj.loss[:-1]).tolist())
            norms.extend(np.asarray(traj.grad_norm[:-1]).tolist())
            thetas.extend(np.asarray(traj.theta[1:]))
            theta, momenta = traj.theta[-1], tuple(m[-1] for m in traj.momenta)
            bar.update(task, advance=int(b - a))
            if traj.diverged:
                diverged = int(traj.diverged_at)
                break
    final = simulate(opt, problem.loss, theta, 1, h=h, m0=momenta, start=steps)
    losses.append(float(final.loss[0]))
    norms.append(float(final.grad_norm[0]))
    shown = sorted(set(np.unique(np.linspace(0, len(losses) - 1, 11).astype(int)).tolist()))
    typer.echo(f"{'step':>8s} {'loss':>16s} {'grad norm':>14s}")
    for n in shown:
        typer.echo(f"{n:8d} {losses[n]:16.8e} {norms[n]:14.6e}")
    if diverged >= 0:
        typer.echo(f"diverged at step {diverged}: iterates frozen at the last finite value")
    payload = {
        "optimizer": opt.name,
        "params": _jsonable_params(opt, h),
        "loss": loss,
        "steps": steps,
        "theta0": np.asarray(problem.theta0).tolist(),
        "theta_final": np.asarray(thetas[-1]).tolist(),
        "loss_history": losses,
        "grad_norm_history": norms,
        "diverged_at": diverged if diverged >= 0 else None,
    }
    _write_json(json_path, payload)


DEFAULT_COMPARE_H = "0.0004,0.0002,0.0001,0.00005"


@_command("compare")
@_guard
def compare_cmd(
    optimizer: str = typer.Option("hb", help="optimizer name"),
    param: List[str] = typer.Option([], "--param", help="hyperparameter k=v (default for hb: beta=0.9)"),
    loss: str = typer.Option("product", help="problem NAME[:k=v] or file.py:function"),
    theta0: Optional[str] = typer.Option(None, help='initial point "a,b,..."'),
    flow: List[str] = typer.Option(
        [], "--flow", help="gradient | modified:R | memoryless:R | principal | principal+third (repeat or comma-separate)"
    ),
    h: str = typer.Option(DEFAULT_COMPARE_H, "--h", help="step sizes, comma-separated"),
    T: float = typer.Option(0.5, "--T", help="time horizon (steps = T/h)"),
    init: str = typer.Option("manifold", help="momentum start: manifold (default) or rest"),
    burn_in: Optional[int] = typer.Option(None, help="steps discarded before comparing (init=rest)"),
    truncation: str = typer.Option("direct", help="modified-field truncation: direct (fast) or taylor (exact)"),
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help="write a PNG (errors vs h, trajectories)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
):
    """Compare modified flows with the discrete iterates over a sweep of step sizes; fit the convergence order."""
    import warnings

    import modeq  # noqa: F401
    import modeq.flows  # noqa: F401  (registers extra flows)
    from modeq._params import build_optimizer, parse_params
    from modeq.compare import AccuracyWarning, compare_flow, parse_flow
    from modeq.problems import resolve_problem

    params = parse_params(param)
    if optimizer in ("hb", "heavy_ball") and "beta" not in params:
        params["beta"] = 0.9
    opt, _ = build_optimizer(optimizer, params)
    problem = resolve_problem(loss, _theta0(theta0))
    flows = [f for item in (flow or ["modified:1,modified:2,modified:3"]) for f in item.split(",") if f.strip()]
    specs = [parse_flow(f) for f in flows]
    hs = sorted(_floats("h", h), reverse=True)
    results = []
    console = _console(quiet)
    with _progress(quiet) as bar, warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        for spec in specs:
            task = bar.add_task(f"{spec.label}", total=len(hs))
            res = compare_flow(
                opt, problem.loss, problem.theta0, spec, hs, T, init=init, burn_in=burn_in, truncation=truncation,
                progress=lambda i, n, task=task: bar.update(task, completed=i),
            )
            results.append(res)
    typer.echo(f"{opt.name} {_jsonable_params(opt, hs[0]) | {'h': None}} on {problem.name}, T = {T:g}, init = {init}")
    header = f"{'flow':>14s} {'R':>3s} " + " ".join(f"{'h=' + format(x, 'g'):>11s}" for x in hs)
    typer.echo(header + f" {'fitted':>8s} {'95% CI':>17s}")
    for res in results:
        row = f"{res.flow:>14s} {res.order:3d} " + " ".join(f"{e:11.3e}" for e in res.max_error)
        if res.fit is not None:
            lo, hi = res.fit.ci
            row += f" {res.fit.order:8.3f} [{lo:7.3f},{hi:7.3f}]"
        typer.echo(row)
    for note in sorted({n for r in results for n in r.warnings}):
        console.print(f"[yellow]warning:[/yellow] {note}")
    payload = {
        "optimizer": opt.name,
        "params": {k: float(v) for k, v in opt.hyper.items()},
        "loss": loss,
        "T": T,
        "init": init,
        "truncation": truncation,
        "results": [r.to_dict() for r in results],
    }
    _write_json(json_path, payload)
    if plot:
        from modeq.compare._plot import plot_study

        plot_study(results, plot, title=f"{opt.name} on {problem.name}")


@_command("coefficients")
@_guard
def coefficients_cmd(
    optimizer: str = typer.Option("gd", help="gd or hb"),
    order: int = typer.Option(4, help="largest tree size (order of the truncation)"),
    kind: str = typer.Option("modified", help="modified (ODE) or memoryless (HB map)"),
    latex: bool = typer.Option(False, "--latex", help="LaTeX output"),
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
):
    """Exact coefficients of GD's / heavy-ball's modified equation (rationals, rational functions of beta)."""
    from modeq._validation import check_int_at_least
    from modeq.series import _symbolic as sym

    order = check_int_at_least("order", order, 1)
    name = optimizer.lower()
    if name == "gd":
        if kind != "modified":
            raise ValueError("kind: GD has only the modified equation (its map is theta - h g)")
        compute = sym.gd_modified_coefficients
    elif name in ("hb", "heavy_ball"):
        if kind == "modified":
            compute = sym.hb_modified_coefficients
        elif kind == "memoryless":
            compute = sym.hb_memoryless_coefficients
        else:
            raise ValueError(f"kind must be modified or memoryless, got {kind!r}")
    else:
        raise ValueError(f"optimizer must be gd or hb, got {optimizer!r}")
    with _stages(quiet, [f"exact coefficients up to order {order}"]) as stage:
        stage()
        records = compute(order)
    typer.echo(sym.format_coefficients(records, latex=latex))
    _write_json(json_path, sym.coefficients_to_json(records))


@_command("principal-flow")
@_guard
def principal_flow_cmd(
    optimizer: str = typer.Option("gd", help="gd or hb"),
    param: List[str] = typer.Option([], "--param", help="beta=... for hb"),
    loss: str = typer.Option("product", help="problem NAME[:k=v] or file.py:function"),
    theta0: Optional[str] = typer.Option(None, help='initial point "a,b,..."'),
    h: float = typer.Option(0.05, "--h", help="step size"),
    T: float = typer.Option(2.0, "--T", help="time horizon (steps = T/h)"),
    backend: str = typer.Option("dense", help="dense (eigh of the Hessian) or lanczos"),
    k: Optional[int] = typer.Option(None, "--k", help="Lanczos: number of top eigenpairs"),
    third: bool = typer.Option(False, "--third", help="add the exact h^2 T[g,g] term of the modified equation (order 3)"),
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help="write a PNG (parameter space and loss vs time)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
):
    """Integrate the principal flow of GD / heavy-ball (real part at t = nh) and compare it with the iterates."""
    import numpy as np

    import modeq  # noqa: F401
    from modeq._params import build_optimizer, parse_params
    from modeq._validation import check_positive
    from modeq.flows import principal_flow_solve
    from modeq.optimizers import simulate
    from modeq.series import manifold_point

    name = optimizer.lower()
    if name not in ("gd", "hb", "heavy_ball"):
        raise ValueError(f"optimizer must be gd or hb, got {optimizer!r}")
    opt, _ = build_optimizer(name, parse_params(param))
    h = check_positive("h", h)
    from modeq.problems import resolve_problem

    problem = resolve_problem(loss, _theta0(theta0))
    import warnings

    from modeq.optimizers import DivergenceWarning

    with _stages(quiet, ["integrating the principal flow", "running the iterates"]) as stage:
        stage()
        res = principal_flow_solve(opt, problem.loss, problem.theta0, h=h, T=T, backend=backend, k=k, third=third)
        stage()
        steps = res.ts.shape[0] - 1
        m0 = "zero"
        if opt.momenta:
            m0 = manifold_point(opt, problem.loss, problem.theta0, h=h, sweeps=6)  # O(h^7); 10 (eager) took 20 s
            if not all(np.all(np.isfinite(np.asarray(m))) for m in m0):
                m0 = "zero"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DivergenceWarning)
            traj = simulate(opt, problem.loss, problem.theta0, steps, h=h, m0=m0)
    iterates = np.asarray(traj.theta)
    errors = np.linalg.norm(iterates - res.theta, axis=-1)
    diag = res.diagnostics
    typer.echo(f"principal flow of {opt.name} on {problem.name}, h = {h:g}, T = {res.ts[-1]:g}, backend = {backend}"
               + (" + third-derivative term" if third else ""))
    typer.echo(f"{'n':>6s} {'t':>9s} {'L(iterate)':>14s} {'L(flow)':>14s} {'|error|':>11s} {'h*lam_max':>10s} regime")
    for n in sorted(set(np.linspace(0, steps, 9).astype(int).tolist())):
        regime = diag.regime[n] if diag is not None else ""
        hl = diag.h_lambda_max[n] if diag is not None else float("nan")
        typer.echo(f"{n:6d} {res.ts[n]:9.4g} {float(traj.loss[n]):14.6e} {res.loss[n]:14.6e} {errors[n]:11.3e} "
                   f"{hl:10.4f} {regime}")
    if traj.diverged:
        typer.echo(f"iterates diverged at step {int(traj.diverged_at)}")
    if diag is not None and diag.crossings:
        typer.echo(f"edge of stability crossed at steps {diag.crossings}")
    payload = res.to_dict()
    payload.update({"loss_spec": loss, "iterate_error": errors.tolist(), "max_error": float(errors.max()),
                    "iterate_loss": np.asarray(traj.loss).tolist()})
    _write_json(json_path, payload)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        if problem.dim >= 2:
            axes[0].plot(iterates[:, 0], iterates[:, 1], "k.", label="iterates")
            axes[0].plot(res.theta[:, 0], res.theta[:, 1], "-", label="Re principal flow")
            axes[0].set_xlabel("theta[0]")
            axes[0].set_ylabel("theta[1]")
        else:
            axes[0].plot(res.ts, iterates[:, 0], "k.", label="iterates")
            axes[0].plot(res.ts, res.theta[:, 0], "-", label="Re principal flow")
        axes[0].legend()
        axes[1].semilogy(res.ts, np.asarray(traj.loss), "k.", label="L(iterates)")
        axes[1].semilogy(res.ts, res.loss, "-", label="L(Re flow)")
        axes[1].set_xlabel("t = n h")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        plt.close(fig)


@_command("regularizer")
@_guard
def regularizer_cmd(
    optimizer: str = typer.Option("hb", help="gd, hb, nesterov, sgdm, adam(w), nadam, rmsprop, lion, lion_k"),
    param: List[str] = typer.Option([], "--param", help="hyperparameter k=v (h, beta, b1, b2, ...)"),
    loss: str = typer.Option("product", help="problem NAME[:k=v] or file.py:function"),
    theta0: Optional[str] = typer.Option(None, help='initial point "a,b,..."'),
    h_opt: Optional[float] = typer.Option(None, "--h", help="step size (or --param h=...)"),
    steps: int = typer.Option(200, help="number of steps"),
    form: str = typer.Option("ode", help="ode (modified flow) or memoryless (modified map)"),
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help="write a PNG of every term along the run"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
):
    """The implicit regularizer: the modified loss L + named terms, and every term's value along a run."""
    import numpy as np

    import modeq  # noqa: F401
    from modeq._params import build_optimizer, parse_params
    from modeq.problems import resolve_problem
    from modeq.regularizers import regularizer_report

    opt, h = build_optimizer(optimizer, parse_params(param), default_h=h_opt if h_opt is not None else 0.01)
    problem = resolve_problem(loss, _theta0(theta0))
    with _stages(quiet, [f"{opt.name}: {steps} steps and every term of the modified loss"]) as stage:
        stage()
        report = regularizer_report(opt, problem.loss, problem.theta0, h=h, steps=steps, form=form)
    typer.echo(report.modified.describe())
    typer.echo(report.table(every=max(1, len(report.steps) // 10)))
    payload = {"optimizer": opt.name, "params": _jsonable_params(opt, h), "loss": loss, **report.to_dict()}
    _write_json(json_path, payload)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, values in report.values.items():
            v = np.abs(np.asarray(values, dtype=float))
            if np.any(v > 0):
                ax.semilogy(report.steps, v, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("|value|")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        plt.close(fig)


@_command("report")
@_guard
def report_cmd(
    loss: str = typer.Option("product", help="problem NAME[:k=v] or file.py:function (as in modeq compare)"),
    optimizer: str = typer.Option("gd", help="optimizer name (modeq.optimizers.OPTIMIZERS)"),
    param: List[str] = typer.Option([], "--param", help="hyperparameter k=v (default for hb: beta=0.9)"),
    theta0: Optional[str] = typer.Option(None, help='initial point "a,b,..."'),
    h: Optional[str] = typer.Option(None, "--h", help="step sizes of the convergence study, comma-separated "
                                    "(default 0.01,0.005,0.0025; momentum methods 0.0004,0.0002,0.0001)"),
    T: Optional[float] = typer.Option(None, "--T", help="time horizon of the convergence study, steps = T/h "
                                      "(default 0.5; momentum methods 0.1)"),
    flow: List[str] = typer.Option([], "--flow", help="flows to compare (default gradient, modified:2, modified:3; "
                                   "momentum methods: memoryless:3 instead of modified:3)"),
    init: str = typer.Option("manifold", help="momentum start of the convergence study: manifold or rest"),
    reg_steps: int = typer.Option(200, "--reg-steps", help="steps of the regularizer run (at the largest h)"),
    out: str = typer.Option("report.html", "--out", help="HTML file to write"),
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
):
    """One self-contained HTML page: convergence study, principal flow and implicit-regularizer terms."""
    import shlex
    import time

    import modeq  # noqa: F401
    import modeq.flows  # noqa: F401  (registers extra flows)
    from modeq._params import build_optimizer, parse_params
    from modeq._validation import check_int_at_least
    from modeq.problems import resolve_problem
    from modeq.report import run_report, write_html

    start = time.perf_counter()
    params = parse_params(param)
    if optimizer in ("hb", "heavy_ball") and "beta" not in params:
        params["beta"] = 0.9
    opt, _ = build_optimizer(optimizer, params)
    problem = resolve_problem(loss, _theta0(theta0))
    reg_steps = check_int_at_least("reg-steps", reg_steps, 1)
    hs = _floats("h", h) if h is not None else None
    flows = [f for item in flow for f in item.split(",") if f.strip()] or None
    with _progress(quiet) as bar:
        task = bar.add_task("report", total=1)
        report = run_report(opt, problem, loss_spec=loss, hs=hs, T=T, flows=flows, init=init,
                            regularizer_steps=reg_steps,
                            progress=lambda label, i, n: bar.update(task, description=label, completed=i, total=n))
    typed = sys.argv and sys.argv[0].endswith("modeq") and "report" in sys.argv  # not when called from Python
    command = shlex.join(["modeq", *sys.argv[1:]]) if typed else None
    write_html(report, out, command=command, elapsed=time.perf_counter() - start)
    typer.echo(f"{opt.name} on {problem.name}: wrote {out}")
    for res in report.convergence.result or []:
        if res.fit is not None:
            typer.echo(f"  {res.flow:>14s}: fitted order {res.fit.order:.3f}, 95% CI [{res.fit.ci[0]:.3f}, "
                       f"{res.fit.ci[1]:.3f}] (R = {res.order})")
    for sec in (report.convergence, report.principal, report.regularizer):
        if sec.skipped:
            typer.echo(f"  {sec.name}: {sec.skipped}")
        if sec.error:
            _console(False).print(f"[yellow]warning:[/yellow] {sec.name} failed: {sec.error}")
    _write_json(json_path, {"out": out, **report.to_dict()})


def _noise_oracle(kind: str, problem, params: dict):
    from modeq.problems import GaussianNGOS, LabelNoise, MiniBatch

    kind = kind.lower()
    if kind == "label":
        return LabelNoise(problem, float(params.get("delta", 0.5)))
    if kind == "isotropic":
        return GaussianNGOS(problem.loss, float(params.get("sigma", 0.5)))
    if kind == "gaussian":
        import jax

        return GaussianNGOS(problem.loss, float(params.get("sigma", 0.5)), covariance_fn=jax.hessian(problem.loss))
    if kind == "minibatch":
        return MiniBatch(problem, int(params.get("batch", 1)))
    raise ValueError(f"noise must be label, isotropic, gaussian (covariance = Hessian) or minibatch, got {kind!r}")


@_command("sde")
@_guard
def sde_cmd(
    optimizer: str = typer.Option("sgd", help="sgd or sgdm (normalized; --param beta=...)"),
    param: List[str] = typer.Option([], "--param", help="hyperparameter k=v (beta for sgdm)"),
    loss: str = typer.Option("quadratic:d=2", help="problem NAME[:k=v] or file.py:function"),
    theta0: Optional[str] = typer.Option(None, help='initial point "a,b,..."'),
    noise: str = typer.Option("isotropic", help="isotropic | gaussian | label | minibatch"),
    noise_param: List[str] = typer.Option([], "--noise-param", help="sigma=..., delta=..., batch=..."),
    eta: str = typer.Option("0.2,0.1,0.05", "--eta", help="learning rates, comma-separated"),
    T: float = typer.Option(1.0, "--T", help="time horizon (steps = T/eta)"),
    paths: int = typer.Option(2000, help="Monte Carlo paths (>= 2)"),
    order: int = typer.Option(1, help="SME order: 1 or 2"),
    seed: int = typer.Option(0, help="random seed"),
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help="write a PNG of the weak errors"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
):
    """Weak-error study: E phi(x_k) of SGD/SGDM vs E phi(X_{k eta}) of the SME (phi = |x|^2), with fitted weak order."""
    import jax

    import modeq  # noqa: F401
    from modeq._params import build_optimizer, parse_params
    from modeq.problems import resolve_problem
    from modeq.sde import weak_error_study

    name = optimizer.lower()
    if name not in ("sgd", "gd", "sgdm"):
        raise ValueError(f"optimizer must be sgd or sgdm, got {optimizer!r}")
    opt, _ = build_optimizer(name, parse_params(param))
    problem = resolve_problem(loss, _theta0(theta0))
    oracle = _noise_oracle(noise, problem, parse_params(noise_param))
    etas = sorted(_floats("eta", eta), reverse=True)
    with _console(quiet).status("simulating SGD and the SME ..."):
        study = weak_error_study(problem.loss, oracle, problem.theta0, etas, T, paths=paths, key=jax.random.key(seed),
                                 order=order, optimizer=opt)
    data = study.to_dict()
    typer.echo(f"{opt.name} on {problem.name}, noise = {noise}, SME order {order}, T = {T:g}, {paths} paths")
    typer.echo(f"{'eta':>10s} {'E phi(SGD)':>14s} {'E phi(SME)':>14s} {'|bias|':>11s} {'MC s.e.':>10s}")
    for i, e in enumerate(study.etas):
        typer.echo(f"{e:10g} {study.discrete['phi'][i]:14.6e} {study.continuous['phi'][i]:14.6e} "
                   f"{study.errors['phi'][i]:11.3e} {study.stderr['phi'][i]:10.2e}")
    fit = study.fits["phi"]
    if fit is not None:
        typer.echo(f"fitted weak order {fit.order:.3f}, 95% CI [{fit.ci[0]:.3f}, {fit.ci[1]:.3f}]")
    for w in study.warnings:
        typer.echo(f"warning: {w}")
    payload = {"optimizer": opt.name, "params": {k: float(v) for k, v in opt.hyper.items()}, "loss": loss,
               "noise": noise, "T": T, "paths": paths, "order": order, "results": data}
    _write_json(json_path, payload)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.errorbar(study.etas, study.errors["phi"], yerr=study.stderr["phi"], fmt="o", label="|bias| +- MC s.e.")
        if fit is not None:
            import numpy as np

            grid = np.geomspace(min(study.etas), max(study.etas), 20)
            ax.loglog(grid, fit.constant * grid**fit.order, "-", label=f"slope {fit.order:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eta")
        ax.set_ylabel("weak error")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        plt.close(fig)


@_command("slow-sde")
@_guard
def slow_sde_cmd(
    problem_name: Optional[str] = typer.Option(None, "--problem", help="built-in problem with a manifold (uv, ...)"),
    loss: Optional[str] = typer.Option(None, help="or a loss spec file.py:function"),
    theta0: Optional[str] = typer.Option(None, help='initial point "a,b,..."'),
    noise: str = typer.Option("label", help="label | isotropic | gaussian"),
    noise_param: List[str] = typer.Option([], "--noise-param", help="delta=... or sigma=..."),
    eta: str = typer.Option("0.02,0.01,0.005", "--eta", help="learning rates, comma-separated"),
    T: float = typer.Option(1.0, "--T", help="slow time horizon (steps = T/eta^2)"),
    paths: int = typer.Option(16, help="paths (>= 2)"),
    optimizer: str = typer.Option("sgd", help="sgd or sgdm"),
    param: List[str] = typer.Option([], "--param", help="sgdm: beta=... (fixed) or alpha=...[, scale=...] "
                                    "for 1 - beta = scale * eta^alpha"),
    seed: int = typer.Option(0, help="random seed"),
    json_path: Optional[str] = typer.Option(None, "--json", help=JSON_HELP),
    plot: Optional[str] = typer.Option(None, "--plot", help="write a PNG (endpoints on Gamma)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
):
    """Slow SDE on the manifold of minimizers (Li, Wang & Arora) vs SGD/SGDM at small eta, over slow time T = eta^2 k.

    Label noise: the deterministic Riemannian flow of tr Hess L; other noise: the projected-noise scheme."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import modeq  # noqa: F401
    from modeq._params import build_optimizer, parse_params
    from modeq.compare import fit_order
    from modeq.optimizers import sgdm
    from modeq.problems import resolve_problem
    from modeq.sde import beta_for, endpoints, label_noise_flow, phi, slow_sde

    spec = problem_name or loss or "uv"
    problem = resolve_problem(spec, _theta0(theta0))
    nparams = parse_params(noise_param)
    oracle = _noise_oracle(noise, problem, nparams)
    name = optimizer.lower()
    if name not in ("sgd", "gd", "sgdm"):
        raise ValueError(f"optimizer must be sgd or sgdm, got {optimizer!r}")
    oparams = parse_params(param)
    alpha = oparams.pop("alpha", None)  # sgdm with 1 - beta = scale * eta^alpha (Wang et al. 2023, Def. 4.1)
    scale = float(oparams.pop("scale", 1.0))
    if alpha is not None and (name != "sgdm" or "beta" in oparams):
        raise ValueError("param: alpha (1 - beta = scale * eta^alpha) applies to --optimizer sgdm without beta")
    opt, _ = build_optimizer(name, oparams)
    etas = sorted(_floats("eta", eta), reverse=True)
    paths_ = int(paths)
    if paths_ < 2:
        raise ValueError(f"paths must be an integer >= 2, got {paths}")
    key = jax.random.key(seed)
    y0 = phi(problem.loss, problem.theta0)
    if noise == "label":
        n = max(problem.n_examples, 1)
        c = float(nparams.get("delta", 0.5)) ** 2 / n
        target = np.asarray(label_noise_flow(problem.loss, problem.theta0, [0.0, T], c).ys[-1])
        target_std = np.zeros_like(target)
    else:
        res = slow_sde(problem.loss, oracle.covariance, problem.theta0, T, 200, paths=paths_, key=key)
        ends = np.asarray(res.ys[:, -1])
        target, target_std = ends.mean(0), ends.std(0, ddof=1) / np.sqrt(paths_)
    rows = []
    with _progress(quiet) as bar:
        task = bar.add_task("SGD at small eta", total=len(etas))
        for i, e in enumerate(etas):
            steps = int(round(T / e**2))
            opt_e = opt if alpha is None else sgdm(beta_for(e, float(alpha), scale))
            ends = np.asarray(endpoints(opt_e, problem.loss, problem.theta0, steps, h=e, oracle=oracle,
                                        paths=paths_, key=jax.random.fold_in(key, i + 1)))
            mean, se = ends.mean(0), ends.std(0, ddof=1) / np.sqrt(paths_)
            rows.append({"eta": e, "steps": steps, "beta": opt_e.hyper.get("beta"), "mean": mean.tolist(),
                         "stderr": se.tolist(), "error": float(np.linalg.norm(mean - target))})
            bar.update(task, completed=i + 1)
    typer.echo(f"slow SDE ({noise} noise) vs {opt.name} on {problem.name}: slow time T = {T:g}, {paths_} paths")
    typer.echo(f"Phi(theta0) = {np.asarray(y0).round(6).tolist()}, slow-SDE mean at T = {target.round(6).tolist()}")
    typer.echo(f"{'eta':>8s} {'steps':>8s} {'|E x_k - E Y_T|':>16s}  mean x_k")
    for r in rows:
        typer.echo(f"{r['eta']:8g} {r['steps']:8d} {r['error']:16.4e}  {np.round(r['mean'], 6).tolist()}")
    fit = fit_order([r["eta"] for r in rows], [r["error"] for r in rows]) if len(rows) >= 2 else None
    if fit is not None:
        typer.echo(f"fitted order in eta {fit.order:.3f}, 95% CI [{fit.ci[0]:.3f}, {fit.ci[1]:.3f}]")
    payload = {"problem": spec, "noise": noise, "optimizer": opt.name, "T": T, "paths": paths_,
               "phi_theta0": np.asarray(y0).tolist(), "slow_sde_mean": target.tolist(),
               "slow_sde_stderr": target_std.tolist(), "results": rows,
               "fitted_order": None if fit is None else fit.order,
               "fitted_order_ci": None if fit is None else list(fit.ci)}
    _write_json(json_path, payload)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 5))
        if problem.dim == 2 and problem.manifold is not None:
            u = np.linspace(-3, 3, 300)
            U, V = np.meshgrid(u, u)
            C = np.vectorize(lambda a, b: float(problem.manifold(jnp.array([a, b]))[0]))(U, V)
            ax.contour(U, V, C, levels=[0.0], colors="k", linewidths=0.8)
        for r in rows:
            ax.plot(*np.asarray(r["mean"])[:2], "o", label=f"SGD mean, eta = {r['eta']:g}")
        ax.plot(*target[:2], "r*", ms=12, label="slow SDE")
        ax.plot(*np.asarray(y0)[:2], "ks", label="Phi(theta0)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        plt.close(fig)


def main():  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
