"""Render a :class:`~modeq.report.Report` as one self-contained HTML page (figures as base64 PNGs, no scripts)."""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
import platform
from typing import Optional

import numpy as np

from ._run import Report

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1150px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
pre, code { background: #f6f6f6; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.88em; }
pre { padding: 0.7em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; border: 1px solid #e3e3e3; }
.ok { color: #17692d; } .bad { color: #b00020; } .note { color: #555; font-size: 0.92em; }
.skip { background: #fff7e0; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; }
.err { background: #fdecee; border-left: 4px solid #b00020; padding: 0.5em 0.8em; }
"""


def _e(x) -> str:
    return html.escape(str(x))


def _png(fig) -> str:
    """Base64 data URI of a matplotlib figure (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str, fig_id: str) -> str:
    return f'<figure><img id="{fig_id}" class="figure" src="{uri}" alt="{_e(alt)}"><figcaption class="note">' \
           f"{_e(alt)}</figcaption></figure>"


def _table(headers, rows, left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_e(c)}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "-"


def machine_info() -> dict:
    from modeq._machine import cpu_model

    cpu = cpu_model()
    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def versions() -> dict:
    import jax

    out = {"python": platform.python_version()}
    for name in ("modeq", "jax", "jaxlib", "diffrax", "equinox", "numpy", "matplotlib"):
        out[name] = _version(name)
    out["jax backend"] = jax.default_backend()
    return out


# --- figures ---------------------------------------------------------------------------------------------------------


def _fig_convergence(report: Report) -> str:
    from ..compare._plot import plot_study

    buf = io.BytesIO()
    plot_study(report.convergence.result, buf, title=f"{report.optimizer.name} on {report.problem.name}")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fig_error_curves(report: Report) -> str:
    import matplotlib.pyplot as plt

    results = report.convergence.result
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        for h, (t, e) in zip(res.h, res.curves):
            ax.semilogy(t[1:], np.maximum(e[1:], 1e-300), label=f"h = {h:g}")
        ax.set_title(res.flow)
        ax.set_xlabel("t = n h")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("|theta_n - theta(nh)|")
    fig.tight_layout()
    return _png(fig)


def _fig_principal(report: Report) -> str:
    import matplotlib.pyplot as plt

    r = report.principal.result
    res, iterates = r.flow, r.iterates
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    if iterates.shape[1] >= 2:
        axes[0].plot(iterates[:, 0], iterates[:, 1], "k.", ms=3, label="iterates")
        axes[0].plot(res.theta[:, 0], res.theta[:, 1], "-", label="Re principal flow")
        axes[0].set_xlabel("theta[0]")
        axes[0].set_ylabel("theta[1]")
    else:
        axes[0].plot(res.ts, iterates[:, 0], "k.", ms=3, label="iterates")
        axes[0].plot(res.ts, res.theta[:, 0], "-", label="Re principal flow")
        axes[0].set_xlabel("t = n h")
    axes[0].legend(fontsize=8)
    axes[1].semilogy(res.ts, np.abs(r.iterate_loss), "k.", ms=3, label="L(iterates)")
    axes[1].semilogy(res.ts, np.abs(res.loss), "-", label="L(Re flow)")
    axes[1].set_xlabel("t = n h")
    axes[1].legend(fontsize=8)
    axes[2].semilogy(res.ts[1:], np.maximum(r.errors[1:], 1e-300), "-")
    axes[2].set_xlabel("t = n h")
    axes[2].set_ylabel("|iterate - Re flow|")
    fig.tight_layout()
    return _png(fig)


def _fig_regularizer(report: Report) -> str:
    import matplotlib.pyplot as plt

    rep = report.regularizer.result
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, values in rep.values.items():
        v = np.abs(np.asarray(values, dtype=float))
        if np.any(v > 0):
            ax.semilogy(rep.steps, np.where(v > 0, v, np.nan), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("|value|")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


# --- sections --------------------------------------------------------------------------------------------------------


def _status(section) -> Optional[str]:
    if section.skipped:
        return f'<p class="skip">{_e(section.skipped)}</p>'
    if section.error:
        return f'<p class="err">This section failed: <code>{_e(section.error)}</code></p>'
    return None


def _convergence_html(report: Report) -> str:
    sec = report.convergence
    parts = ["<h2>1. Convergence study</h2>",
             f'<p class="note">For each step size h the optimizer runs N = T/h steps from theta0 (momenta started '
             f"{_e(report.settings['init'])}); each flow is integrated from the same point and the error "
             f"max_n |theta_n - theta(nh)| is fitted as C h^p by least squares on log-log axes (95% interval from "
             f"Student's t). Same computation as <code>modeq compare</code>. T = {report.T:g}, "
             f"truncation = {_e(report.settings['truncation'])}, {sec.seconds:.1f} s.</p>"]
    status = _status(sec)
    if status:
        parts.append(status)
    if not sec.result:
        return "\n".join(parts)
    hs = sec.result[0].h
    rows = []
    for res in sec.result:
        v = res.verdict.to_dict()
        fitted = "-" if v["measured"] is None else f"{v['measured']:.3f}"
        ci = "-" if v["interval"] is None else f"[{v['interval'][0]:.3f}, {v['interval'][1]:.3f}]"
        errors = [("diverged" if e is None else f"{e:.3e}") for e in res.max_error]
        rows.append([res.flow, res.order, *errors, fitted, ci, v["verdict"]])
    parts.append(_table(["flow", "expected order R", *[f"h = {h:g}" for h in hs], "fitted order", "95% CI",
                         "verdict"], rows))
    reasons = [f"{res.flow}: {res.verdict.reason}" for res in sec.result]
    parts.append("<ul>" + "".join(f'<li class="note">{_e(r)}</li>' for r in reasons) + "</ul>")
    notes = sorted({n for r in sec.result for n in r.warnings})
    if notes:
        parts.append("<ul>" + "".join(f'<li class="note">warning: {_e(n)}</li>' for n in notes) + "</ul>")
    parts.append(_img(_fig_convergence(report), "Global error vs h with fitted slopes (left); iterates and flows at "
                      "the largest h (right).", "fig-convergence"))
    parts.append(_img(_fig_error_curves(report), "Error along the trajectory, one panel per flow.", "fig-error-curves"))
    return "\n".join(parts)


def _principal_html(report: Report) -> str:
    sec = report.principal
    parts = ["<h2>2. Principal flow</h2>"]
    status = _status(sec)
    if status:
        parts.append(status)
    if sec.result is None:
        return "\n".join(parts)
    r = sec.result
    res, diag = r.flow, r.flow.diagnostics
    steps = res.ts.shape[0] - 1
    parts.append(f'<p class="note">Real part of the principal flow at t = nh (Dopri8, rtol 1e-12) against the '
                 f"iterates, h = {res.h:g}, T = {res.ts[-1]:g}, backend {_e(res.backend)}; same computation as "
                 f"<code>modeq principal-flow</code>. Max error {float(r.errors.max()):.3e}; {sec.seconds:.1f} s."
                 "</p>")
    parts.append(f"<p>Verdict: <b>{_e(r.verdict.verdict)}</b>: {_e(r.verdict.reason)}</p>")
    parts.extend(f'<p class="note">{_e(n)}</p>' for n in r.notes)
    rows = []
    for n in sorted(set(np.linspace(0, steps, 9).astype(int).tolist())):
        hl = f"{diag.h_lambda_max[n]:.4f}" if diag is not None else "-"
        regime = diag.regime[n] if diag is not None else "-"
        rows.append([n, f"{res.ts[n]:.4g}", f"{float(r.iterate_loss[n]):.6e}", f"{res.loss[n]:.6e}",
                     f"{r.errors[n]:.3e}", hl, regime])
    parts.append(_table(["n", "t", "L(iterate)", "L(flow)", "|error|", "h lambda_max", "regime"], rows))
    if r.diverged_at is not None:
        parts.append(f'<p class="bad">The iterates diverged at step {r.diverged_at}.</p>')
    if diag is not None and diag.crossings:
        parts.append(f"<p>Edge of stability crossed at steps {_e(diag.crossings)}.</p>")
    parts.append(_img(_fig_principal(report), "Parameter space (left), loss (middle) and the distance between the "
                      "iterates and the real part of the principal flow (right).", "fig-principal"))
    return "\n".join(parts)


def _regularizer_html(report: Report) -> str:
    sec = report.regularizer
    parts = ["<h2>3. Implicit regularizer</h2>"]
    status = _status(sec)
    if status:
        parts.append(status)
    if sec.result is None:
        return "\n".join(parts)
    rep = sec.result
    parts.append(f'<p class="note">The modified loss L~ = L + named terms, and every term along a run of '
                 f"{len(rep.steps) and rep.steps[-1]} steps at h = {rep.modified.h:g} (form "
                 f"{_e(rep.modified.form)}); same computation as <code>modeq regularizer</code>. "
                 f"{sec.seconds:.1f} s.</p>")
    parts.append(f"<pre>{_e(rep.modified.describe())}</pre>")
    if rep.modified.terms:
        parts.append(_table(["term", "formula", "coefficient (exact)", "coefficient", "sign", "source"],
                            [[t.name, t.formula, t.coefficient_exact, f"{t.coefficient:.6g}", t.sign, t.source]
                             for t in rep.modified.terms], left=3))
    names = list(rep.values)
    idx = sorted(set(np.linspace(0, len(rep.steps) - 1, min(9, len(rep.steps))).astype(int).tolist()))
    parts.append(_table(["step", *names], [[rep.steps[i], *[f"{rep.values[n][i]:.6g}" for n in names]] for i in idx]))
    if rep.diverged_at >= 0:
        parts.append(f'<p class="bad">The iterates diverged at step {rep.diverged_at}.</p>')
    parts.append(_img(_fig_regularizer(report), "Absolute value of the loss, each regularizer term and the modified "
                      "loss along the run.", "fig-regularizer"))
    return "\n".join(parts)


def _summary_html(report: Report) -> str:
    items = []
    conv = report.convergence
    for res in conv.result or []:
        v = res.verdict.to_dict()
        fitted = "-" if v["measured"] is None else f"{v['measured']:.3f}"
        ci = "" if v["interval"] is None else f", 95% CI [{v['interval'][0]:.3f}, {v['interval'][1]:.3f}]"
        items.append(f"<li><b>{_e(res.flow)}</b>: fitted order <b>{fitted}</b>{ci} (expected {res.order}): "
                     f"<b>{_e(v['verdict'])}</b></li>")
    pf = report.principal
    if pf.result is not None:
        items.append(f"<li><b>principal flow</b>: max |iterate - Re flow| = {float(pf.result.errors.max()):.3e} "
                     f"at h = {pf.result.h:g}: <b>{_e(pf.result.verdict.verdict)}</b></li>")
    elif pf.skipped:
        items.append("<li><b>principal flow</b>: skipped (see section 2)</li>")
    reg = report.regularizer
    if reg.result is not None:
        names = ", ".join(t.name for t in reg.result.modified.terms) or "none"
        items.append(f"<li><b>regularizer terms</b>: {_e(names)}</li>")
    for sec in (conv, pf, reg):
        if sec.error:
            items.append(f'<li class="bad">{_e(sec.name)} failed: {_e(sec.error)}</li>')
    return "<h2>Summary</h2><ul>" + "".join(items) + "</ul>"


def explicit_command(report: Report) -> str:
    """A ``modeq report`` command line that reproduces ``report`` with every default written out."""
    import shlex

    args = ["modeq", "report", "--loss", report.loss_spec, "--optimizer", report.optimizer.name]
    for k, v in report.optimizer.hyper.items():
        args += ["--param", f"{k}={float(v)!r}"]
    args += ["--theta0", ",".join(repr(float(x)) for x in np.asarray(report.problem.theta0).ravel()),
             "--h", ",".join(f"{h:g}" for h in report.hs), "--T", f"{report.T:g}", "--flow", ",".join(report.flows),
             "--init", report.settings["init"], "--reg-steps", str(report.settings["regularizer_steps"])]
    return shlex.join(args)


def render_html(report: Report, command: Optional[str] = None, elapsed: Optional[float] = None) -> str:
    """The page as a string. ``command``: the command line as typed (shown when given), besides the explicit one."""

    import matplotlib

    matplotlib.use("Agg")
    explicit = explicit_command(report)
    commands = f"<p>Command:</p><pre id=\"command\">{_e(command)}</pre>" if command else ""
    commands += f"<p>The same run with every setting explicit:</p><pre id=\"explicit-command\">{_e(explicit)}</pre>"
    now = datetime.datetime.now(datetime.timezone.utc)
    opt = report.optimizer
    params = ", ".join(f"{k} = {float(v):g}" for k, v in opt.hyper.items()) or "none"
    title = f"modeq report: {opt.name} on {report.problem.name}"
    meta_rows = [
        ["optimizer", f"{opt.name} ({params})"],
        ["loss", f"{report.loss_spec}: {report.problem.description or report.problem.name} (d = {report.problem.dim})"],
        ["theta0", np.array2string(np.asarray(report.problem.theta0), precision=6, threshold=12)],
        ["step sizes (convergence)", ", ".join(f"{h:g}" for h in report.hs)],
        ["flows", ", ".join(report.flows)],
        ["generated", f"{now:%Y-%m-%d %H:%M:%S} UTC" + (f" in {elapsed:.1f} s" if elapsed is not None else "")],
    ]
    machine = machine_info()
    env_rows = [["machine", f"{machine['host']}: {machine['cpu']}, {machine['cpus']} CPUs, {machine['os']}"]]
    env_rows += [[k, v] for k, v in versions().items()]
    body = [
        f"<h1>{_e(title)}</h1>",
        commands,
        _table(["", ""], meta_rows, left=2),
        _summary_html(report),
        _convergence_html(report),
        _principal_html(report),
        _regularizer_html(report),
        "<h2>Environment</h2>",
        _table(["", ""], env_rows, left=2),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_html(report: Report, path: str, command: Optional[str] = None, elapsed: Optional[float] = None) -> str:
    """Write :func:`render_html` to ``path``; returns the path."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_html(report, command=command, elapsed=elapsed))
    return path
