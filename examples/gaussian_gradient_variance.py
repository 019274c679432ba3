"""Claim 11 (Wang, Malladi, Wang, Lyu, Li, arXiv 2307.15196, Sec. 4.1): with i.i.d. Gaussian gradients
g_k ~ N(c, sigma^2 I), normalized SGDM (same eta, m_0 = c) takes much smoother steps than SGD (per-step variance
(1-beta)/(1+beta) (1-beta^(2k)) eta^2 sigma^2 instead of eta^2 sigma^2) but ends with nearly the same spread:
Var_SGD(x_k) = k eta^2 sigma^2, Var_SGDM(x_k) = eta^2 sigma^2 sum_{j<=k} (1-beta^j)^2 (docs/theory/sme.md#gaussian).

Monte Carlo over runs of ``modeq.optimizers.simulate`` (coordinates of a d-dimensional run are independent samples)
against ``modeq.sde.gaussian_gradient_variances``; z-scores use the standard error of a sample variance.

Verdict: reproduced iff (i) ``gaussian_gradient_variances`` equals the closed forms above (and the gap limit
eta^2 sigma^2 beta(2+beta)/(1-beta^2)) to relative 1e-12 at every k, and (ii) every measured variance is within
Z_MAX = 4 standard errors of its exact value (relative standard error sqrt(2/n), n = 400000: a 1% error in a
formula is 4.5 standard errors). ``--quick``: 200 runs of dimension 100 (n = 20000; a wrong finite-k factor, e.g.
(1-beta^(2k)) dropped, is off by 100% at k = 1).
"""

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import modeq  # noqa: F401  (float64)
from modeq.optimizers import gd, sgdm, simulate
from modeq.problems import GaussianNGOS
from modeq.sde import gaussian_gradient_variances


Z_MAX = 4.0


def closed_forms(eta, beta, sig, k):
    """The Section 4.1 variances written out here, independently of modeq (see the module docstring)."""
    s2 = eta**2 * sig**2
    return {"sgd_endpoint": k * s2, "sgdm_endpoint": s2 * sum((1 - beta**j) ** 2 for j in range(1, k + 1)),
            "sgdm_step": (1 - beta) / (1 + beta) * (1 - beta ** (2 * k)) * s2,
            "gap_limit": s2 * beta * (2 + beta) / (1 - beta**2)}


def verdict(formulas, zscores):
    """Reasons the claim is not reproduced (empty: reproduced). ``formulas[(k, name)]``: (modeq's value, closed form);
    ``zscores[(k, name)]``: (measured/exact - 1)/sqrt(2/n)."""
    failures = []
    for (k, name), (value, exact) in formulas.items():
        if not abs(value - exact) <= 1e-12 * abs(exact):
            failures.append(f"k = {k}: {name} {value:.8g} != closed form {exact:.8g}")
    for (k, name), z in zscores.items():
        if not abs(z) <= Z_MAX:
            failures.append(f"k = {k}: measured {name} off by z = {z:+.1f}")
    return failures


