"""The README's example runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_example_runs(tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    example = re.search(r"## Example\n\n```python\n(.*?)```", readme, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[(0, 0.0), (1, 1048576.0), (2, 2097152.0), (3, 3145728.0)]"
    assert "closed=True" in lines[1] and "qcount=0" in lines[1] and "sent=4" in lines[1]
