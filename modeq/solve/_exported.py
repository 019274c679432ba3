r"""A persistent cache of *traced* solves: the second run of a study skips tracing diffrax.

JAX's persistent compilation cache (:mod:`modeq._config`) saves XLA's compilation, but every process still traces
and lowers each program, and for a small study the diffrax solve dominates that (about 1 s for the three modified
fields of ``modeq compare``, against 0.1 s for tracing the fields themselves). :func:`solve_dense_cached` stores the
solve as a serialized :mod:`jax.export` program (StableHLO) beside the compilation cache and, in a later process,
runs the stored program instead of tracing diffrax again; XLA's compilation of it is then a hit in the compilation
cache.

Key (SHA-256 of all of these; any change is a different program, never a stale one):

* the **field's jaxpr**, traced on the stacked state with the field's arrays as inputs (``eqx.partition``), printed
  (literals in full precision) and the bytes, dtypes and shapes of its captured constants, those of nested jaxprs
  included (a ``jax.jit`` helper closing over data; typed PRNG keys by their key data): two fields that compute
  anything differently have different keys, whatever loss or optimizer they come from;
* the solver's static settings (``max_steps``, the controller's norm), the shapes and dtypes of every input;
* modeq's own source (a hash of every ``.py`` file of the package), the versions of Python, jax, jaxlib, diffrax,
  equinox and optimistix, the platform the solve runs on (that of ``jax.default_device`` when set) and the JAX
  settings that change a trace (float64, matmul precision); the program is exported for that platform.

A field whose jaxpr cannot be printed reproducibly (a host callback prints an object address), or that captures
more than :data:`MAX_CONSTANT_BYTES` of data (which the stored program would embed), only misses the cache. Any
failure to export, write or read a stored program falls back to tracing, with the same result. The cache is off when
the compilation cache is (``MODEQ_NO_COMPILATION_CACHE=1``); entries live in ``<compilation cache
dir>/modeq-exported`` (at most :data:`MAX_ENTRIES`, the least recently used pruned). Serialization needs the
``flatbuffers`` package (a dependency).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import sys
import tempfile
from typing import Optional

import equinox as eqx
import jax
import numpy as np

#: subdirectory of the compilation cache directory holding the serialized solves
SUBDIR = "modeq-exported"
#: fields capturing more constant data than this (bytes) are not stored: the program would embed the data
MAX_CONSTANT_BYTES = 4 * 2**20
#: at most this many stored solves (about 70 KB each for a small study); beyond, the least recently used half goes
MAX_ENTRIES = 512

#: the most entries of the in-process memos below (a long session building many fields keeps the latest ones)
MEMO_SIZE = 64
_PROGRAMS: "collections.OrderedDict" = collections.OrderedDict()  # key -> jitted stored program (this process)
# (the field's structure, the ids of its non-array leaves, ...) -> (key, those leaves): each entry holds the leaves, so
# their ids cannot be reused by other objects while it is kept
_KEYS: "collections.OrderedDict" = collections.OrderedDict()


def _remember(memo, key, value):
    memo[key] = value
    memo.move_to_end(key)
    while len(memo) > MEMO_SIZE:
        memo.popitem(last=False)


@functools.lru_cache(maxsize=1)
def _environment() -> str:
    """Everything outside the field that decides the traced program: modeq's source, library versions, settings."""
    import importlib.metadata as md

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as handle:
                    digest.update(handle.read())
    versions = []
    for dist in ("jax", "jaxlib", "diffrax", "equinox", "optimistix", "lineax"):
        try:
            versions.append(f"{dist}={md.version(dist)}")
        except md.PackageNotFoundError:
            versions.append(f"{dist}=?")
    config = jax.config
    settings = (config.jax_enable_x64, config.jax_default_matmul_precision, config.jax_numpy_rank_promotion)
    return "|".join([digest.hexdigest(), sys.version, *versions, repr(settings)])


def _directory() -> Optional[str]:
    from .._config import COMPILATION_CACHE_DIR

    cache = jax.config.jax_compilation_cache_dir or COMPILATION_CACHE_DIR
    if not cache or os.environ.get("MODEQ_NO_COMPILATION_CACHE", "").strip().lower() not in ("", "0", "false", "no"):
        return None
    return os.path.join(cache, SUBDIR)


def _platform() -> str:
    """The platform the solve runs on: that of ``jax.default_device`` when set (``MODEQ_DEVICE=auto`` puts small
    problems on the CPU of a GPU machine), else the default backend."""
    device = jax.config.jax_default_device
    if device is None:
        return jax.default_backend()
    return str(getattr(device, "platform", device)).lower()


def _aval(x) -> str:
    return f"{np.dtype(x.dtype).str}{tuple(x.shape)}"


