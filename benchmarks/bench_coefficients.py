"""Benchmark: exact B-series coefficients of modified equations (modeq.series._symbolic).

Times, best of 3, the exact (rational) modified-equation coefficients of GD / explicit Euler for trees up to 6..9
nodes, the heavy-ball on-manifold map d(t) and modified equation b(t) (rational functions of beta), and, as the
like-for-like comparison with the published figures, the explicit midpoint method to order 9: the task of the
BSeries.jl benchmark page ("Comparison with other packages": `modified_equation(A, b, c, 9)` for the explicit
midpoint method), where BSeries.jl reports 0.052 s and pybs 5.6 s (their machines, not this one: orders of
magnitude only). "cold" clears every cache (tree generation and root-subtree enumeration included); "warm" reuses the
generated trees.

Run:  .venv/bin/python benchmarks/bench_coefficients.py
"""

from __future__ import annotations

import platform
import time
from fractions import Fraction

import sympy

from modeq.series import _trees
from modeq.series._symbolic import (
    _bea,
    gd_modified_coefficients,
    hb_memoryless_coefficients,
    hb_modified_coefficients,
)

BSERIES_JL_S = 0.052  # BSeries.jl docs, explicit midpoint, modified_equation up to order 9
PYBS_S = 5.6  # same page, pybs


def midpoint_modified_coefficients(order: int) -> list:
    """Explicit midpoint (A = [[0, 0], [1/2, 0]], b = [0, 1]): a(t) = 2^-m on the bushy tree with m leaves, 0 on
    other trees with >= 2 nodes; modified field by the composition recursion (exact rationals)."""
    trees = _trees.trees_up_to_order(order)
    a = {}
    for t in trees:
        bushy = all(kid.is_leaf for kid in t.children)
        a[t] = Fraction(1, 2 ** len(t.children)) if bushy else Fraction(0)
    b = _bea(a, order, Fraction(0))
    return [(t, sympy.Rational(b[t].numerator, b[t].denominator) / t.sigma) for t in trees]


def best_of(fn, repeats: int = 3, cold: bool = True) -> float:
    best = float("inf")
    for _ in range(repeats):
        if cold:
            _trees._clear_caches()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    cases = []
    for n in (6, 7, 8, 9):
        cases.append(("GD, logarithm formula (default)", n, lambda n=n: gd_modified_coefficients(n)))
    for n in (6, 7, 8, 9):
        cases.append(("GD, composition recursion", n, lambda n=n: gd_modified_coefficients(n, method="composition")))
    cases.append(("explicit midpoint, composition", 9, lambda: midpoint_modified_coefficients(9)))
    for n in (6, 7):
        cases.append(("HB memoryless map d(t)", n, lambda n=n: hb_memoryless_coefficients(n)))
        cases.append(("HB modified equation b(t)", n, lambda n=n: hb_modified_coefficients(n)))

    print(f"python {platform.python_version()}, sympy {sympy.__version__}, {platform.machine()} {platform.system()}")
    head = f"{'computation':34s} {'order':>5s} {'trees':>5s} {'cold [s]':>9s} {'warm [s]':>9s}" \
           f" {'BSeries.jl [s]':>14s} {'ratio':>7s} {'pybs [s]':>9s} {'ratio':>7s}"
    print(head)
    print("-" * len(head))
    for name, order, fn in cases:
        cold = best_of(fn, cold=True)
        warm = best_of(fn, cold=False)
        ntrees = len(_trees.trees_up_to_order(order))
        if order == 9 and "HB" not in name:
            ref = f"{BSERIES_JL_S:14.3f} {BSERIES_JL_S / cold:6.1f}x {PYBS_S:9.1f} {PYBS_S / cold:6.0f}x"
        else:
            ref = f"{'':14s} {'':7s} {'':9s} {'':7s}"
        print(f"{name:34s} {order:5d} {ntrees:5d} {cold:9.4f} {warm:9.4f} {ref}")
    print("ratio = published time / our cold time (> 1: faster than the published figure)")


if __name__ == "__main__":
    main()
