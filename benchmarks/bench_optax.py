"""The generic optax path (``from_optax``) against the catalog's hand-written spec of the same optimizer.

Issue 13, point 5: the generic path may cost at most 3x the catalog path. Timed in the same process, best of k after
compilation, for heavy-ball (``optax.sgd(h, momentum=0.9)`` vs ``heavy_ball(0.9)``) and Adam
(``optax.adam(h, 0.8, 0.9, eps_root=1e-8)`` stationary vs ``adam(0.8, 0.9, bias_correction=False)``), on the MLP problem:

* the order-R modified field (direct truncation), R = 1..3, per evaluation;
* the iterates: ``simulate`` of ``--steps`` steps (final state only);
* ``compare_flow`` end to end on a 3-D loss, one flow, four step sizes, each in a fresh process with the
  compilation cache off (compile included: what a user waits for).

Run: ``python -m benchmarks.bench_optax [--d 2000] [--steps 2000]``
"""

from __future__ import annotations

import argparse

from benchmarks._util import best_of, machine_line  # noqa: F401  (sets BLAS threads)

import jax
import jax.numpy as jnp
import optax

import modeq
from modeq import optimizers as O
from modeq import problems as P
from modeq.compare import compare_flow


def _loss3(x):
    return jnp.sum(jnp.log(jnp.cosh(x))) + 0.3 * x[0] ** 2 * x[1] ** 2 + 0.1 * jnp.sum(x**4)


_COLD = """
import sys, time, warnings
import jax.numpy as jnp, optax
import modeq
from modeq import optimizers as O
from modeq.compare import compare_flow
from benchmarks.bench_optax import _loss3, _pair
opt = _pair(sys.argv[1])[sys.argv[2] == "generic"]
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    res = compare_flow(opt, _loss3, jnp.asarray([0.6, -0.4, 0.9]), "modified:2", [1e-4, 5e-5, 2.5e-5, 1.25e-5], 0.05)
assert res.verdict.verdict == "consistent", res.verdict
print(time.perf_counter() - start)
"""


def _pair(name):
    """(catalog, generic) for a row name."""
    if name.startswith("heavy-ball"):
        return O.heavy_ball(0.9), O.from_optax(lambda h: optax.sgd(h, momentum=0.9))
    return (O.adam(0.8, 0.9, eps_root=1e-8, bias_correction=False),
            O.from_optax(lambda h: optax.adam(h, b1=0.8, b2=0.9, eps_root=1e-8)))


def _cold_compare(name, which) -> float:
    """Seconds of one ``compare_flow`` in a fresh process with the compilation cache off (compile included)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, MODEQ_NO_COMPILATION_CACHE="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _COLD, name, which], capture_output=True, text=True, env=env,
                         cwd=root, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    problem = P.mlp(d=args.d)
    theta = problem.theta0
    pairs = tuple((name, *_pair(name)[::-1]) for name in ("heavy-ball 0.9", "adam 0.8/0.9 (stationary)"))
    print(machine_line())
    print(f"MLP d = {problem.dim}; ratio = generic (from_optax) / catalog, same process; goal <= 3\n")
    print("| optimizer | what | catalog | from_optax | ratio |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name, generic, catalog in pairs:
        for order in (1, 2, 3):
            times = []
            for opt in (catalog, generic):
                field = modeq.modified_field(opt, problem.loss, h=1e-4, order=order, truncation="direct")
                fn = jax.jit(lambda x, f=field: f.fn(x, f.h))
                times.append(best_of(lambda: fn(theta), k=args.repeat)[0])
            worst = max(worst, times[1] / times[0])
            print(f"| {name} | modified:{order} field, per evaluation | {times[0] * 1e3:.3f} ms | "
                  f"{times[1] * 1e3:.3f} ms | {times[1] / times[0]:.2f} |")
        times = []
        for opt in (catalog, generic):
            def run(opt=opt):
                return O.simulate(opt, problem.loss, theta, args.steps, h=1e-4, record=False,
                                  save_every=args.steps).theta
            times.append(best_of(run, k=max(2, args.repeat // 2))[0])
        worst = max(worst, times[1] / times[0])
        print(f"| {name} | simulate {args.steps} steps (final state) | {times[0] * 1e3:.1f} ms | "
              f"{times[1] * 1e3:.1f} ms | {times[1] / times[0]:.2f} |")
        times = [_cold_compare(name, which) for which in ("catalog", "generic")]
        worst = max(worst, times[1] / times[0])
        print(f"| {name} | compare_flow modified:2, 4 step sizes, cold process (compile included) | {times[0]:.2f} s | "
              f"{times[1]:.2f} s | {times[1] / times[0]:.2f} |")
    print(f"\nworst ratio {worst:.2f} (goal <= 3): {'met' if worst <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
