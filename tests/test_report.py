"""`modeq report`: one self-contained HTML page, checked in a real headless browser (Chromium).

The browser test opens the page, lets an injected script record every image's ``naturalWidth`` after the load event
into the DOM (``--dump-dom``), and takes a screenshot that must not be blank. Without Chromium the browser tests skip,
except under CI (environment variable ``CI`` set), where Chromium is installed by ``.ci/run`` and a missing browser is
a failure.
"""

import json
import re
import subprocess

import numpy as np
import pytest
from _browser import find_browser
from typer.testing import CliRunner

from modeq.cli import app

# Small on purpose: 3 step sizes (so the fit has an interval), a short horizon, two flows.
ARGS = ["report", "--loss", "product", "--optimizer", "gd", "--h", "0.01,0.005,0.0025", "--T", "0.2",
        "--flow", "gradient,modified:2", "--reg-steps", "20", "--quiet"]

CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("img").forEach(function (im) {
    out.push({id: im.id, complete: im.complete, width: im.naturalWidth, height: im.naturalHeight});
  });
  var pre = document.createElement("pre");
  pre.id = "img-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _browser():
    return find_browser()


def _chromium(browser, *args, timeout=60):
    import tempfile

    with tempfile.TemporaryDirectory() as profile:  # own profile: parallel test workers do not share one
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
               "--no-first-run", "--mute-audio", f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _image_status(browser, html_path, tmp_path):
    """Open ``html_path`` (with the check script injected) and return the list the script wrote into the DOM."""
    text = html_path.read_text(encoding="utf-8")
    probe = tmp_path / ("probe-" + html_path.name)
    probe.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    proc = _chromium(browser, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    match = re.search(r'<pre id="img-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the check script did not run; chromium exit {proc.returncode}, stderr: {proc.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = CliRunner().invoke(app, [*ARGS, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_report_is_one_self_contained_page(report):
    path, data = report
    text = path.read_text(encoding="utf-8")
    for heading in ("1. Convergence study", "2. Principal flow", "3. Implicit regularizer", "Environment", "explicit-command"):
        assert heading in text
    images = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(images) == 4  # convergence, error curves, principal flow, regularizer
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:|//)', text), "the page must not load anything from the network"
    for name in ("jax", "diffrax", "equinox", "numpy", "machine"):
        assert f"<td class=\"l\">{name}</td>" in text
    # fitted orders with intervals, on the page and in the JSON
    results = data["convergence"]["results"]
    assert [r["flow"] for r in results] == ["gradient", "modified:2"]
    for r in results:
        assert abs(r["fitted_order"] - r["order"]) < 0.15
        lo, hi = r["fitted_order_ci"]
        assert f"[{lo:.3f}, {hi:.3f}]" in text
    assert data["principal"]["max_error"] < 1e-3 and data["principal"]["skipped"] is None
    assert data["regularizer"]["modified_loss"]["terms"]
    assert data["out"] == str(path)
    # the explicit command on the page parses as a `modeq report` command line with the same settings
    import html
    import shlex

    import typer.main

    explicit = shlex.split(html.unescape(re.search(r'<pre id="explicit-command">(.*?)</pre>', text, re.S).group(1)))
    assert explicit[:2] == ["modeq", "report"]
    ctx = typer.main.get_command(app).commands["report"].make_context("report", explicit[2:])
    assert ctx.params["h"] == "0.01,0.005,0.0025" and ctx.params["flow"] == ["gradient,modified:2"]


def test_report_skips_the_principal_flow_for_other_optimizers_and_survives_failures(monkeypatch):
    """Nesterov: no principal flow (the page says why); a section that raises is reported and the page still builds.
    The two other analyses are stubbed to fail, so that this test compiles nothing."""
    import modeq.report._run as run_module
    from modeq import optimizers, problems
    from modeq.report import render_html, run_report

    def fail(*args, **kwargs):
        raise FloatingPointError("the optimizer diverged at step 3 for h = 0.002")

    monkeypatch.setattr(run_module, "flow_study", fail)
    monkeypatch.setattr("modeq.regularizers.regularizer_report", fail)
    report = run_report(optimizers.nesterov(0.5), problems.product(), hs=[0.002, 0.001], T=0.02)
    assert report.principal.result is None and report.principal.error is None
    assert report.principal.skipped.startswith("skipped: modeq defines the principal flow for gradient descent")
    assert "diverged at step 3" in report.convergence.error and "diverged" in report.regularizer.error
    page = render_html(report, command="modeq report --optimizer nesterov")
    assert "gradient descent and heavy-ball only" in page and page.count("This section failed") == 2
    assert "<img" not in page
    data = report.to_dict()
    assert data["principal"]["skipped"] and data["convergence"]["error"]
    json.dumps(data)


def test_report_bad_input_is_one_line():
    result = CliRunner().invoke(app, ["report", "--flow", "spline", "--quiet"])
    assert result.exit_code == 2 and "flow must be" in result.output


def test_report_figures_load_in_headless_chromium(report, tmp_path):
    browser = _browser()
    path, _ = report
    status = _image_status(browser, path, tmp_path)
    assert [s["id"] for s in status] == ["fig-convergence", "fig-error-curves", "fig-principal", "fig-regularizer"]
    for s in status:
        assert s["complete"] and s["width"] > 100 and s["height"] > 100, s

    shot = tmp_path / "page.png"
    proc = _chromium(browser, "--window-size=1200,2400", f"--screenshot={shot}", path.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    non_white = np.mean(np.any(pixels < 0.9, axis=-1))
    assert pixels.std() > 0.05 and non_white > 0.02, (pixels.std(), non_white)


def test_the_browser_check_detects_a_broken_image(tmp_path):
    """The check above is not vacuous: a corrupt PNG gives naturalWidth 0 in the same probe."""
    browser = _browser()
    import base64
    import io

    import matplotlib.image

    buf = io.BytesIO()
    matplotlib.image.imsave(buf, np.zeros((3, 5)), format="png")
    good = base64.b64encode(buf.getvalue()).decode()
    page = tmp_path / "broken.html"
    page.write_text(f'<!DOCTYPE html><html><body><img id="good" src="data:image/png;base64,{good}">'
                    f'<img id="bad" src="data:image/png;base64,iVBORw0KGgoAAAAbroken"></body></html>')
    status = {s["id"]: s for s in _image_status(browser, page, tmp_path)}
    assert (status["good"]["width"], status["good"]["height"]) == (5, 3)
    assert status["bad"]["width"] == 0
