"""Builders that return vector fields (drift, and diffusion for SDEs)."""

from ._modified import TRUNCATIONS, VectorField, gradient_field, memoryless_map, modified_field

__all__ = ["VectorField", "modified_field", "memoryless_map", "gradient_field", "TRUNCATIONS"]
from ._principal import PrincipalDiagnostics, PrincipalFlowResult, imag_part, principal_diagnostics, principal_flow, principal_flow_solve, principal_flow_third, real_part, to_complex_state  # noqa: E402,F401
