"""Machine and version facts recorded beside every measurement (benchmarks, ``modeq report``)."""

from __future__ import annotations

import importlib.metadata as md
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
