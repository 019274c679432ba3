"""Throughput of SDE ensembles (paths x steps per second), d = 10 quadratic SME with constant noise.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_sde [--paths 10000] [--steps 1000]

Compares (a) ``modeq.sde.simulate_sde(method="scan")`` (per-path keys, per-step ``fold_in``), (b) a hand-written
``lax.scan`` Euler--Maruyama on the whole batch with pre-drawn normals (drawn in chunks of ``--chunk`` steps to bound
memory), (c) ``simulate_sde(method="diffrax")`` (Euler + VirtualBrownianTree, tol = dt/2) timed on ``--vbt-paths``
paths and scaled linearly to ``--paths``. Compile time is excluded (best of k after a warm-up call).
"""

from __future__ import annotations

import argparse

from ._util import best_of, check_finite, machine_line, markdown_table  # sets BLAS threads first

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import modeq  # noqa: E402,F401
from modeq.problems import GaussianNGOS, quadratic  # noqa: E402
from modeq.sde import simulate_sde, sme  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--vbt-paths", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    prob = quadratic(a.d)
    eta = 0.05
    sde = sme(prob.loss, GaussianNGOS(prob.loss), eta)
    x0, T = prob.theta0, 1.0
    dt = T / a.steps
    key = jax.random.key(0)
    A = jax.hessian(prob.loss)(jnp.zeros(a.d))
    s = jnp.sqrt(eta * dt)

    def ours():
        return simulate_sde(sde, x0, T, a.steps, paths=a.paths, key=key).xs

    @jax.jit
    def hand(key):
        n_chunks = a.steps // a.chunk

        def chunk(x, k):
            z = jax.random.normal(k, (a.chunk, a.paths, a.d))

            def step(x, zi):
                return x - (x @ A) * dt + s * zi, None

            x, _ = jax.lax.scan(step, x, z)
            return x, None

        x, _ = jax.lax.scan(chunk, jnp.broadcast_to(x0, (a.paths, a.d)), jax.random.split(key, n_chunks))
        return x

    def vbt():
        return simulate_sde(sde, x0, T, a.steps, paths=a.vbt_paths, key=key, method="diffrax").xs

    work = a.paths * a.steps
    check_finite("modeq scan EM", ours())  # a diverged ensemble is no measurement
    check_finite("hand-written scan EM", hand(key))
    t_ours, c_ours = best_of(ours, k=a.repeat)
    t_hand, c_hand = best_of(lambda: hand(key), k=a.repeat)
    t_vbt, c_vbt = best_of(vbt, k=1)
    t_vbt_scaled = t_vbt * a.paths / a.vbt_paths
    rows = [
        ["modeq scan EM (fold_in keys)", f"{t_ours:.3f}", f"{work / t_ours:.3g}", f"{t_ours / t_hand:.2f}",
         f"{c_ours:.2f}"],
        ["hand-written scan EM (pre-drawn normals)", f"{t_hand:.3f}", f"{work / t_hand:.3g}", "1.00",
         f"{c_hand:.2f}"],
        [f"diffrax Euler + VBT ({a.vbt_paths} paths, scaled)", f"{t_vbt_scaled:.3f}", f"{work / t_vbt_scaled:.3g}",
         f"{t_vbt_scaled / t_hand:.1f}", f"{c_vbt:.2f}"],
    ]
    print(machine_line())
    print(f"{a.paths} paths x {a.steps} steps, d = {a.d}")
    print(markdown_table(["method", "seconds", "path-steps/s", "ratio to hand", "compile s"], rows))


if __name__ == "__main__":
    main()
