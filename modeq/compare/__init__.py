"""Trajectory errors, convergence-order fits, comparison studies."""

from ._order import OrderFit, fit_order
from ._study import (
    FLOW_BUILDERS,
    AccuracyWarning,
    FlowResult,
    FlowSpec,
    compare_flow,
    compare_flows,
    default_burn_in,
    expansion_parameter,
    parse_flow,
)

__all__ = [
    "OrderFit", "fit_order", "compare_flow", "compare_flows", "FlowResult", "FlowSpec", "parse_flow", "FLOW_BUILDERS",
    "AccuracyWarning", "default_burn_in", "expansion_parameter",
]
