"""Run every benchmark in ``benchmarks/`` and write one markdown file with the machine, the versions and each table.

    python -m benchmarks [--quick] [--out benchmarks/RESULTS.md] [--only iterate,sde,...] [--note TEXT]

Each benchmark runs in its own Python process (``python -m benchmarks.bench_NAME ARGS``), so its baseline is timed in
the same process as the code it is compared with, one benchmark's memory (the d ~ 1e4 MLP trajectories) does not
weigh on the next, and a failing benchmark is reported in the file instead of stopping the run. ``--quick`` uses
smaller sizes (about 3-5 minutes on 2 cores instead of about 15-25); the file says which sizes were used.
``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1`` are set unless given (docs/theory/numerics.md#misc).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (what it measures, full-size arguments, --quick arguments)
BENCHMARKS = {
    "coefficients": ("exact B-series coefficients of GD / heavy-ball modified equations vs published figures", [], []),
    "modified_field": (
        "order-R modified field cost relative to one gradient (MLP)",
        ["--d", "10000", "--max-order", "5"],
        ["--d", "2000", "--max-order", "3", "--max-taylor-momentum", "2"],
    ),
    "principal": (
        "principal-flow field evaluation: Lanczos vs dense eigh",
        ["--dims", "1000", "2000", "4000", "10000"],
        ["--dims", "500", "1000", "--repeat", "2"],
    ),
    "sde": (
        "SDE ensemble throughput vs a hand-written lax.scan Euler-Maruyama",
        ["--paths", "10000", "--steps", "1000"],
        ["--paths", "2000", "--steps", "500", "--vbt-paths", "20"],
    ),
    "iterate": (
        "simulate (one lax.scan) vs a Python loop over a jitted optax update",
        ["--steps", "10000"],
        ["--steps", "2000", "--mlp-d", "2000", "--repeat", "2"],
    ),
    "catalog": (
        "every catalog optimizer, final state only, vs optax's update inside one lax.scan (goal <= 1.1x)",
        ["--steps", "10000", "--repeat", "15", "--long-steps", "100000"],
        ["--steps", "10000", "--repeat", "7", "--long-steps", "30000"],
    ),
    "cli": (
        "`modeq compare` (the main job) vs the same study written by hand, cold processes and warm cache",
        ["--grids", "default,regime", "--repeat", "2"],
        ["--grids", "default", "--no-taylor-check"],
    ),
    "optax": (
        "the generic from_optax path vs the catalog's spec of the same optimizer (goal <= 3x)",
        ["--d", "10000", "--steps", "10000"],
        ["--d", "2000", "--steps", "2000", "--repeat", "3"],
    ),
}


def _version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def machine_section() -> list[str]:
    from modeq._machine import cpu_model

    cpu = cpu_model()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    versions = [f"python {platform.python_version()}"] + [
        f"{n} {_version(n)}" for n in ("jax", "jaxlib", "diffrax", "equinox", "numpy", "sympy", "optax")
    ]
    threads = ", ".join(f"{v}={os.environ.get(v, '-')}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"))
    return [
        f"- machine: {platform.node()}, {cpu}, {cores} cores available ({os.cpu_count()} CPUs), "
        f"{platform.system()} {platform.release()}",
        f"- versions: {', '.join(versions)}",
        f"- BLAS threads: {threads}; float64 throughout; CPU",
        "- load average (1, 5, 15 min) at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    ]


def run_one(name: str, args: list[str], timeout: float) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", f"benchmarks.bench_{name}", *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + (f"\n[stderr]\n{proc.stderr[-3000:]}" if proc.returncode else "")
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rc, out = -1, out + f"\n[timed out after {timeout:.0f} s]"
    return rc, out.strip(), time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown file to write")
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--note", default="", help="one line added to the header (e.g. 'shared, noisy CPU')")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    args = parser.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")

    started = datetime.datetime.now(datetime.timezone.utc)
    mode = "quick sizes (--quick)" if args.quick else "full sizes"
    lines = [
        "# modeq benchmarks",
        "",
        f"Generated by `python -m benchmarks{' --quick' if args.quick else ''}` on "
        f"{started:%Y-%m-%d %H:%M} UTC, {mode}." + (f" {args.note}" if args.note else ""),
        "",
        *machine_section(),
        "",
        "Each section is one benchmark's own output (its table, machine line and ratios against a baseline timed in "
        "the same process); times are wall-clock, best of k after compilation unless the section says otherwise.",
        "",
    ]
    summary = []
    for name in names:
        what, full, quick = BENCHMARKS[name]
        bench_args = quick if args.quick else full
        print(f"[benchmarks] {name} {' '.join(bench_args)} ...", file=sys.stderr, flush=True)
        rc, out, seconds = run_one(name, bench_args, args.timeout)
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"[benchmarks] {name}: {status} in {seconds:.0f} s", file=sys.stderr, flush=True)
        summary.append(f"| `bench_{name}` | {what} | `{' '.join(bench_args) or '(defaults)'}` | {seconds:.0f} s "
                       f"| {status} |")
        lines += [
            f"## bench_{name}: {what}",
            "",
            f"`python -m benchmarks.bench_{name} {' '.join(bench_args)}`".replace(" `", "`") + f" ({seconds:.0f} s, "
            f"{status})",
            "",
            _as_markdown(out),
            "",
        ]
    total = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    head = ["| benchmark | measures | arguments | wall time | status |", "|---|---|---|---|---|", *summary, "",
            f"Total: {total:.0f} s.", ""]
    insert_at = lines.index("Each section is one benchmark's own output (its table, machine line and ratios against "
                            "a baseline timed in the same process); times are wall-clock, best of k after compilation "
                            "unless the section says otherwise.")
    lines[insert_at:insert_at] = head
    Path(args.out).write_text("\n".join(lines).rstrip() + "\n")
    print(f"[benchmarks] wrote {args.out} ({total:.0f} s)", file=sys.stderr)
    return 0 if all("FAILED" not in s for s in summary) else 1


def _as_markdown(text: str) -> str:
    """Keep markdown tables as they are; put every other run of lines (fixed-width tables, notes) in a code block so
    that its alignment survives."""
    out, block = [], []

    def flush():
        if block:
            out.extend(["```", *block, "```"])
            block.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            flush()
            out.append(line)
        elif line.strip() == "":
            flush()
            out.append("")
        else:
            block.append(line)
    flush()
    return "\n".join(out).strip()


if __name__ == "__main__":
    sys.exit(main())
