"""The headless browser the HTML tests use: found on PATH; skipped without it, a failure when CI is set."""

from __future__ import annotations

import os
import shutil

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    """Path of a Chromium-like browser (``pytest.skip`` without one; ``pytest.fail`` if ``CI`` is set)."""
    path = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Chromium was found (.ci/run installs the Debian package 'chromium')")
        pytest.skip("Chromium is not installed (apt-get install chromium); the headless-browser check needs it")
    return path