def finish(failures):
    """Print the final verdict line; the exit status is 0 only when the claim is reproduced."""
    print("VERDICT: claim reproduced" if not failures else f"VERDICT: claim NOT reproduced ({'; '.join(failures)})")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="PNG path (default examples/out/gaussian_gradient_variance.png; none "
                    "with --quick unless given)")
    ap.add_argument("--runs", type=int, default=None, help="runs (default 2000; 200 with --quick)")
    ap.add_argument("--d", type=int, default=None, help="dimension (default 200; 100 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small smoke-test run (a few seconds), verdict still checked")
    args = ap.parse_args()
    out = args.out or (None if args.quick else "examples/out/gaussian_gradient_variance.png")
    args.runs = args.runs or (200 if args.quick else 2000)
    args.d = args.d or (100 if args.quick else 200)
    formulas, zscores = {}, {}
    t0 = time.time()
    eta, beta, sig, K, d = 0.1, 0.9, 2.0, 100, args.d
    c = jnp.full(d, 0.5)
    loss = lambda x: c @ x  # noqa: E731
    orc = GaussianNGOS(loss, sigma=sig)
    keys = jax.random.split(jax.random.key(0), args.runs)

    def run(opt, m0):
        return np.asarray(jax.vmap(lambda k: simulate(opt, loss, jnp.zeros(d), K, h=eta, oracle=orc, key=k, m0=m0,
                                                      record=False).theta)(keys))

    xs = {"SGD": run(gd(), "zero"), "SGDM": run(sgdm(beta), (c,))}
    n = args.runs * d
    print(f"eta = {eta}, beta = {beta}, sigma = {sig}, {n} samples per entry (runs x coordinates)")
    print(f"{'k':>4s} | {'SGD Var x_k':>22s} | {'SGDM Var x_k':>22s} | {'SGDM step var':>22s} | {'gap exact':>9s}")
    ks = [1, 2, 5, 20, 100]
    rows = []
    for k in ks:
        ex = gaussian_gradient_variances(eta, beta, sig, k)
        v_sgd = xs["SGD"][:, k].var()
        v_m = xs["SGDM"][:, k].var()
        step = (xs["SGDM"][:, k] - xs["SGDM"][:, k - 1]).var()
        z = [(v / e - 1) / math.sqrt(2 / n) for v, e in
             ((v_sgd, ex["sgd_endpoint"]), (v_m, ex["sgdm_endpoint"]), (step, ex["sgdm_step"]))]
        rows.append((k, v_sgd, ex["sgd_endpoint"], v_m, ex["sgdm_endpoint"], step, ex["sgdm_step"]))
        for name, exact in closed_forms(eta, beta, sig, k).items():
            formulas[(k, name)] = (float(ex[name]), exact)
        zscores.update({(k, "SGD Var x_k"): z[0], (k, "SGDM Var x_k"): z[1], (k, "SGDM step var"): z[2]})
        print(f"{k:4d} | {v_sgd:8.4f} vs {ex['sgd_endpoint']:7.4f} ({z[0]:+.1f}) | {v_m:8.4f} vs "
              f"{ex['sgdm_endpoint']:7.4f} ({z[1]:+.1f}) | {step:8.5f} vs {ex['sgdm_step']:7.5f} ({z[2]:+.1f}) | "
              f"{ex['sgd_endpoint'] - ex['sgdm_endpoint']:9.4f}")
    ex = gaussian_gradient_variances(eta, beta, sig, K)
    print(f"limit of the gap eta^2 sigma^2 beta(2+beta)/(1-beta^2) = {ex['gap_limit']:.4f}; "
          f"per-step variance ratio SGDM/SGD = {ex['sgdm_step'] / ex['sgd_step']:.4f} (claim (1-beta)/(1+beta) = "
          f"{(1 - beta) / (1 + beta):.4f}); endpoint ratio at k = {K}: {ex['sgdm_endpoint'] / ex['sgd_endpoint']:.4f}")
    print("(z-scores in parentheses: (measured/exact - 1)/sqrt(2/n))")
    failures = verdict(formulas, zscores)
    if out is None:
        return finish(failures)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in ("SGD", "SGDM"):
        axes[0].plot(xs[name][:3, :, 0].T, lw=0.8, label=[name, None, None])
    axes[0].set_xlabel("step k")
    axes[0].set_title("three runs, coordinate 0")
    axes[0].legend(fontsize=8)
    r = np.array(rows)
    kk = np.arange(1, K + 1)
    axes[1].plot(kk, [gaussian_gradient_variances(eta, beta, sig, int(k))["sgd_endpoint"] for k in kk], "k-",
                 label="SGD exact")
    axes[1].plot(kk, [gaussian_gradient_variances(eta, beta, sig, int(k))["sgdm_endpoint"] for k in kk], "k--",
                 label="SGDM exact")
    axes[1].plot(r[:, 0], r[:, 1], "o", label="SGD measured")
    axes[1].plot(r[:, 0], r[:, 3], "s", label="SGDM measured")
    axes[1].set_xlabel("k")
    axes[1].set_ylabel("Var x_k")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"saved {out}; {time.time() - t0:.1f} s")
    return finish(failures)


if __name__ == "__main__":
    sys.exit(main())
