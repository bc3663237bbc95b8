"""The public API is typed: mypy --strict accepts the package."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ringbuf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_package_passes_mypy_strict(tmp_path):
    """Type-check the ringbuf these tests import.  From a checkout (or an
    editable install) that is the source directory; an installed copy is
    checked from an empty directory, found the way mypy finds it for users
    (PEP 561: only if it ships py.typed)."""
    pytest.importorskip("mypy")
    if os.path.dirname(os.path.abspath(ringbuf.__file__)) == os.path.join(ROOT, "ringbuf"):
        args, cwd = ["ringbuf"], ROOT
    else:
        args, cwd = ["--config-file", os.path.join(ROOT, "pyproject.toml"), "-p", "ringbuf"], str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "mypy", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no issues found in" in out.stdout


def test_package_ships_its_type_marker():
    assert os.path.exists(os.path.join(os.path.dirname(ringbuf.__file__), "py.typed"))
