"""Global numerical configuration.

modeq works in float64 everywhere: importing :mod:`modeq` calls
``jax.config.update("jax_enable_x64", True)`` before any array is created. Without it JAX silently downcasts
float64 requests to float32, and adaptive solvers at rtol = 1e-12 fail (see docs/theory/numerics.md#float64).

JAX's persistent compilation cache (https://docs.jax.dev/en/latest/persistent_compilation_cache.html) is turned on
by default, so that a second run of the same study loads its compiled programs from disk instead of compiling them
again (most of a small study's time is compilation):

* directory: ``$MODEQ_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/modeq/jax``, else ``~/.cache/modeq/jax``
  (created with mode 0700: a compilation cache is trusted code, never share it with other users);
* ``MODEQ_NO_COMPILATION_CACHE=1`` turns it off; a cache directory already configured for JAX
  (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config.update("jax_compilation_cache_dir", ...)`` before importing modeq)
  is kept, and so is ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``;
* programs that took at least :data:`MIN_COMPILE_TIME_S` to compile are written (JAX's default, 1 s, would skip
  most of a study's programs);
* beside it, in ``modeq-exported/``, the traced diffrax solves of the studies (:mod:`modeq.solve._exported`), so that
  a later process skips tracing them too.

Parallel processes (pytest-xdist workers) may share the directory: JAX writes each entry once under a content hash,
and an entry read while another process is still writing it fails to decompress, which JAX reports as a warning and
answers by compiling (never by running a wrong program).
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

#: programs that compile faster than this are not written to the persistent cache (JAX's default is 1 s).
MIN_COMPILE_TIME_S = 0.03


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def cache_directory() -> str:
    """The directory modeq uses for JAX's persistent compilation cache (see the module docstring)."""
    explicit = os.environ.get("MODEQ_COMPILATION_CACHE_DIR")
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "modeq", "jax")


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache in :func:`cache_directory` unless ``MODEQ_NO_COMPILATION_CACHE`` is
    set or a cache directory is already configured; return the directory in use (``None`` when off)."""
    if _truthy(os.environ.get("MODEQ_NO_COMPILATION_CACHE")):
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = cache_directory()
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:  # read-only home, etc.: run without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    return path


COMPILATION_CACHE_DIR = enable_compilation_cache()
