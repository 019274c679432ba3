"""Study your own optimizer: from an optax chain to its modified equation and implicit regularizer.

Claim (docs/builders/from_optax.md): for an optimizer that is a linear filter of past gradients, with impulse response
w_k (u_n = -h sum_k w_k g_{n-k}), the modified equation of order 2 is the gradient flow, rescaled by c = sum_k w_k, of
L + h R with R = (m1/2 + c/4) ||grad L||^2, m1 = sum_k k w_k. Here the optimizer is a chain the catalog does not have:
an EMA of the gradient (decay 0.5) fed into heavy-ball momentum (trace, decay 0.8): c = 5, m1 = 25, so R = 13.75
||grad L||^2. Checked two ways: the modified fields of order 1-3 against the chain's own iterates (fitted orders
R +- 0.2, modeq's verdict "consistent"), and R (line integral of the order-2 correction) against 13.75 ||grad L||^2
at random points (relative 1e-9). A second chain, nonlinear (RMS scaling then a trust ratio), has orders too but no
scalar regularizer (modeq says why). ``--quick``: orders 1-2 only.
"""

import argparse
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

import modeq  # noqa: F401  (float64)
from modeq.optimizers import from_optax
from modeq.regularizers import implicit_regularizer
from modeq.studies import flow_study


def loss(x):
    return jnp.sum(jnp.log(jnp.cosh(x - 0.2))) + 0.5 * (x[0] * x[1] - 0.3) ** 2 + 0.1 * jnp.sum(x**4)


def ema_then_momentum(h):
    return optax.chain(optax.ema(decay=0.5, debias=False), optax.trace(decay=0.8), optax.scale(-h))


def rms_trust(h):
    return optax.chain(optax.scale_by_rms(decay=0.5, eps=0.1), optax.scale_by_trust_ratio(), optax.scale(-h))


KAPPA = 25 / 2 + 5 / 4  # m1/2 + c/4 of the EMA(0.5) -> trace(0.8) impulse response
ORDER_TOL = 0.2


def verdict(orders, kappa_measured):
    """Reasons the claim is not reproduced (empty: reproduced). ``orders``: {(chain, R): (fitted, modeq verdict)};
    ``kappa_measured``: R(theta)/(||g(theta)||^2 - ||g(ref)||^2) at the probe points."""
    failures = []
    for (chain, R), (p, word) in orders.items():
        if p is None or abs(p - R) > ORDER_TOL or word != "consistent":
            failures.append(f"{chain}, modified:{R}: fitted order {p}, verdict {word}")
    for k in kappa_measured:
        if not abs(k - KAPPA) <= 1e-9 * KAPPA:
            failures.append(f"regularizer coefficient {k:.12g} != {KAPPA}")
    return failures


def finish(failures):
    """Print the final verdict line; the exit status is 0 only when the claim is reproduced."""
    print("VERDICT: claim reproduced" if not failures else f"VERDICT: claim NOT reproduced ({'; '.join(failures)})")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="orders 1-2 only (a few seconds)")
    args = ap.parse_args()
    theta0 = jnp.asarray([0.8, -0.5, 0.6])
    flows = ["modified:1", "modified:2"] + ([] if args.quick else ["modified:3"])
    orders = {}
    for label, make in (("EMA 0.5 -> trace 0.8", ema_then_momentum), ("RMS -> trust ratio", rms_trust)):
        opt = from_optax(make)  # the state's decays and coupling are probed from optax itself
        print(f"{label}: fast state decays {opt.decays}, inner-solve sweeps {opt.depth}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = flow_study(opt, loss, theta0, flows, T=0.1)  # default step sizes: inside the asymptotic regime
        for res in study.results:
            v = res.verdict
            print(f"  {res.flow}: max errors {', '.join(f'{e:.3e}' for e in res.max_error)} at h = "
                  f"{', '.join(f'{h:g}' for h in study.hs)}; fitted order {v.measured:.3f}, {v.verdict}")
            orders[(label, res.order)] = (v.measured, v.verdict)

    reg = implicit_regularizer(from_optax(ema_then_momentum), loss, h=1e-3, reference=theta0)
    gn = jax.jit(lambda t: jnp.sum(jax.grad(loss)(t) ** 2))
    rng = np.random.default_rng(0)
    kappas = []
    for _ in range(3):
        t = theta0 + jnp.asarray(rng.standard_normal(3))
        kappas.append(float(reg.value(t)) / float(gn(t) - gn(theta0)))
    print(f"implicit regularizer of EMA -> trace: R = kappa ||grad L||^2 with kappa = "
          f"{', '.join(f'{k:.12g}' for k in kappas)} (claim m1/2 + c/4 = {KAPPA}); scale c = {reg.scale:.12g}")
    try:
        implicit_regularizer(from_optax(rms_trust), loss, h=1e-3, reference=theta0)
    except ValueError as exc:
        print(f"RMS -> trust ratio: no scalar regularizer: {exc}")
    return finish(verdict(orders, kappas))


if __name__ == "__main__":
    sys.exit(main())
