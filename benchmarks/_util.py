"""Timing helpers shared by the benchmarks: best-of-k wall time with ``block_until_ready``, a machine/versions line
and a markdown table.

Set ``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1`` before running a benchmark (docs/theory/numerics.md#misc): the scripts set
them by default when they are not given.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Sequence

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import jax  # noqa: E402


def block(tree: Any) -> Any:
    """Wait for every array in ``tree`` (JAX dispatch is asynchronous: without this we would time the dispatch)."""
    return jax.block_until_ready(tree)


def time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


def best_of(fn: Callable[[], Any], k: int = 5, warmup: int = 1) -> tuple[float, float]:
    """``(best, compile)``: the best of ``k`` timed calls after ``warmup`` untimed ones, and the compile-time estimate
    ``first call - best call`` (for a jitted ``fn`` the first call compiles and runs once)."""
    first = time_once(fn)
    for _ in range(max(warmup - 1, 0)):
        time_once(fn)
    best = min(time_once(fn) for _ in range(k))
    return best, max(first - best, 0.0)


def machine_line() -> str:
    """One line: machine, Python and library versions, device and BLAS thread settings."""
    import importlib.metadata as md

    def version(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "-"

    libs = ", ".join(f"{n} {version(n)}" for n in ("jax", "jaxlib", "equinox", "optax", "numpy"))
    from modeq._machine import cpu_model

    cpu = cpu_model()
    threads = ", ".join(f"{v}={os.environ.get(v, '-')}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"))
    return (
        f"{platform.node()} | {cpu} | {os.cpu_count()} CPUs | Python {platform.python_version()} | {libs} | "
        f"device {jax.devices()[0].platform} | x64 {jax.config.jax_enable_x64} | {threads}"
    )


def fail_on_divergence() -> None:
    """Make every ``DivergenceWarning`` an error: a benchmark whose run diverges must fail (exit non-zero, marked
    FAILED by ``python -m benchmarks``), never report the time of a frozen trajectory (issue 16)."""
    import warnings

    from modeq.optimizers import DivergenceWarning

    warnings.simplefilter("error", DivergenceWarning)


def check_finite(what: str, tree: Any) -> Any:
    """Raise ``FloatingPointError`` naming ``what`` if any array of ``tree`` has a non-finite entry (a baseline that
    diverged is no baseline); return ``tree``."""
    import numpy as np

    for leaf in jax.tree.leaves(tree):
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise FloatingPointError(f"{what}: the run diverged (non-finite values); no time reported")
    return tree


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def fmt_seconds(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:.0f} us"
    if t < 1:
        return f"{t * 1e3:.1f} ms"
    return f"{t:.2f} s"
