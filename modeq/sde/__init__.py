"""Stochastic side: SMEs of SGD/SGDM, Euler--Maruyama ensembles, the primitives of weak-error studies and the slow SDE
on the manifold of minimizers (docs/theory/sme.md, docs/theory/slow_sde.md). The studies (fits, verdicts) live in :mod:`modeq.studies`
(``sme_weak_study``, ``exact_weak_study``, ``weak_error_study``, ``slow_sde_study``)."""

from ._em import SDEPaths, simulate_sde
from ._slow import (
    ManifoldOperators,
    SlowFlow,
    SlowPaths,
    d2phi_closed,
    d2phi_fd,
    d2phi_variational,
    label_noise_flow,
    manifold_operators,
    phi,
    slow_drift,
    slow_sde,
    third_contract,
)
from ._small_lr import beta_for, endpoints, optimizer_for
from ._sme import (
    SDE,
    MomentumSDE,
    effective_lr_factor,
    momentum_sde,
    noise_sqrt,
    sme,
    sym_sqrt,
)
from ._weak import (
    MonteCarloWarning,
    WeakSamples,
    gaussian_gradient_variances,
    linear_sde_moments,
    momentum_sde_moments,
    sgd_moments,
    sgdm_moments,
    sme_moments,
    step_radius,
    weak_samples,
)

__all__ = ["beta_for", "endpoints", "optimizer_for", "SDE", "MomentumSDE", "momentum_sde", "sgdm_moments", "momentum_sde_moments", "linear_sde_moments",
           "gaussian_gradient_variances", "sme", "sym_sqrt", "noise_sqrt", "effective_lr_factor", "SDEPaths", "simulate_sde"]
__all__ += [
    "MonteCarloWarning", "WeakSamples", "weak_samples", "step_radius", "sgd_moments", "sme_moments",
    "ManifoldOperators", "SlowFlow", "SlowPaths", "phi", "manifold_operators", "third_contract", "d2phi_closed",
    "d2phi_variational", "d2phi_fd", "label_noise_flow", "slow_drift", "slow_sde",
]
