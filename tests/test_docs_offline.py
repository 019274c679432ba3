"""The documentation site works offline: its formulas render with no network (issue 14, item 3).

The site is built with ``mkdocs build --strict`` into a temporary folder. Two checks:

* static: no page of the built site loads a script, stylesheet, font or image from another host (MathJax is bundled
  in ``docs/javascripts/``, the theme's web font is off);
* in a browser: a few pages (the home page, a builder page and a theory page full of formulas, an API page rendered
  from docstrings) are opened in headless Chromium with the network cut (every host name resolves to nothing, every
  connection goes to a dead proxy), and the DOM after MathJax ran must hold rendered math (``mjx-container``) for
  every formula the page has (``.arithmatex`` element), no MathJax error, and no raw TeX delimiter
  (``\\(``, ``\\[``, ``$$``) left in the visible text. The four pages render concurrently.

Control: with MathJax loaded from a CDN instead (the former ``mkdocs.yml``), this check finds 0 of 75 formulas rendered
on the builder page and raw ``\\(`` in its text; a docstring with doubled backslashes in raw TeX shows up as MathJax
errors.

Without Chromium the browser check skips, except under CI (environment variable ``CI`` set), where ``.ci/run`` installs
Chromium and a missing browser is a failure (as in tests/test_report.py). Without mkdocs (the ``docs`` extra) the
module skips.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _browser import find_browser

ROOT = Path(__file__).resolve().parents[1]
# home page; a builder page with display and inline formulas; a theory page; an API page (formulas from docstrings)
PAGES = ("index.html", "builders/modified_field/index.html", "theory/slow_sde/index.html", "api/series/index.html")
# the network is off: no host name resolves, and any connection that still tries goes to a closed port
OFFLINE = ("--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost")
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$")
SKIP_TEXT = {"script", "style", "pre", "code", "textarea", "mjx-container", "svg", "math"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@pytest.fixture(scope="module")
def site():
    """The site, built once for the module (about 5 s)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", out],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        yield Path(out)


def _browser():
    return find_browser()


def _rendered_dom(browser, page: Path) -> str:
    """The DOM of ``page`` after its scripts ran, in headless Chromium with the network off."""
    with tempfile.TemporaryDirectory() as profile:  # own profile: parallel test workers do not share one
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--mute-audio", "--disable-extensions", "--disable-background-networking", "--disable-component-update",
               f"--user-data-dir={profile}", *OFFLINE, "--virtual-time-budget=15000", "--dump-dom", page.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert "</html>" in proc.stdout, f"chromium exit {proc.returncode}, no DOM; stderr: {proc.stderr[-2000:]}"
    return proc.stdout


class _MathAudit(HTMLParser):
    """Counts formulas (``.arithmatex``), rendered formulas (a ``mjx-container`` inside one), MathJax errors, and
    collects the visible text outside code, scripts and rendered math."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, is an arithmatex element)
        self.formulas = 0
        self.rendered = 0
        self.errors = 0
        self.text: list[str] = []
        self._pending: list[bool] = []  # per open arithmatex element: has it a mjx-container yet

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "mjx-merror" or "data-mjx-error" in attrs:
            self.errors += 1
        if tag == "mjx-container" and self._pending and not self._pending[-1]:
            self._pending[-1] = True
            self.rendered += 1
        if tag in VOID:
            return
        is_math = "arithmatex" in classes
        if is_math:
            self.formulas += 1
            self._pending.append(False)
        self.stack.append((tag, is_math))

    def handle_endtag(self, tag):
        while self.stack:
            open_tag, is_math = self.stack.pop()
            if is_math:
                self._pending.pop()
            if open_tag == tag:
                break

    def handle_data(self, data):
        if not any(t in SKIP_TEXT for t, _ in self.stack):
            self.text.append(data)


def test_no_page_loads_anything_from_another_host(site):
    remote = re.compile(r'<(script|link|img|iframe|source)\b[^>]*\b(src|href)="((?:https?:)?//[^"]+)"', re.I)
    bad = []
    for page in sorted(site.rglob("*.html")):
        for tag, _, url in remote.findall(page.read_text(encoding="utf-8")):
            bad.append(f"{page.relative_to(site)}: <{tag}> {url}")
    assert not bad, "pages that need the network:\n" + "\n".join(bad[:20])
    assert (site / "javascripts" / "tex-svg-full.js").stat().st_size > 1_000_000, "the bundled MathJax is missing"


def _problems(name: str, built: str, dom: str) -> list:
    """What is wrong with page ``name`` after MathJax ran (empty: every formula rendered offline)."""
    source = _MathAudit()
    source.feed(built)
    if source.formulas < 3:
        return [f"{name} has {source.formulas} formulas: pick a page with math"]
    audit = _MathAudit()
    audit.feed(dom)
    visible = " ".join(audit.text)
    raw = RAW_TEX.search(visible)
    problems = []
    if audit.formulas != source.formulas:
        problems.append(f"{name}: {audit.formulas} formulas in the DOM, {source.formulas} in the built page")
    if audit.rendered != audit.formulas:
        problems.append(f"{name}: MathJax rendered {audit.rendered} of {audit.formulas} formulas offline")
    if audit.errors:
        problems.append(f"{name}: {audit.errors} MathJax errors (bad TeX in the page or a docstring)")
    if raw:
        context = visible[max(0, raw.start() - 80):raw.start() + 80]
        problems.append(f"{name}: raw TeX {raw.group(0)!r} left in the text: ...{context}...")
    return problems


def test_formulas_render_offline_in_headless_chromium(site):
    browser = _browser()
    pages = [site / name for name in PAGES]
    missing = [name for name, page in zip(PAGES, pages) if not page.is_file()]
    assert not missing, f"not in the built site: {missing}"
    # the pages render concurrently (one Chromium each): under load this halves the wall time
    with ThreadPoolExecutor(len(pages)) as pool:
        doms = list(pool.map(lambda page: _rendered_dom(browser, page), pages))
    problems = [p for name, page, dom in zip(PAGES, pages, doms)
                for p in _problems(name, page.read_text(encoding="utf-8"), dom)]
    assert not problems, "\n".join(problems)
