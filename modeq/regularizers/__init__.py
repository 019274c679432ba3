"""Implicit regularizers: modified losses of optimizers, their values along runs, mini-batch (expected) corrections."""

from ._loss import (
    ANTI,
    FORMS,
    NEUTRAL,
    REGULARIZING,
    ModifiedLoss,
    Term,
    decay_coupling,
    grad_hess_grad,
    grad_norm_sq,
    modified_loss,
    one_norm,
)

__all__ = [
    "ModifiedLoss", "Term", "modified_loss", "FORMS", "REGULARIZING", "ANTI", "NEUTRAL",
    "grad_norm_sq", "grad_hess_grad", "one_norm", "decay_coupling",
]

from ._minibatch import (
    BatchLosses,
    batch_losses,
    expected_memory_correction,
    expected_modified_loss,
    ghosh_flow,
    hb_noise_coefficients,
    reshuffled_sequence,
    reshuffling_coefficients,
    sampled_memory_correction,
    sgdm_sequence,
)
from ._report import RegularizerReport, regularizer_report

__all__ += [
    "BatchLosses", "batch_losses", "expected_memory_correction", "expected_modified_loss", "ghosh_flow",
    "hb_noise_coefficients", "reshuffled_sequence", "reshuffling_coefficients", "sampled_memory_correction",
    "sgdm_sequence", "RegularizerReport", "regularizer_report",
]
from ._numerical import NumericalRegularizer, implicit_regularizer  # noqa: E402

__all__ += ["implicit_regularizer", "NumericalRegularizer"]
