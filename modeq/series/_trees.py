r"""Rooted trees: the index set of B-series (Hairer, Lubich & Wanner, *Geometric Numerical Integration*, ch. III).

A rooted tree is either the single node $\bullet$ (written ``o``) or $[t_1, \dots, t_m]$, a root whose children are
the trees $t_1, \dots, t_m$ (an unordered multiset). :class:`RootedTree` stores the children in a canonical order,
and every tree is *interned*: building the same tree twice returns the same immutable object, so trees are cheap
dictionary keys. Its canonical immutable representation is :attr:`RootedTree.key`, the nested tuple of the
children's keys (``o`` is ``()``, ``[o]`` is ``((),)``, ``[o,[o]]`` is ``((), ((),))``).

Quantities (docs/theory/bea.md#trees):

* $|t|$, the number of nodes (:attr:`RootedTree.order`);
* the symmetry $\sigma(\bullet) = 1$, $\sigma([t_1^{k_1}, \dots, t_q^{k_q}]) = \prod_i k_i!\,\sigma(t_i)^{k_i}$ for
  distinct $t_i$ with multiplicities $k_i$ (:attr:`RootedTree.sigma`);
* the tree factorial $\gamma(\bullet) = 1$, $\gamma([t_1, \dots, t_m]) = |t| \prod_i \gamma(t_i)$
  (:attr:`RootedTree.gamma`);
* the Butcher product $u \circ v$: graft $v$ onto the root of $u$ (:func:`butcher_product`);
* root subtrees "with multiplicity" (:func:`root_subtrees`): the node subsets that contain the root and are closed
  under taking parents, each counted once as a subset of the nodes (identical siblings give distinct subsets); the
  complement is a forest. They index the composition law of B-series (HLW III.1.4).

Canonical order of trees (used for sorting, for the children inside a tree and for printing): by number of nodes,
then by number of children of the root, then lexicographically by the children taken from the largest down. It
reproduces the row order of the tables in docs/theory/hb_trees.md (``o``; ``[o]``; ``[[o]]``, ``[o,o]``; ``[[[o]]]``, ``[[o,o]]``,
``[o,[o]]``, ``[o,o,o]``; ...). Bracket strings list children from the smallest up (``[o,[o]]``);
:func:`tree_from_string` accepts any order (``[[o],o]`` is the same tree).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import lru_cache
from math import factorial
from typing import Iterable, Iterator, NamedTuple

__all__ = [
    "RootedTree",
    "RootSubtree",
    "LEAF",
    "tree_from_string",
    "trees_of_order",
    "trees_up_to_order",
    "number_of_trees",
    "butcher_product",
    "root_subtrees",
    "free_tree_key",
    "tall_tree",
    "bushy_tree",
    "symmetry",
    "tree_factorial",
]


class RootedTree:
    """An immutable, interned rooted tree.

    ``RootedTree(children)`` builds $[t_1, \\dots, t_m]$ from any iterable of trees (order irrelevant);
    ``RootedTree()`` is the single node ``o``. Equal trees are the same object.
    """

    __slots__ = ("_children", "_key", "_sort_key", "_order", "_sigma", "_gamma", "_hash", "__weakref__")
    _interned: dict[tuple, "RootedTree"] = {}

    def __new__(cls, children: Iterable["RootedTree"] = ()) -> "RootedTree":
        kids = tuple(children)
        for kid in kids:
            if not isinstance(kid, RootedTree):
                raise TypeError(f"children must be RootedTree instances, got {kid!r}")
        kids = tuple(sorted(kids, key=_sort_key))
        key = tuple(kid._key for kid in kids)
        existing = cls._interned.get(key)
        if existing is not None:
            return existing
        self = object.__new__(cls)
        order = 1 + sum(kid._order for kid in kids)
        sigma = 1
        for kid, mult in Counter(kids).items():
            sigma *= factorial(mult) * kid._sigma**mult
        gamma = order
        for kid in kids:
            gamma *= kid._gamma
        setter = object.__setattr__
        setter(self, "_children", kids)
        setter(self, "_key", key)
        setter(self, "_sort_key", (order, len(kids), tuple(kid._sort_key for kid in reversed(kids))))
        setter(self, "_order", order)
        setter(self, "_sigma", sigma)
        setter(self, "_gamma", gamma)
        setter(self, "_hash", hash(key))
        cls._interned[key] = self
        return self

    def __setattr__(self, name, value):
        raise AttributeError("RootedTree is immutable")

    def __reduce__(self):
        return (RootedTree, (self._children,))

    # --- structure -----------------------------------------------------------------------------------------------
    @property
    def children(self) -> tuple["RootedTree", ...]:
        """The root's children, in canonical (ascending) order."""
        return self._children

    @property
    def key(self) -> tuple:
        """Canonical immutable representation: the nested tuple of the children's keys (``o`` is ``()``)."""
        return self._key

    @property
    def order(self) -> int:
        """$|t|$, the number of nodes."""
        return self._order

    @property
    def sigma(self) -> int:
        r"""Symmetry $\sigma(t) = \prod_i k_i!\,\sigma(t_i)^{k_i}$ (order of the automorphism group)."""
        return self._sigma

    @property
    def gamma(self) -> int:
        r"""Tree factorial $\gamma(t) = |t| \prod_i \gamma(t_i)$."""
        return self._gamma

    @property
    def is_leaf(self) -> bool:
        """Whether this is the one-node tree ``o`` (no children), whose elementary differential is $g$ itself."""
        return not self._children

    # --- comparison / hashing ------------------------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        return self is other or (isinstance(other, RootedTree) and self._key == other._key)

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: "RootedTree") -> bool:
        return self._sort_key < other._sort_key

    def __le__(self, other: "RootedTree") -> bool:
        return self._sort_key <= other._sort_key

    def __gt__(self, other: "RootedTree") -> bool:
        return self._sort_key > other._sort_key

    def __ge__(self, other: "RootedTree") -> bool:
        return self._sort_key >= other._sort_key

    # --- printing ------------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        if not self._children:
            return "o"
        return "[" + ",".join(str(kid) for kid in self._children) + "]"

    def __repr__(self) -> str:
        return f"RootedTree('{self}')"


