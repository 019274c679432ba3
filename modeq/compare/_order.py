r"""Convergence-order fits: least squares of $\log e$ on $\log h$, with standard error and 95% interval."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class OrderFit:
    r"""$e(h) \approx C h^p$ fitted by ordinary least squares on $(\log h_i, \log e_i)$.

    ``order`` = $p$, ``stderr`` its standard error, ``ci`` the 95% interval from Student's t with $n-2$ degrees of
    freedom (NaN with fewer than 3 points), ``constant`` = $C$, ``local`` the slopes between consecutive step sizes.
    """

    order: float
    stderr: float
    ci: tuple
    constant: float
    local: tuple

    def to_dict(self) -> dict:
        """JSON-ready record: ``fitted_order``, ``fitted_order_stderr``, ``fitted_order_ci``, ``error_constant``,
        ``local_orders``."""
        return {
            "fitted_order": self.order,
            "fitted_order_stderr": self.stderr,
            "fitted_order_ci": list(self.ci),
            "error_constant": self.constant,
            "local_orders": list(self.local),
        }


def fit_order(hs, errors) -> OrderFit:
    """Fit the convergence order of ``errors`` against step sizes ``hs`` (both positive, at least 2 points)."""
    x = np.log(np.asarray(hs, dtype=float))
    y = np.log(np.asarray(errors, dtype=float))
    if x.size < 2 or x.size != y.size:
        raise ValueError(f"h: need at least 2 step sizes with one error each, got {x.size} and {y.size}")
    if not np.all(np.isfinite(y)):
        raise ValueError("errors must be positive and finite to fit an order")
    n = x.size
    xm = x - x.mean()
    slope = float(xm @ (y - y.mean()) / (xm @ xm))
    intercept = float(y.mean() - slope * x.mean())
    if n > 2:
        resid = y - (intercept + slope * x)
        stderr = math.sqrt(float(resid @ resid) / (n - 2) / float(xm @ xm))
        half = float(stats.t.ppf(0.975, n - 2)) * stderr
        ci = (slope - half, slope + half)
    else:
        stderr, ci = float("nan"), (float("nan"), float("nan"))
    order_idx = np.argsort(x)
    xs, ys = x[order_idx], y[order_idx]
    local = tuple(float((ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])) for i in range(n - 1))
    return OrderFit(slope, stderr, ci, math.exp(intercept), local)
