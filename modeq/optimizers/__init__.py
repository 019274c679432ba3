"""Discrete optimizers: one momentum-variable specification per algorithm, one ``lax.scan`` simulator."""

from ._catalog import (
    OPTIMIZERS,
    adam,
    adamw,
    gd,
    heavy_ball,
    heavy_ball_two_step,
    lion,
    nadam,
    nesterov,
    rmsprop,
    sgdm,
    sgdm_standard,
    standard_to_normalized,
)
from ._simulate import DivergenceError, DivergenceWarning, Trajectory, simulate
from ._spec import MomentumVariable, Optimizer, bias_factor

__all__ = [
    "Optimizer", "MomentumVariable", "bias_factor", "OPTIMIZERS",
    "gd", "heavy_ball", "heavy_ball_two_step", "nesterov", "sgdm", "sgdm_standard", "standard_to_normalized",
    "adam", "adamw", "nadam", "rmsprop", "lion",
    "simulate", "Trajectory", "DivergenceWarning", "DivergenceError",
]
