"""Cost of evaluating the order-R modified field, relative to one gradient, on the MLP (d ~ 1e4), R = 1..5.

For GD and heavy-ball (beta = 0.9), both truncations ("taylor": exact polynomial by nested JVPs in h; "direct": the
logarithm of the orbit at the numerical h), best-of-k wall time after compilation, the compile time, and the peak
memory of the compiled program (XLA's memory analysis: arguments + outputs + temporaries).

Run: ``python -m benchmarks.bench_modified_field [--d 10000] [--max-order 5]``
"""

from __future__ import annotations

import argparse

from benchmarks._util import best_of, machine_line  # noqa: F401  (sets BLAS threads)

import jax
import jax.numpy as jnp

import modeq
from modeq import optimizers as O
from modeq import problems as P


def peak_bytes(fn, x) -> float:
    try:
        mem = jax.jit(fn).lower(x).compile().memory_analysis()
        return float(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes)
    except Exception:  # pragma: no cover - backend without memory analysis
        return float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d", type=int, default=10_000)
    parser.add_argument("--max-order", type=int, default=5)
    parser.add_argument("--max-taylor-momentum", type=int, default=3)
    args = parser.parse_args(argv)
    problem = P.mlp(d=args.d)
    theta = problem.theta0
    grad = jax.jit(jax.grad(problem.loss))
    t_grad, _ = best_of(lambda: grad(theta), k=7)
    mem_grad = peak_bytes(jax.grad(problem.loss), theta)
    print(machine_line())
    print(f"MLP d = {problem.dim}: one gradient {t_grad * 1e3:.3f} ms, peak {mem_grad / 2**20:.1f} MiB\n")
    print("| optimizer | truncation | R | time / eval | x gradient | compile | peak memory | x gradient memory |")
    print("|---|---|---|---|---|---|---|---|")
    for name, opt in (("gd", O.gd()), ("hb(0.9)", O.heavy_ball(0.9))):
        for truncation in ("direct", "taylor"):
            for order in range(1, args.max_order + 1):
                if truncation == "taylor" and opt.momenta and order > args.max_taylor_momentum:
                    print(f"| {name} | {truncation} | {order} | skipped (compile grows like 3^R) | | | | |")
                    continue
                field = modeq.modified_field(opt, problem.loss, h=1e-3, order=order, truncation=truncation)
                fn = jax.jit(lambda x, f=field: f(x))
                t, compile_time = best_of(lambda: fn(theta), k=5)
                mem = peak_bytes(lambda x, f=field: f(x), theta)
                print(f"| {name} | {truncation} | {order} | {t * 1e3:.2f} ms | {t / t_grad:.1f} | {compile_time:.1f} s "
                      f"| {mem / 2**20:.1f} MiB | {mem / mem_grad:.1f} |")


if __name__ == "__main__":
    main()
