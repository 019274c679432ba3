"""MkDocs hook: render the Sphinx cross-reference roles used in modeq's docstrings.

The docstrings write ``:func:`name```, ``:class:`~modeq.x.Name```, ``:mod:`modeq.series``` (Sphinx style). Markdown
turns the backticks into ``<code>`` but leaves the role prefix as text; this hook drops the prefix and, for ``~``,
keeps only the last component, as Sphinx does.
"""

import re

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def _replace(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html, page, config, files):
    return _ROLE.sub(_replace, html)
