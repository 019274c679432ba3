r"""Any optax ``GradientTransformation`` as a modeq optimizer: :func:`from_optax`.

An optax optimizer is a map $(g_n, s_n, \theta_n) \mapsto (u_n, s_{n+1})$ with $\theta_{n+1} = \theta_n + u_n$
(``updates, state = tx.update(g, state, params)``). modeq needs no momentum-variable form for it
(docs/builders/from_optax.md):

* **The state** is carried whole (``momenta`` = all its leaves), so ``simulate`` runs optax's own iteration. Its
  leaves are classified by probing: **fast variables** (floating-point leaves that relax, below), **constants**
  (hyperparameters stored in the state, e.g. by ``inject_hyperparams``: unchanged by an update; rebuilt from
  ``make(h).init`` at every step, so they follow $h$), **step counters** (integer leaves that advance by one; set to
  $n = 2^{30}$, "$n \to \infty$", the stationary regime where bias corrections equal 1, in the modified equations) and
  **flags** (integer or boolean leaves an update leaves unchanged).
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

    ``momenta`` are all the leaves of the optax state (booleans carried as int32), so :func:`~modeq.optimizers.simulate`
    runs optax's own iteration, step counts included. :meth:`step` runs ``tx.update``; with ``n = None`` (the
    stationary regime of the modified equations) the step counters are held at $2^{30}$. :meth:`slow_state` solves
    the state equation on the slow manifold. The closed-form builders that need the momentum-variable form
    (``memory_correction``, the catalog's modified losses, the SME) refuse it by name.
    """

    cli_name = "optax"
    has_momentum_form = False

    make: Callable = eqx.field(static=True, default=None)
    label: str = eqx.field(static=True, default="optax")
    treedef: Any = eqx.field(static=True, default=None)
    kinds: tuple = eqx.field(static=True, default=())  # per leaf: "fast", "const", "count" or "flag"
    dtypes: tuple = eqx.field(static=True, default=())  # optax's dtype of each leaf
    decays: tuple = eqx.field(static=True, default=())  # a_l per fast leaf (in leaf order)
    depth: int = eqx.field(static=True, default=1)  # sweeps of the inner solve (levels of the coupling graph)
    obstacle: Optional[str] = eqx.field(static=True, default=None)
    structure: Any = eqx.field(static=True, default=None)  # (unravel, flat size) of the user's parameter pytree
    flags: tuple = eqx.field(static=True, default=())  # (leaf index, value) of flags every update sets to one value
    h_consts: tuple = eqx.field(static=True, default=())  # constant leaves whose value depends on h (rebuilt per step)
    sme_factor: Optional[float] = eqx.field(static=True, default=None)  # c of an SGD-type transformation, else None

    # --- the optax state <-> modeq momenta ------------------------------------------------------------------------

    def _tree(self, theta):
        if self.structure is None:
            return theta
        if jnp.shape(theta) != (self.structure[1],):  # shapes are static: checked while tracing too
            raise ValueError(f"params: from_optax was given an example pytree of {self.structure[1]} entries, but the "
                             f"parameters have shape {jnp.shape(theta)}: pass params= with the structure of theta0")
        return self.structure[0](theta)

    def _flat(self, tree):
        return tree if self.structure is None else ravel_pytree(tree)[0]

    def _carry(self, leaves):
        return tuple(jnp.asarray(x, jnp.int32) if jnp.asarray(x).dtype == jnp.bool_ else jnp.asarray(x)
                     for x in leaves)

    def _state(self, momenta, h, theta, stationary: bool):
        leaves = [jnp.asarray(m).astype(dt) for m, dt in zip(momenta, self.dtypes)]
        if self.h_consts:  # hyperparameters stored in the state that depend on h: the ones of make(h)
            init = jax.tree.leaves(self.make(h).init(self._tree(theta)))
            for i in self.h_consts:
                leaves[i] = init[i]
        if stationary:
            leaves = [jnp.asarray(STATIONARY_COUNT, dt) if k == "count" else x
                      for k, x, dt in zip(self.kinds, leaves, self.dtypes)]
            for i, value in self.flags:  # the value every update gives them (e.g. "first step": False)
                leaves[i] = jnp.full(jnp.shape(leaves[i]), value, self.dtypes[i])
        return jax.tree.unflatten(self.treedef, leaves)

    def _update(self, momenta, g, theta, h, stationary: bool):
        tx = self.make(h)
        updates, new = tx.update(self._tree(g), self._state(momenta, h, theta, stationary), self._tree(theta))
        new = list(self._carry(jax.tree.leaves(new)))
        if stationary:
            new = [jnp.asarray(STATIONARY_COUNT, x.dtype) if k == "count" else x for k, x in zip(self.kinds, new)]
        return self._flat(updates), tuple(new)

    # --- the Optimizer interface ----------------------------------------------------------------------------------

    def step(self, theta, momenta, g, h, n=None):
        """One ``tx.update`` on the carried state: ``(theta + updates, new state)``. ``n = None``: the stationary regime
        (step counters held at $2^{30}$); otherwise the counters are the carried ones (optax's own)."""
        updates, new = self._update(tuple(momenta), g, theta, h, n is None)
        return theta + updates, new

    def direction(self, new, old, g, theta, h, n=None):
        raise TypeError(f"{self.name}: an optax optimizer has no momentum-variable direction; use step()")

    def update_momenta(self, momenta, g, theta):
        raise TypeError(f"{self.name}: an optax optimizer has no momentum-variable form; use step()")

    def slow_state(self, g, theta, h, change=None):
        r"""The state whose fast leaves change by ``change`` in one step at fixed $\theta$ (``None``: 0, the stationary
        state), solved exactly by ``depth`` sweeps of $s_\ell \leftarrow (S_\ell(s) - a_\ell s_\ell - r_\ell)/(1 -
        a_\ell)$; constants and flags as ``make(h).init`` gives them, step counters at $2^{30}$."""
        init = self._carry(jax.tree.leaves(self.make(h).init(self._tree(theta))))
        s = [jnp.zeros_like(x, dtype=jnp.float64) if k == "fast" else x for k, x in zip(self.kinds, init)]
        decay = dict(zip([i for i, k in enumerate(self.kinds) if k == "fast"], self.decays))
        for _ in range(self.depth):
            _, new = self._update(tuple(s), g, theta, h, True)
            s = [((new[i] - decay[i] * s[i] - (change[i] if change is not None else 0.0)) / (1.0 - decay[i]))
                 if i in decay else new[i] for i in range(len(s))]
        return tuple(s)

    def stationary_momenta(self, g, theta):
        return self.slow_state(g, theta, _PROBE_H)

    def initial_momenta(self, theta0, g0, mode="zero"):
        """``"zero"``: optax's own initial state (``tx.init``: zero moments, count 0); ``"first"``: the stationary fast
        state for the first gradient (counters from ``tx.init``); or a tuple with one array per state leaf."""
        init = self._carry(jax.tree.leaves(self.make(_PROBE_H).init(self._tree(theta0))))
        if isinstance(mode, str):
            if mode == "zero":
                return init
            if mode == "first":
                warm = self.slow_state(g0, theta0, _PROBE_H)
                return tuple(w if k == "fast" else x for k, w, x in zip(self.kinds, warm, init))
            raise ValueError(f"m0 must be 'zero', 'first' or a tuple of arrays, got {mode!r}")
        if len(mode) != len(self.kinds):
            raise ValueError(f"m0 must have {len(self.kinds)} arrays (one per optax state leaf) for {self.name}, "
                             f"got {len(mode)}")
        return tuple(jnp.asarray(m, dtype=x.dtype) for m, x in zip(mode, init))

    # --- capabilities ---------------------------------------------------------------------------------------------

    def slowest_decay(self) -> float:
        return max([abs(float(a)) for a in self.decays] or [0.0])

    def reduction_obstacle(self) -> Optional[str]:
        return self.obstacle

    def sme_lr_factor(self) -> Optional[float]:
        r"""$c$ for SGD-type transformations (GD, or one buffer $m \leftarrow am + bg$ with update $-h\kappa m$:
        SGDM with any dampening, heavy-ball), detected by probing; their SME is SGD's with learning rate $ch$
        (Wang et al., arXiv 2307.15196, Thm. 4.5). ``None`` for every other transformation."""
        return self.sme_factor

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


