"""Bad and edge input, as a careful user types it: every command and the main Python entry points.

Each CLI case asserts exit code 2, exactly one line ``error: ...``, the parameter's name in it and no traceback
(run in-process with typer's CliRunner: fast). Output paths are refused before any computation. The Python cases
assert the documented exception and the parameter's name. A hypothesis property test covers the ``--param``
parser, and one subprocess test sends SIGINT to a running ``modeq compare``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from modeq._params import build_optimizer, parse_params
from modeq.cli import app

runner = CliRunner()

LOSSES = textwrap.dedent(
    """
    import pathlib
    import jax.numpy as jnp

    THETA0 = [1.0, 2.0]
    MARKER = pathlib.Path(__file__).with_suffix(".imported")
    MARKER.write_text("imported")  # proves the file was (or was not) imported

    def good(t):
        return jnp.sum(t ** 2)

    def nan_at_start(t):
        return jnp.sum(t ** 2) * jnp.nan

    def inf_gradient(t):
        return jnp.sum(jnp.sqrt(jnp.abs(t - 1.0)))

    def raises(t):
        raise ValueError("bad [/x] [bold]markup[/bold] in a message")

    def vector(t):
        return t * 2

    def integer(t):
        return jnp.sum(t).astype(jnp.int32)

    def log_loss(t):
        return jnp.sum(jnp.log(t))

    NOT_CALLABLE = 3
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    (root / "losses.py").write_text(LOSSES)
    for name, body in {
        "nan_theta0.py": "THETA0 = [float('nan'), 1.0]\n",
        "empty_theta0.py": "THETA0 = []\n",
        "text_theta0.py": "THETA0 = ['a', 'b']\n",
        "no_theta0.py": "",
    }.items():
        (root / name).write_text(body + "import jax.numpy as jnp\ndef f(t):\n    return jnp.sum(t ** 2)\n")
    odd = root / "[" / "x]"  # a path containing "[/x]": rich markup if printed unescaped
    odd.mkdir(parents=True)
    (odd / "odd.py").write_text(LOSSES)
    (root / "folder.json").mkdir()
    return root


def one_error_line(out, *fragments):
    text = out.output
    assert out.exit_code == 2, text
    assert "Traceback" not in text and out.exception is None or isinstance(out.exception, SystemExit), text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# --- output paths: checked before any computation, for every command ------------------------------------------------

COMMANDS = {  # the cheapest valid invocation of each command
    "problems": ["problems"],
    "run": ["run", "--steps", "3"],
    "compare": ["compare", "--optimizer", "gd", "--h", "0.1,0.05", "--T", "0.2", "--flow", "modified:1"],
    "coefficients": ["coefficients", "--order", "2"],
    "principal-flow": ["principal-flow", "--h", "0.1", "--T", "0.2"],
    "regularizer": ["regularizer", "--steps", "3"],
    "sde": ["sde", "--eta", "0.2,0.1", "--T", "0.2", "--paths", "8"],
    "slow-sde": ["slow-sde", "--eta", "0.2,0.1", "--T", "0.01", "--paths", "2"],
    "report": ["report", "--h", "0.1,0.05", "--T", "0.2"],
    "central-flow": ["central-flow"],
}
PLOTTING = ["compare", "principal-flow", "regularizer", "sde", "slow-sde", "central-flow"]


def test_every_command_is_covered():
    import typer.main

    assert set(typer.main.get_command(app).commands) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("target, fragment", [
    ("folder.json", "folder"),
    ("missing/out.json", "does not exist"),
    ("out.txt", ".json"),
])
def test_json_path_refused_before_computation(files, command, target, fragment):
    marker = files / "losses.imported"
    marker.unlink(missing_ok=True)
    args = list(COMMANDS[command])
    if command in ("run", "compare", "principal-flow", "regularizer", "report"):
        args += ["--loss", f"{files / 'losses.py'}:good"]
    start = time.perf_counter()
    line = one_error_line(invoke(*args, "--json", files / target, "--quiet"), "--json", fragment)
    assert str(files / target) in line or target in line
    assert not marker.exists()  # refused before the loss was even imported
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("command", PLOTTING)
@pytest.mark.parametrize("target, fragment", [("missing/plot.png", "does not exist"), ("plot.txt", ".png")])
def test_plot_path_refused_before_computation(files, command, target, fragment):
    one_error_line(invoke(*COMMANDS[command], "--plot", files / target, "--quiet"), "--plot", fragment)


