"""python -m ringbuf gc: what killed creators left behind goes, unless a process still uses it.

Every channel here is named with PREFIX and gc is run with --prefix PREFIX, so
it never touches the segments of other tests or other users; the names are
also the ones conftest's leak check watches.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from typing import Iterator, List

import pytest

from ringbuf._lowlevel import HEADER_FIELDS, LAYOUT_VERSION, MAGIC
from tests.conftest import SHM

PREFIX = f"ringbuf-{os.getpid()}-gc-"

# Creates channel argv[1] with mode argv[2] (octal), queues a message, says
# ready, and waits to be killed.
CREATE = ("import sys, ringbuf; ch = ringbuf.Channel(capacity=4, name=sys.argv[1], mode=int(sys.argv[2], 8)); "
          "ch.send(b'left behind'); print('ready', flush=True); sys.stdin.read()")
# Keeps channel argv[1] mapped; receives from it when told to, then waits until killed.
MAP = ("import sys, ringbuf; ch = ringbuf.Channel.attach(sys.argv[1]); print('ready', flush=True); "
       "sys.stdin.readline(); print(ch.recv(timeout=5), flush=True); sys.stdin.read()")
# Keeps the segment argv[1] open, not mapped, until its stdin closes.
OPEN = "import os, sys; fd = os.open('/dev/shm/' + sys.argv[1], os.O_RDONLY); print('ready', flush=True); sys.stdin.read()"


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(SHM, name))


@contextlib.contextmanager
def child(code: str, *args: str) -> Iterator["subprocess.Popen[str]"]:
    """A Python child running ``code`` that has said it is ready; ended on exit."""
    with subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            yield proc
        finally:
            proc.kill()


def killed_creator(name: str, mode: str = "600") -> None:
    """A child creates channel ``name`` and is SIGKILLed, so the name stays."""
    with child(CREATE, name, mode) as proc:
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    assert exists(name)


def gc(*args: str, prefix: str = PREFIX, as_root: bool = True) -> "subprocess.CompletedProcess[str]":
    cmd = [sys.executable, "-m", "ringbuf", "gc", "--prefix", prefix, *args]
    if not as_root:  # still uid 0, but without the capabilities that let root read every process
        cmd = ["setpriv", "--bounding-set=-all", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def line_of(out: "subprocess.CompletedProcess[str]", name: str) -> str:
    lines = [line for line in out.stdout.splitlines() if f" {name} " in line]
    assert len(lines) == 1, out.stdout
    return lines[0]


@pytest.fixture
def names() -> Iterator[List[str]]:
    """Names to unlink after the test, whatever gc did with them."""
    made: List[str] = []
    yield made
    for name in made:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM, name))


def test_gc_removes_what_killed_creators_left_unless_a_process_uses_it(names, make_channel):
    orphans = [f"{PREFIX}orphan-{i}" for i in range(2)]
    mapped, held = f"{PREFIX}mapped", f"{PREFIX}held"
    elsewhere = f"ringbuf-{os.getpid()}-gcx-orphan"  # killed too, but outside the prefix
    names.extend(orphans + [mapped, held, elsewhere])
    for name in names:
        killed_creator(name)
    live = make_channel(name=f"{PREFIX}live")  # its creator, this process, is alive

    with child(MAP, mapped) as mapper, child(OPEN, held) as opener:
        out = gc()
        for name in orphans:
            assert line_of(out, name).startswith("removed ")
            assert "1 message(s) queued" in line_of(out, name)
            assert not exists(name)
        assert line_of(out, mapped).startswith("kept ") and f"in use by pid {mapper.pid}" in line_of(out, mapped)
        assert line_of(out, held).startswith("kept ") and f"in use by pid {opener.pid}" in line_of(out, held)
        assert exists(mapped) and exists(held)
        assert live.name not in out.stdout and exists(live.name)
        assert "removed 2, kept 2 of 4 channel(s)" in out.stdout
        assert exists(elsewhere)
        # The process that kept its channel still reads what the dead creator queued.
        assert mapper.stdin is not None and mapper.stdout is not None
        mapper.stdin.write("recv\n")
        mapper.stdin.flush()
        assert mapper.stdout.readline() == "b'left behind'\n"

    # The survivors are gone: now nothing uses those two either.
    out = gc()
    assert line_of(out, mapped).startswith("removed ") and line_of(out, held).startswith("removed ")
    assert not exists(mapped) and not exists(held)
    assert exists(live.name) and exists(elsewhere)


def test_dry_run_lists_and_removes_nothing(names):
    orphans = [f"{PREFIX}dry-{i}" for i in range(3)]
    names.extend(orphans)
    for name in orphans:
        killed_creator(name)
    out = gc("--dry-run")
    assert all(line_of(out, name).startswith("would remove ") for name in orphans)
    assert "would remove 3, kept 0 of 3" in out.stdout
    assert all(exists(name) for name in orphans)
    gc()
    assert not any(exists(name) for name in orphans)
    assert "removed 0, kept 0 of 0" in gc().stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_gc_that_cannot_search_every_process_keeps_what_other_users_may_open(names):
    private, shared = f"{PREFIX}private", f"{PREFIX}shared"
    names.extend([private, shared])
    killed_creator(private, "600")
    killed_creator(shared, "666")
    # A process of another user, which gc cannot search without root's capabilities.
    with subprocess.Popen(["sleep", "60"], user=65534) as other:
        try:
            out = gc(as_root=False)
        finally:
            other.kill()
    assert line_of(out, private).startswith("removed ")
    assert line_of(out, shared).startswith("kept ") and "could not be searched" in line_of(out, shared)
    assert exists(shared) and not exists(private)


def test_ls_and_gc_name_segments_of_another_layout_version_and_leave_them(names):
    # What an older release left: ringbuf's mark, another layout version.
    old = f"{PREFIX}layout-4"
    names.append(old)
    magic_at, _ = HEADER_FIELDS["magic"]
    version_at, version_size = HEADER_FIELDS["version"]
    head = bytearray(8192)
    head[magic_at:magic_at + 8] = MAGIC.to_bytes(8, sys.byteorder)
    head[version_at:version_at + version_size] = (LAYOUT_VERSION - 1).to_bytes(version_size, sys.byteorder)
    with open(os.path.join(SHM, old), "wb") as f:
        f.write(head)
    note = f"{old} ({LAYOUT_VERSION - 1})"
    listing = subprocess.run([sys.executable, "-m", "ringbuf", "ls"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and note in listing.stdout and "another layout version" in listing.stdout
    for args in (("--dry-run",), ()):
        assert note in gc(*args).stdout
    assert exists(old)


def test_a_prefix_with_a_slash_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "ringbuf", "gc", "--prefix", "../etc"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "prefix must be the start of a name in /dev/shm" in out.stderr