def _close(a, b, rtol=1e-9) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.max(np.abs(a - b), initial=0.0) <= rtol * scale)


@dataclasses.dataclass
class _Probe:
    make: Callable
    tree: Callable
    flat: Callable
    treedef: Any
    dtypes: tuple

    def init(self, theta, h=_PROBE_H):
        return [np.asarray(x) for x in jax.tree.leaves(self.make(h).init(self.tree(theta)))]

    def run(self, leaves, g, theta, h=_PROBE_H):
        state = jax.tree.unflatten(self.treedef, [jnp.asarray(x).astype(dt) for x, dt in zip(leaves, self.dtypes)])
        updates, new = self.make(h).update(self.tree(g), state, self.tree(theta))
        return np.asarray(self.flat(updates), np.float64), [np.asarray(x) for x in jax.tree.leaves(new)]


def _analyse(probe: _Probe, theta, g, names, theta2, g2):
    """Leaf kinds, decays, coupling depth, obstacle and smoothness of the transformation, by probing ``tx.update``."""
    rng = np.random.default_rng(0)
    init = probe.init(theta)
    floats = [i for i, x in enumerate(init) if np.issubdtype(x.dtype, np.floating)]
    tol = {i: max(1e-8, 1e3 * float(np.finfo(init[i].dtype).eps)) for i in floats}
    obstacle = None

    def note(text):
        nonlocal obstacle
        obstacle = obstacle or text

    def x_shape(i):
        return np.shape(init[i])

    def point(count):  # a random state: float leaves in (0.5, 1.5), integer leaves at `count`
        leaves = [x.copy() for x in init]
        for i in floats:
            leaves[i] = rng.uniform(0.5, 1.5, size=x_shape(i)).astype(init[i].dtype)
        for i, x in enumerate(init):
            if i not in floats and np.issubdtype(x.dtype, np.integer):
                leaves[i] = np.full(x.shape, count, x.dtype)
        return leaves

    # kinds: discrete leaves (counters, flags), constants, fast leaves
    kinds, flag_values, h_consts = [], {}, []
    base = point(5)
    _, out = probe.run(base, g, theta)
    other = point(5)  # a second probe: another theta, gradient and state
    _, out2 = probe.run(other, g2, theta2)
    _, out_init = probe.run(init, g, theta)
    for i, x in enumerate(init):
        if i in floats:
            kinds.append("float")
        elif np.issubdtype(x.dtype, np.integer) and np.all(out[i] == 6) and np.all(out_init[i] == x + 1):
            kinds.append("count")
        elif np.array_equal(out[i], base[i]) and np.array_equal(out_init[i], x):
            kinds.append("flag")  # kept as it is (e.g. a count of non-finite updates that stays 0)
        elif np.array_equal(out[i], out_init[i]) and np.all(np.ravel(out[i]) == np.ravel(out[i])[:1]):
            kinds.append("flag")  # set to one value by every update (e.g. "is the first step": False after it)
            flag_values[i] = np.ravel(out[i])[0].item() if np.size(out[i]) else None
        else:
            kinds.append("flag")
            note(f"the discrete state leaf {names[i]} is neither a step counter nor constant (5 -> "
                 f"{np.ravel(out[i])[:1]}): the modified equations would need its dynamics")
    # constants: float leaves an update copies unchanged (hyperparameters stored in the state); they are then held at
    # their initial values for the probes of the others
    for i in floats:
        if np.array_equal(out[i], base[i]) and np.array_equal(out2[i], other[i]):
            kinds[i] = "const"
            base[i], other[i] = init[i].copy(), init[i].copy()
            if not _close(probe.init(theta)[i], probe.init(theta2)[i], 1e-13):
                note(f"the constant state leaf {names[i]} depends on the initial parameters: not supported")
            if not _close(probe.init(theta)[i], probe.init(theta, 2 * _PROBE_H)[i], 1e-15):
                h_consts.append(i)  # e.g. inject_hyperparams' learning rate: rebuilt from make(h) at every step

    def decay_at(leaves, th, gg, i):
        z = rng.uniform(0.1, 0.2, size=x_shape(i)).astype(init[i].dtype)
        _, s0 = probe.run(leaves, gg, th)
        bumped = [x.copy() for x in leaves]
        bumped[i] = leaves[i] + z
        _, s1 = probe.run(bumped, gg, th)
        bumped[i] = leaves[i] + 2 * z
        _, s2 = probe.run(bumped, gg, th)
        ratio = (s1[i].astype(np.float64) - s0[i]) / z
        a = float(np.mean(ratio)) if np.size(ratio) else 0.0
        uniform = _close(ratio, np.full_like(ratio, a), tol[i]) if np.size(ratio) else True
        affine = _close(s2[i].astype(np.float64) - s0[i], 2 * (s1[i].astype(np.float64) - s0[i]), 10 * tol[i])
        feeds = [j for j in floats if j != i and not _close(s1[j], s0[j], 1e-13)]
        return a, uniform, affine, feeds, s0

    decays, edges = {}, {}
    for i in floats:
        if kinds[i] == "const":
            continue
        a, uniform, affine, feeds, s0 = decay_at(base, theta, g, i)
        a2, uniform2, _, feeds2, s0b = decay_at(other, theta2, g2, i)
        edges[i] = sorted(set(feeds) | set(feeds2))
        kinds[i] = "fast"
        decays[i] = a
        if not affine:
            note(f"the update of state leaf {names[i]} is not affine in itself (e.g. Yogi, AMSGrad): no slow-manifold "
                 "solver")
        elif not (uniform and uniform2):
            note(f"the decay of state leaf {names[i]} is not one number for all its entries: not supported")
        elif not abs(a - a2) <= tol[i] * max(1.0, abs(a)):
            note(f"the decay of state leaf {names[i]} changes with theta, the gradient or the other leaves ({a:.6g} vs "
                 f"{a2:.6g}): not supported")
        if abs(a) >= 1.0 - 1e-12:
            note(f"state leaf {names[i]} does not contract at fixed theta (decay {a:.6g}): no slow manifold (e.g. "
                 "AdaGrad's sum of squares)")
    fast = [i for i in floats if kinds[i] == "fast"]
    for i in fast:  # constants feed nothing that matters to the solve
        edges[i] = [j for j in edges[i] if j in fast]

    # coupling graph among fast leaves: longest chain (acyclic) -> number of sweeps
    depth_of: dict = {}

    def depth(i, seen):
        if i in seen:
            return None
        if i in depth_of:
            return depth_of[i]
        best = 1
        for j in [k for k in fast if i in edges[k]]:  # leaves that feed leaf i
            dj = depth(j, seen | {i})
            if dj is None:
                return None
            best = max(best, dj + 1)
        depth_of[i] = best
        return best

    levels = [depth(i, frozenset()) for i in fast]
    if any(lv is None for lv in levels):
        note("the state leaves feed each other in a cycle: no slow-manifold solver")
        sweeps = 1
    else:
        sweeps = max(levels or [1])

    # step-count dependence: a limit must exist (counts that share no period: a periodic schedule differs)
    def at_count(count):
        leaves = [np.full(x.shape, count, x.dtype) if kinds[i] == "count" else x for i, x in enumerate(base)]
        return probe.run(leaves, g, theta)[0]

    u_inf = at_count(STATIONARY_COUNT)
    if "count" in kinds:
        for count in (STATIONARY_COUNT - 1, STATIONARY_COUNT - 997, 10**6 + 1):
            if not _close(at_count(count), u_inf, 1e-10):
                note("the update depends on the step count without a limit as n -> infinity (a schedule that does not "
                     "settle, or a periodic one): no autonomous modified equation")
                break
    if np.max(np.abs(u_inf)) == 0.0:
        note("the update vanishes as n -> infinity (a schedule decaying to 0): the modified equation of the limit is "
             "theta' = 0")

    # smoothness: piecewise constant in g (a sign) -> no expansion beyond order 1 (at the initial state, where the
    # gradient dominates the update: a sign flips with g)
    tangent = rng.standard_normal(np.shape(g))
    state0 = jax.tree.unflatten(probe.treedef, [jnp.asarray(x).astype(dt) for x, dt in zip(init, probe.dtypes)])
    du = np.asarray(jax.jvp(lambda gg: probe.flat(probe.make(_PROBE_H).update(probe.tree(gg), state0,
                                                                              probe.tree(theta))[0]),
                            (jnp.asarray(g),), (jnp.asarray(tangent),))[1])
    u_plus, _ = probe.run(init, g, theta)
    u_minus, _ = probe.run(init, -g, theta)
    piecewise_constant = np.max(np.abs(du)) == 0.0 and not _close(u_minus, u_plus, 1e-13)
    flags = tuple(sorted(flag_values.items()))
    sme = None if obstacle else _sgd_type_factor(probe, kinds, fast, decays, base, other, (theta, g), (theta2, g2))
    return (tuple(kinds), tuple(decays[i] for i in fast), sweeps, obstacle, piecewise_constant, flags,
            tuple(h_consts), sme)


