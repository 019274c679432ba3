r"""Exact B-series coefficients of GD and heavy-ball (HB), and matrix-free evaluation of elementary differentials.

**Convention** (docs/theory/bea.md#trees). Elementary differentials of the gradient field $g = \nabla L$, with no minus sign:

$$ F(\bullet) = g, \qquad F([t_1, \dots, t_m]) = D^{m+1}L\,[F(t_1), \dots, F(t_m)], $$

so $F([\bullet]) = Hg$, $F([[\bullet]]) = H^2 g$, $F([\bullet,\bullet]) = T_3[g,g]$, ... Every record carries
``coefficient``, the number multiplying $F(t)$ (the $\sigma$-normalised B-series coefficient already divided by
$\sigma(t)$):

* modified equations (:func:`gd_modified_coefficients`, :func:`hb_modified_coefficients`):
  $\theta' = \sum_t h^{|t|-1}\,\mathrm{coef}(t)\,F(t)(\theta)$; GD starts $\theta' = -g - \tfrac h2 Hg - \dots$;
* the HB memoryless (on-manifold) map (:func:`hb_memoryless_coefficients`):
  $\Psi_h(\theta) = \theta - \sum_t h^{|t|}\,\mathrm{coef}(t)\,F(t)(\theta)$, $\mathrm{coef}(t) = d(t)/\sigma(t)$.

Coefficients are exact: sympy ``Rational`` for GD, rational functions of the symbol :data:`BETA` for HB. All HB
denominators are powers of $1-\beta$, so HB records also carry the factored form
$\sigma(t)\,\mathrm{coef}(t) = \mathrm{numerator}(\beta)/(1-\beta)^{k}$ (``numerator`` expanded, ``denominator_power``
$= k$, numerator not divisible by $1-\beta$), in which the Narayana (tall trees) and Eulerian (bushy trees)
polynomials of docs/theory/hb_trees.md#polynomials appear directly: $d(t) = \beta P_t(\beta)/(1-\beta)^{2|t|-1}$.

Internally all arithmetic is exact (``fractions.Fraction``); HB quantities are Laurent polynomials in $u = 1-\beta$,
so no rational-function simplification is ever needed. Sources: backward error analysis, Hairer, Lubich & Wanner,
*Geometric Numerical Integration*, ch. IX (and III.1.4 for the composition of B-series); heavy-ball on-manifold map
and modified equation, Cattaneo & Shigida, *Modified loss of momentum gradient descent: fine-grained analysis*,
arXiv 2509.08483 (recursions as derived in docs/theory/hb_trees.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import reduce
from math import comb, gcd, lcm
from typing import Callable, Literal, Sequence

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import sympy  # noqa: E402

from .._validation import check_int_at_least  # noqa: E402
from ._trees import RootedTree, root_subtrees, trees_up_to_order  # noqa: E402

__all__ = [
    "BETA",
    "TreeCoefficient",
    "gd_modified_coefficients",
    "hb_memoryless_coefficients",
    "hb_modified_coefficients",
    "elementary_differential_name",
    "format_coefficients",
    "coefficients_to_json",
    "elementary_differential",
    "symbolic_field",
]

BETA = sympy.Symbol("beta")
"""The momentum parameter $\\beta$ of HB, as the sympy symbol ``beta``."""


# =====================================================================================================================
# Records
# =====================================================================================================================
@dataclass(frozen=True)
class TreeCoefficient:
    r"""One term of a B-series: ``coefficient`` $\times F(t)$.

    ``coefficient`` is exact (sympy ``Rational``, or a rational function of :data:`BETA`) and already divided by
    ``sigma``. For HB records, ``sigma * coefficient == numerator / (1 - beta)**denominator_power`` (so
    ``coefficient == numerator / (sigma (1-beta)^k)``); for GD both are ``None``.
    """

    tree: RootedTree
    sigma: int
    coefficient: sympy.Expr
    elementary_differential: str
    numerator: sympy.Expr | None = None
    denominator_power: int | None = None

    @property
    def nodes(self) -> int:
        """$|t|$; the term carries $h^{|t|-1}$ in a modified field, $h^{|t|}$ in a one-step map."""
        return self.tree.order

    @property
    def bseries_coefficient(self) -> sympy.Expr:
        r"""$\sigma(t)\,\mathrm{coef}(t)$: the coefficient $a(t)$ of the $\sigma$-normalised series
        $\sum_t h^{|t|} a(t)/\sigma(t)\,F(t)$."""
        if self.numerator is None:
            return self.sigma * self.coefficient
        return self.numerator / (1 - BETA) ** self.denominator_power


def elementary_differential_name(tree: RootedTree, latex: bool = False) -> str:
    r"""$F(t)$ in the notation of docs/theory/bea.md#trees: ``g``, ``Hg``, ``H^2 g``, ``T3[g,g]``, ``H T3[g,g]``, ``T3[g,Hg]``, ...

    A chain of $k$ single-child nodes is $H^k$; a node with $m \ge 2$ children is $T_{m+1}[\dots]$ (the
    $(m+1)$-th derivative tensor of $L$), its arguments listed from the smallest tree up.
    """
    k, core = 0, tree
    while len(core.children) == 1:
        k += 1
        core = core.children[0]
    if core.is_leaf:
        base = "g"
    else:
        m = len(core.children)
        args = (", " if latex else ",").join(elementary_differential_name(c, latex) for c in core.children)
        base = f"T_{{{m + 1}}}[{args}]" if latex else f"T{m + 1}[{args}]"
    if k == 0:
        return base
    power = "H" if k == 1 else (f"H^{{{k}}}" if latex else f"H^{k}")
    if core.is_leaf and k == 1:
        return "H g" if latex else "Hg"
    return f"{power} {base}"


# =====================================================================================================================
# Exact arithmetic
# =====================================================================================================================
class _Laurent:
    r"""Laurent polynomial in $u = 1-\beta$ with ``Fraction`` coefficients (``{exponent: coefficient}``, no zeros).

    Every HB coefficient lies in $\mathbb Q[\beta, (1-\beta)^{-1}] = \mathbb Q[u, u^{-1}]$: the recursions only add,
    multiply, divide by integers and divide by $1-\beta$ (a shift of exponents).
    """

    __slots__ = ("terms",)

    def __init__(self, terms: dict[int, Fraction] | None = None):
        self.terms = {e: c for e, c in (terms or {}).items() if c}

    def __bool__(self) -> bool:
        return bool(self.terms)

    @staticmethod
    def const(c) -> "_Laurent":
        return _Laurent({0: Fraction(c)})

    def __add__(self, other) -> "_Laurent":
        if not isinstance(other, _Laurent):
            other = _Laurent.const(other)
        out = dict(self.terms)
        for e, c in other.terms.items():
            out[e] = out.get(e, 0) + c
        return _Laurent(out)

    def __neg__(self) -> "_Laurent":
        return _Laurent({e: -c for e, c in self.terms.items()})

    def __sub__(self, other: "_Laurent") -> "_Laurent":
        return self + (-other)

    def __mul__(self, other) -> "_Laurent":
        if isinstance(other, _Laurent):
            out: dict[int, Fraction] = {}
            for e1, c1 in self.terms.items():
                for e2, c2 in other.terms.items():
                    out[e1 + e2] = out.get(e1 + e2, 0) + c1 * c2
            return _Laurent(out)
        return _Laurent({e: c * other for e, c in self.terms.items()})

    __rmul__ = __mul__

    def __truediv__(self, scalar) -> "_Laurent":
        return _Laurent({e: c / scalar for e, c in self.terms.items()})

    def shift(self, k: int) -> "_Laurent":
        """Multiply by $u^k = (1-\\beta)^k$."""
        return _Laurent({e + k: c for e, c in self.terms.items()})

    def factored(self) -> tuple[list[Fraction], int]:
        r"""``(coeffs, k)``: value $= \sum_i \mathrm{coeffs}[i]\,\beta^i / (1-\beta)^k$, numerator coprime to
        $1-\beta$ when $k > 0$."""
        if not self.terms:
            return [], 0
        k = max(0, -min(self.terms))
        # numerator Q(u) = sum c_e u^(e+k) has a nonzero constant term when k > 0, so 1-beta does not divide it
        degree = max(self.terms) + k
        coeffs = [Fraction(0)] * (degree + 1)
        for e, c in self.terms.items():
            j = e + k  # c * (1 - beta)^j
            for i in range(j + 1):
                coeffs[i] += c * comb(j, i) * (-1) ** i
        while coeffs and coeffs[-1] == 0:
            coeffs.pop()
        return coeffs, k


def _sympy_rational(x: Fraction) -> sympy.Rational:
    return sympy.Rational(x.numerator, x.denominator)


def _sympy_poly(coeffs: Sequence[Fraction]) -> sympy.Expr:
    return sympy.Add(*[_sympy_rational(c) * BETA**i for i, c in enumerate(coeffs) if c])


# =====================================================================================================================
# Backward error analysis by the composition law (HLW III.1.4 and IX)
# =====================================================================================================================
def _poly_mul(p: list, q: list, zero) -> list:
    out = [zero] * (len(p) + len(q) - 1)
    for i, pi in enumerate(p):
        if not pi:
            continue
        for j, qj in enumerate(q):
            if qj:
                out[i + j] = out[i + j] + pi * qj
    return out


def _bea(a: dict[RootedTree, object], order: int, zero) -> dict[RootedTree, object]:
    r"""Modified-field coefficients $b$ of the one-step map $B(a)$ (with $a(\emptyset) = 1$), by composition.

    The time-$s$ flow of the field $h\tilde f = \sum_t h^{|t|} b(t)/\sigma(t) F(t)$ is the B-series $B(c_s)$ with
    (composition law, HLW Theorem III.1.10, root subtrees counted with multiplicity)

    $$ \frac{d}{ds} c_s(t) = \sum_{\emptyset \ne s' \subseteq t} b(s') \prod_{\delta \in t\setminus s'} c_s(\delta),
       \qquad c_0(t) = 0, $$

    and backward error analysis (HLW ch. IX) asks $c_1 = a$. The $s' = t$ term is $b(t)$, so tree by tree
    $c_s(t) = s\,b(t) + R_s(t)$ with $R_s$ known from smaller trees, and $b(t) = a(t) - R_1(t)$. $c_s(t)$ is kept as
    a polynomial in $s$ (degree $|t|$). ``zero`` fixes the coefficient ring (``Fraction`` or :class:`_Laurent`).
    """
    b: dict[RootedTree, object] = {}
    c: dict[RootedTree, list] = {}
    forest_cache: dict[tuple, list] = {(): [zero + 1]}

    def forest_poly(forest: tuple[RootedTree, ...]) -> list:
        poly = forest_cache.get(forest)
        if poly is None:
            poly = _poly_mul(forest_poly(forest[:-1]), c[forest[-1]], zero)
            forest_cache[forest] = poly
        return poly

    for tree in trees_up_to_order(order):
        integrand = [zero] * tree.order  # polynomial in s of degree <= |t| - 1
        for sub in root_subtrees(tree):
            if not sub.forest:
                continue  # s' = t: the unknown b(t)
            weight = b[sub.subtree]
            if not weight:
                continue
            weight = weight * sub.multiplicity
            for k, pk in enumerate(forest_poly(sub.forest)):
                if pk:
                    integrand[k] = integrand[k] + weight * pk
        poly = [zero] + [integrand[k] / (k + 1) for k in range(tree.order)]
        remainder = zero
        for pk in poly:
            remainder = remainder + pk
        b[tree] = a[tree] - remainder
        poly[1] = poly[1] + b[tree]
        c[tree] = poly
    return b


# =====================================================================================================================
# GD
# =====================================================================================================================
def _gd_logarithm(order: int) -> dict[RootedTree, Fraction]:
    r"""Explicit Euler's modified-field coefficients $b(t)$ (field $f$, $\sigma$-normalised) by the logarithm formula.

    Euler is the B-series $a = \varepsilon + \delta_\bullet$ (HLW III.1), and the modified field is its logarithm in
    the Butcher group (HLW IX.9): $b = \sum_{k\ge1} \frac{(-1)^{k+1}}{k} (a - \varepsilon)^{*k}$. Since
    $a - \varepsilon$ is $1$ on forests of single nodes and $0$ elsewhere, $(a-\varepsilon)^{*k}(t) = N_k(t)$, the
    number of surjective labellings of the nodes by $\{1, \dots, k\}$ that strictly increase from parent to child
    (peeling $k$ layers of leaves). Hence

    $$ b(t) = \sum_{k=1}^{|t|} \frac{(-1)^{k+1}}{k} N_k(t), \qquad
       N_k = \sum_{i=0}^{k} (-1)^{k-i}\binom ki Z_i(t), \qquad Z_j(t) = \sum_{r=0}^{j-1} \prod_i Z_r(t_i), $$

    with $Z_j(t)$ the number of strictly increasing labellings by $\{1, \dots, j\}$ (the root takes the smallest
    label, the children's subtrees live on the $r$ labels above it). Integer arithmetic, one pass per tree.
    Examples: $b(\bullet) = 1$, $b([\bullet]) = -1/2$, $b([[\bullet]]) = 1/3$, $b([\bullet,\bullet]) = 1/6$.
    """
    zcache: dict[RootedTree, list[int]] = {}
    out: dict[RootedTree, Fraction] = {}
    for tree in trees_up_to_order(order):
        z = [0] * (order + 1)
        kids = [zcache[kid] for kid in tree.children]
        for j in range(1, order + 1):
            prod_r = 1
            r = j - 1
            for kz in kids:
                prod_r *= kz[r]
            z[j] = z[j - 1] + prod_r
        zcache[tree] = z
        n = tree.order
        total = Fraction(0)
        for k in range(1, n + 1):
            surj = sum((-1) ** (k - i) * comb(k, i) * z[i] for i in range(k + 1))
            if surj:
                total += Fraction((-1) ** (k + 1) * surj, k)
        out[tree] = total
    return out


def _gd_composition(order: int) -> dict[RootedTree, Fraction]:
    """Explicit Euler's modified-field coefficients (field $f$) by the composition recursion :func:`_bea`."""
    trees = trees_up_to_order(order)
    a = {t: Fraction(1 if t.is_leaf else 0) for t in trees}
    return _bea(a, order, Fraction(0))


def gd_modified_coefficients(
    order: int, method: Literal["logarithm", "composition"] = "logarithm"
) -> list[TreeCoefficient]:
    r"""Exact modified-equation coefficients of GD $\theta_{n+1} = \theta_n - h g(\theta_n)$, trees up to ``order``
    nodes.

    GD is explicit Euler on $f = -g$. Backward error analysis (HLW ch. IX) gives the modified field
    $f_h = \sum_t h^{|t|-1} b(t)/\sigma(t)\,F_f(t)$ with $F_f(t) = (-1)^{|t|} F(t)$ in terms of the gradient
    elementary differentials, so in this module's convention

    $$ \theta' = \sum_t h^{|t|-1}\,\mathrm{coef}(t)\,F(t), \qquad \mathrm{coef}(t) = (-1)^{|t|}\,b(t)/\sigma(t), $$

    i.e. $\theta' = -g - \frac h2 Hg - h^2(\frac13 H^2 g + \frac1{12}T_3[g,g]) - h^3(\frac14 H^3g + \frac1{12}H T_3[g,g]
    + \frac1{12}T_3[g,Hg] + 0\cdot T_4[g,g,g]) - \dots$ (docs/theory/bea.md#gd).

    ``method="logarithm"`` (default) uses the closed labelling formula of :func:`_gd_logarithm` (order 9 in a few
    milliseconds); ``method="composition"`` the general BEA recursion :func:`_bea` (an independent cross-check).
    """
    order = check_int_at_least("order", order, 1)
    if method == "logarithm":
        b = _gd_logarithm(order)
    elif method == "composition":
        b = _gd_composition(order)
    else:
        raise ValueError(f"method must be 'logarithm' or 'composition', got {method!r}")
    records = []
    for tree in trees_up_to_order(order):
        value = b[tree] * (-1) ** tree.order / tree.sigma
        records.append(
            TreeCoefficient(tree, tree.sigma, _sympy_rational(value), elementary_differential_name(tree))
        )
    return records


# =====================================================================================================================
# Heavy-ball
# =====================================================================================================================
def _hb_d(order: int) -> dict[RootedTree, _Laurent]:
    r"""$d(t)$ of the HB on-manifold map (docs/theory/hb_trees.md#map), as Laurent polynomials in $u = 1-\beta$:

    $$ (1-\beta)\,d(t) = \prod_i \big(-d(t_i)\big) - \sum_{s \text{ proper nonempty root subtree}} d(s)
       \prod_{\delta \in t\setminus s} \big(-d(\delta)\big), \qquad d(\bullet) = \frac1{1-\beta}. $$

    (Tree-by-tree form of the invariance equation $D(\theta - hD) - \beta D = \nabla L(\theta - hD)$ for the
    on-manifold step $\Psi = \theta - hD$; the leaf case is the same formula with an empty product.)
    """
    d: dict[RootedTree, _Laurent] = {}
    one = _Laurent.const(1)
    neg_forest: dict[tuple, _Laurent] = {(): one}

    def prod_neg(forest: tuple[RootedTree, ...]) -> _Laurent:
        value = neg_forest.get(forest)
        if value is None:
            value = prod_neg(forest[:-1]) * (-d[forest[-1]])
            neg_forest[forest] = value
        return value

    for tree in trees_up_to_order(order):
        acc = prod_neg(tree.children)
        for sub in root_subtrees(tree):
            if sub.forest:
                acc = acc - d[sub.subtree] * prod_neg(sub.forest) * sub.multiplicity
        d[tree] = acc.shift(-1)
    return d


def _hb_b(order: int) -> dict[RootedTree, _Laurent]:
    r"""$b(t)$ of the HB modified field: BEA (:func:`_bea`) of the on-manifold map $B(a)$, $a(t) = -d(t)$."""
    d = _hb_d(order)
    a = {t: -v for t, v in d.items()}
    return _bea(a, order, _Laurent())


def _hb_records(values: dict[RootedTree, _Laurent]) -> list[TreeCoefficient]:
    records = []
    for tree, value in values.items():
        coeffs, k = value.factored()
        numerator = _sympy_poly(coeffs)
        # coefficient = content * (primitive integer polynomial) / (sigma (1-beta)^k), content signed so that the
        # primitive polynomial's lowest coefficient is positive: prints as -(beta + 1)/(2*(1 - beta)**3)
        nonzero = [c for c in coeffs if c]
        if nonzero:
            content = Fraction(
                reduce(gcd, (c.numerator for c in nonzero)), reduce(lcm, (c.denominator for c in nonzero))
            )
            content = content if nonzero[0] > 0 else -content
            primitive = _sympy_poly([c / content for c in coeffs])
            coefficient = sympy.Mul(_sympy_rational(content / tree.sigma), primitive, (1 - BETA) ** -k)
        else:
            coefficient = sympy.Integer(0)
        records.append(
            TreeCoefficient(tree, tree.sigma, coefficient, elementary_differential_name(tree), numerator, k)
        )
    return records


def hb_memoryless_coefficients(order: int) -> list[TreeCoefficient]:
    r"""Exact coefficients of the HB on-manifold (memoryless, stationary) map, trees up to ``order`` nodes.

    HB $\theta_{n+1} = \theta_n - h g(\theta_n) + \beta(\theta_n - \theta_{n-1})$ restricted to its invariant
    manifold is (docs/theory/hb_trees.md#map; Cattaneo & Shigida, arXiv 2509.08483)

    $$ \Psi_h(\theta) = \theta - \sum_t h^{|t|}\,\frac{d(t)}{\sigma(t)}\,F(t)(\theta), $$

    with $d$ from the recursion of :func:`_hb_d`. Records: ``coefficient`` $= d(t)/\sigma(t)$ (so
    :func:`symbolic_field` of these records is $D_h(\theta) = (\theta - \Psi_h(\theta))/h$), ``numerator`` $=
    \beta P_t(\beta)$ and ``denominator_power`` $= 2|t|-1$ for $|t| \ge 2$:
    $d(t) = \beta P_t(\beta)/(1-\beta)^{2|t|-1}$,
    $P_t$ the Narayana polynomial $N_{|t|-1}$ on tall trees, the Eulerian polynomial $A_{|t|-1}$ on bushy trees.
    """
    order = check_int_at_least("order", order, 1)
    return _hb_records(_hb_d(order))


def hb_modified_coefficients(order: int) -> list[TreeCoefficient]:
    r"""Exact coefficients of the HB modified equation (on-manifold start), trees up to ``order`` nodes.

    Backward error analysis (HLW ch. IX) of the on-manifold map $\Psi_h = B(-d)$ (docs/theory/hb_trees.md#modified-equation; Cattaneo & Shigida,
    arXiv 2509.08483): $\theta' = \sum_t h^{|t|-1}\,b(t)/\sigma(t)\,F(t)$, with ``coefficient`` $= b(t)/\sigma(t)$
    and $\sigma(t)\,\mathrm{coef} = $ ``numerator``$/(1-\beta)^{k}$. First terms:
    $\theta' = -\frac{g}{1-\beta} - h\frac{1+\beta}{2(1-\beta)^3}Hg - \dots$; at $\beta = 0$ they are GD's
    (:func:`gd_modified_coefficients`); on tall trees they are the Taylor coefficients of $\log r_+(x)$.
    """
    order = check_int_at_least("order", order, 1)
    return _hb_records(_hb_b(order))


# =====================================================================================================================
# Rendering
# =====================================================================================================================
def _coefficient_text(record: TreeCoefficient) -> str:
    return str(record.coefficient)


def format_coefficients(records: Sequence[TreeCoefficient], latex: bool = False) -> str:
    r"""A table of the records: tree, $|t|$, $\sigma$, $F(t)$, coefficient (and, for HB, numerator and $k$ of
    $\sigma\,\mathrm{coef} = \mathrm{numerator}/(1-\beta)^k$). ``latex=True`` returns a ``tabular`` environment."""
    factored = any(r.numerator is not None for r in records)
    if latex:
        cols = "lrrll" + ("lr" if factored else "")
        head = r"tree & $|t|$ & $\sigma$ & $F(t)$ & coefficient"
        if factored:
            head += r" & numerator of $\sigma\,$coef & $k$"
        lines = [rf"\begin{{tabular}}{{{cols}}}", r"\hline", head + r" \\", r"\hline"]
        for r in records:
            row = (
                rf"\texttt{{{r.tree}}} & {r.nodes} & {r.sigma} & ${elementary_differential_name(r.tree, latex=True)}$"
                rf" & ${sympy.latex(r.coefficient)}$"
            )
            if factored:
                num = "" if r.numerator is None else f"${sympy.latex(r.numerator, order='rev-lex')}$"
                row += f" & {num} & {'' if r.denominator_power is None else r.denominator_power}"
            lines.append(row + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        return "\n".join(lines)
    header = ["tree", "|t|", "sigma", "F(t)", "coefficient"]
    if factored:
        header += ["numerator (sigma*coef*(1-beta)^k)", "k"]
    rows = []
    for r in records:
        row = [str(r.tree), str(r.nodes), str(r.sigma), r.elementary_differential, _coefficient_text(r)]
        if factored:
            row += [
                "" if r.numerator is None else sympy.sstr(r.numerator, order="rev-lex"),
                "" if r.denominator_power is None else str(r.denominator_power),
            ]
        rows.append(row)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    fmt = lambda row: "  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(row) for row in rows])


def coefficients_to_json(records: Sequence[TreeCoefficient]) -> list[dict]:
    """JSON-able list of dicts: ``tree`` (bracket string), ``nodes``, ``sigma``, ``elementary_differential``,
    ``coefficient`` (exact, a string sympy can parse) and, for HB records, ``numerator`` (expanded polynomial in
    ``beta``, string) and ``denominator_power`` ``k``, with ``sigma * coefficient = numerator / (1 - beta)**k``."""
    out = []
    for r in records:
        item = {
            "tree": str(r.tree),
            "nodes": r.nodes,
            "sigma": r.sigma,
            "elementary_differential": r.elementary_differential,
            "coefficient": str(r.coefficient),
        }
        if r.numerator is not None:
            item["numerator"] = sympy.sstr(r.numerator, order="rev-lex")
            item["denominator_power"] = r.denominator_power
        out.append(item)
    return out


# =====================================================================================================================
# Numerical evaluation (matrix-free, nested jax.jvp)
# =====================================================================================================================
def _derivative_along(grad_fn: Callable, theta, directions: Sequence) -> jax.Array:
    r"""$D^{m+1}L(\theta)[v_1, \dots, v_m]$: derivative of $\nabla L$ along $v_1, \dots, v_m$ by nested ``jax.jvp``."""
    fn = grad_fn
    for v in directions:
        fn = (lambda f, v: (lambda x: jax.jvp(f, (x,), (v,))[1]))(fn, v)
    return fn(theta)


def _elementary_differentials(trees: Sequence[RootedTree], grad_fn: Callable, theta) -> dict[RootedTree, jax.Array]:
    cache: dict[RootedTree, jax.Array] = {}

    def value(tree: RootedTree):
        out = cache.get(tree)
        if out is None:
            out = _derivative_along(grad_fn, theta, [value(kid) for kid in tree.children])
            cache[tree] = out
        return out

    for tree in trees:
        value(tree)
    return cache


def elementary_differential(tree: RootedTree, loss: Callable) -> Callable:
    r"""$\theta \mapsto F(t)(\theta)$ for the gradient field of ``loss``: $F(\bullet) = \nabla L$,
    $F([t_1..t_m]) = D^{m+1}L[F(t_1), \dots, F(t_m)]$, matrix-free (nested ``jax.jvp`` of ``jax.grad(loss)``; no
    Hessian is formed). Shared subtrees are evaluated once."""
    grad_fn = jax.grad(loss)
    return lambda theta: _elementary_differentials([tree], grad_fn, theta)[tree]


def _numeric_coefficient(record: TreeCoefficient, beta) -> float:
    coef = record.coefficient
    if BETA in coef.free_symbols:
        if beta is None:
            raise ValueError("these coefficients depend on beta: pass beta=...")
        value = coef.subs(BETA, sympy.Rational(float(beta)))  # exact evaluation, rounded once
        return float(value)
    return float(coef)


def symbolic_field(
    records: Sequence[TreeCoefficient], loss: Callable, *, h, beta: float | None = None
) -> Callable:
    r"""$\theta \mapsto \sum_t h^{|t|-1}\,\mathrm{coef}(t)|_\beta\,F(t)(\theta)$ over the given records.

    For modified-equation records this is the truncated modified field; for :func:`hb_memoryless_coefficients` it is
    $(\theta - \Psi_h(\theta))/h$. The coefficients are evaluated once, exactly at the binary value of ``beta`` and
    rounded to float64; elementary differentials are matrix-free (:func:`elementary_differential`).
    """
    trees = [r.tree for r in records]
    coefficients = [_numeric_coefficient(r, beta) for r in records]
    grad_fn = jax.grad(loss)

    def field(theta):
        values = _elementary_differentials(trees, grad_fn, theta)
        total = None
        for tree, coef in zip(trees, coefficients):
            if coef == 0.0:
                continue
            term = jax.tree.map(lambda x: (h ** (tree.order - 1) * coef) * x, values[tree])
            total = term if total is None else jax.tree.map(jnp.add, total, term)
        if total is None:
            total = jax.tree.map(jnp.zeros_like, values[trees[0]]) if trees else jnp.zeros_like(theta)
        return total

    return field