def _sort_key(tree: RootedTree) -> tuple:
    return tree._sort_key


LEAF = RootedTree()
"""The single-node tree ``o``."""


def symmetry(tree: RootedTree) -> int:
    r"""$\sigma(t)$; see :attr:`RootedTree.sigma`."""
    return tree.sigma


def tree_factorial(tree: RootedTree) -> int:
    r"""$\gamma(t)$; see :attr:`RootedTree.gamma`."""
    return tree.gamma


def tree_from_string(text: str) -> RootedTree:
    """Parse bracket notation: ``o`` (also ``•``) is a node, ``[t1,t2,...]`` a root with children; spaces ignored."""
    s = "".join(text.split()).replace("•", "o")
    pos = 0

    def parse() -> RootedTree:
        nonlocal pos
        if pos >= len(s):
            raise ValueError(f"unexpected end of tree string {text!r}")
        if s[pos] == "o":
            pos += 1
            return LEAF
        if s[pos] != "[":
            raise ValueError(f"unexpected {s[pos]!r} at position {pos} in tree string {text!r}")
        pos += 1
        kids = [parse()]
        while pos < len(s) and s[pos] == ",":
            pos += 1
            kids.append(parse())
        if pos >= len(s) or s[pos] != "]":
            raise ValueError(f"missing ']' in tree string {text!r}")
        pos += 1
        return RootedTree(kids)

    tree = parse()
    if pos != len(s):
        raise ValueError(f"trailing characters in tree string {text!r}")
    return tree


def butcher_product(u: RootedTree, v: RootedTree) -> RootedTree:
    r"""$u \circ v$: graft $v$ onto the root of $u$, i.e. $[u_1, \dots, u_m, v]$ for $u = [u_1, \dots, u_m]$."""
    return RootedTree(u.children + (v,))


def tall_tree(n: int) -> RootedTree:
    """The tall tree (path) with ``n`` nodes, ``[[...[o]...]]``: $F = H^{n-1} g$."""
    tree = LEAF
    for _ in range(n - 1):
        tree = RootedTree((tree,))
    return tree


def bushy_tree(n: int) -> RootedTree:
    """The bushy tree (star) with ``n`` nodes, ``[o,...,o]``: $F = T_n[g, \\dots, g]$."""
    return RootedTree((LEAF,) * (n - 1))


