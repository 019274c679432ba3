"""Time one evaluation of the principal-flow vector field: dense back-end (Hessian + eigh) vs Lanczos (top k + series).

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_principal [--dims 2000 10000]
        [--k 20] [--terms 10] [--repeat 3] [--dense-max 4000]

Problems: ``modeq.problems.mlp(d)`` (2-layer tanh network, 64 examples) at its default start, GD principal flow,
real state, h such that h lambda_max = 0.9 (Lanczos estimate; the timing does not depend on h). Each field is jitted;
"best" is the best of ``--repeat`` calls after the first, "compile" the estimate first call - best call
(``benchmarks._util.best_of``), all with ``block_until_ready``. The dense back-end is run only for d <= ``--dense-max``: at d ~ 1e4 the dense Hessian is 0.8 GB
and ``jax.hessian`` materializes d tangent copies of the network's activations (tens of GB), and ``eigh`` alone scales
like d^3 (about 300-1000x the d ~ 1e3 cost); the table says "not run" there. "rel. diff" is
|F_lanczos - F_dense| / |F_dense| at the start point (the top-k + series truncation error at this h).
"""

from __future__ import annotations

import argparse
import os

from ._util import best_of, fmt_seconds, machine_line, markdown_table  # sets BLAS threads first

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import modeq  # noqa: E402,F401  (float64)
from modeq.flows import principal_flow  # noqa: E402
from modeq.flows._principal import _ritz_function  # noqa: E402
from modeq.optimizers import gd  # noqa: E402
from modeq.problems import mlp  # noqa: E402

_evaluate = eqx.filter_jit(lambda field, theta: field(theta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--terms", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dense-max", type=int, default=4000)
    args = parser.parse_args()

    print(machine_line())
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    rows = []
    for d in args.dims:
        problem = mlp(d=d)
        theta = problem.theta0
        dim = problem.dim
        lam_max = float(jnp.max(_ritz_function(problem.loss, 30, 0)(theta)))
        h = 0.9 / lam_max
        lanczos = principal_flow(gd(), problem.loss, h=h, backend="lanczos", k=args.k, terms=args.terms)
        iterations = min(dim, 2 * args.k + 20)
        best_l, compile_l = best_of(lambda: _evaluate(lanczos, theta), k=args.repeat)
        value_l = _evaluate(lanczos, theta)
        if dim <= args.dense_max:
            dense = principal_flow(gd(), problem.loss, h=h)
            best_d, compile_d = best_of(lambda: _evaluate(dense, theta), k=args.repeat)
            value_d = _evaluate(dense, theta)
            diff = float(jnp.linalg.norm(value_l - value_d) / jnp.linalg.norm(value_d))
            rows.append([dim, "dense", "-", fmt_seconds(compile_d), fmt_seconds(best_d), "1", "-"])
            ratio = f"{best_d / best_l:.0f}x faster"
            rel = f"{diff:.1e}"
        else:
            rows.append([dim, "dense", "-", "not run", "not run", "-", "-"])
            ratio, rel = "-", "-"
        rows.append(
            [dim, f"lanczos k={args.k}", f"m={iterations}, P={args.terms}", fmt_seconds(compile_l), fmt_seconds(best_l),
             ratio, rel]
        )
        print(f"d = {dim}: h = {h:.4g} (h lambda_max = 0.9)", flush=True)
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print()
    print(
        markdown_table(
            ["d", "backend", "Lanczos steps, series terms", "compile (est.)", f"best of {args.repeat}", "vs dense",
             "rel. diff"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