def _sgd_type_factor(probe, kinds, fast, decays, base, other, point1, point2):
    r"""$c$ when the transformation is SGD-type: GD ($u = -h\kappa g$) or one momentum buffer
    $m \leftarrow a m + b g$ with $u = -h\kappa m_{new}$ (SGDM with any dampening, heavy-ball): its SME is the SGD SDE
    with learning rate $c h$, $c = \kappa b/(1-a)$ (Wang et al., arXiv 2307.15196, Thm. 4.5). ``None`` otherwise."""
    if len(fast) > 1 or any(k in ("const",) for k in kinds):
        return None
    kappas, bs = [], []
    for leaves, (th, gg) in ((base, point1), (other, point2)):
        u, new = probe.run(leaves, gg, th)
        if not fast:
            ref = gg
        else:
            i = fast[0]
            if np.shape(new[i]) != np.shape(gg):
                return None
            src = (new[i].astype(np.float64) - decays[i] * leaves[i]) / gg
            b = float(np.mean(src))
            if not _close(src, np.full_like(src, b), 1e-9):
                return None
            bs.append(b)
            ref = new[i].astype(np.float64)
        kappa = -float(u @ ref) / (_PROBE_H * float(ref @ ref))
        if not _close(u, -_PROBE_H * kappa * ref, 1e-9):
            return None
        kappas.append(kappa)
    if not _close(kappas[0], kappas[1], 1e-9) or (bs and not _close(bs[0], bs[1], 1e-9)):
        return None
    if not fast:
        return kappas[0]
    return kappas[0] * bs[0] / (1.0 - decays[fast[0]])


