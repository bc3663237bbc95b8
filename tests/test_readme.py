"""The README: its example runs as written, its commands exist."""

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


def test_readme_set_up_commands_and_distribution_name():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    # .ci/run runs the indented line after "Run the tests:"; it must be the
    # script that builds, installs and tests the wheel.
    setup = readme.split("## Set up\n")[1].split("\n## ")[0]
    commands = re.findall(r"^    (\S.*)$", setup, re.M)
    assert len(commands) == 2, commands
    assert re.search(r"Run the tests:\n\n    bash \.ci/test\n", setup)
    assert os.path.exists(os.path.join(ROOT, ".ci", "test"))
    # The README names the distribution that pyproject.toml builds.
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        name = re.search(r'^name = "(.+)"$', f.read(), re.M).group(1)
    assert name != "ringbuf" and f"The distribution is called `{name}`" in readme


def test_readme_command_line_tools_exist():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    commands = set(re.findall(r"python -m ringbuf (\w+)", readme))
    assert {"demo", "bench", "ls", "inspect", "top", "gc"} <= commands
    for command in sorted(commands):
        out = subprocess.run([sys.executable, "-m", "ringbuf", command, "--help"], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, (command, out.stderr)