# --- generation ----------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def trees_of_order(n: int) -> tuple[RootedTree, ...]:
    """All rooted trees with ``n`` nodes, in canonical order.

    Counts 1, 1, 2, 4, 9, 20, 48, 115, 286, ... (OEIS A000081)."""
    if n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if n == 1:
        return (LEAF,)
    pool = [t for m in range(1, n) for t in trees_of_order(m)]  # ascending canonical order

    def forests(remaining: int, top: int) -> Iterator[tuple[RootedTree, ...]]:
        # multisets of trees from pool[: top + 1] with `remaining` nodes in all, chosen with non-increasing index
        if remaining == 0:
            yield ()
            return
        for i in range(top, -1, -1):
            tree = pool[i]
            if tree.order <= remaining:
                for rest in forests(remaining - tree.order, i):
                    yield (tree,) + rest

    return tuple(sorted(RootedTree(forest) for forest in forests(n - 1, len(pool) - 1)))


def trees_up_to_order(n: int) -> tuple[RootedTree, ...]:
    """All rooted trees with 1 to ``n`` nodes, in canonical order."""
    return tuple(t for m in range(1, n + 1) for t in trees_of_order(m))


def number_of_trees(n: int) -> int:
    """Number of rooted trees with ``n`` nodes."""
    return len(trees_of_order(n))


# --- root subtrees -------------------------------------------------------------------------------------------------
class RootSubtree(NamedTuple):
    """A nonempty root subtree ``subtree`` of a tree, the complement ``forest`` and the number of node subsets
    (``multiplicity``) giving this same pair (subtree, forest) up to isomorphism."""

    subtree: RootedTree
    forest: tuple[RootedTree, ...]
    multiplicity: int


def _merge(a: tuple[RootedTree, ...], b: tuple[RootedTree, ...]) -> tuple[RootedTree, ...]:
    if not b:
        return a
    if not a:
        return b
    return tuple(sorted(a + b, key=_sort_key))


@lru_cache(maxsize=None)
def root_subtrees(tree: RootedTree) -> tuple[RootSubtree, ...]:
    r"""The nonempty root subtrees $s \subseteq t$ with their complement forests $t \setminus s$, with multiplicity.

    A root subtree is a set of nodes containing the root and closed under parents; each such node subset is counted
    (identical siblings give distinct subsets), and isomorphic pairs (subtree, forest) are merged with the count in
    ``multiplicity``. The whole tree (empty forest) is included, the empty subtree is not. Example: ``[o,o]`` gives
    (``o``, (o, o), 1), (``[o]``, (o,), 2), (``[o,o]``, (), 1). Sum of multiplicities: the number of root subtrees.
    Computed recursively: a root subtree of $[t_1, \dots, t_m]$ is the root plus, for each child, either nothing
    (the child joins the forest) or a root subtree of the child.
    """
    states: dict[tuple, int] = {((), ()): 1}  # (kept child subtrees, forest) -> count
    for child in tree.children:
        child_subtrees = root_subtrees(child)
        new: dict[tuple, int] = defaultdict(int)
        for (kept, forest), count in states.items():
            new[(kept, _merge(forest, (child,)))] += count
            for sub in child_subtrees:
                new[(_merge(kept, (sub.subtree,)), _merge(forest, sub.forest))] += count * sub.multiplicity
        states = new
    out = [RootSubtree(RootedTree(kept), forest, count) for (kept, forest), count in states.items()]
    out.sort(key=lambda r: (r.subtree._sort_key, tuple(t._sort_key for t in r.forest)))
    return tuple(out)


# --- free trees ----------------------------------------------------------------------------------------------------
def free_tree_key(tree: RootedTree) -> RootedTree:
    """Canonical key of the underlying free (unrooted) tree: the smallest rooted tree, in canonical order, obtained
    by re-rooting ``tree`` at any of its nodes. Two rooted trees have the same free tree iff their keys are equal."""
    adjacency: list[list[int]] = []

    def add(node: RootedTree, parent: int | None) -> None:
        index = len(adjacency)
        adjacency.append([] if parent is None else [parent])
        if parent is not None:
            adjacency[parent].append(index)
        for kid in node.children:
            add(kid, index)

    add(tree, None)

    def rooted(node: int, parent: int) -> RootedTree:
        return RootedTree(rooted(nb, node) for nb in adjacency[node] if nb != parent)

    return min(rooted(root, -1) for root in range(len(adjacency)))


def _clear_caches() -> None:
    """Forget generated trees and root subtrees (benchmarks time cold runs). Existing trees stay valid: equality
    and hashing go by :attr:`RootedTree.key`."""
    trees_of_order.cache_clear()
    root_subtrees.cache_clear()
    RootedTree._interned.clear()
    RootedTree._interned[LEAF.key] = LEAF
