r"""One ``lax.scan`` simulator for every optimizer specification.

The scan carries $(\theta_n, m_n)$; at step $n$ it draws $g_n$ from the oracle, updates the momentum variables and
takes the step of :meth:`Optimizer.step`. Divergence is detected inside the scan: the first step whose new state is not
finite is recorded in ``Trajectory.diverged_at`` and the state is frozen at the last finite value, so no NaN ever
leaves the simulator silently.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._validation import check_int_at_least, check_positive
from ..problems._oracles import FullBatch, Oracle
from ._spec import Optimizer


class DivergenceWarning(RuntimeWarning):
    """The iterates became non-finite; the trajectory is frozen from that step on."""


from .._errors import DivergenceError  # noqa: E402,F401  (raised by Trajectory.raise_if_diverged)


class Trajectory(eqx.Module):
    """The whole run: ``theta[n]``, the momentum variables ``momenta[l][n]`` and ``loss[n]``, ``grad_norm[n]`` (of the
    full loss; NaN-free), for ``n = 0..steps``; ``diverged_at`` is the first step whose update was not finite (-1 if
    none). Arrays are flat; ``unravel`` maps a flat vector back to the user's pytree."""

    theta: jax.Array
    momenta: tuple
    loss: jax.Array
    grad_norm: jax.Array
    diverged_at: jax.Array
    unravel: Callable = eqx.field(static=True, default=None)
    save_every: int = eqx.field(static=True, default=1)

    @property
    def steps(self):
        """Step index $n$ of each saved entry (``0, k, 2k, ..., N`` with ``k = save_every``)."""
        return self.save_every * jnp.arange(self.theta.shape[-2] if self.theta.ndim >= 2 else 1)

    @property
    def diverged(self) -> bool:
        """Whether an update became non-finite (then ``diverged_at`` is its step and the state is frozen there)."""
        return bool(self.diverged_at >= 0)

    def raise_if_diverged(self) -> "Trajectory":
        """Raise :class:`DivergenceError` naming the step if the run diverged; return the trajectory otherwise."""
        if self.diverged:
            raise DivergenceError(f"the iterates diverged at step {int(self.diverged_at)} (non-finite update)")
        return self

    def theta_tree(self, n: int = -1):
        """The saved state ``theta[n]`` in the pytree structure of the ``theta0`` given to ``simulate``."""
        return self.unravel(self.theta[n]) if self.unravel is not None else self.theta[n]


def _index(start):
    """The first step index as an int64 array (a NumPy one for a Python int: no eager JAX op)."""
    return np.asarray(start, dtype=np.int64) if isinstance(start, int) else jnp.asarray(start)


def _finite(*arrays) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(arrays)]))


def _is_array(x) -> bool:
    """What ``equinox.filter_jit`` traces (``equinox.is_array``): JAX arrays (tracers included) and NumPy arrays."""
    return isinstance(x, (np.ndarray, np.generic, jax.Array))


class _ArraySlot:
    """The placeholder of an array leaf in the static part of ``_compiled``'s arguments."""

    def __repr__(self):
        return "<array>"


_ARRAY = _ArraySlot()


@functools.partial(jax.jit, static_argnums=0)
def _compiled(static, dynamic):
    """``_run`` compiled: ``static`` = (treedef of ``_run``'s first eight arguments, their leaves with ``_ARRAY`` where
    an array goes, steps, record, save_every); ``dynamic`` = the array leaves in order."""
    treedef, static_leaves, steps, record, save_every = static
    arrays = iter(dynamic)
    leaves = [next(arrays) if leaf is _ARRAY else leaf for leaf in static_leaves]
    return _run(*jax.tree.unflatten(treedef, leaves), steps, record, save_every)


def _dispatch(optimizer, loss, oracle, theta0, m0, key, h, start, steps, record, save_every):
    """``_run`` through ``_compiled``: the partition of ``equinox.filter_jit`` (arrays traced, every other leaf static,
    so a new step size or hyperparameter array reuses the program) at the cost of one ``tree.flatten`` per call, where
    ``filter_jit`` rebuilds its partition at every call. ``m0`` / ``key`` = ``None``: zero momenta / the key
    ``jax.random.key(0)`` built inside the program (no eager JAX op per call). With both, a call of ``simulate`` costs
    about 0.08 ms beyond its compiled loop for d = 100 (0.4-0.7 ms before: issue 16, benchmarks/bench_catalog.py)."""
    leaves, treedef = jax.tree.flatten((optimizer, loss, oracle, theta0, m0, key, h, start))
    dynamic = [leaf for leaf in leaves if _is_array(leaf)]
    static_leaves = tuple(_ARRAY if _is_array(leaf) else leaf for leaf in leaves)
    return _compiled((treedef, static_leaves, steps, record, save_every), dynamic)