def _default_name(make) -> str:
    name = getattr(make, "__name__", None)
    if name is None and hasattr(make, "func"):  # functools.partial, e.g. optax.nadam = partial(adam, nesterov=True)
        args = ", ".join(f"{k}={v!r}" for k, v in getattr(make, "keywords", {}).items())
        name = f"{getattr(make.func, '__name__', 'optax')}({args})"
    return "optax" if name in (None, "<lambda>", "optax") else f"optax:{name}"


def from_optax(make: Callable, *, params: Any = None, name: Optional[str] = None, label: Optional[str] = None,
               smooth: Optional[bool] = None) -> OptaxOptimizer:
    r"""Any optax optimizer as a modeq optimizer (docs/builders/from_optax.md).

    Args:
        make: ``h -> optax.GradientTransformation`` whose step size is ``h``: an optax alias itself
            (``optax.adam``, ``optax.rmsprop``: their first argument is the learning rate) or a function such as
            ``lambda h: optax.chain(optax.scale_by_rms(), optax.scale_by_trust_ratio(), optax.scale(-h))``. It is
            called inside traced code (``h`` may be a tracer: the Taylor coefficients in $h$ go through it).
        params: an example parameter pytree, for transformations that act per leaf (trust ratios, per-layer norms,
            masks): ``theta`` is unflattened into it before ``tx.update``. ``None``: the transformation sees the
            flat parameter vector.
        name: a short name (default: the factory's name).
        label: the CLI spelling (``optax:EXPR`` or ``file.py:factory``), used by :meth:`cli_spec`.
        smooth: override the smoothness detection (``False`` refuses orders >= 2).

    Returns an :class:`OptaxOptimizer`: ``simulate``, ``modified_field``/``memoryless_map`` of any order, the slow
    manifold start and ``compare`` accept it. Its state leaves, their decays and how they feed each other are found
    by probing ``tx.update`` at two random points (module docstring); what prevents a reduction is reported by
    ``reduction_obstacle()`` (and raised by the builders), never guessed.
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
    theta, theta2 = rng.standard_normal(d) + 0.5, rng.standard_normal(d) - 0.3
    g, g2 = rng.standard_normal(d) + 0.25, rng.standard_normal(d) * 1.7 + 0.3
    try:
        state = tx.init(tree(theta))
    except Exception as exc:
        raise ValueError(f"make: tx.init failed on a parameter vector of size {d}: {type(exc).__name__}: {exc}"
                         + ("" if params is not None else " (a transformation that needs the parameter pytree: pass "
                            "params=)")) from None
    leaves, treedef = jax.tree.flatten(state)
    names = _path_names(state)
    dtypes = []
    for i, leaf in enumerate(leaves):
        dtype = jnp.asarray(leaf).dtype
        if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating) or dtype == jnp.bool_):
            raise TypeError(f"make: state leaf {names[i]} has dtype {dtype}: only float, integer and boolean leaves "
                            "are supported")
        dtypes.append(dtype)
    probe = _Probe(make, tree, flat, treedef, tuple(dtypes))
    def first_updates(h):  # four updates from tx.init at fixed (g, theta): warm-ups and accumulations start at 0
        leaves, total = probe.init(theta, h), 0.0
        for _ in range(4):
            u, leaves = probe.run(leaves, g, theta, h)
            total = total + u
        return total

    try:
        same = _close(first_updates(_PROBE_H), first_updates(2 * _PROBE_H), 1e-13)
    except Exception as exc:
        raise ValueError(f"make: tx.update failed on a probe: {type(exc).__name__}: {exc}") from None
    if same:
        raise ValueError("make: make(h) ignores h (the first four updates at h = 1e-3 and 2e-3 are equal): it must build "
                         "the transformation with step size h")
    try:  # modeq calls make with a traced h (inside jit, and for the Taylor coefficients in h)
        jax.jit(lambda hh: probe.flat(make(hh).update(tree(jnp.asarray(g)), make(hh).init(tree(jnp.asarray(theta))),
                                                      tree(jnp.asarray(theta)))[0]))(jnp.asarray(_PROBE_H))
    except Exception as exc:
        raise ValueError(f"make: make(h) must accept h as a JAX array (modeq traces it); it failed with "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (build schedules with "
                         "jnp operations, not Python if/float())") from None
    try:
        kinds, decays, sweeps, obstacle, piecewise_constant, flags, h_consts, sme = _analyse(probe, theta, g, names, theta2, g2)
    except Exception as exc:
        raise ValueError(f"make: probing tx.update failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    from ._spec import MomentumVariable

    momenta = tuple(MomentumVariable(names[i] or f"s{i}", None, 0.0) for i in range(len(kinds)))
    is_smooth = (not piecewise_constant) if smooth is None else bool(smooth)
    reason = "" if is_smooth else ("the update is piecewise constant in the gradient (a sign): no smooth expansion "
                                   "beyond order 1" if smooth is None else "declared non-smooth (smooth=False)")
    base = _default_name(make) if name is None else str(name)
    return OptaxOptimizer(
        # bias_correction: "reads a step count" (informational here: the counters are carried in the state, and held
        # at 2^30 only in the stationary steps n = None of the modified equations)
        name=base, hyper={}, momenta=momenta, direction_fn=None, bias_correction="count" in kinds,
        smooth=is_smooth, smooth_reason=reason, make=make, label=label or base, treedef=treedef, kinds=kinds,
        dtypes=tuple(dtypes), decays=tuple(float(a) for a in decays), depth=int(sweeps), obstacle=obstacle,
        structure=structure, flags=flags, h_consts=h_consts, sme_factor=sme,
    )
