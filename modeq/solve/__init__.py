"""diffrax integration on the iterate grid."""

from ._ode import Solution, SolveError, solve_ode

__all__ = ["solve_ode", "Solution", "SolveError"]
