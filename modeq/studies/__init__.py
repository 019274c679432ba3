r"""Studies: one function per job, each returning a result object with the data, the diagnostics, the warnings and a
:class:`Verdict`. The command line and the HTML report call these and render their results; nothing they print is
computed anywhere else.
"""

from ._verdict import (
    CONSISTENT,
    DIVERGED,
    MC_TOO_LARGE,
    NOT_CONSISTENT,
    OUTSIDE_REGIME,
    REGIME_LIMIT,
    VERDICTS,
    Verdict,
    check_sweep,
    finite_or_none,
    jsonable,
    order_verdict,
)

from ._principal import PRINCIPAL_METRIC, PrincipalFlowStudy, principal_flow_study
from ._central import CentralFlowStudy, central_flow_study, resolve_edge_problem
from ._flows import METRIC, FlowStudy, default_flows, default_horizon, default_step_sizes, flow_study
from ._sde import (
    manifold_dimension,
    SLOW_SDE_GUARANTEED_ORDER, SME_EXPECTED, SlowSDERow, SlowSDEStudy, WeakStudy, default_sme_etas, default_sme_paths,
    exact_weak_study,
    slow_sde_study, sme_weak_study, weak_error_study,
)

__all__ = [
    "central_flow_study", "CentralFlowStudy", "resolve_edge_problem",
    "flow_study", "FlowStudy", "default_flows", "default_step_sizes", "default_horizon", "METRIC",
    "Verdict", "order_verdict", "check_sweep", "jsonable", "finite_or_none", "VERDICTS", "REGIME_LIMIT",
    "CONSISTENT", "NOT_CONSISTENT", "OUTSIDE_REGIME", "MC_TOO_LARGE", "DIVERGED",
]
__all__ += [
    "sme_weak_study", "exact_weak_study", "weak_error_study", "WeakStudy", "default_sme_etas", "default_sme_paths", "SME_EXPECTED",
    "slow_sde_study", "manifold_dimension", "SlowSDEStudy", "SlowSDERow", "SLOW_SDE_GUARANTEED_ORDER",
]
__all__ += ["principal_flow_study", "PrincipalFlowStudy", "PRINCIPAL_METRIC"]
