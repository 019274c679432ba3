"""Oracles for modeq.series._trees and modeq.series._symbolic (exact B-series coefficients of GD and heavy-ball).

Every expected value below is either computed independently here (1-D BEA by a series ansatz, r_+ series,
Narayana/Eulerian polynomials from their combinatorial definitions, dense Hessians) or transcribed from docs/theory/
(bea.md, hb_trees.md) with the section named.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from math import comb, factorial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

from modeq.series import (
    BETA,
    LEAF,
    RootedTree,
    bushy_tree,
    butcher_product,
    coefficients_to_json,
    elementary_differential,
    format_coefficients,
    free_tree_key,
    gd_modified_coefficients,
    hb_memoryless_coefficients,
    hb_modified_coefficients,
    root_subtrees,
    symbolic_field,
    tall_tree,
    tree_from_string,
    trees_of_order,
    trees_up_to_order,
)

T = tree_from_string
R = sp.Rational
b = BETA


def by_tree(records):
    return {r.tree: r for r in records}


# ---------------------------------------------------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------------------------------------------------
def test_tree_counts_oeis_a000081():
    assert [len(trees_of_order(n)) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]
    for n in range(1, 10):
        trees = trees_of_order(n)
        assert len(set(trees)) == len(trees) and all(t.order == n for t in trees)


def test_free_tree_counts_oeis_a000055():
    assert [len({free_tree_key(t) for t in trees_of_order(n)}) for n in range(1, 10)] == [1, 1, 1, 2, 3, 6, 11, 23, 47]


@pytest.mark.parametrize(
    "text, sigma, gamma",
    [
        ("o", 1, 1),
        ("[o]", 1, 2),
        ("[o,o]", 2, 3),
        ("[[o]]", 1, 6),
        ("[o,o,o]", 6, 4),
        ("[[o],o]", 1, 8),
        ("[[o],[o]]", 2, 20),
        ("[[o,o]]", 2, 12),
        ("[[o,o],[o,o]]", 8, 63),
        ("[o,o,[o,o]]", 4, 18),
        ("[o,o,o,o]", 24, 5),
    ],
)
def test_sigma_and_gamma_of_known_trees(text, sigma, gamma):
    tree = T(text)
    assert tree.sigma == sigma
    assert tree.gamma == gamma


def test_sigma_gamma_identities():
    # sum over |t| = n of n!/(sigma gamma) = (n-1)!  (increasing labellings = recursive trees),
    # sum of n!/sigma = n^(n-1)  (labelled rooted trees, Cayley)
    for n in range(1, 10):
        trees = trees_of_order(n)
        assert sum(Fraction(factorial(n), t.sigma * t.gamma) for t in trees) == factorial(n - 1)
        assert sum(Fraction(factorial(n), t.sigma) for t in trees) == n ** (n - 1)


def test_canonical_representation_and_strings():
    assert T("[[o],o]") is T("[o,[o]]")
    assert str(T("[[o],o]")) == "[o,[o]]"
    assert LEAF.key == () and T("[o,[o]]").key == ((), ((),))
    for t in trees_up_to_order(7):
        assert T(str(t)) is t
    assert [str(t) for t in trees_of_order(4)] == ["[[[o]]]", "[[o,o]]", "[o,[o]]", "[o,o,o]"]
    assert butcher_product(T("[o]"), T("[o]")) is T("[o,[o]]")
    assert butcher_product(LEAF, T("[o]")) is T("[[o]]")
    assert tall_tree(3) is T("[[o]]") and bushy_tree(4) is T("[o,o,o]")
    with pytest.raises(ValueError):
        T("[o,o")


def test_root_subtrees_with_multiplicity():
    subs = {(str(s.subtree), tuple(map(str, s.forest))): s.multiplicity for s in root_subtrees(T("[o,o]"))}
    assert subs == {("o", ("o", "o")): 1, ("[o]", ("o",)): 2, ("[o,o]", ()): 1}
    for n in range(1, 9):  # a star has 2^(n-1) root subtrees, a path n
        assert sum(s.multiplicity for s in root_subtrees(bushy_tree(n))) == 2 ** (n - 1)
        assert sum(s.multiplicity for s in root_subtrees(tall_tree(n))) == n
    for t in trees_up_to_order(7):
        for s in root_subtrees(t):
            assert s.subtree.order + sum(d.order for d in s.forest) == t.order


# ---------------------------------------------------------------------------------------------------------------------
# GD
# ---------------------------------------------------------------------------------------------------------------------
def test_gd_matches_theory_part_c_table():
    # docs/theory/bea.md#gd: coefficient of F_f(t) for explicit Euler on f; F_f(t) = (-1)^|t| F(t) for f = -g.
    f_table = {
        "o": R(1),
        "[o]": R(-1, 2),
        "[o,o]": R(1, 12),
        "[[o]]": R(1, 3),
        "[o,o,o]": R(0),
        "[[o],o]": R(-1, 12),
        "[[o,o]]": R(-1, 12),
        "[[[o]]]": R(-1, 4),
    }
    recs = by_tree(gd_modified_coefficients(4))
    assert len(recs) == 8
    for text, f_coef in f_table.items():
        tree = T(text)
        assert recs[tree].coefficient == (-1) ** tree.order * f_coef, text


def test_gd_matches_theory_gradient_form():
    # docs/theory/bea.md#gd: -[g + h/2 Hg + h^2 (1/3 H^2 g + 1/12 T[g,g]) + h^3 (1/4 H^3 g + 1/12 T[Hg,g] + 1/12 H T[g,g])]
    expected = {
        "g": R(-1),
        "Hg": R(-1, 2),
        "H^2 g": R(-1, 3),
        "T3[g,g]": R(-1, 12),
        "H^3 g": R(-1, 4),
        "T3[g,Hg]": R(-1, 12),
        "H T3[g,g]": R(-1, 12),
        "T4[g,g,g]": R(0),
    }
    got = {r.elementary_differential: r.coefficient for r in gd_modified_coefficients(4)}
    assert got == expected


def test_gd_two_methods_agree_to_order_9():
    a = gd_modified_coefficients(9)
    c = gd_modified_coefficients(9, method="composition")
    assert len(a) == 486
    assert [r.tree for r in a] == [r.tree for r in c]
    assert all(x.coefficient == y.coefficient for x, y in zip(a, c))


def _one_d_bea_y_squared(K: int) -> list:
    """Modified equation of explicit Euler for y' = y^2, independently: ansatz f_h = sum_k c_k h^k y^(k+2) and match
    the Lie series of its time-h flow, sum_j h^j/j! (f d/dy)^j y, with y + h y^2 order by order."""
    y, h = sp.symbols("y h")
    cs = []
    for m in range(K):
        c = sp.Symbol("c")
        f = sum(cs[k] * h**k * y ** (k + 2) for k in range(m)) + c * h**m * y ** (m + 2)
        term, total = y, y
        for j in range(1, m + 2):
            term = sp.expand(f * sp.diff(term, y))
            term = sum(term.coeff(h, p) * h**p for p in range(m + 2 - j))
            total += h**j / sp.factorial(j) * term
        target = y**2 if m == 0 else 0
        cs.append(sp.solve(sp.expand(total).coeff(h, m + 1) - target, c)[0])
    return cs


def test_gd_one_dimensional_y_squared_to_order_9():
    # y' = y^2 is GD on L = -y^3/3 (g = -y^2, D^2 L = -2y, D^3 L = -2, higher 0);
    # HLW ch. IX: f_h = y^2 - h y^3 + 3/2 h^2 y^4 - 8/3 h^3 y^5 + ...
    K = 9
    expected = _one_d_bea_y_squared(K)
    assert expected[:4] == [1, -1, R(3, 2), R(-8, 3)]
    y = sp.Symbol("y")
    L = -(y**3) / 3
    derivs = [sp.diff(L, y, m + 1) for m in range(K + 1)]  # derivs[m] = D^{m+1} L

    cache = {}

    def F(t):
        if t not in cache:
            out = derivs[len(t.children)]
            for kid in t.children:
                out = out * F(kid)
            cache[t] = sp.expand(out)
        return cache[t]

    recs = gd_modified_coefficients(K)
    for n in range(1, K + 1):
        total = sp.expand(sum(r.coefficient * F(r.tree) for r in recs if r.nodes == n))
        assert total == sp.expand(expected[n - 1] * y ** (n + 1)), n


# ---------------------------------------------------------------------------------------------------------------------
# HB memoryless map d(t)
# ---------------------------------------------------------------------------------------------------------------------
def _narayana(m: int) -> sp.Expr:
    """N_m(b) = sum over Dyck paths of semilength m of b^(peaks - 1), by enumeration."""
    total = 0
    for steps in itertools.product((1, -1), repeat=2 * m):
        heights = list(itertools.accumulate(steps))
        if heights[-1] != 0 or min(heights) < 0:
            continue
        peaks = sum(1 for i in range(2 * m - 1) if steps[i] == 1 and steps[i + 1] == -1)
        total += b ** (peaks - 1)
    return sp.expand(total)


def _eulerian(m: int) -> sp.Expr:
    """A_m(b) = sum over permutations of m of b^descents, by enumeration."""
    total = 0
    for perm in itertools.permutations(range(m)):
        total += b ** sum(1 for i in range(m - 1) if perm[i] > perm[i + 1])
    return sp.expand(total)


def test_combinatorial_polynomials_match_theory_d4_table():
    assert _narayana(4) == sp.expand(1 + 6 * b + 6 * b**2 + b**3)
    assert _eulerian(4) == sp.expand(1 + 11 * b + 11 * b**2 + b**3)
    assert _eulerian(5) == sp.expand(1 + 26 * b + 66 * b**2 + 26 * b**3 + b**4)


HB_MAP = by_tree(hb_memoryless_coefficients(6))


def test_hb_map_theory_a3_closed_forms():
    d = {str(t): r.coefficient * r.sigma for t, r in HB_MAP.items()}
    expected = {
        "o": 1 / (1 - b),
        "[o]": b / (1 - b) ** 3,
        "[[o]]": b * (1 + b) / (1 - b) ** 5,
        "[o,o]": b * (1 + b) / (1 - b) ** 5,
        "[[[o]]]": b * (b**2 + 3 * b + 1) / (1 - b) ** 7,
        "[o,[o]]": b * (b**2 + 3 * b + 1) / (1 - b) ** 7,
        "[[o,o]]": b * (b**2 + 4 * b + 1) / (1 - b) ** 7,
        "[o,o,o]": b * (b**2 + 4 * b + 1) / (1 - b) ** 7,
    }
    for text, value in expected.items():
        assert sp.cancel(d[text] - value) == 0, text


def test_hb_map_theory_d3_five_node_brackets_and_six_node_polynomials():
    # docs/theory/hb_trees.md#map: h^5 beta(1+beta)/(1-beta)^9 {(1+5b+b^2)[H^4 g + 1/2 T3[Hg,Hg] + T3[g,H^2 g]]
    #   + (1+7b+b^2)[1/2 H^2 T3[g,g] + H T3[g,Hg] + 1/2 T3[g,T3[g,g]] + 1/2 T4[g,g,Hg]]
    #   + (1+10b+b^2)[1/6 H T4[g,g,g] + 1/24 T5[g,g,g,g]]}
    brackets = {
        1 + 5 * b + b**2: {"H^4 g": 1, "T3[Hg,Hg]": R(1, 2), "T3[g,H^2 g]": 1},
        1 + 7 * b + b**2: {"H^2 T3[g,g]": R(1, 2), "H T3[g,Hg]": 1, "T3[g,T3[g,g]]": R(1, 2), "T4[g,g,Hg]": R(1, 2)},
        1 + 10 * b + b**2: {"H T4[g,g,g]": R(1, 6), "T5[g,g,g,g]": R(1, 24)},
    }
    got = {r.elementary_differential: r.coefficient for r in HB_MAP.values() if r.nodes == 5}
    assert len(got) == 9
    for poly, terms in brackets.items():
        for name, weight in terms.items():
            assert sp.cancel(got[name] - weight * b * (1 + b) * poly / (1 - b) ** 9) == 0, name
    six = {sp.expand(sp.cancel(r.numerator / b)) for r in HB_MAP.values() if r.nodes == 6}
    listed = [(10, 20), (13, 28), (14, 30), (17, 40), (19, 44), (26, 66)]  # 1 + p b + q b^2 + p b^3 + b^4
    assert six == {sp.expand(1 + p * b + q * b**2 + p * b**3 + b**4) for p, q in listed}


@pytest.mark.parametrize(
    "beta, values",
    [
        (R(1, 2), [2, 4, 24, 12, 176, 104, 176, R(104, 3)]),
        (R(9, 10), [10, 900, 171000, 85500, 40590000, 24345000, 40590000, 8115000]),
    ],
)
def test_hb_map_theory_d3_values(beta, values):
    # docs/theory/hb_trees.md#oracle: d/sigma in the row order o, [o], [[o]], [o,o], [[[o]]], [[o,o]], [o,[o]], [o,o,o]
    got = [r.coefficient.subs(BETA, beta) for r in hb_memoryless_coefficients(4)]
    assert got == values


def test_hb_map_tall_trees_are_narayana_and_bushy_trees_eulerian():
    for k in range(2, 7):
        tall, bushy = HB_MAP[tall_tree(k)], HB_MAP[bushy_tree(k)]
        assert tall.numerator == sp.expand(b * _narayana(k - 1)) and tall.denominator_power == 2 * k - 1
        assert bushy.numerator == sp.expand(b * _eulerian(k - 1)) and bushy.denominator_power == 2 * k - 1
        # d/sigma = beta A_m/(m! (1-beta)^(2m+1)) for the bushy tree with m = k-1 leaves (docs/theory/hb_trees.md#polynomials)
        m = k - 1
        assert sp.cancel(bushy.coefficient - b * _eulerian(m) / (factorial(m) * (1 - b) ** (2 * m + 1))) == 0


def test_hb_map_palindromic_and_free_tree_indexed():
    # d(t) = beta P_t(beta)/(1-beta)^(2|t|-1), P_t palindromic with positive integer coefficients, P_t(0) = 1;
    # d(u o v) = d(v o u) (docs/theory/hb_trees.md#polynomials) for all |u| + |v| <= 6, hence d depends only on the free tree
    for t, r in HB_MAP.items():
        if t.order == 1:
            continue
        P = sp.Poly(sp.cancel(r.numerator / b), b).all_coeffs()
        assert P == P[::-1] and all(c > 0 and c == int(c) for c in P) and P[-1] == 1
        assert r.denominator_power == 2 * t.order - 1
    d = {t: r.coefficient * r.sigma for t, r in HB_MAP.items()}
    pairs = 0
    for u in trees_up_to_order(5):
        for v in trees_up_to_order(6 - u.order):
            assert sp.cancel(d[butcher_product(u, v)] - d[butcher_product(v, u)]) == 0
            pairs += 1
    assert pairs == 50
    classes = {}
    for t, value in d.items():
        classes.setdefault(free_tree_key(t), set()).add(sp.cancel(value))
    assert all(len(values) == 1 for values in classes.values())
    # docs/theory/hb_trees.md#polynomials: at 6 nodes, six free trees with six distinct polynomials
    assert len({next(iter(v)) for k, v in classes.items() if k.order == 6}) == 6


def _r_plus_series(order: int):
    """Taylor coefficients in x of 1 - r_+(x) and log r_+(x), r_+ the root near 1 of r^2 - (1+beta-x) r + beta = 0.
    With u = 1 - beta > 0 the discriminant is (u+x)^2 - 4x, so sqrt(...) = u at x = 0."""
    x, u = sp.symbols("x u", positive=True)
    r = (2 - u - x + sp.sqrt((u + x) ** 2 - 4 * x)) / 2
    one_minus = sp.series(1 - r, x, 0, order + 1).removeO()
    log = sp.series(sp.log(r), x, 0, order + 1).removeO()
    back = {u: 1 - b}
    return (
        [sp.cancel(one_minus.coeff(x, k).subs(back)) for k in range(1, order + 1)],
        [sp.cancel(log.coeff(x, k).subs(back)) for k in range(1, order + 1)],
    )


R_PLUS = _r_plus_series(6)


def test_hb_map_tall_trees_are_taylor_coefficients_of_one_minus_r_plus():
    for k in range(1, 7):
        assert sp.cancel(HB_MAP[tall_tree(k)].coefficient - R_PLUS[0][k - 1]) == 0, k


# ---------------------------------------------------------------------------------------------------------------------
# HB modified equation b(t)
# ---------------------------------------------------------------------------------------------------------------------
HB_ODE = by_tree(hb_modified_coefficients(6))


def test_hb_modified_theory_d5_explicit_terms():
    expected = {  # docs/theory/hb_trees.md#modified-equation, coefficient of F(t)
        "o": -1 / (1 - b),
        "[o]": -(1 + b) / (2 * (1 - b) ** 3),
        "[[o]]": -(1 + 4 * b + b**2) / (3 * (1 - b) ** 5),
        "[o,o]": -(1 + 10 * b + b**2) / (12 * (1 - b) ** 5),
        "[[[o]]]": -(1 + b) * (1 + 8 * b + b**2) / (4 * (1 - b) ** 7),
        "[[o,o]]": -(1 + b) * (1 + 16 * b + b**2) / (12 * (1 - b) ** 7),
        "[o,[o]]": -(1 + b) * (1 + 28 * b + b**2) / (12 * (1 - b) ** 7),
        "[o,o,o]": -b * (1 + b) / (2 * (1 - b) ** 7),
        "[[[[o]]]]": -(1 + 16 * b + 36 * b**2 + 16 * b**3 + b**4) / (5 * (1 - b) ** 9),
    }
    for text, value in expected.items():
        assert sp.cancel(HB_ODE[T(text)].coefficient - value) == 0, text


def test_hb_modified_values_at_half():
    # docs/theory/hb_trees.md#modified-equation, b/sigma at beta = 1/2, row order o, [o], [[o]], [o,o], [[[o]]], [[o,o]], [o,[o]], [o,o,o]
    got = [r.coefficient.subs(BETA, R(1, 2)) for r in hb_modified_coefficients(4)]
    assert got == [-2, -6, R(-104, 3), R(-50, 3), -252, -148, -244, -48]


def test_hb_modified_reduces_to_gd_at_beta_zero():
    gd = by_tree(gd_modified_coefficients(6))
    for t, r in HB_ODE.items():
        assert sp.simplify(r.coefficient.subs(BETA, 0)) == gd[t].coefficient, t


def test_hb_modified_tall_trees_are_taylor_coefficients_of_log_r_plus():
    for k in range(1, 7):
        coef = HB_ODE[tall_tree(k)].coefficient
        assert sp.cancel(coef - R_PLUS[1][k - 1]) == 0, k
        # docs/theory/hb_trees.md#modified-equation: -(1/(k (1-beta)^(2k-1))) sum_j C(k-1, j)^2 beta^j
        closed = -sum(comb(k - 1, j) ** 2 * b**j for j in range(k)) / (k * (1 - b) ** (2 * k - 1))
        assert sp.cancel(coef - closed) == 0, k


def test_hb_modified_is_not_a_gradient_at_order_3():
    # docs/theory/hb_trees.md#not-gradient: b([[o]]) - b([o,o]) = -1/(6 (1-beta)^3) (sigma-normalised): the h^2 field is not a gradient
    diff = HB_ODE[T("[[o]]")].bseries_coefficient - HB_ODE[T("[o,o]")].bseries_coefficient
    assert sp.cancel(diff + 1 / (6 * (1 - b) ** 3)) == 0


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------
def test_json_and_table():
    items = coefficients_to_json(hb_modified_coefficients(3))
    assert set(items[0]) == {
        "tree", "nodes", "sigma", "elementary_differential", "coefficient", "numerator", "denominator_power"
    }
    for item in items:  # round trip: exact strings, and sigma * coefficient = numerator / (1 - beta)^k
        coef = sp.sympify(item["coefficient"], locals={"beta": BETA})
        num = sp.sympify(item["numerator"], locals={"beta": BETA})
        assert sp.cancel(item["sigma"] * coef - num / (1 - BETA) ** item["denominator_power"]) == 0
    gd_items = coefficients_to_json(gd_modified_coefficients(3))
    assert gd_items[3] == {
        "tree": "[o,o]", "nodes": 3, "sigma": 2, "elementary_differential": "T3[g,g]", "coefficient": "-1/12"
    }
    table = format_coefficients(hb_memoryless_coefficients(4))
    assert "beta + 3*beta**2 + beta**3" in table and "T3[g,Hg]" in table
    assert r"\begin{tabular}" in format_coefficients(gd_modified_coefficients(3), latex=True)


# ---------------------------------------------------------------------------------------------------------------------
# Numerical evaluation
# ---------------------------------------------------------------------------------------------------------------------
def loss_c11(theta):
    x, y = theta[0], theta[1]
    return 0.5 * (x * y - 1) ** 2 + 0.2 * jnp.sin(x + 2 * y) + x**4 / 40


THETA = jnp.array([0.5, 1.5])


def test_elementary_differentials_match_theory_c11():
    expected = {  # docs/theory/hb_trees.md#oracle
        "o": (-0.549791337458, -0.499582674916),
        "[o]": (-1.636725802312, -0.617130547986),
        "[[o]]": (-4.315371574536, -1.375483158486),
        "[o,o]": (2.437623257048, 2.354867781196),
        "[[[o]]]": (-11.216731052745, -3.493057702301),
        "[[o,o]]": (7.346342682461, 2.810398012278),
        "[o,[o]]": (4.88207469378, 5.522327911727),
        "[o,o,o]": (-0.662294978593, -0.384599917516),
    }
    for text, value in expected.items():
        got = elementary_differential(T(text), loss_c11)(THETA)
        np.testing.assert_allclose(np.asarray(got), value, rtol=0, atol=1e-10, err_msg=text)


def test_hb_memoryless_map_matches_theory_c11():
    # docs/theory/hb_trees.md#oracle: Psi(theta) truncated at K nodes, beta = 1/2, h = 0.01
    expected = [
        (0.510995826749, 1.509991653498),
        (0.51165051707, 1.510238505718),
        (0.511724834509, 1.5102432589),
        (0.511728572903, 1.510236897898),
    ]
    h = 0.01
    records = hb_memoryless_coefficients(4)
    for K, value in enumerate(expected, start=1):
        D = symbolic_field([r for r in records if r.nodes <= K], loss_c11, h=h, beta=0.5)
        np.testing.assert_allclose(np.asarray(THETA - h * D(THETA)), value, rtol=0, atol=1e-11, err_msg=str(K))


def test_gd_order3_field_against_dense_hessians():
    h = 0.05
    field = symbolic_field(gd_modified_coefficients(3), loss_c11, h=h)
    g = jax.jit(jax.grad(loss_c11))(THETA)
    H = jax.jit(jax.hessian(loss_c11))(THETA)
    T3 = jax.jit(jax.jacfwd(jax.hessian(loss_c11)))(THETA)  # T3[i, j, k] = d_i d_j d_k L
    Tgg = jnp.einsum("ijk,j,k->i", T3, g, g)
    expected = -(g + h / 2 * H @ g + h**2 * (H @ H @ g / 3 + Tgg / 12))
    np.testing.assert_allclose(np.asarray(field(THETA)), np.asarray(expected), rtol=1e-13, atol=1e-13)
    # also under jit, and the beta-dependent HB field needs beta
    np.testing.assert_allclose(np.asarray(jax.jit(field)(THETA)), np.asarray(expected), rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="beta"):
        symbolic_field(hb_modified_coefficients(2), loss_c11, h=h)


def test_hb_field_at_beta_zero_equals_gd_field():
    h = 0.03
    gd = symbolic_field(gd_modified_coefficients(4), loss_c11, h=h)(THETA)
    hb = symbolic_field(hb_modified_coefficients(4), loss_c11, h=h, beta=0.0)(THETA)
    np.testing.assert_allclose(np.asarray(hb), np.asarray(gd), rtol=1e-14, atol=1e-14)


def test_rejects_bad_order():
    with pytest.raises(ValueError):
        gd_modified_coefficients(0)
    with pytest.raises(TypeError):
        hb_modified_coefficients(2.5)
    with pytest.raises(ValueError):
        gd_modified_coefficients(3, method="nope")
