"""``modeq central-flow``: GD at the edge of stability against its central flow (parsing and rendering only).

Registered in :mod:`modeq.cli` as ``_command("central-flow")(_guard(central_flow_cmd))``; the science is
:func:`modeq.studies._central.central_flow_study`.
"""

from __future__ import annotations

import typer

# the text of ``modeq.cli.JSON_HELP`` (not imported: modeq.cli imports this module to register the command)
JSON_HELP = "write results as JSON to PATH; --json alone (or --json -) prints only JSON to stdout"


def central_flow_cmd(
    optimizer: str = typer.Option("gd", help="gd (the central flow of heavy-ball is open)"),
    param: list[str] = typer.Option([], "--param", help="hyperparameter k=v (none for gd)"),
    loss: str = typer.Option(
        "edge_mlp", help="edge_mlp, closed_form, two_edge, a problem NAME[:k=v] or file.py:function"),
    theta0: str | None = typer.Option(None, help='initial point "a,b,..."'),
    h: float | None = typer.Option(None, "--h", help="step size (default: the problem's, 0.1 otherwise)"),
    T: float | None = typer.Option(None, "--T", help="time horizon t = n h (default: the problem's, 10 otherwise)"),
    k: int | None = typer.Option(None, "--k", help="tracked top eigenvalues (1..8; default: the problem's, 1)"),
    window: int = typer.Option(8, "--window", help="GD time-averaging window in steps (even)"),
    substeps: int = typer.Option(4, "--substeps", help="solver steps per GD step"),
    method: str = typer.Option("rk4", help="rk4 or euler (the paper's scheme)"),
    backend: str = typer.Option("dense", help="dense (eigh of the Hessian) or lanczos"),
    iterations: int | None = typer.Option(None, "--iterations", help="Lanczos steps"),
    principal: bool = typer.Option(
        False, "--principal/--no-principal",
        help="also integrate the principal flow (slow past the edge: about 3.5 min for edge_mlp on 2 cores)"),
    burn_in: int = typer.Option(300, "--burn-in", help="steps after GD reaches the edge before errors are measured"),
    json_path: str | None = typer.Option(None, "--json", help=JSON_HELP),
    plot: str | None = typer.Option(None, "--plot", help="write a PNG (loss and sharpness vs time)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress output"),
):
    """The central flow of GD (Cohen et al., ICLR 2025) against GD's time averages, gradient flow and the principal
    flow: loss and sharpness over time, errors and a verdict."""
    import numpy as np

    import modeq  # noqa: F401
    from modeq._params import build_optimizer, parse_params
    from modeq.cli import _stages, _theta0, _write_json
    from modeq.flows._central import central_flow
    from modeq.studies._central import central_flow_study, resolve_edge_problem

    opt, _ = build_optimizer(optimizer.lower(), parse_params(param))
    central_flow(opt, lambda th: th @ th, h=1.0)  # refuses anything but GD, with the reason
    problem = resolve_edge_problem(loss, _theta0(theta0))
    h = problem.h if h is None else h
    T = problem.T if T is None else T
    k = problem.k if k is None else k
    with _stages(quiet, ["GD, its central flow, gradient flow and the principal flow"]) as stage:
        stage()
        study = central_flow_study(problem.loss, problem.theta0, h=h, T=T, k=k, window=window, substeps=substeps,
                                   method=method, backend=backend, iterations=iterations, principal=principal,
                                   burn_in=burn_in)
    c, g = study.central, study.gd
    steps = study.ts.shape[0] - 1
    typer.echo(f"central flow of gd on {problem.name}, h = {study.h:g} (edge 2/h = {2 / study.h:g}), T = {study.T:g}, "
               f"k = {study.k}, window = {study.window} steps, {c.method} x {c.substeps} substeps")
    typer.echo(f"{'n':>6s} {'t':>9s} {'L GD avg':>12s} {'L flow':>12s} {'L GF':>12s} {'S GD avg':>9s} {'S flow':>9s} "
               f"{'S GF':>9s} active")
    def cell(x, width, fmt):  # "-" where a value is missing (no averaging window) or GD has blown up
        x = float(x)
        return f"{'-':>{width}s}" if not np.isfinite(x) or abs(x) > 1e100 else format(x, f"{width}{fmt}")

    for n in sorted(set(np.linspace(0, steps, 11).astype(int).tolist())):
        typer.echo(f"{n:6d} {study.ts[n]:9.4g} {cell(g['loss_avg'][n], 12, '.5e')} {cell(c.loss_avg[n], 12, '.5e')} "
                   f"{cell(study.gradient_flow['loss'][n], 12, '.5e')} {cell(g['sharpness_avg'][n], 9, '.4f')} "
                   f"{cell(c.sharpness[n, 0], 9, '.4f')} {cell(study.gradient_flow['sharpness'][n], 9, '.4f')} "
                   f"{c.active_set(n)}")
    typer.echo("errors against GD's time averages (loss: max relative; sharpness: max / (2/h); theta: max / distance "
               "travelled)")
    for label, errs in ((f"on the edge, t >= {study.settled_from:g}", study.errors), ("whole run", study.errors_all)):
        typer.echo(f" {label}:")
        for name, e in errs.items():
            typer.echo(f"  {name:15s} loss {cell(e['loss'], 9, '.3e')}  sharpness {cell(e['sharpness'], 9, '.3e')}  "
                       f"theta {cell(e['theta'], 9, '.3e')}")
    if c.entered or c.left:
        typer.echo(f"edge entered at (t, i) {c.entered}; left at {c.left}")
    for note in study.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"verdict: {study.verdict.verdict} ({study.verdict.reason})")
    payload = study.to_dict()
    payload["loss_spec"] = loss
    _write_json(json_path, payload)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        axes[0].semilogy(study.ts, g["loss"], color="0.8", label="GD")
        axes[0].semilogy(study.ts, g["loss_avg"], "k-", label="GD time average")
        axes[0].semilogy(study.ts, c.loss_avg, "C3-", label="central flow (predicted average)")
        axes[0].semilogy(study.ts, study.gradient_flow["loss"], "C0--", label="gradient flow")
        axes[1].plot(study.ts, g["sharpness"], color="0.8", label="GD")
        axes[1].plot(study.ts, g["sharpness_avg"], "k-", label="GD time average")
        axes[1].plot(study.ts, c.sharpness[:, 0], "C3-", label="central flow")
        axes[1].plot(study.ts, study.gradient_flow["sharpness"], "C0--", label="gradient flow")
        if study.principal_flow is not None:
            axes[0].semilogy(study.ts, study.principal_flow["loss"], "C2:", label="principal flow")
            axes[1].plot(study.ts, study.principal_flow["sharpness"], "C2:", label="principal flow")
        axes[1].axhline(2 / study.h, color="k", lw=0.5, ls=":")
        for ax, lab in zip(axes, ("loss", "sharpness")):
            ax.set_xlabel("t = n h")
            ax.set_ylabel(lab)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        plt.close(fig)
