"""Claim 11 (Wang, Malladi, Wang, Lyu, Li, arXiv 2307.15196, Sec. 4.1): with i.i.d. Gaussian gradients
g_k ~ N(c, sigma^2 I), normalized SGDM (same eta, m_0 = c) takes much smoother steps than SGD (per-step variance
(1-beta)/(1+beta) (1-beta^(2k)) eta^2 sigma^2 instead of eta^2 sigma^2) but ends with nearly the same spread:
Var_SGD(x_k) = k eta^2 sigma^2, Var_SGDM(x_k) = eta^2 sigma^2 sum_{j<=k} (1-beta^j)^2 (THEORY.md B1.7).

Monte Carlo over runs of ``modeq.optimizers.simulate`` (coordinates of a d-dimensional run are independent samples)
against ``modeq.sde.gaussian_gradient_variances``; z-scores use the standard error of a sample variance.
"""

import argparse
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import modeq  # noqa: F401  (float64)
from modeq.optimizers import gd, sgdm, simulate
from modeq.problems import GaussianNGOS
from modeq.sde import gaussian_gradient_variances


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="examples/out/gaussian_gradient_variance.png")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--d", type=int, default=200)
    args = ap.parse_args()
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
        print(f"{k:4d} | {v_sgd:8.4f} vs {ex['sgd_endpoint']:7.4f} ({z[0]:+.1f}) | {v_m:8.4f} vs "
              f"{ex['sgdm_endpoint']:7.4f} ({z[1]:+.1f}) | {step:8.5f} vs {ex['sgdm_step']:7.5f} ({z[2]:+.1f}) | "
              f"{ex['sgd_endpoint'] - ex['sgdm_endpoint']:9.4f}")
    ex = gaussian_gradient_variances(eta, beta, sig, K)
    print(f"limit of the gap eta^2 sigma^2 beta(2+beta)/(1-beta^2) = {ex['gap_limit']:.4f}; "
          f"per-step variance ratio SGDM/SGD = {ex['sgdm_step'] / ex['sgd_step']:.4f} (claim (1-beta)/(1+beta) = "
          f"{(1 - beta) / (1 + beta):.4f}); endpoint ratio at k = {K}: {ex['sgdm_endpoint'] / ex['sgd_endpoint']:.4f}")
    print("(z-scores in parentheses: (measured/exact - 1)/sqrt(2/n))")

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
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"saved {args.out}; {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
