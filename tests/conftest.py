"""Shared test configuration.

``import modeq`` enables float64 in JAX before any array exists. Matplotlib uses the non-interactive Agg backend, and
hypothesis runs a few examples without a deadline (the first example of a property test compiles; docs/theory/numerics.md#misc).

JAX's persistent compilation cache is on (:mod:`modeq._config`): every pytest-xdist worker, and every later run, shares
one directory (``$MODEQ_COMPILATION_CACHE_DIR``, default ``~/.cache/modeq/jax``), so a program compiled by one worker
is loaded by the others. ``MODEQ_NO_COMPILATION_CACHE=1`` gives a cold run.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import jax  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

import modeq  # noqa: E402,F401  (enables float64)

settings.register_profile(
    "modeq",
    deadline=None,
    max_examples=8,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("MODEQ_HYPOTHESIS_PROFILE", "modeq"))

assert jax.config.jax_enable_x64, "modeq must enable float64 on import"
