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
from ._taylor import evaluate_polynomial, taylor_coefficients
from ._symbolic import (
    BETA,
    TreeCoefficient,
    coefficients_to_json,
    elementary_differential,
    elementary_differential_name,
    format_coefficients,
    gd_modified_coefficients,
    hb_memoryless_coefficients,
    hb_modified_coefficients,
    symbolic_field,
)
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
