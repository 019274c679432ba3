"""Power series in the step size h: backward error analysis, slow manifolds, exact symbolic coefficients."""

from ._bea import log_of_orbit, log_orbit, map_coefficients, modified_field_coefficients
from ._manifold import (
    manifold_iterate,
    manifold_orbit,
    manifold_point,
    memory_correction,
    reduced_map,
    slow_manifold,
)
from ._start import StartResult, exact_quadratic_momenta, quadratic_model, slow_manifold_start
from ._shadow import ShadowStart, boundary_layer, lambert_lag, leading_shift, pull_back, shadow_start
from ._taylor import evaluate_polynomial, taylor_coefficients
from ._trees import (
    LEAF,
    RootedTree,
    RootSubtree,
    bushy_tree,
    butcher_product,
    free_tree_key,
    root_subtrees,
    tall_tree,
    tree_from_string,
    trees_of_order,
    trees_up_to_order,
)

# The exact symbolic coefficients need sympy (0.4 s to import): loaded on first use, see __getattr__ below.
_SYMBOLIC = (
    "BETA",
    "TreeCoefficient",
    "coefficients_to_json",
    "elementary_differential",
    "elementary_differential_name",
    "format_coefficients",
    "gd_modified_coefficients",
    "hb_memoryless_coefficients",
    "hb_modified_coefficients",
    "symbolic_field",
)


def __getattr__(name):
    """Import :mod:`modeq.series._symbolic` (and sympy) only when one of its names is first asked for (PEP 562).

    ``__all__`` (asked for by ``from modeq.series import *`` and by the docstring tests) is computed on demand: every
    public name defined so far plus the lazy ones, so names imported above need no second list."""
    if name == "__all__":
        import types

        eager = [n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, types.ModuleType)]
        return sorted(set(eager) | set(_SYMBOLIC))
    if name in _SYMBOLIC or name == "_symbolic":
        import importlib

        module = importlib.import_module("._symbolic", __name__)
        globals().update({n: getattr(module, n) for n in _SYMBOLIC})  # later look-ups skip this hook
        return module if name == "_symbolic" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SYMBOLIC))