@pytest.mark.parametrize("target, fragment", [
    ("missing/report.html", "does not exist"), ("report.txt", ".html"), ("folder.json", "folder"),
])
def test_report_out_refused_before_computation(files, target, fragment):
    start = time.perf_counter()
    one_error_line(invoke(*COMMANDS["report"], "--out", files / target, "--quiet"), "--out", fragment)
    assert time.perf_counter() - start < 5.0  # was a traceback after the whole 27 s computation


def test_unwritable_folder_is_refused():
    one_error_line(invoke("run", "--steps", "2", "--json", "/proc/modeq-out.json"), "--json", "cannot write")


def test_json_is_written_atomically_and_strict(tmp_path):
    path = tmp_path / "run.json"
    out = invoke("run", "--steps", "3", "--json", path, "--quiet")
    assert out.exit_code == 0, out.output
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


# --- parameters -----------------------------------------------------------------------------------------------------

CASES = [
    # run: hyperparameters
    (["run", "--param", "lr=0.5", "--param", "h=0.01"], ["'h'", "'lr'"]),
    (["run", "--param", "learning_rate=0.5", "--param", "h=0.01"], ["'h'", "'learning_rate'"]),
    (["run", "--param", "beta=0.5", "--param", "beta=0.7"], ["beta=0.5", "beta=0.7"]),
    (["run", "--param", "beta=0.5,beta=0.5"], ["'beta' given twice"]),
    (["run", "--param", "beta="], ["'beta'", "no value"]),
    (["run", "--param", "beta"], ["param", "key=value"]),
    (["run", "--param", "=1"], ["param", "key=value"]),
    (["run", "--param", "gamma=1"], ["'gamma'"]),
    (["run", "--param", "beta=1.5"], ["beta"]),
    (["run", "--param", "beta=abc"], ["beta"]),
    (["run", "--param", "h=-1"], ["h must be > 0"]),
    (["run", "--param", "h=0"], ["h must be > 0"]),
    (["run", "--param", "h=nan"], ["h must be finite"]),
    (["run", "--param", "h=inf"], ["h must be finite"]),
    (["run", "--optimizer", "adamax"], ["optimizer"]),
    (["run", "--optimizer", ""], ["optimizer"]),
    # run: steps, momentum start
    (["run", "--steps", "0"], ["steps"]),
    (["run", "--steps", "-5"], ["steps"]),
    (["run", "--steps", "abc"], ["--steps"]),
    (["run", "--steps", "1e7"], ["--steps"]),
    (["run", "--steps", "1000000000"], ["steps must be <=", "GB"]),
    (["run", "--m0", "warm"], ["m0"]),
    # run: theta0
    (["run", "--theta0", ""], ["theta0", "empty"]),
    (["run", "--theta0", " , "], ["theta0"]),
    (["run", "--theta0", "1,,2"], ["theta0", "empty entry"]),
    (["run", "--theta0", "nan,1"], ["theta0", "finite"]),
    (["run", "--theta0", "1,inf"], ["theta0", "finite"]),
    (["run", "--theta0", "a,b"], ["theta0"]),
    (["run", "--theta0", "1,2,3"], ["theta0 must have 2 entries"]),
    # run: built-in problems, options and sizes
    (["run", "--loss", "nosuch"], ["loss", "unknown problem"]),
    (["run", "--loss", ""], ["loss"]),
    (["run", "--loss", "product:z=1"], ["'z'", "valid: x="]),
    (["run", "--loss", "product:x"], ["loss", "key=value"]),
    (["run", "--loss", "product:x=1,x=2"], ["'x'", "twice"]),
    (["run", "--loss", "mlp:d=1e12"], ["d must be <=", "TB"]),
    (["run", "--loss", "mlp:d=5"], ["d must be an integer >="]),
    (["run", "--loss", "mlp:n=0"], ["n must be"]),
    (["run", "--loss", "quadratic:d=100000"], ["d must be <=", "dense"]),
    (["run", "--loss", "quadratic:d=0"], ["d must be"]),
    (["run", "--loss", "quadratic:d=2.5"], ["d must be an integer"]),
    (["run", "--loss", "logistic:n=0"], ["n must be"]),
    (["run", "--loss", "linear:n=20,d=10"], ["n < d"]),
    (["run", "--loss", "diagonal_net:d=1"], ["d must be"]),
    (["run", "--loss", "rosenbrock:stiffness=-1"], ["stiffness"]),
    (["run", "--loss", "nosuch_module_xyz:f"], ["loss", "cannot import module"]),
    (["run", "--loss", "/no/such/file.py:f"], ["loss", "does not exist"]),
    (["run", "--loss", "modeq.problems:nosuch"], ["loss", "no attribute"]),
    # compare: step sizes belong to --h; orders are bounded
    (["compare", "--param", "h=0.5"], ["'h'", "--h"]),
    (["compare", "--param", "lr=0.5"], ["'lr'", "--h"]),
    (["compare", "--param", "beta=0.5", "--param", "beta=0.7"], ["beta=0.5", "beta=0.7"]),
    (["compare", "--flow", "modified:100"], ["order", "<= 8"]),
    (["compare", "--flow", "memoryless:50"], ["order", "<= 8"]),
    (["compare", "--flow", "modified:x"], ["flow"]),
    (["compare", "--flow", "nosuch"], ["flow"]),
    (["compare", "--h", ""], ["h"]),
    (["compare", "--h", "abc"], ["h"]),
    (["compare", "--h", "0.1,-0.1"], ["h must be > 0"]),
    (["compare", "--h", "0.1,0.1"], ["h", "repeated"]),
    (["compare", "--theta0", ""], ["theta0"]),
    # coefficients: bounded orders
    (["coefficients", "--optimizer", "gd", "--order", "25"], ["order must be <= 12", "trees"]),
    (["coefficients", "--optimizer", "gd", "--order", "15"], ["order must be <= 12", "141,083"]),
    (["coefficients", "--optimizer", "hb", "--order", "12"], ["order must be <= 9"]),
    (["coefficients", "--optimizer", "hb", "--kind", "memoryless", "--order", "11"], ["order must be <= 10"]),
    (["coefficients", "--order", "0"], ["order"]),
    (["coefficients", "--optimizer", "adam"], ["optimizer"]),
    (["coefficients", "--kind", "memoryless"], ["kind"]),
    (["coefficients", "--optimizer", "hb", "--kind", "bad"], ["kind"]),
    # regularizer: one step size
    (["regularizer", "--h", "0.5", "--param", "h=0.01"], ["h=0.01", "--h 0.5"]),
    (["regularizer", "--h", "0.5", "--param", "lr=0.01"], ["lr=0.01", "--h 0.5"]),
    (["regularizer", "--param", "h=0.5", "--param", "lr=0.01"], ["'h'", "'lr'"]),
    (["regularizer", "--h", "-1"], ["h must be > 0"]),
    (["regularizer", "--steps", "0"], ["steps"]),
    (["regularizer", "--steps", "2000000"], ["steps must be <="]),
    (["regularizer", "--form", "bad"], ["form"]),
    (["regularizer", "--optimizer", "nosuch"], ["optimizer"]),
    # the other commands share the parser and the problem checks
    (["principal-flow", "--param", "h=0.1"], ["'h'", "--h"]),
    (["principal-flow", "--theta0", "nan,1"], ["theta0"]),
    (["principal-flow", "--loss", "mlp:d=1e12"], ["d must be <="]),
    (["sde", "--param", "h=0.1"], ["'h'", "--h"]),
    (["sde", "--eta", ""], ["eta"]),
    (["sde", "--eta", "abc"], ["eta"]),
    (["sde", "--theta0", ""], ["theta0"]),
    (["sde", "--noise-param", "sigma="], ["'sigma'", "no value"]),
    (["slow-sde", "--eta", "-0.1"], ["eta must be > 0"]),
    (["slow-sde", "--noise-param", "delta=1", "--noise-param", "delta=2"], ["delta=1", "delta=2"]),
    (["report", "--param", "h=0.1"], ["'h'", "--h"]),
    (["report", "--h", "abc"], ["h"]),
    (["report", "--loss", "nosuch"], ["loss"]),
    # parsing
    (["nosuch-command"], ["nosuch-command"]),
    (["run", "--bogus", "1"], ["--bogus"]),
    (["compare", "--T", "abc"], ["--T"]),
]


