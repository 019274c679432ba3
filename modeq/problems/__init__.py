"""Losses, gradient-noise oracles and canonical test problems."""

from ._catalog import (
    PROBLEMS,
    diagonal_net,
    hyperbola,
    linear_overparam,
    logistic,
    mlp,
    product,
    quadratic,
    quadratic_hessian,
    rosenbrock,
    uv,
)
from ._oracles import SVAG, FullBatch, GaussianNGOS, LabelNoise, MiniBatch, Oracle
from ._problem import Problem
from ._spec import check_scalar_loss, least_squares_problem, resolve_problem

__all__ = [
    "PROBLEMS", "Problem", "resolve_problem", "check_scalar_loss", "least_squares_problem",
    "quadratic", "quadratic_hessian", "product", "rosenbrock", "logistic", "linear_overparam", "mlp", "uv",
    "hyperbola", "diagonal_net",
    "Oracle", "FullBatch", "MiniBatch", "GaussianNGOS", "LabelNoise", "SVAG",
]
