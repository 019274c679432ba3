"""Device placement (issue 16, item 2; docs/speed.md#device-placement): small problems run on the CPU even when the
default device is an accelerator, large ones on the default device, ``MODEQ_DEVICE`` / ``--device`` force either.

The decision (:func:`modeq._machine.choose_device`) is pure: it is tested here with fake device lists, so that the
rule is checked on a machine without a GPU; on such a machine :func:`modeq._machine.device_scope` must change
nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import pytest
from typer.testing import CliRunner

from modeq._errors import InputError
from modeq._machine import CPU_MAX_WIDTH, choose_device, device_mode, device_scope


@dataclass(frozen=True)
class FakeDevice:
    platform: str
    id: int = 0


GPU, CPU0, CPU1 = FakeDevice("gpu"), FakeDevice("cpu", 0), FakeDevice("cpu", 1)


@pytest.mark.parametrize(
    "width, mode, expected",
    [
        (2, "auto", CPU0),  # the 2-D compare study: 127 s on the GPU, 24 s on the CPU
        (100, "auto", CPU0),  # d = 100 iterates: 59.8 ms on the GPU, 25.2 ms on the CPU
        (CPU_MAX_WIDTH - 1, "auto", CPU0),
        (CPU_MAX_WIDTH, "auto", None),
        (10 * 100_000, "auto", None),  # 1e5 paths x d = 10: 0.063 s on the GPU, ~33 s on the CPU
        (10**6, "cpu", CPU0),  # forced
        (2, "default", None),  # forced: JAX's default device
    ],
)
def test_choice_with_an_accelerator(width, mode, expected):
    assert choose_device(width, mode, GPU, [CPU0, CPU1]) == expected


@pytest.mark.parametrize("mode", ["auto", "cpu", "default"])
@pytest.mark.parametrize("width", [1, 10**7])
def test_nothing_changes_without_an_accelerator_or_without_a_cpu(mode, width):
    assert choose_device(width, mode, CPU0, [CPU0, CPU1]) is None  # the default is a CPU already
    assert choose_device(width, mode, GPU, []) is None  # no CPU backend (JAX_PLATFORMS=cuda): keep the default


def test_the_threshold_sits_between_the_measured_cases():
    # CPU faster at widths 2 and 100 (measured), GPU faster at 1e6 (measured): the threshold lies between
    assert 100 < CPU_MAX_WIDTH < 10**6


def test_mode_from_argument_and_environment(monkeypatch):
    monkeypatch.delenv("MODEQ_DEVICE", raising=False)
    assert device_mode() == "auto"
    monkeypatch.setenv("MODEQ_DEVICE", " CPU ")
    assert device_mode() == "cpu"
    assert device_mode("default") == "default"  # the argument wins over the environment
    monkeypatch.setenv("MODEQ_DEVICE", "gpu")
    with pytest.raises(InputError, match="MODEQ_DEVICE must be one of auto, cpu, default, got 'gpu'"):
        device_mode()
    with pytest.raises(InputError, match="device must be one of"):
        device_mode("tpu")
    with pytest.raises(ValueError, match="mode must be one of"):
        choose_device(2, "gpu", GPU, [CPU0])


@pytest.mark.parametrize("mode", ["auto", "cpu", "default"])
def test_scope_on_this_machine(mode, monkeypatch):
    """Without an accelerator the scope is a no-op; with one (run on a GPU machine) a small problem lands on a CPU."""
    monkeypatch.delenv("MODEQ_DEVICE", raising=False)
    x = jnp.arange(3.0)
    with device_scope(2, mode):
        y = jax.jit(lambda v: 2 * v)(x)
    assert y.tolist() == [0.0, 2.0, 4.0]
    on_cpu = jax.devices()[0].platform == "cpu"
    if on_cpu:
        assert isinstance(device_scope(2, mode), contextlib.nullcontext)
    elif mode != "default":
        assert y.devices() == {jax.devices("cpu")[0]}


def test_cli_device_option():
    from modeq.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["run", "--steps", "3", "--quiet", "--device", "gpu"])
    assert out.exit_code == 2 and "device must be one of auto, cpu, default" in out.output
    out = runner.invoke(app, ["run", "--steps", "3", "--quiet", "--device", "cpu"])
    assert out.exit_code == 0, out.output
