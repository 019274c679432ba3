"""diffrax integration on the iterate grid: :func:`solve_ode` lands on every save time, :func:`solve_on_grid` reads
the grid off the dense output (one solve whatever the number of save times) and estimates its own error;
:func:`solve_on_grid_stacked` does the same for several fields in one solve."""

from ._ode import Solution, SolveError, StackedField, solve_ode, solve_on_grid, solve_on_grid_stacked

__all__ = ["solve_ode", "solve_on_grid", "solve_on_grid_stacked", "StackedField", "Solution", "SolveError"]
