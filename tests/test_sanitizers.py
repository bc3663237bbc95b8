"""The C core under AddressSanitizer and UndefinedBehaviorSanitizer.

tests/c/scribble.c runs a sender and a receiver against scribbler threads
that write the shared header without the lock, then rounds of receives that
step over an aborted loan while recvx flips (see its opening comment).
Built here from the C sources with both sanitizers, it must exit cleanly: any
access outside the segment, or any undefined behaviour, aborts it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
HARNESS = pathlib.Path(__file__).resolve().parent / "c" / "scribble.c"
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@pytest.fixture(scope="module")
def scribble(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    assert CC, "a C compiler is needed to build the sanitizer harness (the package itself needs one too)"
    exe = tmp_path_factory.mktemp("asan") / "scribble"
    cmd = [CC, "-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
           f"-I{CSRC}", str(CSRC / "ringbuf.c"), str(HARNESS), "-o", str(exe), "-lpthread", "-lrt"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def test_header_scribbled_without_the_lock_never_leads_outside_the_segment(scribble: pathlib.Path) -> None:
    name = f"ringbuf-{os.getpid()}-scribble"
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    try:
        run = subprocess.run([str(scribble), name, "8"], capture_output=True, text=True, timeout=120, env=env)
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")
    assert run.returncode == 0, f"sanitizer report:\n{run.stderr[-4000:]}"
    assert run.stdout.startswith("clean:"), run.stdout
    # Both sides got operations through: the flips hit live critical sections;
    # and receives around aborted loans went through in the second part.
    done = [int(w) for w in run.stdout.split() if w.isdigit()]
    assert done[0] > 0 and done[2] > 0 and done[4] > 0, run.stdout


def test_the_core_compiles_without_warnings() -> None:
    assert CC
    include = sysconfig.get_paths()["include"]
    run = subprocess.run([CC, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{CSRC}", f"-I{include}",
                          "-fsyntax-only", str(CSRC / "ringbuf.c")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
