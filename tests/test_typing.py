"""The public API is typed: mypy --strict accepts the package."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_package_passes_mypy_strict():
    pytest.importorskip("mypy")
    out = subprocess.run([sys.executable, "-m", "mypy", "ringbuf"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_package_ships_its_type_marker():
    import ringbuf

    assert os.path.exists(os.path.join(os.path.dirname(ringbuf.__file__), "py.typed"))
