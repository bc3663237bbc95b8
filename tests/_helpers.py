"""What several test files share: waiting for a condition, the ring's record
arithmetic, writing the shared header directly, and parking receivers."""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from typing import Any, Callable, Iterator, List

import ringbuf
from ringbuf._lowlevel import DATA_OFFSET, HEADER_FIELDS


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Liveness helper: poll until predicate() holds, failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.005)


# futex and futex_waitv, by machine.
_FUTEX_CALLS = {"x86_64": ("202", "449"), "aarch64": ("98", "449")}


def in_futex_wait(pid: int, tid: int = 0) -> bool:
    """Whether a thread (the main thread of process pid, unless tid says
    another) is blocked in a futex system call now: for a process whose
    only waits are ringbuf's, parked.  (A thread of a process whose other
    threads hold the GIL may be waiting for it the same way.)"""
    calls = _FUTEX_CALLS.get(os.uname().machine)
    if calls is None:
        raise NotImplementedError(f"no futex system call numbers for {os.uname().machine}")
    try:
        with open(f"/proc/{pid}/task/{tid or pid}/syscall") as f:
            return f.read().split(maxsplit=1)[0] in calls
    except FileNotFoundError:
        return False


def record_bytes(n: int) -> int:
    """Ring bytes one message of n bytes occupies: 8-byte header, padded to 8."""
    return 8 + (n + 7) // 8 * 8


def write_header(buf: Any, field: str, value: int) -> None:
    """Write value (truncated to the field's width) into a header field of
    buf, a writable copy or mapping of a segment; offsets and widths come
    from the C core (HEADER_FIELDS)."""
    offset, size = HEADER_FIELDS[field]
    buf[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


@contextlib.contextmanager
def mapped(ch: ringbuf.Channel, length: int = DATA_OFFSET) -> Iterator[mmap.mmap]:
    """The first `length` bytes of ch's segment, mapped read-write, as a
    peer that writes without the lock would see them."""
    fd = os.open(f"/dev/shm/{ch.name}", os.O_RDWR)
    try:
        m = mmap.mmap(fd, length)
    finally:
        os.close(fd)
    try:
        yield m
    finally:
        m.close()


def park_receivers(ctx: Any, ch: ringbuf.Channel, n: int, results: Any, timeout: Any = None) -> List[Any]:
    """Start n processes that each block in one recv_bytes (see
    _workers.recv_one); return them once n receivers are parked."""
    from tests import _workers

    procs = []
    for _ in range(n):
        proc = ctx.Process(target=_workers.recv_one, args=(ch, timeout, results))
        proc.start()
        procs.append(proc)
    wait_until(lambda: ch.stats().recvq == n, what=f"{n} receiver(s) parking")
    return procs
