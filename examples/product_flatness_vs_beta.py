"""Claim 7 (Ghosh et al., ICLR 2023, IGR-M): GD with heavy-ball momentum (same h) has the implicit regularizer
h (1+beta)/(4(1-beta)^2) ||grad L||^2 (in the rescaled flow theta' = -grad L~/(1-beta)); on the product model
L = (y - w1 w2 x)^2/2 larger beta therefore ends at a flatter minimizer: smaller w1^2 + w2^2 (sharpness x^2(w1^2+w2^2)).

Runs heavy-ball from Ghosh et al.'s start (2.8, 3.4) to convergence for several beta, and integrates the IGR-M flow
(the modified loss's field) and the plain rescaled gradient flow (which conserves w1^2 - w2^2) for comparison.

Verdict: reproduced iff (i) every run converged (final loss <= 1e-10), (ii) the final w1^2 + w2^2 of heavy-ball
decreases strictly with beta and stays >= 2 y/x = 1.2 (the flattest minimizer), and (iii) the grad-norm-squared
coefficient of the modified loss equals h (1+beta)/(4(1-beta)^2) (relative 1e-12) for every beta. ``--quick``:
beta = 0, 0.5, 0.9 at h = 0.004.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import modeq  # noqa: F401  (float64)
from modeq import optimizers as O
from modeq import problems as P
from modeq.regularizers import modified_loss


def flow_endpoint(field, theta0, t_end, dt):
    n = int(round(t_end / dt))

    def rk4(y, _):
        k1 = field(y); k2 = field(y + dt / 2 * k1); k3 = field(y + dt / 2 * k2); k4 = field(y + dt * k3)  # noqa: E702
        return y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

    return jax.jit(lambda y: jax.lax.scan(rk4, y, None, length=n)[0])(theta0)


def verdict(rows, h):
    """Reasons the claim is not reproduced (empty: reproduced). ``rows``: (beta, IGR-M coefficient, HB final
    w1^2 + w2^2, ..., final loss) per beta, in increasing beta."""
    failures = []
    for beta, coef, w2, *_, final_loss in rows:
        exact = h * (1 + beta) / (4 * (1 - beta) ** 2)
        if not abs(coef - exact) <= 1e-12 * exact:
            failures.append(f"beta = {beta}: IGR-M coefficient {coef:.6g} != h(1+beta)/(4(1-beta)^2) = {exact:.6g}")
        if not final_loss <= 1e-10:
            failures.append(f"beta = {beta}: not converged (final loss {final_loss:.2e})")
        if not w2 >= 1.2 - 1e-9:
            failures.append(f"beta = {beta}: w1^2 + w2^2 = {w2:.4f} below the flattest possible 1.2")
    hb = [r[2] for r in rows]
    if not all(a > b for a, b in zip(hb, hb[1:])):
        failures.append("final w1^2 + w2^2 not decreasing in beta: " + ", ".join(f"{v:.4f}" for v in hb))
    return failures


def finish(failures):
    """Print the final verdict line; the exit status is 0 only when the claim is reproduced."""
    print("VERDICT: claim reproduced" if not failures else f"VERDICT: claim NOT reproduced ({'; '.join(failures)})")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="PNG path (default examples/out/product_flatness_vs_beta.png; none "
                    "with --quick unless given)")
    ap.add_argument("--h", type=float, default=None, help="step size (default 0.002; 0.004 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small smoke-test run (a few seconds), verdict still checked")
    args = ap.parse_args()
    out = args.out or (None if args.quick else "examples/out/product_flatness_vs_beta.png")
    t0 = time.time()
    prob = P.product(x=1.0, y=0.6)
    loss, h = prob.loss, args.h or (0.004 if args.quick else 0.002)
    theta0 = jnp.array([2.8, 3.4])
    betas = [0.0, 0.5, 0.9] if args.quick else [0.0, 0.3, 0.5, 0.7, 0.8, 0.9]
    t_end = 40.0  # n = t_end / h steps for every beta (same h, same number of steps)
    steps = int(round(t_end / h))
    rows = []
    print(f"product model (0.6 - w1 w2)^2/2, start (2.8, 3.4), h = {h}, {steps} steps; "
          "gradient flow conserves w1^2 - w2^2 = " f"{float(theta0[0]**2 - theta0[1]**2):.3f}")
    print(f"{'beta':>5s} {'IGR-M coef':>10s} {'HB |w|^2':>10s} {'IGR-M flow |w|^2':>17s} {'grad-flow |w|^2':>16s} "
          f"{'sharpness HB':>13s} {'final loss':>10s}")
    for beta in betas:
        opt = O.heavy_ball(beta)
        traj = O.simulate(opt, loss, theta0, steps, h=h)
        w = np.asarray(traj.theta[-1])
        ml = modified_loss(opt, loss, h=h)
        coef = ml.term("grad_norm_sq").coefficient
        igr = np.asarray(flow_endpoint(ml.field, theta0, steps * h, h / 2))
        gf = np.asarray(flow_endpoint(modified_loss(opt, loss, h=h, order=1).field, theta0, steps * h, h / 2))
        rows.append((beta, coef, (w**2).sum(), (igr**2).sum(), (gf**2).sum(), float(traj.loss[-1])))
        print(f"{beta:5.2f} {coef:10.4g} {(w**2).sum():10.4f} {(igr**2).sum():17.4f} {(gf**2).sum():16.4f} "
              f"{(w**2).sum():13.4f} {float(traj.loss[-1]):10.2e}")
    hb = [r[2] for r in rows]
    print(f"claim: final w1^2+w2^2 decreasing in beta ({hb[0]:.4f} at beta=0 to {hb[-1]:.4f} at beta={betas[-1]}; "
          "flattest possible 2 y/x = 1.2)")
    failures = verdict(rows, h)
    if out is None:
        return finish(failures)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    u = np.linspace(0.05, 4, 400)
    axes[0].plot(u, 0.6 / u, "k--", lw=1, label="minimizers w1 w2 = 0.6")
    for beta in betas:
        traj = O.simulate(O.heavy_ball(beta), loss, theta0, steps, h=h)
        th = np.asarray(traj.theta)
        axes[0].plot(th[:, 0], th[:, 1], label=f"beta={beta}")
    axes[0].set_xlim(0, 3.2)
    axes[0].set_ylim(0, 3.8)
    axes[0].set_xlabel("w1")
    axes[0].set_ylabel("w2")
    axes[0].legend(fontsize=7)
    axes[1].plot(betas, [r[2] for r in rows], "o-", label="heavy-ball (measured)")
    axes[1].plot(betas, [r[3] for r in rows], "s--", label="IGR-M flow (modified loss)")
    axes[1].plot(betas, [r[4] for r in rows], "^:", label="rescaled gradient flow")
    axes[1].set_xlabel("beta")
    axes[1].set_ylabel("final w1^2 + w2^2")
    axes[1].legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"saved {out} ({time.time() - t0:.1f} s)")
    return finish(failures)


if __name__ == "__main__":
    sys.exit(main())
