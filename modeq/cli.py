"""The ``modeq`` command line.

Every command prints one line ``error: ...`` and exits with code 2 on bad input. Long sweeps show progress bars
(on stderr; ``--quiet`` hides them); ``--json PATH`` writes the results, ``--plot PATH`` a PNG.
"""

from __future__ import annotations

import json
import math
import sys
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=False, help="Modified equations of optimization algorithms.")


class UsageError(Exception):
    pass


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _guard(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

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

    return Console(stderr=True, quiet=quiet)


def _progress(quiet: bool):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=_console(quiet), transient=True,
    )


def _write_json(path: Optional[str], payload: dict) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(payload, fh, indent=2)


def _jsonable_params(opt, h) -> dict:
    out = {"h": float(h)}
    out.update({k: float(v) for k, v in opt.hyper.items()})
    return out


@app.command("problems")
def problems_cmd():
    """List the built-in problems (use them as --loss NAME or NAME:key=value,...)."""
    import modeq  # noqa: F401
    from modeq.problems import PROBLEMS

    for name, ctor in PROBLEMS.items():
        p = ctor()
        extra = []
        if p.is_finite_sum:
            extra.append(f"n={p.n_examples}")
        if p.manifold is not None:
            extra.append("manifold known")
        typer.echo(f"{name:14s} d={p.dim:<6d} {p.description}" + (f" ({', '.join(extra)})" if extra else ""))


@app.command("run")
@_guard
def run_cmd(
    optimizer: str = typer.Option("hb", help="optimizer name (modeq.optimizers.OPTIMIZERS)"),
    param: List[str] = typer.Option([], "--param", help="hyperparameter k=v (h or learning_rate, beta, b1, ...)"),
    loss: str = typer.Option("product", help="built-in problem NAME[:k=v,...] or file.py:function or module:function"),
    steps: int = typer.Option(100, help="number of steps (>= 1)"),
    theta0: Optional[str] = typer.Option(None, help='initial point "a,b,..."'),
    m0: str = typer.Option("zero", help="initial momentum: zero or first"),
    json_path: Optional[str] = typer.Option(None, "--json", help="write results as JSON"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
):
    """Run one optimizer and print a short table (step, loss, grad norm)."""
    import jax.numpy as jnp
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
    theta, momenta, done = problem.theta0, m0, 0
    thetas, losses, norms, diverged = [np.asarray(theta)], [], [], -1
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


@app.command("compare")
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
    json_path: Optional[str] = typer.Option(None, "--json", help="write results as JSON"),
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


@app.command("coefficients")
@_guard
def coefficients_cmd(
    optimizer: str = typer.Option("gd", help="gd or hb"),
    order: int = typer.Option(4, help="largest tree size (order of the truncation)"),
    kind: str = typer.Option("modified", help="modified (ODE) or memoryless (HB map)"),
    latex: bool = typer.Option(False, "--latex", help="LaTeX output"),
    json_out: bool = typer.Option(False, "--json", help="JSON output"),
):
    """Exact coefficients of GD's / heavy-ball's modified equation (rationals, rational functions of beta)."""
    from modeq._validation import check_int_at_least
    from modeq.series import _symbolic as sym

    order = check_int_at_least("order", order, 1)
    name = optimizer.lower()
    if name == "gd":
        if kind != "modified":
            raise ValueError("kind: GD has only the modified equation (its map is theta - h g)")
        records = sym.gd_modified_coefficients(order)
    elif name in ("hb", "heavy_ball"):
        if kind == "modified":
            records = sym.hb_modified_coefficients(order)
        elif kind == "memoryless":
            records = sym.hb_memoryless_coefficients(order)
        else:
            raise ValueError(f"kind must be modified or memoryless, got {kind!r}")
    else:
        raise ValueError(f"optimizer must be gd or hb, got {optimizer!r}")
    if json_out:
        typer.echo(json.dumps(sym.coefficients_to_json(records), indent=2))
    else:
        typer.echo(sym.format_coefficients(records, latex=latex))


def main():  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
