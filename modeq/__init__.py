"""modeq: modified equations of optimization algorithms.

Importing modeq enables float64 in JAX (``jax.config.update("jax_enable_x64", True)``): every array modeq creates is
float64 unless you ask otherwise.

Data flow: problem -> optimizer -> builder -> solver -> comparison -> report, i.e. :mod:`modeq.problems`,
:mod:`modeq.optimizers`, :mod:`modeq.series` / :mod:`modeq.flows`, :mod:`modeq.solve`, :mod:`modeq.compare`.
"""

from . import _config  # noqa: F401  (must come first: enables float64)
from . import compare, flows, optimizers, problems, series, solve
from .compare import compare_flow, fit_order
from .flows import memoryless_map, modified_field
from .optimizers import simulate
from .series import memory_correction, slow_manifold

__version__ = "0.1.0"

__all__ = [
    "optimizers", "problems", "series", "flows", "solve", "compare",
    "modified_field", "memoryless_map", "slow_manifold", "memory_correction", "simulate", "compare_flow",
    "fit_order", "__version__",
]
