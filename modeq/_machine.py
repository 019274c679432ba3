"""Machine and version facts recorded beside every measurement (benchmarks, ``modeq report``), and where a problem
runs: :func:`device_scope` puts small problems on the CPU when the default device is an accelerator
(docs/speed.md#device-placement)."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()`` or the machine type."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return cpu


def package_version(name: str, missing: str = "-") -> str:
    """Installed version of distribution ``name``, or ``missing``."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return missing


# --- device placement (issue 16, item 2; docs/speed.md#device-placement) -------------------------------------------

#: ``MODEQ_DEVICE`` / ``--device`` values: ``auto`` (small problems on the CPU, large ones on the default device),
#: ``cpu`` (always the CPU), ``default`` (JAX's default device, i.e. the accelerator when there is one).
DEVICE_MODES = ("auto", "cpu", "default")

#: ``auto`` runs a problem on the CPU when it updates fewer than this many floats per sequential step (``width``: the
#: dimension d, times the number of paths of an ensemble). Measured on an H200 against the same machine's CPU
#: (docs/speed.md#device-placement): the 2-D ``modeq compare`` 127 s on the GPU vs 24 s on the CPU (width 2); the
#: iterates of the d = 100 quadratic, 1e4 steps, 59.8 ms vs 25.2 ms (width 100); an Euler-Maruyama ensemble of 1e5
#: paths x d = 10 (width 1e6) 0.063 s on the GPU vs about 33 s on the CPU. A sequential step costs the GPU about
#: 6 us whatever its size (kernel launches), the CPU about 25-40 ns per float of width, so the two cross near
#: width 200; the threshold sits 5x above, because a small study is dominated by compilation, which is slower on
#: the GPU and not in that per-step model.
CPU_MAX_WIDTH = 1024


def device_mode(mode=None) -> str:
    """The placement mode: ``mode`` if given, else ``$MODEQ_DEVICE``, else ``"auto"``; one of :data:`DEVICE_MODES`.

    Raises :class:`modeq._errors.InputError` naming the setting and the valid values."""
    from ._errors import InputError

    source = "device" if mode is not None else "MODEQ_DEVICE"
    value = mode if mode is not None else os.environ.get("MODEQ_DEVICE", "")
    value = (value or "auto").strip().lower()
    if value not in DEVICE_MODES:
        raise InputError(f"{source} must be one of {', '.join(DEVICE_MODES)}, got {value!r}")
    return value


def choose_device(width: int, mode: str, default_device, cpu_devices):
    """Where a problem of ``width`` floats per sequential step runs: a device to make the default, or ``None`` to
    leave JAX's default device alone.

    Pure (no JAX call: ``default_device`` is JAX's default device, ``cpu_devices`` the list ``jax.devices("cpu")``,
    empty when the CPU backend is off), so that it is tested with fake devices on a machine without a GPU.

    * ``default``: ``None``;
    * ``cpu``: the first CPU device (``None`` when the default device is a CPU already, or when there is no CPU
      backend);
    * ``auto``: as ``cpu`` when ``width < CPU_MAX_WIDTH`` (:data:`CPU_MAX_WIDTH`), else ``None``.

    With no accelerator the default device is a CPU and the answer is always ``None``: nothing changes.
    """
    if mode not in DEVICE_MODES:
        raise ValueError(f"mode must be one of {', '.join(DEVICE_MODES)}, got {mode!r}")
    if mode == "default" or not cpu_devices or getattr(default_device, "platform", "cpu") == "cpu":
        return None
    if mode == "cpu" or int(width) < CPU_MAX_WIDTH:
        return cpu_devices[0]
    return None


def device_scope(width: int, mode=None):
    """A context manager that runs what it encloses on the device :func:`choose_device` picks for ``width`` under
    ``mode`` (see :func:`device_mode`): ``jax.default_device(device)`` when a device is picked, else a no-op.

    Arrays created inside follow the chosen device; uncommitted arrays created before it (``jnp.asarray``) are moved
    when a computation uses them. Example: ``with device_scope(problem.dim): study = flow_study(...)``."""
    import contextlib

    import jax

    mode = device_mode(mode)
    if mode == "default" or (mode == "auto" and jax.config.jax_default_device is not None):
        return contextlib.nullcontext()  # auto keeps a default device the user configured
    default = jax.devices()[0]
    try:
        cpus = jax.devices("cpu") if default.platform != "cpu" else []
    except RuntimeError:  # JAX_PLATFORMS without cpu
        cpus = []
    device = choose_device(width, mode, default, cpus)
    return contextlib.nullcontext() if device is None else jax.default_device(device)
