"""modeq: modified equations of optimization algorithms.

Importing modeq enables float64 in JAX (``jax.config.update("jax_enable_x64", True)``): every array modeq creates is
float64 unless you ask otherwise.

Data flow: problem -> optimizer -> builder -> solver -> comparison -> report, i.e. :mod:`modeq.problems`,
:mod:`modeq.optimizers`, :mod:`modeq.series` / :mod:`modeq.flows`, :mod:`modeq.solve`, :mod:`modeq.compare`.

The subpackages and the names re-exported here are imported on first use (PEP 562 module ``__getattr__``), so that
``import modeq`` costs little more than ``import jax`` (docs/speed.md): ``modeq.simulate``, ``from modeq import
compare_flow`` and ``import modeq.flows`` all work as if they had been imported eagerly.
"""

from . import _config  # noqa: F401  (must come first: enables float64)

__version__ = "0.1.0"

# subpackages loaded on first attribute access (``modeq.sde``); ``import modeq.X`` loads them as usual
_SUBPACKAGES = ("compare", "flows", "optimizers", "problems", "series", "solve", "sde", "studies", "regularizers",
                "report")
# name re-exported here -> the subpackage that defines it
_REEXPORTS = {
    "compare_flow": "compare",
    "fit_order": "compare",
    "memoryless_map": "flows",
    "modified_field": "flows",
    "simulate": "optimizers",
    "memory_correction": "series",
    "slow_manifold": "series",
}

__all__ = [
    "optimizers", "problems", "series", "flows", "solve", "compare",
    "modified_field", "memoryless_map", "slow_manifold", "memory_correction", "simulate", "compare_flow",
    "fit_order", "__version__",
]


def __getattr__(name):
    """Import a subpackage or a re-exported name on first use (PEP 562), then keep it in the module namespace."""
    import importlib

    if name in _SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in _REEXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_REEXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES) | set(_REEXPORTS))
