"""Every public function and class of every modeq subpackage has a non-trivial docstring (issue 7 acceptance).

"Public" is the subpackage's ``__all__`` where it has one, else every name its ``__init__`` imports from its own
private modules (``modeq.series``). A docstring is non-trivial when it has at least ``MIN_CHARS`` characters and three
words, and is not the signature that ``dataclasses`` writes for a class without one. Public methods and properties
defined in those classes are checked too (an inherited docstring counts: an override documents the same contract).
The API reference (docs/api/*.md, mkdocstrings) is generated from exactly these docstrings.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import modeq

# every subpackage of modeq, found on disk, so that a new one is checked too
SUBPACKAGES = ("modeq",) + tuple(
    sorted(f"modeq.{m.name}" for m in pkgutil.iter_modules(modeq.__path__) if m.ispkg and not m.name.startswith("_"))
)
MIN_CHARS = 30
MIN_METHOD_CHARS = 15

# modeq/sde and modeq/report are owned by other work items and still changing: their gaps are reported to their owners
# and marked xfail (non-strict, so a fix shows up as XPASS); every other subpackage must pass.
DEFERRED: tuple = ()


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    prefix = module.__name__ + "."
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(obj)
        and (getattr(obj, "__module__", "") or "").startswith(prefix)
    )


def _public_objects():
    for package in SUBPACKAGES:
        module = importlib.import_module(package)
        for name in _public_names(module):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj) or callable(obj):
                if not inspect.ismodule(obj):
                    yield f"{package}.{name}", obj


def _own_doc(obj) -> str:
    """The docstring written for ``obj`` itself (a class's is not inherited from its bases)."""
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__") or ""
    return inspect.getdoc(obj) or ""


def _trivial(doc: str, name: str, min_chars: int) -> str | None:
    """Why ``doc`` does not document ``name``, or None."""
    text = inspect.cleandoc(doc).strip()
    short = name.rsplit(".", 1)[-1]
    if not text:
        return "no docstring"
    if text.startswith(short + "("):
        return "only the dataclass signature"
    if len(text) < min_chars or len(text.split()) < 3:
        return f"too short: {text!r}"
    return None


def _methods():
    for qualname, cls in _public_objects():
        if not inspect.isclass(cls) or issubclass(cls, BaseException):
            continue
        fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        for name, raw in vars(cls).items():
            if name.startswith("_") or name in fields:  # a field holding a callable is data, not a method
                continue
            if isinstance(raw, property):
                doc = raw.__doc__ or ""
            elif inspect.isfunction(getattr(raw, "__func__", raw)):
                doc = inspect.getdoc(getattr(cls, name)) or ""
            else:
                continue
            yield f"{qualname}.{name}", doc


PUBLIC = dict(_public_objects())
METHODS = dict(_methods())


def _maybe_deferred(qualname: str, reason: str):
    if qualname.startswith(DEFERRED):
        pytest.xfail(f"{qualname}: {reason} (reported to the owner of {qualname.split('.')[1]})")


def test_every_subpackage_exports_something():
    expected = {"problems", "optimizers", "series", "flows", "solve", "compare", "regularizers", "sde"}
    assert {f"modeq.{name}" for name in expected} <= set(SUBPACKAGES), SUBPACKAGES
    assert len(PUBLIC) > 100, sorted(PUBLIC)
    assert {"modeq.flows.modified_field", "modeq.series.slow_manifold", "modeq.sde.slow_sde"} <= set(PUBLIC)


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_public_callable_has_docstring(qualname):
    reason = _trivial(_own_doc(PUBLIC[qualname]), qualname, MIN_CHARS)
    if reason is not None:
        _maybe_deferred(qualname, reason)
    assert reason is None, f"{qualname}: {reason}"


@pytest.mark.parametrize("qualname", sorted(METHODS))
def test_public_method_has_docstring(qualname):
    reason = _trivial(METHODS[qualname], qualname, MIN_METHOD_CHARS)
    if reason is not None:
        _maybe_deferred(qualname, reason)
    assert reason is None, f"{qualname}: {reason}"
