"""Claim 10 (Wang, Malladi, Wang, Lyu, Li, arXiv 2307.15196, Thm. 5.5; Li, Wang & Arora 2022): SGD and SGDM converge
to the same slow SDE on the manifold of minimizers over O(1/eta^2) steps, for 1 - beta fixed, ~ eta^0.5 and ~ eta.

(a) uv model L = (uv - 1)^2/2 with label noise (delta = 1, one example): the slow SDE is deterministic,
    D_t = D_0 exp(-t) with D = u^2 - v^2, slow time t = eta^2 k (docs/theory/slow_sde.md#uv). Table of D_1/D_0 for SGD and
    normalized SGDM (m_0 = 0) at eta = 0.02, 0.01, 0.005, with Monte Carlo standard errors.
(b) uv model with isotropic noise Sigma = I from (2, 0.5), slow time 0.5 (B4.1(b)): E[D], Var[D] and E[theta]
    (theta = asinh(D/2)/2) of SGD against LWA's slow SDE (Euler-Maruyama on the explicit four-term form, re-projected
    by the gradient-flow limit Phi), and against the control without the normal-regularization term; D is a
    martingale of the slow SDE, so E[D] = D_0 = 3.75 exactly.

Verdict: reproduced iff (a) every run at every eta is within eta + 4 standard errors of e^-1 (measured bias: SGD
~0.6 eta, SGDM within 0.007; a drift off by a factor 2 gives e^-2 = 0.135); (b) the slow SDE's E[D] agrees with SGD at
the finest eta (|z| <= 4) and with the martingale value 3.75 (|z| <= 4), and, with at least 2000 paths, the control
without the normal-regularization term does not (|z| > 3; measured +5.1). ``--quick``: 128 paths at eta = 0.04,
0.02 in (a), no (b) (with ``--quick --out``: 256 paths in (b), SGD at eta = 0.02 only, the control not judged).
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
from modeq.problems import GaussianNGOS, LabelNoise, uv
from modeq.sde import endpoints, optimizer_for, slow_sde


def label_noise_table(etas, paths, seed):
    p = uv()
    orc = LabelNoise(p, 1.0)
    variants = [("SGD", {}), ("SGDM beta = 0.9", dict(beta=0.9)), ("SGDM 1-beta = eta^0.5", dict(alpha=0.5)),
                ("SGDM 1-beta = eta", dict(alpha=1.0))]
    rows = {}
    for name, kw in variants:
        rows[name] = []
        for i, eta in enumerate(etas):
            opt = optimizer_for(eta, **kw)
            e = np.asarray(endpoints(opt, p.loss, p.theta0, int(round(1 / eta**2)), h=eta, oracle=orc, paths=paths,
                                     key=jax.random.fold_in(jax.random.key(seed), i)))
            r = (e[:, 0] ** 2 - e[:, 1] ** 2) / 3.75
            rows[name].append((eta, opt.hyper.get("beta", 0.0), r.mean(), r.std(ddof=1) / math.sqrt(paths)))
    return rows


def isotropic_table(eta_sgd, paths, steps, seed):
    p = uv()
    x0 = jnp.array([2.0, 0.5])
    orc = GaussianNGOS(p.loss, sigma=1.0)

    def stats(ys):
        D = ys[:, 0] ** 2 - ys[:, 1] ** 2
        th = 0.5 * np.arcsinh(D / 2)
        n = len(D)
        return dict(ED=D.mean(), seD=D.std(ddof=1) / math.sqrt(n), VarD=D.var(ddof=1),
                    seVar=D.var(ddof=1) * math.sqrt(2 / (n - 1)), Eth=th.mean(), seth=th.std(ddof=1) / math.sqrt(n))

    out = {}
    for i, eta in enumerate(eta_sgd):
        out[f"SGD eta = {eta:g}"] = stats(np.asarray(endpoints(
            optimizer_for(eta), p.loss, x0, int(round(0.5 / eta**2)), h=eta, oracle=orc, paths=paths,
            key=jax.random.fold_in(jax.random.key(seed), 100 + i))))
    for name, kw in [("slow SDE (projected noise)", dict(scheme="projected")),
                     ("slow SDE (explicit form, EM)", dict(scheme="em")),
                     ("control: no normal regularization", dict(scheme="em", normal_regularization=False))]:
        r = slow_sde(p.loss, orc.covariance, x0, 0.5, steps, paths=paths, key=jax.random.key(seed + 1), t_max=6.0,
                     **kw)
        out[name] = stats(np.asarray(r.ys[:, -1]))
    return out


def verdict(rows, target, z_slow, z_martingale, z_control, iso_paths):
    """Reasons the claim is not reproduced (empty: reproduced). ``rows[name]``: [(eta, beta, mean, standard error)]
    of D_1/D_0; ``z_slow``/``z_control``: E[D] of the slow SDE / the control against SGD; ``z_martingale``: the slow
    SDE's E[D] against D_0 (None: (b) not run); ``iso_paths``: paths behind them."""
    failures = []
    for name, rr in rows.items():
        for eta, _, m, se in rr:
            if not abs(m - target) <= eta + 4 * se:
                failures.append(f"{name}, eta = {eta:g}: D_1/D_0 = {m:.4f} +- {se:.4f} vs e^-1 = {target:.4f}")
    if z_slow is None:  # (b) not run
        return failures
    if not abs(z_slow) <= 4:
        failures.append(f"slow SDE E[D] vs SGD: z = {z_slow:+.1f}")
    if not abs(z_martingale) <= 4:
        failures.append(f"slow SDE E[D] vs the martingale value 3.75: z = {z_martingale:+.1f}")
    if iso_paths >= 2000 and not abs(z_control) > 3:
        failures.append(f"control without the normal term agrees with SGD (z = {z_control:+.1f}): cannot tell")
    return failures


