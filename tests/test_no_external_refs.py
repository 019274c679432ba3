"""No file of the package points outside the repository (issue 14, item 3).

Docstrings, comments, tests, examples, benchmarks and docs cite papers and the theory pages of the documentation
(``docs/theory/*.md``), never the project's working notes that live beside the repository (the theory sheet, the
stack notes, the seed papers' text files) nor an absolute path on a developer's machine. Every citation of a theory
page must name a page that exists, and its ``#anchor`` a heading id of that page (``{#id}`` in the Markdown).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what the repository ships and documents; the bundled MathJax (minified third-party code) is not ours to scan
FILES = sorted(
    p for pattern in ("modeq/**/*.py", "tests/**/*.py", "examples/**/*.py", "benchmarks/**/*.py", "benchmarks/**/*.md",
                      "docs/**/*.md", "docs/**/*.py", "docs/javascripts/mathjax.js", "*.md", "mkdocs.yml",
                      "pyproject.toml", ".ci/*")
    for p in ROOT.glob(pattern) if p.is_file()
)
# written in pieces so that this file does not match itself
SHEET = "THEO" + "RY"
FORBIDDEN = {
    "the external theory sheet": re.compile(r"\b" + SHEET + r"\b"),
    "the external stack notes": re.compile("STA" + r"CK\.md"),
    "the shared working folder": re.compile(r"(?<![\w.])sha" + r"red/|/wo" + "rk/"),
    "the seed papers' local copies": re.compile(r"\bseeds/|\bseed 0\d\d\b|\bLOCAL-0\d\d\b"),
    "a developer's home directory": re.compile(r"/ho" + r"me/\w|/Us" + r"ers/\w"),
}
THEORY_REF = re.compile(r"docs/theory/([\w-]+\.md)(?:#([\w-]+))?")


def test_the_scan_covers_the_package():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"modeq/__init__.py", "mkdocs.yml", "docs/theory/index.md", "tests/test_docs_offline.py"} <= names
    assert len([n for n in names if n.startswith("modeq/")]) > 20


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_reference_outside_the_repository(what):
    pattern = FORBIDDEN[what]
    hits = []
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:140]}")
    assert not hits, f"{len(hits)} references to {what} (cite a paper or a docs/theory page instead):\n" + "\n".join(
        hits[:40])


def _anchors(page: Path) -> set:
    text = page.read_text(encoding="utf-8")
    return set(re.findall(r"^#+ .*\{#([\w-]+)\}\s*$", text, re.M))


def test_theory_page_citations_resolve():
    cited = 0
    bad = []
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for page, anchor in THEORY_REF.findall(line):
                cited += 1
                target = ROOT / "docs" / "theory" / page
                if not target.is_file():
                    bad.append(f"{path.relative_to(ROOT)}:{number}: no page docs/theory/{page}")
                elif anchor and anchor not in _anchors(target):
                    bad.append(f"{path.relative_to(ROOT)}:{number}: docs/theory/{page} has no heading #{anchor}")
    assert not bad, "\n".join(bad)
    assert cited >= 40, f"only {cited} citations of docs/theory pages: the docstrings should cite them"
