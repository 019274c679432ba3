"""diffrax integration on the iterate grid: :func:`solve_ode` lands on every save time, :func:`solve_on_grid` reads
the grid off the dense output (one solve whatever the number of save times) and estimates its own error."""

from ._ode import Solution, SolveError, solve_ode, solve_on_grid

__all__ = ["solve_ode", "solve_on_grid", "Solution", "SolveError"]
