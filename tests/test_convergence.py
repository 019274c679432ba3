"""Measured convergence orders: the oracle for every modified equation of every order (issue 3 acceptance).

Each study runs the optimizer, integrates (or iterates) the order-R flow from the same point, and fits the slope of
log(max error) against log h. A wrong coefficient at any order below R drops the slope by at least one, far outside the
tolerance of 0.15. Step-size grids are chosen inside the asymptotic regime h lambda/(1-beta)^2 < 0.05.
"""

import warnings

import pytest

from modeq import optimizers as O
from modeq import problems as P
from modeq.compare import AccuracyWarning, compare_flow

pytestmark = pytest.mark.slow

GD_CASES = {
    "product": (P.product(), [0.02, 0.01, 0.005], 1.0),
    "rosenbrock": (P.rosenbrock(), [0.01, 0.005, 0.0025], 0.5),
    "logistic": (P.logistic(), [0.2, 0.1, 0.05], 2.0),
}


def study(optimizer, problem, flow, hs, T, truncation="direct"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        result = compare_flow(optimizer, problem.loss, problem.theta0, flow, hs, T, truncation=truncation)
    assert max(result.solver_floor) < 1e-2 * min(result.max_error)
    return result


@pytest.mark.parametrize("name", sorted(GD_CASES))
def test_gd_modified_equation_orders_1_to_5(name):
    problem, hs, T = GD_CASES[name]
    fitted = {}
    for order in range(1, 6):
        # GD's exact Taylor truncation is cheap to compile; it also avoids the O(h^R) extra term of the "direct"
        # truncation, which on Rosenbrock leaves the R = 5 slope pre-asymptotic (4.8) on these grids.
        result = study(O.gd(), problem, f"modified:{order}", hs, T, truncation="taylor")
        fitted[order] = result.fit.order
    assert all(abs(fitted[r] - r) < 0.15 for r in fitted), fitted


MOMENTUM_CASES = {
    "heavy_ball_0.5": (O.heavy_ball(0.5), [0.002, 0.001, 0.0005], 0.5),
    "heavy_ball_0.9": (O.heavy_ball(0.9), [1e-4, 5e-5, 2.5e-5], 0.1),
    "nesterov_0.5": (O.nesterov(0.5), [0.002, 0.001, 0.0005], 0.5),
    "adamw_eps_1e-2": (O.adamw(b1=0.8, b2=0.9, eps=0.0, eps_root=1e-2, weight_decay=0.1), [1e-4, 5e-5, 2.5e-5], 0.05),
    "lion_smooth_l1": (O.lion(b1=0.8, b2=0.9, weight_decay=0.1, K="smooth_l1", eps=0.1), [4e-4, 2e-4, 1e-4], 0.1),
}


@pytest.mark.parametrize("name", sorted(MOMENTUM_CASES))
def test_momentum_modified_and_memoryless_orders(name):
    optimizer, hs, T = MOMENTUM_CASES[name]
    problem = P.product()
    fitted = {}
    for order in range(1, 5):
        fitted[f"modified:{order}"] = (order, study(optimizer, problem, f"modified:{order}", hs, T).fit.order)
    for order in range(2, 5):
        fitted[f"memoryless:{order}"] = (order, study(optimizer, problem, f"memoryless:{order}", hs, T).fit.order)
    assert all(abs(p - r) < 0.15 for r, p in fitted.values()), fitted


def test_rest_start_is_first_order_and_burn_in_restores_order():
    """HB at rest lags the manifold solution by O(h) (docs/theory/manifold.md#initialization): a flow from theta0 is first order; with the
    default burn-in the order-2 field is second order again."""
    problem = P.product()
    hs, T = [0.004, 0.002, 0.001], 0.5
    opt = O.heavy_ball(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        no_burn = compare_flow(opt, problem.loss, problem.theta0, "modified:2", hs, T, init="rest", burn_in=0)
        burned = compare_flow(opt, problem.loss, problem.theta0, "modified:2", hs, T, init="rest")
    assert abs(no_burn.fit.order - 1) < 0.15
    assert abs(burned.fit.order - 2) < 0.15


def test_taylor_and_direct_truncations_have_the_same_order():
    problem = P.product()
    opt = O.heavy_ball(0.5)
    hs, T = [0.004, 0.002, 0.001], 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccuracyWarning)
        taylor = compare_flow(opt, problem.loss, problem.theta0, "modified:3", hs, T, truncation="taylor")
    assert abs(taylor.fit.order - 3) < 0.15
