"""Time ``modeq.optimizers.simulate`` (one ``lax.scan``) against a Python loop over a jitted optax update.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_iterate [--steps 10000] [--repeat 3]

Prints one markdown table: 1e4 steps of heavy-ball and Adam on (a) the d = 100 quadratic and (b) the MLP with
d ~ 1e4. ``simulate`` is timed with its default ``record=True`` (it stores theta_n, the momenta, L(theta_n) and
|grad L(theta_n)| for every n) and with ``record=False``; compile time is excluded from both and reported
separately. The optax loop computes the same gradients and updates and keeps only the last iterate. For the MLP the
Python loop runs ``--loop-steps`` steps (default 1/10 of ``--steps``) and is scaled to ``--steps`` (marked in the
table).
"""

from __future__ import annotations

import argparse

from ._util import (  # sets BLAS threads first
    best_of, block, check_finite, fail_on_divergence, fmt_seconds, machine_line, markdown_table)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import modeq  # noqa: E402,F401  (float64)
from modeq import optimizers as mo  # noqa: E402
from modeq.problems import mlp, quadratic  # noqa: E402


def optax_loop(tx, loss, theta0, steps):
    """A Python loop over one jitted step (gradient + optax update + apply), as users write it."""
    grad = jax.grad(loss)

    @jax.jit
    def step(theta, state):
        updates, state = tx.update(grad(theta), state, theta)
        return optax.apply_updates(theta, updates), state

    state0 = tx.init(theta0)
    block(step(theta0, state0))  # compile outside the timed calls

    def run():
        theta, state = theta0, state0
        for _ in range(steps):
            theta, state = step(theta, state)
        return theta

    return run


def optax_scan(tx, loss, steps):
    """``theta0 -> theta_steps``: the optax step inside one jitted ``lax.scan`` that keeps only the final state, the
    floor for the cost of ``steps`` gradient evaluations and updates (no recording, no divergence checks; also the
    baseline of bench_catalog)."""
    grad = jax.grad(loss)

    @jax.jit
    def run(theta0):
        def body(carry, _):
            theta, state = carry
            updates, state = tx.update(grad(theta), state, theta)
            return (optax.apply_updates(theta, updates), state), None

        return jax.lax.scan(body, (theta0, tx.init(theta0)), None, length=steps)[0][0]

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--loop-steps", type=int, default=None, help="Python-loop steps for the MLP (scaled)")
    parser.add_argument("--repeat", type=int, default=3, help="best of k")
    parser.add_argument("--mlp-d", type=int, default=10_000)
    args = parser.parse_args(argv)
    fail_on_divergence()  # a run that diverges fails the benchmark instead of timing a frozen trajectory
    steps = args.steps
    mlp_loop_steps = args.loop_steps or max(steps // 10, 1)

    # (label, problem, h for heavy-ball, h for Adam, Python-loop steps)
    problems = [
        ("quadratic d=100", quadratic(d=100), 0.1, 1e-3, steps),
        (None, mlp(d=args.mlp_d), 0.01, 1e-3, mlp_loop_steps),
    ]
    rows = []
    for label, problem, h_hb, h_adam, loop_steps in problems:
        label = label or f"mlp d={problem.dim}"
        for name, opt, tx, h in [
            ("heavy-ball (beta 0.9)", mo.heavy_ball(0.9), optax.sgd(h_hb, momentum=0.9), h_hb),
            ("Adam", mo.adam(), optax.adam(h_adam), h_adam),
        ]:
            def sim(record, save_every=1):
                return lambda: mo.simulate(opt, problem.loss, problem.theta0, steps, h=h, record=record,
                                           save_every=save_every).theta

            t_rec, compile_rec = best_of(sim(True), k=args.repeat)
            t_norec, compile_norec = best_of(sim(False), k=args.repeat)
            t_final, _ = best_of(sim(False, steps), k=args.repeat)
            run_scan = optax_scan(tx, problem.loss, steps)
            loop, scan = optax_loop(tx, problem.loss, problem.theta0, loop_steps), lambda: run_scan(problem.theta0)
            check_finite(f"optax {name} on {label} (Python loop)", loop())
            check_finite(f"optax {name} on {label} (lax.scan)", scan())
            t_loop, _ = best_of(loop, k=args.repeat, warmup=0)
            t_scan, _ = best_of(scan, k=args.repeat)
            scaled = t_loop * steps / loop_steps
            loop_note = "" if loop_steps == steps else f" ({loop_steps} steps x{steps // loop_steps})"
            rows.append(
                [
                    label,
                    name,
                    steps,
                    fmt_seconds(t_rec),
                    fmt_seconds(t_norec),
                    f"{fmt_seconds(compile_rec)} / {fmt_seconds(compile_norec)}",
                    fmt_seconds(scaled) + loop_note,
                    f"{scaled / t_rec:.1f}x",
                    f"{scaled / t_norec:.1f}x",
                    fmt_seconds(t_final),
                    f"{scaled / t_final:.1f}x",
                    fmt_seconds(t_scan),
                ]
            )
            print(f"done: {label}, {name}", flush=True)
    print()
    print(machine_line())
    print()
    print(
        markdown_table(
            [
                "problem",
                "optimizer",
                "steps",
                "simulate (record)",
                "simulate (record=False)",
                "compile (record / no record)",
                "optax Python loop",
                "speed-up (record)",
                "speed-up (no record)",
                "simulate (final state only)",
                "speed-up (final only)",
                "optax in lax.scan, final state only",
            ],
            rows,
        )
    )
    stored = (steps + 1) * problems[-1][1].dim * 8 / 1e9
    print(
        f"\nbest of {args.repeat}; compile = first call - best call; float64 throughout. speed-up = optax Python loop"
        f" / simulate. simulate stores theta_n and every momentum variable for each n ({stored:.2f} GB per array"
        " for the MLP); 'final state only' is save_every=steps (the optax loop also keeps only the last iterate)."
    )


if __name__ == "__main__":
    main()
