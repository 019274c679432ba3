r"""Ito SDE ensembles: a fixed-step ``lax.scan`` Euler--Maruyama and a diffrax path.

* ``method="scan"``: $X_{n+1} = X_n + b(t_n, X_n)\Delta t + \sigma(t_n, X_n)\sqrt{\Delta t}\,\xi_n$ with
  $\xi_n$ = ``normal(fold_in(key_p, n))``: path $p$ has key ``split(key, paths)[p]``, so any path or step can be
  recomputed alone and results do not depend on how paths are batched or sharded.
* ``method="diffrax"``: ``diffrax.Euler`` (Ito; docs/theory/numerics.md#sde) on ``MultiTerm(ODETerm, ControlTerm)`` driven by a
  ``VirtualBrownianTree`` with ``tol = dt/2`` (pitfall 4). Same law, different noise stream from ``scan``.

When several devices exist and ``paths`` is a multiple of their number, the path axis is sharded across them with
``jax.sharding`` (results equal the single-device ones to rounding).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_at_least, check_positive


@dataclasses.dataclass(frozen=True)
class SDEPaths:
    """``xs[p, j]`` = path ``p`` at time ``ts[j]`` (``ts[0] = t0``)."""

    ts: np.ndarray
    xs: jax.Array
    method: str
    dt: float
    devices: int

    @property
    def mean(self) -> np.ndarray:
        """Ensemble mean over paths at every saved time, shape ``(len(ts), d)``."""
        return np.asarray(jnp.mean(self.xs, axis=0))

    @property
    def std(self) -> np.ndarray:
        """Ensemble standard deviation (ddof = 1) over paths at every saved time."""
        return np.asarray(jnp.std(self.xs, axis=0, ddof=1))

    def to_dict(self) -> dict:
        """JSON-ready summary: method, paths, dt, devices, times, mean, std and the standard error of the mean."""
        n = int(self.xs.shape[0])
        return {
            "method": self.method,
            "paths": n,
            "dt": self.dt,
            "devices": self.devices,
            "t": self.ts.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "mean_stderr": (self.std / np.sqrt(n)).tolist(),
        }


def path_keys(key, paths: int):
    return jax.random.split(key, paths)


def _shard(keys):
    devs = jax.devices()
    n = keys.shape[0]
    if len(devs) > 1 and n % len(devs) == 0:
        mesh = jax.sharding.Mesh(np.array(devs), ("paths",))
        spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("paths"))
        return jax.device_put(keys, spec), len(devs)
    return keys, 1


@eqx.filter_jit
def _scan_em(sde, x0, keys, t0, dt, n_save: int, save_every: int, m: int):
    sq = jnp.sqrt(dt)

    def one(key):
        def step(x, n):
            t = t0 + n * dt
            z = jax.random.normal(jax.random.fold_in(key, n), (m,), dtype=x.dtype)
            return x + sde.drift(t, x) * dt + (sde.diffusion(t, x) @ z) * sq, None

        def block(x, j):
            x, _ = jax.lax.scan(step, x, j * save_every + jnp.arange(save_every))
            return x, x

        _, xs = jax.lax.scan(block, x0, jnp.arange(n_save))
        return jnp.concatenate([x0[None], xs])

    return jax.vmap(one)(keys)


@eqx.filter_jit
def _diffrax_em(sde, x0, keys, t0, dt, ts, steps: int, m: int, solver):
    import diffrax  # on first use: ``import modeq`` and the scan method do not pay for it

    t1 = ts[-1]

    def one(key):
        bm = diffrax.VirtualBrownianTree(t0, t1, tol=dt / 2, shape=(m,), key=key)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, a: sde.drift(t, y)),
            diffrax.ControlTerm(lambda t, y, a: sde.diffusion(t, y), bm),
        )
        sol = diffrax.diffeqsolve(
            terms, solver, t0, t1, dt0=dt, y0=x0, saveat=diffrax.SaveAt(ts=ts), max_steps=steps + 16
        )
        return sol.ys

    return jax.vmap(one)(keys)


def simulate_sde(
    sde,
    x0,
    t1: float,
    steps: int,
    *,
    paths: int,
    key,
    t0: float = 0.0,
    save_every: Optional[int] = None,
    method: str = "scan",
    shard: bool = True,
) -> SDEPaths:
    r"""Simulate ``paths`` independent paths of ``sde`` on $[t_0, t_1]$ with ``steps`` fixed Euler steps.

    ``save_every`` (default: ``steps``, i.e. save only the end point) must divide ``steps``. ``method`` is
    ``"scan"`` (fast, default), ``"diffrax"`` (Euler + VirtualBrownianTree) or ``"diffrax-milstein"``
    (ItoMilstein; needs a diagonal-noise SDE in diffrax's sense, so use it only for scalar noise).
    """
    steps = check_int_at_least("steps", steps, 1)
    paths = check_int_at_least("paths", paths, 2)
    t1 = float(t1)
    if not t1 > t0:
        raise ValueError(f"t1 must be > t0 = {t0}, got {t1}")
    save_every = steps if save_every is None else check_int_at_least("save_every", save_every, 1)
    if steps % save_every:
        raise ValueError(f"save_every must divide steps={steps}, got {save_every}")
    x0 = jnp.asarray(x0, dtype=jnp.float64)
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a flat vector, got shape {x0.shape}")
    dt = (t1 - t0) / steps
    check_positive("dt", dt)
    m = sde.noise_dim(x0)
    n_save = steps // save_every
    ts = t0 + dt * save_every * np.arange(n_save + 1)
    keys = path_keys(key, paths)
    ndev = 1
    if shard:
        keys, ndev = _shard(keys)
    if method == "scan":
        xs = _scan_em(sde, x0, keys, jnp.asarray(t0), jnp.asarray(dt), n_save, save_every, m)
    elif method in ("diffrax", "diffrax-milstein"):
        import diffrax

        solver = diffrax.Euler() if method == "diffrax" else diffrax.ItoMilstein()
        xs = _diffrax_em(sde, x0, keys, jnp.asarray(t0), jnp.asarray(dt), jnp.asarray(ts), steps, m, solver)
    else:
        raise ValueError(f"method must be 'scan', 'diffrax' or 'diffrax-milstein', got {method!r}")
    return SDEPaths(ts=ts, xs=xs, method=method, dt=dt, devices=ndev)