def _all_constants(closed) -> list:
    """The constants of ``closed`` and of every jaxpr nested in its equations (a ``jax.jit`` helper that closes over
    data keeps its array in the nested jaxpr, where the printed text does not show it)."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    found = list(closed.consts)

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            stack = list(eqn.params.values())
            while stack:
                item = stack.pop()
                if isinstance(item, (tuple, list)):
                    stack.extend(item)
                elif isinstance(item, dict):
                    stack.extend(item.values())
                elif isinstance(item, ClosedJaxpr):
                    found.extend(item.consts)
                    walk(item.jaxpr)
                elif isinstance(item, Jaxpr):
                    walk(item)

    walk(closed.jaxpr)
    return found


def _constant_bytes(const) -> tuple:
    """``(description, bytes)`` of a constant; typed PRNG keys by their implementation and key data."""
    if jax.dtypes.issubdtype(getattr(const, "dtype", np.float64), jax.dtypes.prng_key):
        return f"key<{jax.random.key_impl(const)}>", np.ascontiguousarray(np.asarray(jax.random.key_data(const)))
    array = np.ascontiguousarray(np.asarray(const))
    return f"{array.dtype.str}{array.shape}", array


def _field_key(static, dyn_leaves, treedef, y0, settings) -> Optional[str]:
    """The cache key of the solve of ``eqx.combine(dyn, static)`` (see the module docstring), or None."""
    try:
        closed = jax.make_jaxpr(lambda leaves, y: eqx.combine(jax.tree.unflatten(treedef, leaves), static)(y))(
            dyn_leaves, y0)
        text = str(closed.jaxpr)
        constants = [_constant_bytes(c) for c in _all_constants(closed)]
    except Exception:  # a field that cannot be traced on its own, a constant that cannot be read: no cache
        return None
    if " at 0x" in text:  # an object address (a host callback): not reproducible across processes
        return None
    if sum(array.nbytes for _, array in constants) > MAX_CONSTANT_BYTES:
        return None  # the stored program would embed the data (a large training set): not worth a file
    digest = hashlib.sha256()
    # (not str(treedef): it prints the field's functions with their addresses; the leaves' order and avals, and the
    # jaxpr that uses them, fix the program)
    for part in (_environment(), text, repr(settings), *(_aval(x) for x in dyn_leaves), _aval(y0)):
        digest.update(part.encode())
        digest.update(b"\0")
    for description, array in constants:
        digest.update(description.encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def solve_dense_cached(solve, field, y0, ts, rtol, atol, dtmax, max_steps: int, dt0, norm):
    """``solve(y0, ts, rtol, atol, dtmax, max_steps, field, dt0, norm)`` (a jitted diffrax solve returning
    ``(ys, result, steps)``), through the persistent cache of traced programs when it is on (module docstring). From
    a stored program ``result`` is diffrax's integer result code (0: successful), and diffrax is not imported."""
    directory = _directory()
    if directory is None:
        return solve(y0, ts, rtol, atol, dtmax, max_steps, field, dt0, norm)
    dyn, static = eqx.partition(field, eqx.is_array)
    leaves, treedef = jax.tree.flatten(dyn)
    leaves = tuple(leaves)
    static_leaves, static_def = jax.tree.flatten(static)  # a plain function field is one static leaf
    arrays = (y0, ts, rtol, atol, dtmax, dt0)
    platform = _platform()
    # the treedefs hold the static fields of modules (compared by equality: functions by identity); the static leaves
    # by identity (an equal but distinct object only recomputes the key)
    memo_key = (treedef, static_def, tuple(id(x) for x in static_leaves), tuple(_aval(x) for x in leaves + arrays),
                max_steps, norm, platform)
    entry = _KEYS.get(memo_key)
    if entry is None:
        key = _field_key(static, leaves, treedef, y0, (max_steps, getattr(norm, "__qualname__", repr(norm)), platform,
                                                        *(_aval(x) for x in arrays)))
        entry = (key, static_leaves)
    _remember(_KEYS, memo_key, entry)
    key = entry[0]
    if key is None:
        return solve(y0, ts, rtol, atol, dtmax, max_steps, field, dt0, norm)
    program = _PROGRAMS.get(key)
    if program is None:
        program = _load_or_export(directory, key, solve, static, treedef, leaves, arrays, max_steps, norm, platform)
        if program is None:
            return solve(y0, ts, rtol, atol, dtmax, max_steps, field, dt0, norm)
    _remember(_PROGRAMS, key, program)
    try:
        return program(leaves, *arrays)  # (ys, the integer code of diffrax's result, steps): diffrax is not imported
    except Exception:  # a stored program that cannot run here (another platform, ...): trace as usual
        _PROGRAMS.pop(key, None)
        _remember(_KEYS, memo_key, (None, static_leaves))
        return solve(y0, ts, rtol, atol, dtmax, max_steps, field, dt0, norm)


def _load_or_export(directory, key, solve, static, treedef, leaves, arrays, max_steps, norm, platform):
    from jax import export

    path = os.path.join(directory, key + ".bin")
    try:
        with open(path, "rb") as handle:
            exported = export.deserialize(bytearray(handle.read()))
        try:
            os.utime(path)  # last use, for the pruning of old entries
        except OSError:
            pass
        return jax.jit(exported.call)
    except Exception:  # no entry yet, or a truncated or foreign one: trace, export and (over)write it
        pass

    def program(leaves, y0, ts, rtol, atol, dtmax, dt0):
        field = eqx.combine(jax.tree.unflatten(treedef, leaves), static)
        ys, result, steps = solve(y0, ts, rtol, atol, dtmax, max_steps, field, dt0, norm)
        return ys, result._value, steps

    try:
        from ._ode import _without_host_callbacks

        with _without_host_callbacks():
            exported = export.export(jax.jit(program), platforms=(platform,))(leaves, *arrays)
        data = exported.serialize()
    except Exception:  # no flatbuffers, an effect that cannot be exported: trace as usual
        return None
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".tmp") as handle:
            handle.write(data)
        os.replace(handle.name, path)  # atomic: a parallel reader sees the whole entry or none
        _prune(directory)
    except OSError:  # a read-only or full directory: the program still serves this process
        pass
    return jax.jit(exported.call)


def _prune(directory: str) -> None:
    """Keep the :data:`MAX_ENTRIES` most recently used entries (each new version of modeq makes new keys)."""
    entries = []
    for name in os.listdir(directory):
        if name.endswith(".bin"):
            try:
                entries.append((os.stat(os.path.join(directory, name)).st_mtime, name))
            except OSError:
                pass
    if len(entries) <= MAX_ENTRIES:
        return
    for _, name in sorted(entries)[: len(entries) - MAX_ENTRIES // 2]:
        try:
            os.remove(os.path.join(directory, name))
        except OSError:
            pass
