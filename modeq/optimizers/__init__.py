"""Discrete optimizers: one momentum-variable specification per algorithm, one ``lax.scan`` simulator."""

from ._catalog import (
    OPTIMIZERS,
    SGDM,
    Adam,
    GradientDescent,
    HeavyBall,
    HeavyBallTwoStep,
    Lion,
    NAdam,
    Nesterov,
    RMSProp,
    SGDMStandard,
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
from ._spec import AdaptiveForm, HeavyBallForm, LionForm, MomentumVariable, Optimizer, bias_factor

__all__ = [
    "Optimizer", "MomentumVariable", "bias_factor", "OPTIMIZERS",
    "gd", "heavy_ball", "heavy_ball_two_step", "nesterov", "sgdm", "sgdm_standard", "standard_to_normalized",
    "adam", "adamw", "nadam", "rmsprop", "lion",
    "GradientDescent", "HeavyBall", "HeavyBallTwoStep", "Nesterov", "SGDM", "SGDMStandard", "Adam", "NAdam",
    "RMSProp", "Lion", "HeavyBallForm", "AdaptiveForm", "LionForm",
    "simulate", "Trajectory", "DivergenceWarning", "DivergenceError",
]
from ._optax import OptaxOptimizer, from_optax  # noqa: E402

__all__ += ["from_optax", "OptaxOptimizer"]