@pytest.mark.parametrize("args, fragments", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_parameter_is_one_error_line(args, fragments):
    one_error_line(invoke(*args, "--quiet") if args[0] in COMMANDS else invoke(*args), *fragments)


# --- user loss files -------------------------------------------------------------------------------------------------

FILE_CASES = [
    ("losses.py:nan_at_start", ["loss", "not finite"]),
    ("losses.py:inf_gradient", ["loss", "gradient", "not finite"]),
    ("losses.py:raises", ["loss", "[/x] [bold]markup[/bold]"]),
    ("losses.py:vector", ["must return a scalar"]),
    ("losses.py:integer", ["real floating-point"]),
    ("losses.py:NOT_CALLABLE", ["loss", "not callable"]),
    ("losses.py:nosuch", ["loss", "no attribute"]),
    ("nan_theta0.py:f", ["theta0", "THETA0", "finite"]),
    ("empty_theta0.py:f", ["theta0", "THETA0", "empty"]),
    ("text_theta0.py:f", ["theta0", "THETA0"]),
    ("no_theta0.py:f", ["theta0", "THETA0"]),
    ("[/x]/odd.py:raises", ["[/x]", "markup"]),
]


@pytest.mark.parametrize("command", ["run", "regularizer"])
@pytest.mark.parametrize("spec, fragments", FILE_CASES, ids=[s for s, _ in FILE_CASES])
def test_bad_user_loss_is_one_error_line(files, command, spec, fragments):
    one_error_line(invoke(command, "--loss", f"{files}/{spec}", "--steps", "3", "--quiet"), *fragments)


def test_markup_in_paths_is_printed_verbatim(files):
    out = invoke("run", "--loss", f"{files}/[/x]/odd.py:good", "--steps", "3")
    assert out.exit_code == 0, out.output
    assert "[/x]/odd.py:good" in out.output


def test_run_reports_divergence_with_the_last_finite_value(files, tmp_path):
    path = tmp_path / "run.json"
    out = invoke("run", "--optimizer", "gd", "--param", "h=0.6", "--loss", f"{files}/losses.py:log_loss",
                 "--steps", "50", "--json", path, "--quiet")
    assert out.exit_code == 0, out.output
    assert "diverged at step" in out.output and "last finite loss" in out.output
    assert "nan" not in out.output.lower().replace("nan_", "")
    data = json.loads(path.read_text())
    assert data["diverged_at"] is not None and data["verdict"] == "diverged"
    assert all(np.isfinite(data["loss_history"])) and data["last_finite_loss"] == data["loss_history"][-1]


def test_quiet_hides_progress_but_not_warnings(files):
    out = invoke("run", "--optimizer", "gd", "--param", "h=0.6", "--loss", f"{files}/losses.py:log_loss",
                 "--steps", "50", "--quiet")
    assert "warning: diverged" in out.output


# --- Python entry points ---------------------------------------------------------------------------------------------


def _quadratic(t):
    return 0.5 * jnp.sum(t**2)


def _python_cases():
    from modeq import flows, problems, regularizers
    from modeq.optimizers import gd, heavy_ball
    from modeq.problems import check_scalar_loss, resolve_problem

    return [
        (lambda: resolve_problem("product", theta0=[]), ValueError, "theta0"),
        (lambda: resolve_problem("product", theta0=[np.nan, 1.0]), ValueError, "theta0"),
        (lambda: resolve_problem("product", theta0=[[1.0, 2.0], [3.0, 4.0]]), ValueError, "theta0"),
        (lambda: resolve_problem("", theta0=None), ValueError, "loss"),
        (lambda: check_scalar_loss(lambda t: jnp.sum(t) * jnp.inf, jnp.ones(2)), ValueError, "loss"),
        (lambda: check_scalar_loss(lambda t: jnp.sum(jnp.sqrt(jnp.abs(t))), jnp.zeros(2)), ValueError, "gradient"),
        (lambda: check_scalar_loss(_quadratic, jnp.zeros(0)), ValueError, "theta0"),
        (lambda: check_scalar_loss(_quadratic, {}), ValueError, "theta0"),
        (lambda: problems.mlp(d=10**12), ValueError, "d must be <="),
        (lambda: problems.quadratic(d=10**5), ValueError, "d must be <="),
        (lambda: problems.logistic(n=10**6, d=10**3), ValueError, "d must be <="),
        (lambda: flows.modified_field(gd(), _quadratic, h=0.1, order=100), ValueError, "order must be <= 8"),
        (lambda: flows.memoryless_map(heavy_ball(0.5), _quadratic, h=0.1, order=9), ValueError, "order"),
        (lambda: flows.modified_field(gd(), _quadratic, h=-0.1, order=2), ValueError, "h"),
        (lambda: flows.modified_field(gd(), _quadratic, h=0.1, order=2, truncation="x"), ValueError, "truncation"),
        (lambda: regularizers.modified_loss(gd(), _quadratic, h=-1.0), ValueError, "h"),
        (lambda: parse_params(["a=1", "a=2"]), ValueError, "'a' given twice"),
        (lambda: parse_params(["a="], option="noise-param"), ValueError, "noise-param: 'a'"),
        (lambda: build_optimizer("hb", {"h": 0.1, "lr": 0.2}, default_h=0.01), ValueError, "'h' and 'lr'"),
        (lambda: build_optimizer("hb", {"h": 0.1}), ValueError, "--h"),
        (lambda: build_optimizer("nosuch", {}), ValueError, "optimizer"),
        (lambda: build_optimizer(None, {}), TypeError, "optimizer"),
    ]


@pytest.mark.parametrize("index", range(22))
def test_python_entry_points_raise_the_documented_error(index):
    fn, exc, fragment = _python_cases()[index]
    with pytest.raises(exc, match=None) as info:
        fn()
    assert fragment in str(info.value), str(info.value)


def test_pytree_losses_in_the_builders():
    """A loss on a parameter pytree works as it is: the same numbers as on the flattened vector."""
    from jax.flatten_util import ravel_pytree

    from modeq import flows, regularizers
    from modeq.optimizers import heavy_ball

    tree = {"w": jnp.array([[0.3, -0.2], [0.1, 0.4]]), "b": jnp.array(0.5)}

    def loss(p):
        return jnp.sum(jnp.tanh(p["w"] @ jnp.array([1.0, 2.0]) + p["b"]) ** 2)

    flat, unravel = ravel_pytree(tree)

    def flat_loss(v):
        return loss(unravel(v))

    opt = heavy_ball(0.5)
    for build in (flows.modified_field, flows.memoryless_map):
        on_tree = build(opt, loss, h=1e-3, order=2, truncation="direct")(tree)
        assert set(on_tree) == {"w", "b"} and on_tree["w"].shape == (2, 2)
        np.testing.assert_allclose(ravel_pytree(on_tree)[0],
                                   build(opt, flat_loss, h=1e-3, order=2, truncation="direct")(flat), rtol=1e-13)
    m_tree, m_flat = regularizers.modified_loss(opt, loss, h=1e-3), regularizers.modified_loss(opt, flat_loss, h=1e-3)
    assert float(m_tree(tree)) == pytest.approx(float(m_flat(flat)), rel=1e-14)
    np.testing.assert_allclose(ravel_pytree(m_tree.field(tree))[0], m_flat.field(flat), rtol=1e-13)
    assert m_tree.values(tree) == pytest.approx(m_flat.values(flat), rel=1e-13)


# --- the parameter parser (property-based) --------------------------------------------------------------------------

KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
VALUES = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=6), st.integers(1, 3))
def test_parse_params_round_trips(params, per_item):
    items = [f"{k}={v!r}" for k, v in params.items()]
    grouped = [",".join(items[i : i + per_item]) for i in range(0, len(items), per_item)]
    assert parse_params(grouped) == params


