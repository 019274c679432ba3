"""Fitted orders of the modified flows of Adam / AdamW / NAdam WITH bias correction, started from rest.

Regenerates the table of docs/theory/bias_correction.md (about 2 minutes on 2 CPU cores):

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.bias_correction_table [--quick] [--json out.json]

For each (optimizer, loss, R): the naive start (flow from theta_0, init="rest", burn_in=0, over [0, T]) and the shadow
start (init="shadow": flow from the shadow start; the verdict on the window t >= t_b, the whole-run error from n = 0
beside it, and the whole-run error of the flow plus the leading boundary-layer term, modeq.series.boundary_layer),
and the order of the shift |theta~_0 - theta_0| with the relative error of its closed form
(modeq.series.leading_shift) at the smallest h. All step sizes are inside the asymptotic regime
(h lambda_max/(1-b_slowest)^2 <= 0.05 at the largest h, printed).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np


def cases(quick: bool = False):
    import modeq.optimizers as O
    import modeq.problems as P

    product, logistic = P.product(), P.logistic(d=3)
    adam = O.adam(b1=0.9, b2=0.95, eps=0.0, eps_root=1e-2)
    adamw = O.adamw(b1=0.9, b2=0.95, eps=0.0, eps_root=1e-2, weight_decay=0.5)
    nadam = O.nadam(b1=0.9, b2=0.95, eps=0.0, eps_root=1e-2)
    h_product = [2e-5, 1.5e-5, 1e-5, 7.5e-6]  # smaller h: the order-3 errors (1e-11) meet the rounding of 1e4 steps
    h_logistic = [4e-4, 2e-4, 1e-4, 5e-5]
    out = [
        ("adam", adam, "product", product, h_product, 0.03, (1, 2, 3)),
        ("adam", adam, "logistic:d=3", logistic, h_logistic, 0.2, (1, 2, 3)),
        ("adamw (wd=0.5)", adamw, "product", product, h_product, 0.03, (2, 3)),
        ("nadam", nadam, "product", product, h_product, 0.03, (2, 3)),
    ]
    if quick:
        return out[:2]
    if hasattr(O, "from_optax"):  # the generic path: optax's own zero state, step count and bias correction
        import optax

        for name, alias in (("adam", optax.adam), ("nadam", optax.nadam)):
            opt = O.from_optax(lambda h, alias=alias: alias(h, b1=0.9, b2=0.95, eps=0.0, eps_root=1e-2))
            out.append((f"from_optax(optax.{name})", opt, "product", product, h_product, 0.03, (3,)))
    return out


def run(quick: bool = False) -> list:
    import modeq  # noqa: F401
    from modeq.compare import AccuracyWarning
    from modeq.compare._order import fit_order
    from modeq.compare._study import compare_flow
    from modeq.series import leading_shift

    rows = []
    for label, opt, loss_name, problem, hs, T, orders in cases(quick):
        for R in orders:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AccuracyWarning)
                naive = compare_flow(opt, problem.loss, problem.theta0, f"modified:{R}", hs, T, init="rest",
                                     burn_in=0)
                shadow = compare_flow(opt, problem.loss, problem.theta0, f"modified:{R}", hs, T, init="shadow")
            shift_fit = fit_order(hs, shadow.start_shift)
            closed, power, rel = None, None, None
            if opt.adaptive_form() is not None:  # the closed forms need the Adam family's description
                closed, power = leading_shift(opt, problem.loss, problem.theta0, hs[-1])
                rel = float(np.linalg.norm(closed) / shadow.start_shift[-1] - 1.0)  # norm ratio at the smallest h
            rows.append({
                "optimizer": label, "params": opt.cli_params(), "loss": loss_name, "h": hs, "T": T, "R": R,
                "regime": shadow.regime,
                "naive_order": naive.fit.order, "naive_verdict": naive.verdict.verdict,
                "shadow_window_order": (shadow.corrected_fit or shadow.fit).order,
                "shadow_window_verdict": shadow.verdict.verdict,
                "shadow_whole_run_order": shadow.whole_run_fit.order,
                "composite_whole_run_order": None if shadow.composite_fit is None else shadow.composite_fit.order,
                "composite_max_error": shadow.composite_error,
                "shift_order": shift_fit.order, "closed_form_power": power, "closed_form_rel_error": rel,
                "naive_max_error": naive.max_error, "shadow_window_max_error": shadow.max_error,
                "shadow_whole_run_max_error": shadow.whole_run_error, "start_shift": shadow.start_shift,
                "seconds": time.perf_counter() - t0,
            })
            print(_line(rows[-1]), flush=True)
    return rows


HEADER = ("| optimizer | loss | R | naive start (verdict) | shadow start, t >= t_b (verdict) | shadow, whole run | "
          "shadow + boundary layer, whole run | shift order | closed form: power, rel. error |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _line(r: dict) -> str:
    # the pulled-back start carries an O(h^(R+1) log(1/h)) error: with R = 1 it is as large as an O(h^2) shift
    closed = ("-" if r["closed_form_power"] is None
              else f"h^{r['closed_form_power']}, {r['closed_form_rel_error']:+.1e}")
    shift = f"{r['shift_order']:.2f} | {closed}" if r["R"] >= 2 else "- | -"
    composite = "-" if r["composite_whole_run_order"] is None else f"{r['composite_whole_run_order']:.2f}"
    return (f"| {r['optimizer']} | {r['loss']} | {r['R']} | {r['naive_order']:.2f} ({r['naive_verdict']}) | "
            f"{r['shadow_window_order']:.2f} ({r['shadow_window_verdict']}) | {r['shadow_whole_run_order']:.2f} | "
            f"{composite} | {shift} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Adam rows only")
    parser.add_argument("--json", default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    print(HEADER)
    rows = run(args.quick)
    print()
    for r in {(r["optimizer"], r["loss"]): r for r in rows}.values():
        print(f"{r['optimizer']} on {r['loss']}: {r['params']}, h = {r['h']}, T = {r['T']}, "
              f"h lambda_max/(1-b2)^2 = {r['regime']:.3f} at the largest h")
    if args.json:
        from modeq.studies import jsonable

        with open(args.json, "w") as fh:
            json.dump(jsonable(rows), fh, indent=1)


if __name__ == "__main__":
    main()
