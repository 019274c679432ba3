"""Builders that return vector fields: modified fields of any order, memoryless maps, principal flows."""

from ._central import CentralFlow, CentralFlowResult, CentralState, central_flow, central_flow_solve, solve_lcp
from ._modified import (
    TRUNCATIONS,
    RegimeWarning,
    VectorField,
    gradient_field,
    memoryless_map,
    modified_field,
    top_hessian_eigenvalue,
)
from ._principal import (
    PrincipalDiagnostics,
    PrincipalField,
    PrincipalFlowResult,
    imag_part,
    principal_diagnostics,
    principal_flow,
    principal_flow_solve,
    principal_flow_third,
    principal_flow_values,
    real_part,
    to_complex_state,
)

__all__ = [
    "central_flow", "central_flow_solve", "CentralFlow", "CentralFlowResult", "CentralState", "solve_lcp",
    "RegimeWarning", "top_hessian_eigenvalue",
    "VectorField", "modified_field", "memoryless_map", "gradient_field", "TRUNCATIONS",
    "principal_flow", "principal_flow_third", "principal_flow_solve", "principal_flow_values", "principal_diagnostics", "PrincipalField",
    "PrincipalFlowResult", "PrincipalDiagnostics", "to_complex_state", "real_part", "imag_part",
]