@settings(max_examples=100, deadline=None)
@given(KEYS, VALUES, VALUES)
def test_parse_params_refuses_a_repeated_key(key, a, b):
    with pytest.raises(ValueError, match=f"'{key}' given twice"):
        parse_params([f"{key}={a!r}", f"{key}={b!r}"])


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_parse_params_never_crashes(text):
    try:
        out = parse_params([text])
    except ValueError as exc:
        assert str(exc).startswith("param: ")
    else:
        assert all(isinstance(k, str) and k == k.strip() and k for k in out)


# --- interrupts ------------------------------------------------------------------------------------------------------


def test_sigint_ends_compare_with_130_and_a_valid_partial_json(tmp_path, files):
    """Ctrl-C in the middle of a sweep: exit 130 within a few seconds, one line, a valid partial JSON (the heavy-ball
    compare used to run on 35-48 s and then segfault)."""
    marker = files / "losses.imported"
    marker.unlink(missing_ok=True)
    path = tmp_path / "partial.json"
    # a child of a background shell inherits SIGINT ignored: restore Python's handler first (no preexec_fn: no fork)
    entry = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from modeq.cli import main; main()"
    cmd = [sys.executable, "-c", entry, "compare", "--optimizer", "hb",
           "--param", "beta=0.5", "--loss", f"{files}/losses.py:good", "--flow", "modified:2,memoryless:3",
           "--h", "0.001,0.0005,0.00025,0.000125", "--T", "1", "--json", str(path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # inside the computation (compiling or running XLA)
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 130, (proc.returncode, err.decode()[-2000:])
    assert elapsed < 5.0
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), lines
    data = json.loads(path.read_text())
    assert data["interrupted"] is True and data["complete"] is False
    assert data.get("missing") or data.get("finished") == "nothing"
    assert not [p for p in path.parent.iterdir() if p.name != "partial.json"]  # no temporary file left behind


def test_keyboard_interrupt_in_process_is_one_line_and_exit_130(tmp_path):
    """Called from Python (no signal handler installed), a KeyboardInterrupt still ends as ``interrupted``, 130."""
    f = tmp_path / "stop.py"
    f.write_text("THETA0 = [1.0]\ndef loss(t):\n    raise KeyboardInterrupt\n")
    out = invoke("run", "--loss", f"{f}:loss", "--json", tmp_path / "part.json", "--quiet")
    assert out.exit_code == 130, out.output
    assert next(line for line in out.output.splitlines() if line.strip()).startswith("interrupted")
    data = json.loads((tmp_path / "part.json").read_text())
    assert data["interrupted"] is True and data["command"] == "run"


@pytest.mark.parametrize("args, fragment", [([], "Missing command"), (["--bogus"], "--bogus")])
def test_group_level_errors_are_one_line(args, fragment):
    one_error_line(invoke(*args), fragment)