def _run(optimizer: Optimizer, loss, oracle, theta0, m0, key, h, start, steps: int, record: bool,
         save_every: int = 1):
    if key is None:
        key = jax.random.key(0)
    if m0 is None:  # at rest: the same arrays as initial_momenta(theta0, 0, "zero") outside the program
        m0 = optimizer.initial_momenta(theta0, jnp.zeros_like(theta0), "zero")
    full_batch = isinstance(oracle, FullBatch)
    h_of = h if callable(h) else (lambda n: h)

    def observe(theta):
        if not record:
            return jnp.zeros(()), jnp.zeros((theta.shape[0],))
        return jax.value_and_grad(loss)(theta)

    def advance(carry, n, g):
        theta, momenta, diverged_at = carry
        theta_new, momenta_new = optimizer.step(theta, momenta, g, h_of(n), n)
        ok = _finite(theta_new, momenta_new) & (diverged_at < 0)
        theta_next = jnp.where(ok, theta_new, theta)
        momenta_next = tuple(jnp.where(ok, a, b) for a, b in zip(momenta_new, momenta))
        diverged_next = jnp.where((diverged_at < 0) & ~ok, n, diverged_at)
        return theta_next, momenta_next, diverged_next

    def body(carry, n):  # one step, recording the state it starts from
        theta, momenta, _ = carry
        value, grad = observe(theta)
        g = grad if (full_batch and record) else oracle(theta, key, n)
        return advance(carry, n, g), (theta, momenta, value, jnp.linalg.norm(grad))

    def checked_steps(carry, n0):  # save_every steps, each checked (the state frozen at the first non-finite one)
        return jax.lax.scan(lambda c, n: (advance(c, n, oracle(c[0], key, n)), None), carry,
                            n0 + jnp.arange(save_every))[0]

    def fast_steps(carry, n0):
        # The same steps without the per-step check (a reduction and a select per step: up to 1.5x the cost of the
        # update for small d, issue 16), checked once at the end of the block: for an optimizer with the base
        # ``step`` and ``update_momenta`` a non-finite state stays non-finite (theta - h d and beta m + b s are
        # non-finite whenever theta, resp. m, is: IEEE arithmetic), so the state is finite at the end of the block
        # iff it was finite at every step, and the unchecked steps are then the checked ones (the same operations; two
        # compiled programs may round differently in the last bits, tests/test_speed_contracts.py). Otherwise
        # (or if the run had diverged already) the block is run again from its start with the per-step check, in a
        # while loop of at most one pass: under vmap it runs only when some member of the batch needs it.
        def raw(c, n):
            theta, momenta = c
            return optimizer.step(theta, momenta, oracle(theta, key, n), h_of(n), n), None

        (theta, momenta), _ = jax.lax.scan(raw, carry[:2], n0 + jnp.arange(save_every))
        ok = _finite(theta, momenta) & (carry[2] < 0)
        _, out = jax.lax.while_loop(lambda s: ~s[0], lambda s: (jnp.asarray(True), checked_steps(carry, n0)),
                                    (ok, (theta, momenta, carry[2])))
        return out

    # the unchecked block only where non-finite states are provably absorbing (see fast_steps)
    absorbing = type(optimizer).step is Optimizer.step and type(optimizer).update_momenta is Optimizer.update_momenta
    steps_of_block = fast_steps if absorbing else checked_steps

    def block(carry, n0):  # save_every steps, recording only the state at the start of the block
        theta, momenta, _ = carry
        value, grad = observe(theta)
        return steps_of_block(carry, n0), (theta, momenta, value, jnp.linalg.norm(grad))

    init = (theta0, m0, jnp.asarray(-1))
    if save_every == 1:
        (theta_n, m_n, diverged_at), (thetas, ms, values, norms) = jax.lax.scan(body, init, start + jnp.arange(steps))
    else:
        starts = start + save_every * jnp.arange(steps // save_every)
        (theta_n, m_n, diverged_at), (thetas, ms, values, norms) = jax.lax.scan(block, init, starts)
    value_n, grad_n = observe(theta_n)
    thetas = jnp.concatenate([thetas, theta_n[None]])
    ms = tuple(jnp.concatenate([a, b[None]]) for a, b in zip(ms, m_n))
    values = jnp.concatenate([values, value_n[None]])
    norms = jnp.concatenate([norms, jnp.linalg.norm(grad_n)[None]])
    return thetas, ms, values, norms, diverged_at


def simulate(
    optimizer: Optimizer,
    loss: Callable,
    theta0: Any,
    steps: int,
    *,
    h: Union[float, jax.Array, Callable],
    oracle: Optional[Oracle] = None,
    key: Optional[jax.Array] = None,
    m0: Union[str, tuple] = "zero",
    record: bool = True,
    start: int = 0,
    save_every: int = 1,
) -> Trajectory:
    r"""Run ``steps`` steps of ``optimizer`` on ``loss`` from ``theta0`` with step size ``h``.

    Args:
        optimizer: an :class:`Optimizer` (e.g. ``modeq.optimizers.heavy_ball(beta=0.9)``).
        loss: $L(\theta)$, a JAX callable on an array or a pytree (flattened internally).
        theta0: initial point (array or pytree).
        steps: number of steps $N \ge 1$; the trajectory has $N+1$ entries.
        h: the step size (learning rate) $h > 0$, or a schedule ``n -> h_n``.
        oracle: a gradient oracle ``(theta, key, n) -> g`` on the flat vector (default: full batch).
        key: ``jax.random`` key of the run (needed by stochastic oracles; same key, same run).
        m0: initial momentum variables: ``"zero"`` (at rest, optax's default), ``"first"`` (warm start) or a tuple.
        start: index of the first step (bias corrections and oracles depend on it): run a long simulation in
            chunks by passing the last state as ``theta0``/``m0`` and ``start`` = steps done so far.
        record: record the full loss and gradient norm at every step (one extra gradient per step for stochastic
            oracles; free for full batch).
        save_every: keep every ``save_every``-th state only (``theta[j]`` is $\theta_{jk}$, ``Trajectory.steps``
            gives the indices); must divide ``steps``. ``save_every=steps`` keeps the first and last states only:
            memory O(d) instead of O(N d) for long runs (slow-SDE horizons of $T/\eta^2$ steps); reverse-mode
            differentiation (``jax.grad``) through a run with ``save_every > 1`` is not supported (docs/speed.md).

    Returns a :class:`Trajectory`. Pure and jit-/vmap-friendly (vmap over keys, ``theta0`` or ``optimizer`` to run
    ensembles or hyperparameter sweeps). Outside a transformation a :class:`DivergenceWarning` is emitted if the run
    diverged.
    """
    steps = check_int_at_least("steps", steps, 1)
    save_every = check_int_at_least("save_every", save_every, 1)
    if steps % save_every:
        raise ValueError(f"save_every must divide steps = {steps}, got {save_every}")
    if not callable(h):
        if not isinstance(h, jax.core.Tracer):
            check_positive("h", h)
        # a Python number goes in as a NumPy scalar (traced like an array, no eager JAX op: issue 16)
        h = np.asarray(h, dtype=np.float64) if isinstance(h, (int, float)) else jnp.asarray(h, dtype=jnp.float64)
    if isinstance(theta0, jax.Array) and theta0.ndim == 1 and theta0.dtype == jnp.float64 and not theta0.weak_type:
        # a float64 vector (the common case): already flat; ravel_pytree's unravel depends on the shape only
        flat0, unravel, flat_loss = theta0, _vector_unravel(theta0.shape[0]), loss
    else:
        flat0, unravel = ravel_pytree(theta0)
        flat0 = jnp.asarray(flat0, dtype=jnp.float64)
        flat_loss = loss if isinstance(theta0, jax.Array) and theta0.ndim == 1 else _flat_loss(loss, unravel)
    if oracle is None:
        oracle = FullBatch(flat_loss)
    elif getattr(oracle, "stochastic", True) and key is None:
        raise ValueError("key: a stochastic oracle needs a jax.random key")
    if isinstance(m0, str) and m0 == "zero":
        momenta0 = None  # built inside the compiled program (no eager JAX op per call)
    else:
        first = isinstance(m0, str) and m0 == "first"
        g0 = oracle(flat0, jax.random.key(0) if key is None else key, start) if first else jnp.zeros_like(flat0)
        momenta0 = optimizer.initial_momenta(flat0, g0, m0)
    thetas, ms, values, norms, diverged_at = _dispatch(
        optimizer, flat_loss, oracle, flat0, momenta0, key, h, _index(start), steps, record, save_every
    )
    traj = Trajectory(thetas, ms, values, norms, diverged_at, unravel, save_every)
    if not isinstance(diverged_at, jax.core.Tracer):
        # the one host sync of the call (through NumPy: int() of a jax.Array takes ~0.1 ms more after a long run)
        diverged_step = int(np.asarray(diverged_at))
        if diverged_step >= 0:
            warnings.warn(
                f"{optimizer.name}: the iterates diverged at step {diverged_step}; the trajectory is frozen there",
                DivergenceWarning,
                stacklevel=2,
            )
    return traj


@dataclasses.dataclass(frozen=True)
class _FlatLoss:
    """``theta -> loss(unravel(theta))``: the loss on the flat vector of a pytree ``theta0``, equal (hence one compiled
    program) for equal ``loss`` and ``unravel`` (``ravel_pytree``'s unravel compares by structure)."""

    loss: Callable
    unravel: Callable

    def __call__(self, theta):
        return self.loss(self.unravel(theta))


def _flat_loss(loss, unravel) -> Callable:
    """:class:`_FlatLoss`, or for an unhashable ``loss`` (a module holding arrays) a new closure (one program per
    call: a static argument of the compiled run must be hashable)."""
    flat = _FlatLoss(loss, unravel)
    try:
        hash(flat)
    except TypeError:
        return lambda theta: loss(unravel(theta))
    return flat


@functools.lru_cache(maxsize=64)
def _vector_unravel(d: int) -> Callable:
    """``ravel_pytree``'s unravel of a float64 vector of length ``d`` (a function of the shape and dtype only)."""
    with jax.ensure_compile_time_eval():
        return ravel_pytree(np.zeros(d, dtype=np.float64))[1]
