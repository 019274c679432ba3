"""Claim 4 (Cattaneo & Shigida, arXiv 2509.08483, Remark 5.2; docs/theory/hb_trees.md#not-gradient): heavy-ball's order-3
modified equation is not a gradient flow: c([[o]]) != 2 c([o,o]), so the h^2 coefficient field has a nonzero curl.

Write the order-3 field as theta' = f1 + h f2 + h^2 f3 with f3 = c([[o]]) H^2 g + c([o,o]) T3[g,g] (c = the number
multiplying F(t)). Since grad(g^T H g) = 2 H^2 g + T3[g,g], f3 is a gradient for every loss iff c([[o]]) = 2 c([o,o]).

1. Exact (``modeq.series.hb_modified_coefficients``, sympy): c([[o]]) - 2 c([o,o]) = -1/(6(1-beta)^3) != 0, and the
   tree-level gradient test b(u o v) = b(v o u) (b = sigma c, o = Butcher product; docs/theory/hb_trees.md#polynomials) over all trees up to
   5 nodes, for HB's modified field, GD's modified field and HB's memoryless map.
2. Numerical: f3 is extracted from ``modeq.modified_field(heavy_ball(beta), loss, h, order=3, truncation="taylor")``
   (an exact polynomial in h; f3 = its h^2 Taylor coefficient, by nested JVPs in h) on a non-quadratic 2-D loss, and its Jacobian is
   compared with its transpose. Prediction: the antisymmetric part equals that of -1/(6(1-beta)^3) H^2 g, i.e.
   (1-beta)^-3 times GD's. Controls: f2 (order-2 field: a gradient, IGR-M), the h^2 term d3 of the memoryless map
   (a gradient, 000 Thm 2.1), and a quadratic loss (T3 = 0, H constant: H^2 g = H^3 theta is a gradient).

GD (the brief asked to check): GD's order-3 field is NOT a gradient either: c([[o]]) = -1/3, 2 c([o,o]) = -1/6
(the obstruction -(1/6) H^2 g is the classical one, Hairer-Lubich-Wanner IX; docs/theory/bea.md#gd, "at beta = 0 this
reduces to the known GD obstruction"). Only the order-2 fields (IGR, IGR-M) are gradients for GD and HB alike.

Verdict: reproduced iff (i) c([[o]]) - 2 c([o,o]) equals -1/(6(1-beta)^3) exactly (sympy) and has no root in beta; (ii)
the tree-level test finds no violation at n = 2 and some at n = 3 for both modified fields, none for the memoryless
map; (iii) at each beta the curl of f3 equals the predicted curl of -1/(6(1-beta)^3) H^2 g to relative 1e-10 (exact
coefficients, jacfwd) and 1e-4 (modified_field, central differences, delta = 1e-4), f3 from modified_field agrees with
the exact field to 1e-8, and the controls have |curl| <= 1e-8 (a curl of the claimed size is ~1e-2); (iv) the curl
ratio HB/GD equals (1-beta)^-3 to relative 1e-8. ``--quick``: beta = 0 and 0.5, trees up to 4 nodes, GD's f3 from the
exact coefficients only, controls at beta = 0.5 only, no circulation.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

import modeq
from modeq import optimizers as O
from modeq.series import (
    BETA,
    butcher_product,
    gd_modified_coefficients,
    hb_memoryless_coefficients,
    hb_modified_coefficients,
    symbolic_field,
    trees_up_to_order,
)

BETAS = (0.0, 0.5, 0.9)


def loss(th):
    return (jnp.sum(jnp.log(jnp.cosh(th - jnp.array([0.3, -0.2])))) + 0.25 * (th[0] * th[1] - 0.4) ** 2
            + 0.1 * jnp.sum(th**4))


def quadratic(th):
    return 0.5 * th @ (jnp.array([[2.0, 0.6], [0.6, 1.0]]) @ th) + jnp.array([0.3, -0.1]) @ th


def gradient_test_violations(records, order):
    """Pairs (u, v), |u| + |v| = n <= order, with sigma c(u o v) != sigma c(v o u): the field sum_t c(t) F(t) at
    fixed h-power is a gradient for every loss iff there are none (docs/theory/hb_trees.md#polynomials)."""
    b = {r.tree: sp.cancel(r.sigma * r.coefficient) for r in records}
    bad, total = [], 0
    trees = [t for t in trees_up_to_order(order - 1)]
    for u in trees:
        for v in trees:
            if u.order + v.order > order or not (u < v):
                continue
            total += 1
            if sp.cancel(b[butcher_product(u, v)] - b[butcher_product(v, u)]) != 0:
                bad.append((u, v))
    return bad, total


def modified_h2_field(opt, fn_loss):
    """theta -> f3(theta), the h^2 term of ``modeq.modified_field(opt, loss, order=3, truncation="taylor")``: the field
    is an exact quadratic polynomial F(h) in h, so f3 = (F(1) + F(-1) - 2 F(0))/2 (one compilation per optimizer)."""
    fn = jax.jit(modeq.modified_field(opt, fn_loss, h=1.0, order=3, truncation="taylor").fn)
    return lambda th: (fn(th, 1.0) + fn(th, -1.0) - 2 * fn(th, 0.0)) / 2


def fd_jacobian(field, theta, delta=1e-4):
    """Central finite-difference Jacobian (error O(delta^2), ~1e-8 relative here)."""
    cols = [(field(theta + delta * e) - field(theta - delta * e)) / (2 * delta) for e in jnp.eye(theta.shape[0])]
    return np.stack([np.asarray(c) for c in cols], axis=1)


def exact_field(records, fn_loss, beta, nodes):
    """The sum over trees with ``nodes`` nodes of coef(t) F(t): the h^(nodes-1) term of a modified field (or the
    h^(nodes-1) term of (theta - Psi_h)/h for memoryless records), from the exact symbolic coefficients."""
    return symbolic_field([r for r in records if r.tree.order == nodes], fn_loss, h=1.0, beta=beta)


def asymmetry(J):
    J = np.asarray(J)
    return float(np.linalg.norm(J - J.T) / max(np.linalg.norm(J + J.T), 1e-300)), float(J[1, 0] - J[0, 1])


def verdict(gap_ok, violations, curls, controls, agreements, ratios):
    """Reasons the claim is not reproduced (empty: reproduced). ``gap_ok``: the exact gap is -1/(6(1-beta)^3) and never
    vanishes; ``violations[name][n]``: tree-level violations with n nodes; ``curls[beta]``: (finite-difference curl,
    exact-coefficient curl, predicted curl; the first None if not computed); ``controls[(beta, name)]``: curl;
    ``agreements[beta]``: relative difference of f3 and the exact field; ``ratios[beta]``: (measured HB/GD curl ratio,
    (1-beta)^-3)."""
    failures = []
    if not gap_ok:
        failures.append("exact gap c([[o]]) - 2 c([o,o]) is not -1/(6(1-beta)^3) (or vanishes)")
    for name, counts in violations.items():
        gradient_at_3 = name == "HB memoryless map"
        if counts.get(2, 0) != 0:
            failures.append(f"{name}: {counts[2]} tree-level violations at n = 2 (order-2 term must be a gradient)")
        if gradient_at_3 and any(counts.values()):
            failures.append(f"{name}: tree-level violations {counts} (must be a gradient)")
        if not gradient_at_3 and counts.get(3, 0) == 0:
            failures.append(f"{name}: no tree-level violation at n = 3 (claim: not a gradient)")
    for beta, (fd, ex, pred) in curls.items():
        if not abs(ex - pred) <= 1e-10 * abs(pred):
            failures.append(f"beta = {beta}: curl of f3 {ex:.6e} != predicted {pred:.6e}")
        if fd is not None and not abs(fd - pred) <= 1e-4 * abs(pred):
            failures.append(f"beta = {beta}: finite-difference curl of modified_field's f3 {fd:.6e} != {pred:.6e}")
    for (beta, name), c in controls.items():
        if not abs(c) <= 1e-8:
            failures.append(f"beta = {beta}, {name}: curl {c:.1e} (a gradient has 0)")
    for beta, rel in agreements.items():
        if not rel <= 1e-8:
            failures.append(f"beta = {beta}: f3 from modified_field differs from the exact field by {rel:.1e}")
    for beta, (measured, claimed) in ratios.items():
        if not abs(measured - claimed) <= 1e-8 * claimed:
            failures.append(f"beta = {beta}: curl ratio HB/GD {measured:.8f} != (1-beta)^-3 = {claimed:.8f}")
    return failures


def finish(failures):
    """Print the final verdict line; the exit status is 0 only when the claim is reproduced."""
    print("VERDICT: claim reproduced" if not failures else f"VERDICT: claim NOT reproduced ({'; '.join(failures)})")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="PNG path (default examples/out/hb_not_gradient_flow.png; none with "
                    "--quick unless given)")
    ap.add_argument("--quick", action="store_true", help="small smoke-test run (a few seconds), verdict still checked")
    args = ap.parse_args()
    out = args.out or (None if args.quick else "examples/out/hb_not_gradient_flow.png")
    betas = BETAS[:2] if args.quick else BETAS
    nodes = 4 if args.quick else 5
    t0 = time.time()

    # ---- 1. exact coefficients
    rec = {str(r.tree): r for r in hb_modified_coefficients(3)}
    c_tall, c_bushy = rec["[[o]]"].coefficient, rec["[o,o]"].coefficient
    gap = sp.factor(sp.cancel(c_tall - 2 * c_bushy))
    print("1. exact coefficients of HB's order-3 modified equation (coefficient of F(t)):")
    print(f"   c([[o]]) = {sp.factor(c_tall)}    (docs/theory/hb_trees.md: -(beta^2+4beta+1)/(3(1-beta)^5))")
    print(f"   c([o,o]) = {sp.factor(c_bushy)}   (docs/theory/hb_trees.md: -(beta^2+10beta+1)/(12(1-beta)^5))")
    same = sp.cancel(gap + sp.Rational(1, 6) / (1 - BETA) ** 3) == 0
    never_zero = sp.solve(sp.numer(gap), BETA) == []
    print(f"   c([[o]]) - 2 c([o,o]) = {gap}   (claim: != 0; equals the docs' -1/(6(1-beta)^3): {same})  -> "
          f"{'NOT a gradient for any beta in [0, 1)' if never_zero else 'vanishes somewhere'}")
    gd = {str(r.tree): r.coefficient for r in gd_modified_coefficients(3)}
    print(f"   GD: c([[o]]) = {gd['[[o]]']}, c([o,o]) = {gd['[o,o]']}, c([[o]]) - 2 c([o,o]) = "
          f"{gd['[[o]]'] - 2 * gd['[o,o]']} (= the HB gap at beta = 0: {gap.subs(BETA, 0)})")
    print("   tree-level gradient test b(u o v) = b(v o u), per number of nodes n (violations / pairs):")
    violations = {}
    for name, records in (("HB modified field", hb_modified_coefficients(nodes)),
                          ("GD modified field", gd_modified_coefficients(nodes)),
                          ("HB memoryless map", hb_memoryless_coefficients(nodes))):
        counts = []
        for n in range(2, nodes + 1):
            bad, total = gradient_test_violations([r for r in records if r.tree.order <= n], n)
            bad_n = [p for p in bad if p[0].order + p[1].order == n]
            total_n = total - gradient_test_violations([r for r in records if r.tree.order <= n - 1], n - 1)[1] \
                if n > 2 else total
            counts.append(f"n={n}: {len(bad_n)}/{total_n}")
            violations.setdefault(name, {})[n] = len(bad_n)
        print(f"     {name:18s} " + ", ".join(counts))
    print("   (n = 2 is the order-2 field (h^1 term): a gradient for both; n >= 3: not, except the memoryless map)")

    # ---- 2. numerical Jacobians
    theta = jnp.array([0.9, -0.4])
    print(f"\n2. Jacobian J of the h^2 coefficient field at theta = {np.asarray(theta)} "
          "(asym = |J - J^T|/|J + J^T|, curl = J10 - J01):")
    print("   f3 from modeq.modified_field(order=3, truncation='taylor'), J by central differences; 'exact': the same\n"
          "   field from the symbolic tree coefficients (modeq.series.symbolic_field), J by jax.jacfwd")
    g_fn = jax.grad(loss)
    rows, curls, controls_curl, agreements = {}, {}, {}, {}
    print(f"   {'beta':>4s} {'field':<40s} {'asym':>9s} {'curl':>11s} {'predicted curl':>15s}")
    for beta in betas:
        opt = O.heavy_ball(beta) if beta > 0 else O.gd()
        mod = hb_modified_coefficients(3) if beta > 0 else gd_modified_coefficients(3)
        s3 = exact_field(mod, loss, beta, 3)
        if args.quick and beta == 0:  # --quick: GD's f3 from the exact coefficients only (saves a compilation)
            agree, a3, curl3 = None, float("nan"), None
        else:
            f3 = modified_h2_field(opt, loss)
            agree = float(jnp.linalg.norm(f3(theta) - s3(theta)) / jnp.linalg.norm(s3(theta)))
            a3, curl3 = asymmetry(fd_jacobian(f3, theta))
        a3x, curl3x = asymmetry(jax.jit(jax.jacfwd(s3))(theta))

        def h2g(th, beta=beta):  # the non-gradient part -1/(6(1-beta)^3) H^2 g
            hg = jax.jvp(g_fn, (th,), (g_fn(th),))[1]
            return -1.0 / (6 * (1 - beta) ** 3) * jax.jvp(g_fn, (th,), (hg,))[1]

        _, curl_pred = asymmetry(jax.jit(jax.jacfwd(h2g))(theta))
        rows[beta] = curl3x
        curls[beta] = (curl3, curl3x, curl_pred)
        if agree is not None:
            agreements[beta] = agree
            print(f"   {beta:4.1f} {'f3 = h^2 term of modified_field':<40s} {a3:9.2e} {curl3:11.4e} {curl_pred:15.4e}"
                  f"   (f3 vs exact field: rel. diff {agree:.1e})")
        print(f"   {beta if agree is None else '':4} {'f3, exact coefficients':<40s} {a3x:9.2e} {curl3x:11.4e}"
              + (f" {curl_pred:15.4e}" if agree is None else ""))
        controls = [("f2 = h^1 term (control)", exact_field(mod, loss, beta, 2)),
                    ("f3 on a quadratic loss (control)", exact_field(mod, quadratic, beta, 3))]
        if beta > 0:
            controls.insert(1, ("d3 = h^2 term of memoryless map (ctrl)",
                                exact_field(hb_memoryless_coefficients(3), loss, beta, 3)))
        for name, field in controls if agree is not None else ():  # --quick: controls at beta = 0.5 only
            a, c = asymmetry(jax.jit(jax.jacfwd(field))(theta))
            print(f"   {'':4s} {name:<40s} {a:9.2e} {c:11.1e}")
            controls_curl[(beta, name)] = c
    ratios = {beta: (rows[beta] / rows[0.0], (1 - beta) ** -3) for beta in betas[1:]}
    for beta in betas[1:]:
        print(f"   curl ratio HB(beta={beta})/GD = {rows[beta] / rows[0.0]:.6f}  vs (1-beta)^-3 = {(1 - beta) ** -3:.6f}")

    if out is None:  # --quick without --out: no circulation, no figure
        print(f"\nRESULT: c([[o]]) - 2c([o,o]) = {gap}; f3 has curl {rows[0.5]:.3e} at beta = 0.5")
        return finish(verdict(same and never_zero, violations, curls, controls_curl, agreements, ratios))
    # circulation of f3 around a circle (Stokes: = integral of the curl over the disc)
    s = np.linspace(0, 2 * np.pi, 401)[:-1]
    centre, radius = np.array([0.9, -0.4]), 0.3
    pts = jnp.asarray(centre + radius * np.stack([np.cos(s), np.sin(s)], 1))
    tangent = radius * np.stack([-np.sin(s), np.cos(s)], 1)
    f3_hb = jax.jit(jax.vmap(exact_field(hb_modified_coefficients(3), loss, 0.5, 3)))
    circ = float(np.mean(np.sum(np.asarray(f3_hb(pts)) * tangent, 1)) * 2 * np.pi)
    print(f"\n   circulation of f3 (beta = 0.5) around the circle |theta - {centre}| = {radius}: {circ:.4e} "
          "(a gradient field has 0)")
    print(f"\nRESULT: c([[o]]) - 2c([o,o]) = {gap}; f3 has curl {rows[0.5]:.3e} at beta = 0.5. "
          "Disagreement with the brief's expectation: GD's order-3 field is not a gradient either (curl "
          f"{rows[0.0]:.3e}); docs/theory/hb_trees.md#not-gradient says so too.")
    failures = verdict(same and never_zero, violations, curls, controls_curl, agreements, ratios)
    if out is None:
        return finish(failures)

    # ---- plot: curl of f3 over a grid, HB(0.5) and GD, with the control f2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g1 = np.linspace(-0.6, 1.4, 41)
    g2 = np.linspace(-1.2, 0.8, 41)
    X, Y = np.meshgrid(g1, g2)
    grid = jnp.asarray(np.stack([X.ravel(), Y.ravel()], 1))

    def curl_map(field):
        J = np.asarray(jax.jit(jax.vmap(jax.jacfwd(field)))(grid))
        return (J[:, 1, 0] - J[:, 0, 1]).reshape(X.shape)

    maps = [
        ("HB beta=0.5: curl of f3 (h^2 term)", curl_map(exact_field(hb_modified_coefficients(3), loss, 0.5, 3))),
        ("GD: curl of f3 (h^2 term)", curl_map(exact_field(gd_modified_coefficients(3), loss, 0.0, 3))),
        ("HB 0.5: curl of d3 (memoryless; control)",
         curl_map(exact_field(hb_memoryless_coefficients(3), loss, 0.5, 3))),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (title, Z) in zip(axes, maps):
        vmax = max(float(np.max(np.abs(Z))), 1e-300)
        im = ax.pcolormesh(X, Y, Z, cmap="RdBu_r", vmin=-vmax, vmax=vmax, shading="auto")
        ax.contour(X, Y, np.asarray(jax.vmap(loss)(grid)).reshape(X.shape), 12, colors="k", linewidths=0.4)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("theta1")
        fig.colorbar(im, ax=ax)
    axes[0].set_ylabel("theta2")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"saved {out} ({time.time() - t0:.1f} s)")
    return finish(failures)


if __name__ == "__main__":
    sys.exit(main())
