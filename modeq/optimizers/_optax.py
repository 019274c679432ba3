r"""Any optax ``GradientTransformation`` as a modeq optimizer: :func:`from_optax`.

An optax optimizer is a map $(g_n, s_n, \theta_n) \mapsto (u_n, s_{n+1})$ with $\theta_{n+1} = \theta_n + u_n$
(``updates, state = tx.update(g, state, params)``). modeq needs no momentum-variable form for it
(docs/builders/from_optax.md):

* **Fast variables** are the floating-point leaves $s = (s_1, \dots, s_L)$ of the state; integer leaves are step
  counters (checked: they advance by one per update), set from the simulator's step index $n$, or to
  $n = 2^{30}$ ("$n \to \infty$", the stationary regime: bias corrections equal 1) for the modified equations.
* **Slow manifold.** At fixed $\theta$ each fast leaf must relax geometrically: its update is affine in itself with a
  constant elementwise decay, $S_\ell(s, g, \theta) = a_\ell\, s_\ell + c_\ell(s_{<\ell}, g, \theta)$, $|a_\ell| < 1$,
  where $c_\ell$ may depend (non-linearly) on other leaves through an acyclic chain (a ``chain`` of transforms: e.g.
  ``trace`` after ``scale_by_rms`` sees the rescaled gradient). The decays, the coupling graph and the counters are
  found by probing ``tx.update`` once at construction. The invariant manifold $s = M_h(\theta)$,
  $M_h(\Psi_h(\theta)) = S(M_h(\theta), g(\theta), \theta)$, is then computed by the fixed-point iteration of
  :mod:`modeq.series._manifold`, whose inner step solves $S(s) - s = r$ exactly: $s_\ell \leftarrow (S_\ell(s) -
  a_\ell s_\ell - r_\ell)/(1 - a_\ell)$, repeated once per level of the coupling graph (exact for an acyclic chain).
  This is the momentum-variable construction of Kovachki & Stuart (2021) and Cattaneo & Shigida (arXiv 2502.02132)
  with the state's own dynamics in place of a hand-written form: for ``optax.sgd(h, momentum=beta)`` it is heavy-ball's
  manifold $m = g/(1-\beta) + O(h)$ (tested against the catalog to rounding).
* **What is refused** (named in :meth:`OptaxOptimizer.reduction_obstacle`; simulation still works): a fast leaf that
  does not contract ($|a| \ge 1$: AdaGrad's sum of squares), whose update is not affine in itself (Yogi, AMSGrad's
  max), whose decay depends on the gradient, a cyclic coupling, an integer leaf that is not a step counter, an update
  whose dependence on the step count has no limit (a schedule that never settles). An update that is piecewise
  constant in the gradient (a sign: optax ``lion``, ``sign_sgd``) has no smooth expansion beyond order 1
  (``smooth=False``, detected: zero derivative in $g$ with a value that changes with $g$).

Step-count dependence (bias correction, schedules): the simulator runs the real iteration (count $= n$); the modified
equations are those of the limit $n \to \infty$. For bias-corrected Adam started from zero moments the transient is a
boundary layer in $t = nh$: see docs/theory/bias_correction.md for the start that restores the order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._spec import Optimizer

#: the step count used for "n -> infinity" (stationary regime): b^(2^30) is 0 in float64 for every b < 1 - 1e-7
STATIONARY_COUNT = 2**30
_PROBE_H = 1e-3


class OptaxOptimizer(Optimizer):
    r"""An optax ``GradientTransformation`` family ``make(h)`` seen as a modeq optimizer (build with :func:`from_optax`).

    ``momenta`` are the state's floating-point leaves (one pseudo momentum variable each, with its measured decay);
    :meth:`step` runs ``tx.update``; :meth:`slow_state` solves the state equation on the slow manifold. Every builder of
    modified equations, the simulator and ``compare`` accept it; the closed-form builders that need the
    momentum-variable form (``memory_correction``, the exact modified losses, the SME) refuse it by name.
    """

    cli_name = "optax"
    has_momentum_form = False

    make: Callable = eqx.field(static=True, default=None)
    label: str = eqx.field(static=True, default="optax")
    treedef: Any = eqx.field(static=True, default=None)
    fast_index: tuple = eqx.field(static=True, default=())  # positions of the float leaves in the state's leaves
    count_index: tuple = eqx.field(static=True, default=())  # positions of the integer (step counter) leaves
    count_dtypes: tuple = eqx.field(static=True, default=())
    decays: tuple = eqx.field(static=True, default=())  # a_l per fast leaf
    depth: int = eqx.field(static=True, default=1)  # sweeps of the inner solve (levels of the coupling graph)
    obstacle: Optional[str] = eqx.field(static=True, default=None)
    structure: Any = eqx.field(static=True, default=None)  # (unravel, flat size) of the user's parameter pytree

    # --- the optax state <-> modeq momenta ------------------------------------------------------------------------

    def _tree(self, theta):
        if self.structure is None:
            return theta
        return self.structure[0](theta)

    def _flat(self, tree):
        if self.structure is None:
            return tree
        return ravel_pytree(tree)[0]

    def _state(self, fast, count):
        leaves = [None] * (len(self.fast_index) + len(self.count_index))
        for i, leaf in zip(self.fast_index, fast):
            leaves[i] = leaf
        for i, dtype in zip(self.count_index, self.count_dtypes):
            leaves[i] = jnp.asarray(count, dtype=dtype)
        return jax.tree.unflatten(self.treedef, leaves)

    def _fast(self, state):
        leaves = jax.tree.leaves(state)
        return tuple(leaves[i] for i in self.fast_index)

    def _count(self, n):
        if n is None or not self.bias_correction:
            return STATIONARY_COUNT
        return n

    def _update(self, fast, g, theta, h, n):
        tx = self.make(h)
        updates, new_state = tx.update(self._tree(g), self._state(fast, self._count(n)), self._tree(theta))
        return self._flat(updates), self._fast(new_state)

    # --- the Optimizer interface ----------------------------------------------------------------------------------

    def step(self, theta, momenta, g, h, n=None):
        """One ``tx.update``: returns ``(theta + updates, new fast state)``; the step count is ``n`` (or
        $2^{30}$ with ``n = None`` or when the update does not read it)."""
        updates, fast = self._update(tuple(momenta), g, theta, h, n)
        return theta + updates, fast

    def direction(self, new, old, g, theta, h, n=None):
        raise TypeError(f"{self.name}: an optax optimizer has no momentum-variable direction; use step()")

    def update_momenta(self, momenta, g, theta):
        raise TypeError(f"{self.name}: an optax optimizer has no momentum-variable form; use step()")

    def slow_state(self, g, theta, h, change=None):
        r"""The fast state $s$ with $S(s, g, \theta) - s$ = ``change`` (``None``: 0, the stationary state at fixed
        $\theta$), solved exactly by ``depth`` sweeps of $s_\ell \leftarrow (S_\ell(s) - a_\ell s_\ell - r_\ell)/(1 -
        a_\ell)$ (see the module docstring)."""
        template = self._fast(self.make(h).init(self._tree(theta)))
        s = tuple(jnp.zeros_like(x) for x in template)
        r = change if change is not None else tuple(jnp.zeros_like(x) for x in template)
        for _ in range(self.depth):
            _, new = self._update(s, g, theta, h, None)
            s = tuple((ni - a * si - ri) / (1.0 - a) for ni, si, ri, a in zip(new, s, r, self.decays))
        return s

    def stationary_momenta(self, g, theta):
        return self.slow_state(g, theta, _PROBE_H)

    def initial_momenta(self, theta0, g0, mode="zero"):
        """``"zero"``: optax's own initial state (``tx.init``: zero moments); ``"first"``: the stationary state for the
        first gradient; or a tuple of arrays (the fast leaves, in the order of ``momenta``)."""
        if isinstance(mode, str):
            if mode == "zero":
                return self._fast(self.make(_PROBE_H).init(self._tree(theta0)))
            if mode == "first":
                return self.slow_state(g0, theta0, _PROBE_H)
            raise ValueError(f"m0 must be 'zero', 'first' or a tuple of arrays, got {mode!r}")
        given = tuple(jnp.asarray(m, dtype=jnp.float64) for m in mode)
        if len(given) != len(self.momenta):
            raise ValueError(f"m0 must have {len(self.momenta)} arrays for {self.name}, got {len(given)}")
        return given

    # --- capabilities ---------------------------------------------------------------------------------------------

    def slowest_decay(self) -> float:
        return max([abs(float(a)) for a in self.decays] or [0.0])

    def reduction_obstacle(self) -> Optional[str]:
        return self.obstacle

    def cli_params(self) -> dict:
        return {}

    def cli_spec(self, h=None) -> str:
        text = f"--optimizer {self.label}"
        return text + (f" --param h={format(float(h), 'g')}" if h is not None else "")


# =====================================================================================================================
# Probing the transformation
# =====================================================================================================================
def _is_transformation(obj) -> bool:
    return hasattr(obj, "init") and hasattr(obj, "update") and callable(obj.update)


def _path_names(tree) -> list:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


@dataclasses.dataclass
class _Probe:
    make: Callable
    tree: Callable
    flat: Callable
    treedef: Any
    fast_index: tuple
    count_index: tuple
    count_dtypes: tuple

    def state(self, fast, count):
        leaves = [None] * (len(self.fast_index) + len(self.count_index))
        for i, leaf in zip(self.fast_index, fast):
            leaves[i] = jnp.asarray(leaf)
        for i, dtype in zip(self.count_index, self.count_dtypes):
            leaves[i] = jnp.asarray(count, dtype=dtype)
        return jax.tree.unflatten(self.treedef, leaves)

    def run(self, fast, g, theta, count, h=_PROBE_H):
        updates, new = self.make(h).update(self.tree(g), self.state(fast, count), self.tree(theta))
        leaves = jax.tree.leaves(new)
        return np.asarray(self.flat(updates)), [np.asarray(leaves[i]) for i in self.fast_index], \
            [np.asarray(leaves[i]) for i in self.count_index]


def _close(a, b, rtol=1e-9) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.max(np.abs(a - b), initial=0.0) <= rtol * scale)


def _analyse(probe: _Probe, theta, g, names):
    """Decays, coupling depth, obstacle, reads-count and smoothness of the transformation, by probing ``tx.update``."""
    rng = np.random.default_rng(0)
    fast0 = [rng.uniform(0.5, 1.5, size=np.shape(leaf)) for leaf in probe.state_template]
    count = 5
    obstacle = None

    # integer leaves: step counters
    if probe.count_index:
        _, _, counts = probe.run(fast0, g, theta, count)
        for name, c in zip([names[i] for i in probe.count_index], counts):
            if not np.all(c == count + 1):
                obstacle = obstacle or f"the integer state leaf {name} is not a step counter (5 -> {c.ravel()[:1]})"

    # decays and coupling: perturb one fast leaf at a time
    base_u, base_s, _ = probe.run(fast0, g, theta, STATIONARY_COUNT)
    decays, edges = [], {}
    L = len(fast0)
    for i in range(L):
        z = rng.uniform(0.1, 0.2, size=np.shape(fast0[i]))
        bumped = [f.copy() if j != i else f + z for j, f in enumerate(fast0)]
        bumped2 = [f.copy() if j != i else f + 2 * z for j, f in enumerate(fast0)]
        _, s1, _ = probe.run(bumped, g, theta, STATIONARY_COUNT)
        _, s2, _ = probe.run(bumped2, g, theta, STATIONARY_COUNT)
        ratio = (s1[i] - base_s[i]) / z
        a = float(np.mean(ratio)) if np.size(ratio) else 0.0
        if not _close(ratio, np.full_like(ratio, a), 1e-8) and np.size(ratio):
            obstacle = obstacle or f"the decay of state leaf {names[probe.fast_index[i]]} is not one constant"
        if not _close(s2[i] - base_s[i], 2 * (s1[i] - base_s[i]), 1e-7):
            obstacle = obstacle or (f"the update of state leaf {names[probe.fast_index[i]]} is not affine in itself "
                                    "(e.g. Yogi, AMSGrad): no slow-manifold solver")
        if abs(a) >= 1.0 - 1e-12:
            obstacle = obstacle or (f"state leaf {names[probe.fast_index[i]]} does not contract at fixed theta "
                                    f"(decay {a:.6g}): no slow manifold (e.g. AdaGrad's sum of squares)")
        decays.append(a)
        edges[i] = [j for j in range(L) if j != i and not _close(s1[j], base_s[j], 1e-13)]
    # the decay must not depend on the gradient
    g2 = g * 1.7 + 0.3
    base2_u, base2_s, _ = probe.run(fast0, g2, theta, STATIONARY_COUNT)
    for i in range(L):
        z = np.full(np.shape(fast0[i]), 0.125)
        bumped = [f.copy() if j != i else f + z for j, f in enumerate(fast0)]
        _, s1, _ = probe.run(bumped, g2, theta, STATIONARY_COUNT)
        if np.size(z) and not _close((s1[i] - base2_s[i]) / z, np.full(np.shape(z), decays[i]), 1e-8):
            obstacle = obstacle or f"the decay of state leaf {names[probe.fast_index[i]]} depends on the gradient"

    # coupling graph: longest chain (acyclic) -> number of sweeps
    depth_of: dict = {}

    def depth(i, seen):
        if i in seen:
            return None
        if i in depth_of:
            return depth_of[i]
        best = 1
        for j in [k for k in range(L) if i in edges[k]]:  # leaves that feed leaf i
            dj = depth(j, seen | {i})
            if dj is None:
                return None
            best = max(best, dj + 1)
        depth_of[i] = best
        return best

    levels = [depth(i, frozenset()) for i in range(L)]
    if any(lv is None for lv in levels):
        obstacle = obstacle or "the state leaves feed each other in a cycle: no slow-manifold solver"
        sweeps = 1
    else:
        sweeps = max(levels or [1])

    # step-count dependence: a limit must exist
    u_late, _, _ = probe.run(fast0, g, theta, 2**20)
    u_early, _, _ = probe.run(fast0, g, theta, 3)
    if not _close(u_late, base_u, 1e-10):
        obstacle = obstacle or ("the update depends on the step count without a limit as n -> infinity (a schedule "
                                "that does not settle): no autonomous modified equation")
    reads_count = not _close(u_early, base_u, 1e-13)

    # smoothness: piecewise constant in g (a sign) -> no expansion beyond order 1
    # (at the initial state, where the gradient dominates the update: a sign flips with g)
    rest = probe.state_template
    tangent = rng.standard_normal(np.shape(g))
    du = np.asarray(jax.jvp(lambda gg: probe.flat(probe.make(_PROBE_H).update(
        probe.tree(gg), probe.state(rest, STATIONARY_COUNT), probe.tree(theta))[0]), (jnp.asarray(g),),
        (jnp.asarray(tangent),))[1])
    u_plus, _, _ = probe.run(rest, g, theta, STATIONARY_COUNT)
    u_minus, _, _ = probe.run(rest, -g, theta, STATIONARY_COUNT)
    piecewise_constant = np.max(np.abs(du)) == 0.0 and not _close(u_minus, u_plus, 1e-13)
    if not obstacle and np.max(np.abs(base_u)) == 0.0:
        obstacle = ("the update vanishes as n -> infinity (a schedule decaying to 0): the modified equation of the "
                    "limit is theta' = 0")
    return decays, sweeps, obstacle, reads_count, piecewise_constant


def from_optax(make: Callable, *, params: Any = None, name: Optional[str] = None, label: Optional[str] = None,
               smooth: Optional[bool] = None) -> OptaxOptimizer:
    r"""Any optax optimizer as a modeq optimizer (docs/builders/from_optax.md).

    Args:
        make: ``h -> optax.GradientTransformation`` whose step size is ``h``: an optax alias itself
            (``optax.adam``, ``optax.rmsprop``: their first argument is the learning rate) or a function such as
            ``lambda h: optax.chain(optax.scale_by_rms(), optax.scale_by_trust_ratio(), optax.scale(-h))``. It is
            called inside traced code (``h`` may be a tracer: the Taylor coefficients in $h$ go through it).
        params: an example parameter pytree, for transformations that act per leaf (trust ratios, per-layer norms):
            ``theta`` is unflattened into it before ``tx.update``. ``None``: the transformation sees the flat
            parameter vector.
        name: a short name (default: the factory's name).
        label: the CLI spelling (``optax:EXPR`` or ``file.py:factory``), used by :meth:`cli_spec`.
        smooth: override the smoothness detection (``False`` refuses orders >= 2).

    Returns an :class:`OptaxOptimizer`: ``simulate``, ``modified_field``/``memoryless_map`` of any order, the slow
    manifold start and ``compare`` accept it. Its fast variables, their decays and how they feed each other are found
    by probing ``tx.update`` (module docstring); what prevents a reduction is reported by ``reduction_obstacle()``
    (and raised by the builders), never guessed.
    """
    if _is_transformation(make):
        raise TypeError(
            "make: expected a function h -> GradientTransformation (e.g. optax.adam, or lambda h: optax.sgd(h, "
            "momentum=0.9)), got a GradientTransformation whose step size is fixed")
    if not callable(make):
        raise TypeError(f"make: expected a function h -> GradientTransformation, got {type(make).__name__}")
    try:
        tx = make(_PROBE_H)
    except Exception as exc:
        raise ValueError(f"make: calling make(h={_PROBE_H}) failed: {type(exc).__name__}: {exc}") from None
    if not _is_transformation(tx):
        raise TypeError(f"make: make(h) must return an optax GradientTransformation, got {type(tx).__name__}")

    if params is not None:
        flat_params, unravel = ravel_pytree(params)
        d = int(flat_params.size)
        structure = (unravel, d)

        def tree(x):
            return unravel(jnp.asarray(x, jnp.float64))

        def flat(t):
            return ravel_pytree(t)[0]
    else:
        d, structure = 3, None

        def tree(x):
            return jnp.asarray(x, jnp.float64)

        def flat(t):
            return t

    rng = np.random.default_rng(1)
    theta = rng.standard_normal(d) + 0.5
    g = rng.standard_normal(d) + 0.25
    try:
        state = tx.init(tree(theta))
    except Exception as exc:
        raise ValueError(f"make: tx.init failed on a parameter vector: {type(exc).__name__}: {exc}") from None
    leaves, treedef = jax.tree.flatten(state)
    names = _path_names(state)
    fast_index, count_index, count_dtypes = [], [], []
    for i, leaf in enumerate(leaves):
        dtype = jnp.asarray(leaf).dtype
        if jnp.issubdtype(dtype, jnp.integer):
            count_index.append(i)
            count_dtypes.append(dtype)
        elif jnp.issubdtype(dtype, jnp.floating):
            fast_index.append(i)
        else:
            raise TypeError(f"make: state leaf {names[i]} has dtype {dtype}: only float and integer leaves are supported")
    probe = _Probe(make, tree, flat, treedef, tuple(fast_index), tuple(count_index), tuple(count_dtypes))
    probe.state_template = [np.asarray(leaves[i], np.float64) for i in fast_index]
    try:
        same = all(_close(probe.run(probe.state_template, g, theta, count, h=_PROBE_H)[0],
                          probe.run(probe.state_template, g, theta, count, h=2 * _PROBE_H)[0], 1e-13)
                   for count in (1, STATIONARY_COUNT))
    except Exception as exc:
        raise ValueError(f"make: tx.update failed on a probe: {type(exc).__name__}: {exc}") from None
    if same:
        raise ValueError("make: make(h) ignores h (the updates at h = 1e-3 and 2e-3 are equal): it must build the "
                         "transformation with step size h")
    decays, sweeps, obstacle, reads_count, piecewise_constant = _analyse(probe, theta, g, names)
    from ._spec import MomentumVariable

    momenta = tuple(MomentumVariable(names[i] or f"s{k}", None, float(a)) for k, (i, a) in
                    enumerate(zip(fast_index, decays)))
    is_smooth = (not piecewise_constant) if smooth is None else bool(smooth)
    reason = "" if is_smooth else ("the update is piecewise constant in the gradient (a sign): no smooth expansion "
                                   "beyond order 1" if smooth is None else "declared non-smooth (smooth=False)")
    if name is None:
        base = getattr(make, "__name__", getattr(getattr(make, "func", None), "__name__", "optax"))
        base = "optax" if base in ("<lambda>", "optax") else f"optax:{base}"
    else:
        base = str(name)
    return OptaxOptimizer(
        name=base, hyper={}, momenta=momenta, direction_fn=None, bias_correction=reads_count,
        smooth=is_smooth, smooth_reason=reason, make=make, label=label or base, treedef=treedef,
        fast_index=tuple(fast_index), count_index=tuple(count_index), count_dtypes=tuple(count_dtypes),
        decays=tuple(float(a) for a in decays), depth=int(sweeps), obstacle=obstacle, structure=structure,
    )