def finish(failures):
    """Print the final verdict line; the exit status is 0 only when the claim is reproduced."""
    print("VERDICT: claim reproduced" if not failures else f"VERDICT: claim NOT reproduced ({'; '.join(failures)})")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="PNG path (default examples/out/slow_sde_momentum_uv.png; none with "
                    "--quick unless given)")
    ap.add_argument("--paths", type=int, default=None, help="paths in (a) (default 512; 128 with --quick)")
    ap.add_argument("--iso-paths", type=int, default=None, help="paths in (b) (default 2000; 256 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small smoke-test run (a few seconds), verdict still checked")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    out = args.out or (None if args.quick else "examples/out/slow_sde_momentum_uv.png")
    args.paths = args.paths or (128 if args.quick else 512)
    args.iso_paths = args.iso_paths or (256 if args.quick else 2000)
    etas = [0.04, 0.02] if args.quick else [0.02, 0.01, 0.005]
    target = math.exp(-1.0)
    rows = label_noise_table(etas, args.paths, args.seed)
    print(f"(a) uv + label noise (delta = 1), D_1/D_0 at slow time 1; claim: e^-1 = {target:.4f}; {args.paths} paths")
    print(f"{'run':24s} " + " ".join(f"{'eta = ' + format(e, 'g'):>22s}" for e in etas))
    for name, rr in rows.items():
        print(f"{name:24s} " + " ".join(f"{m:.4f} +- {se:.4f} ({m - target:+.4f})" for _, _, m, se in rr))
    if args.quick and out is None:  # --quick: (a) only (each slow-SDE scheme of (b) costs ~7 s of compilation)
        return finish(verdict(rows, target, None, None, None, 0))
    eta_iso = [0.02] if args.quick else [0.02, 0.01]
    iso = isotropic_table(eta_iso, args.iso_paths, 20, args.seed)
    print(f"\n(b) uv + isotropic noise, from (2, 0.5), slow time 0.5; {args.iso_paths} paths each; claim: E[D] = 3.75 "
          "(martingale)")
    print(f"{'run':36s} {'E[D]':>16s} {'Var[D]':>14s} {'E[theta]':>18s}")
    for name, s in iso.items():
        print(f"{name:36s} {s['ED']:8.4f} +- {s['seD']:.3f} {s['VarD']:7.3f} +- {s['seVar']:.2f} "
              f"{s['Eth']:8.4f} +- {s['seth']:.4f}")
    ref = iso[f"SGD eta = {eta_iso[-1]:g}"]
    zs = {}
    for name in ("slow SDE (explicit form, EM)", "control: no normal regularization"):
        s = iso[name]
        z = (s["ED"] - ref["ED"]) / math.hypot(s["seD"], ref["seD"])
        zt = (s["Eth"] - ref["Eth"]) / math.hypot(s["seth"], ref["seth"])
        print(f"  z-score vs SGD eta = {eta_iso[-1]:g}, {name}: E[D] {z:+.2f}, E[theta] {zt:+.2f}")
        zs[name] = z
    slow = iso["slow SDE (explicit form, EM)"]
    z_mart = (slow["ED"] - 3.75) / slow["seD"]
    print(f"  slow SDE E[D] vs the martingale value 3.75: z = {z_mart:+.2f}")
    failures = verdict(rows, target, zs["slow SDE (explicit form, EM)"], z_mart,
                       zs["control: no normal regularization"], args.iso_paths)
    if out is None:
        return finish(failures)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    for name, rr in rows.items():
        r = np.array(rr)
        axes[0].errorbar(r[:, 0], r[:, 2] - target, yerr=2 * r[:, 3], marker="o", capsize=3, label=name)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("eta")
    axes[0].set_ylabel("D_1/D_0 - exp(-1)")
    axes[0].set_title("(a) label noise: bias vs the slow flow")
    axes[0].legend(fontsize=7)
    names = list(iso)
    axes[1].errorbar(range(len(names)), [iso[n]["ED"] for n in names], yerr=[2 * iso[n]["seD"] for n in names],
                     fmt="o", capsize=4)
    axes[1].axhline(3.75, color="k", lw=0.8, label="D_0 (martingale)")
    axes[1].set_xticks(range(len(names)), [n.replace(" (", "\n(").replace(": ", ":\n") for n in names], fontsize=6)
    axes[1].set_ylabel("E[D] at t = 0.5 (+- 2 SE)")
    axes[1].set_title("(b) isotropic noise")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"\nsaved {out}; {time.time() - t0:.1f} s")
    return finish(failures)


if __name__ == "__main__":
    sys.exit(main())
