"""One error hierarchy: every failure modeq expects derives from :class:`ModeqError`, so a front end catches one base.

* :class:`InputError` (also a ``ValueError``): bad input; the message names the parameter and its valid range.
* :class:`RegimeError` (also a ``ValueError``): the input is valid but the requested object does not exist there (no
  slow manifold, outside a builder's domain); the message says why and what to do.
* :class:`DivergenceError` (also a ``FloatingPointError``): a run became non-finite; the message names the step.
* :class:`SolveError` (also a ``RuntimeError``): the ODE/SDE solver failed; ``t_failed`` is where.

Plain ``ValueError``/``TypeError`` raised by the input checks of :mod:`modeq._validation` are expected failures too.
"""

from __future__ import annotations


class ModeqError(Exception):
    """Base class of every failure modeq raises on purpose: a front end catches this one class (and the plain
    ``ValueError``/``TypeError`` of the input checks) and prints its message as one line."""


class InputError(ModeqError, ValueError):
    """Bad input: the message names the parameter and its valid range (also a ``ValueError``)."""


class RegimeError(ModeqError, ValueError):
    """The object asked for does not exist for this input (no slow manifold, outside the builder's domain); the
    message says why and what to do instead (also a ``ValueError``)."""


class DivergenceError(ModeqError, FloatingPointError):
    """A run became non-finite: raised by :meth:`modeq.optimizers.Trajectory.raise_if_diverged`, the message names
    the first non-finite step (also a ``FloatingPointError``)."""


class SolveError(ModeqError, RuntimeError):
    """The differential-equation solver failed (step limit, non-finite state); ``t_failed`` is the last time reached
    with a finite solution (also a ``RuntimeError``)."""

    def __init__(self, message: str, t_failed=None):
        super().__init__(message)
        self.t_failed = t_failed
