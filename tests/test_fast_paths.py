"""The fast paths of the main job (issue 16) give the results of the slow ones.

* :func:`modeq.solve.solve_on_grid_stacked` (several flows as one uncoupled system) equals separate solves to within
  their error floors and the exact solutions to round-off; its controller holds every row to the tolerance;
* :func:`modeq.compare.compare_flows` (all flows of a study, step size by step size) equals one
  :func:`~modeq.compare.compare_flow` per flow;
* the persistent cache of traced solves (:mod:`modeq.solve._exported`): a stored program gives the same values as
  the traced one, a later *process* uses it (no diffrax import, identical errors), its key changes with any
  constant of the field (loss data, hyperparameters), a corrupt entry is replaced, and it is off with the
  compilation cache;
* the compiled Newton loop of the slow-manifold start equals the host loop (GMRES) it replaced for small d.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeq
from modeq.flows._modified import VectorField
from modeq.solve import _exported, solve_on_grid, solve_on_grid_stacked
from modeq.solve._ode import _max_row_rms_norm

A = np.array([[-1.0, 2.0], [-2.0, -1.0]])  # y' = A y: a decaying rotation, y(t) = expm(t A) y0


def _linear():
    return VectorField(fn=lambda y, h: jnp.asarray(A) @ y, h=jnp.asarray(0.01), name="linear")


def _logistic():
    return VectorField(fn=lambda y, h: y * (1.0 - y), h=jnp.asarray(0.01), name="logistic")


def _exact(y0, ts):
    from scipy.linalg import expm

    lin = np.stack([expm(t * A) @ y0 for t in ts])
    log = y0 / (y0 + (1.0 - y0) * np.exp(-ts[:, None]))
    return lin, log


def test_max_row_rms_norm_is_the_largest_row_rms():
    y = jnp.asarray([[3.0, 4.0], [1e-3, 0.0], [0.0, 0.0]])
    assert float(_max_row_rms_norm(y)) == pytest.approx(np.sqrt(12.5), rel=1e-15)  # not the RMS of all 6 entries
    assert float(_max_row_rms_norm(jnp.asarray([3.0, 4.0]))) == pytest.approx(np.sqrt(12.5), rel=1e-15)


def test_stacked_solve_equals_separate_solves_and_the_exact_flows():
    y0 = np.array([0.3, 0.6])
    h, steps = 0.01, 120
    (lin, log), floors = solve_on_grid_stacked([_linear(), _logistic()], y0, h, steps, rtol=1e-12, pad_to=150)
    exact_lin, exact_log = _exact(y0, np.arange(steps + 1) * h)
    for values, exact, floor, field in ((lin, exact_lin, floors[0], _linear()), (log, exact_log, floors[1], _logistic())):
        assert values.shape == (steps + 1, 2)
        assert np.max(np.linalg.norm(values - exact, axis=-1)) < 1e-13  # each row its own field (a mix-up: O(1))
        alone, floor_alone = solve_on_grid(field, y0, h, steps, rtol=1e-12, pad_to=150)
        assert np.max(np.linalg.norm(values - alone, axis=-1)) <= 10 * max(floor, floor_alone) + 1e-15
        assert 0 < floor < 1e-13


def _study_inputs():
    from modeq.optimizers import OPTIMIZERS
    from modeq.problems import product

    return OPTIMIZERS["hb"](beta=0.9), product()


def test_compare_flows_equals_one_compare_flow_per_flow():
    from modeq.compare import compare_flow, compare_flows

    opt, problem = _study_inputs()
    hs, T = [1e-4, 5e-5], 0.01
    flows = ["modified:1", "modified:2", "modified:3"]
    together = compare_flows(opt, problem.loss, problem.theta0, flows, hs, T)
    for flow, joint in zip(flows, together):
        alone = compare_flow(opt, problem.loss, problem.theta0, flow, hs, T)
        assert joint.flow == alone.flow and joint.start == alone.start
        for e_joint, e_alone, f_joint, f_alone in zip(joint.max_error, alone.max_error, joint.solver_floor,
                                                      alone.solver_floor):
            assert abs(e_joint - e_alone) <= 10 * max(f_joint, f_alone) + 1e-16
        assert joint.verdict.verdict == alone.verdict.verdict


@pytest.fixture
def export_dir(tmp_path, monkeypatch):
    """A private directory for the stored solves, and an empty in-process memo."""
    monkeypatch.setattr(_exported, "_directory", lambda: str(tmp_path))
    monkeypatch.setattr(_exported, "_PROGRAMS", collections.OrderedDict())
    monkeypatch.setattr(_exported, "_KEYS", collections.OrderedDict())
    return tmp_path


def test_a_stored_solve_gives_the_traced_values(export_dir, monkeypatch):
    y0 = np.array([0.3, 0.6])
    first, floor = solve_on_grid(_logistic(), y0, 0.01, 50, pad_to=60)
    entries = list(export_dir.glob("*.bin"))
    assert len(entries) == 1
    # a fresh memo, and a solve that must not be traced: the stored program answers
    monkeypatch.setattr(_exported, "_PROGRAMS", collections.OrderedDict())
    monkeypatch.setattr(_exported, "_KEYS", collections.OrderedDict())
    calls = []
    monkeypatch.setattr("modeq.solve._ode._solve_dense", lambda *a, **k: calls.append(1) / 0)
    again, floor_again = solve_on_grid(_logistic(), y0, 0.01, 50, pad_to=60)
    assert calls == []
    np.testing.assert_array_equal(again, first)
    # a corrupt entry is traced again and replaced
    monkeypatch.undo()
    monkeypatch.setattr(_exported, "_directory", lambda: str(export_dir))
    monkeypatch.setattr(_exported, "_PROGRAMS", collections.OrderedDict())
    monkeypatch.setattr(_exported, "_KEYS", collections.OrderedDict())
    entries[0].write_bytes(b"not a program")
    replaced, _ = solve_on_grid(_logistic(), y0, 0.01, 50, pad_to=60)
    np.testing.assert_array_equal(replaced, first)
    assert entries[0].stat().st_size > 1000


def test_two_plain_function_fields_do_not_share_a_program(export_dir):
    """A plain function has no array leaves: its identity, not only its (empty) structure, selects the program."""
    y0 = np.array([0.3, 0.6])
    decay = solve_on_grid(lambda y: -y, y0, 0.01, 50, pad_to=60)[0]
    growth = solve_on_grid(lambda y: y, y0, 0.01, 50, pad_to=60)[0]
    t = np.arange(51)[:, None] * 0.01
    np.testing.assert_allclose(decay, y0 * np.exp(-t), rtol=1e-12)
    np.testing.assert_allclose(growth, y0 * np.exp(t), rtol=1e-12)
    assert len(list(export_dir.glob("*.bin"))) == 2


def _key(field, y0=np.zeros(2)):
    import equinox as eqx

    dyn, static = eqx.partition(field, eqx.is_array)
    leaves, treedef = jax.tree.flatten(dyn)
    return _exported._field_key(static, tuple(leaves), treedef, jnp.asarray(y0), ("settings",))


def test_the_key_changes_with_every_constant_of_the_field():
    from modeq.flows import modified_field
    from modeq.optimizers import OPTIMIZERS
    from modeq.problems import product

    def key(beta=0.9, y=1.5, order=2, h=1e-3):
        return _key(modified_field(OPTIMIZERS["hb"](beta=beta), product(y=y).loss, h=h, order=order))

    base = key()
    assert base is not None and base == key()  # the same field rebuilt: the same key
    assert base == key(h=2e-3)  # h is an input of the program, not a constant
    assert key(beta=0.9 + 1e-12) != base
    assert key(y=1.5 + 1e-13) != base  # the loss's data
    assert key(order=3) != base


def _nested_data_field(first):
    data = jnp.asarray(np.array([first, 1.0]))

    @jax.jit
    def weights():  # a jitted helper closing over data: the array lives in the nested jaxpr, not in the printed text
        return data / jnp.sum(data)

    return VectorField(fn=lambda y, h: -weights() * y, h=jnp.asarray(0.1))


def _key_field(seed):
    weights = jax.random.uniform(jax.random.key(seed), (2,))  # a typed PRNG key is a constant of the field
    return VectorField(fn=lambda y, h: -(weights + jax.random.uniform(jax.random.key(seed), (2,))) * y,
                       h=jnp.asarray(0.1))


def test_the_key_sees_data_in_nested_jaxprs_and_prng_keys():
    assert _key(_nested_data_field(1.5)) != _key(_nested_data_field(2.5))
    keys = [_key(_key_field(0)), _key(_key_field(0)), _key(_key_field(1))]
    assert keys[0] is not None and keys[0] == keys[1] != keys[2]


def test_a_stored_program_that_cannot_run_falls_back_to_tracing(export_dir, monkeypatch):
    y0 = np.array([0.3, 0.6])
    first, _ = solve_on_grid(_logistic(), y0, 0.01, 50, pad_to=60)
    for key in list(_exported._PROGRAMS):  # e.g. exported for another platform
        _exported._PROGRAMS[key] = lambda *args: (_ for _ in ()).throw(ValueError("exported for platforms cuda"))
    again, _ = solve_on_grid(_logistic(), y0, 0.01, 50, pad_to=60)
    np.testing.assert_allclose(again, first, rtol=1e-13, atol=1e-15)


def test_a_field_with_large_data_is_not_stored():
    big = jnp.ones(_exported.MAX_CONSTANT_BYTES // 8 + 1)  # float64: just over the limit
    small = jnp.ones(16)
    assert _key(VectorField(fn=lambda y, h: -y * big[:2], h=jnp.asarray(0.1))) is None
    assert _key(VectorField(fn=lambda y, h: -y * small[:2], h=jnp.asarray(0.1))) is not None


def test_the_stored_solves_are_off_with_the_compilation_cache(monkeypatch):
    monkeypatch.setenv("MODEQ_NO_COMPILATION_CACHE", "1")
    assert _exported._directory() is None


STUDY = """
import json, sys
import numpy as np
from modeq.optimizers import OPTIMIZERS
from modeq.problems import product
from modeq.studies import flow_study
p = product()
study = flow_study(OPTIMIZERS["hb"](beta=0.9), p.loss, p.theta0, hs=[1e-4, 5e-5], T=0.01)
print(json.dumps({"errors": [r.max_error for r in study.results], "diffrax": "diffrax" in sys.modules}))
"""


def test_a_later_process_runs_the_stored_solve(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEQ_", "JAX_COMPILATION"))}
    env["MODEQ_COMPILATION_CACHE_DIR"] = str(tmp_path)

    def run():
        out = subprocess.run([sys.executable, "-c", STUDY], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold, warm = run(), run()
    assert cold["diffrax"] and not warm["diffrax"]  # the key is reproducible across processes: nothing traced diffrax
    assert warm["errors"] == cold["errors"]  # the same stored program ran in both processes
    assert len(list((tmp_path / _exported.SUBDIR).glob("*.bin"))) == 1  # one stacked solve for the three flows


def test_compiled_shooting_equals_the_host_newton_loop(monkeypatch):
    from modeq.series import _start

    opt, problem = _study_inputs()
    fast = _start.slow_manifold_start(opt, problem.loss, problem.theta0, 1e-4)
    monkeypatch.setattr(_start, "MAX_SHOOTING_DIM", 0)  # the host loop (GMRES on Jacobian-vector products)
    host = _start.slow_manifold_start(opt, problem.loss, problem.theta0, 1e-4)
    assert fast.method == host.method == "fixed point"
    for a, b in zip(fast.momenta, host.momenta):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-11, atol=1e-14)
    assert modeq  # the package imported (lazy subpackages above)
