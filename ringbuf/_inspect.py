"""Looking inside live channels: ``python -m ringbuf ls | inspect NAME | top NAME``.

Everything here reads the shared header without taking the lock, so looking
never disturbs the channel; figures are read one by one while the channel
runs, so they are a close snapshot rather than an exact one.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from typing import Any, Iterator, List, Optional, Sequence, TextIO, Tuple

from ringbuf import errors
from ringbuf._channel import Channel
from ringbuf._lowlevel import HEADER_FIELDS, LAYOUT_VERSION, MAGIC, SHM


def _open(name: str) -> Channel:
    return Channel.attach(name)


def _own_files(prefix: str) -> Iterator[str]:
    """The names of this user's regular files in /dev/shm that start with
    ``prefix``, in order."""
    for name in sorted(os.listdir(SHM)):
        if not name.startswith(prefix):
            continue
        try:
            st = os.stat(os.path.join(SHM, name))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
            yield name


def list_channels(prefix: str = "") -> List[Tuple[str, Any]]:
    """(name, header snapshot) of every ringbuf channel of this user in
    /dev/shm whose name starts with ``prefix``."""
    found = []
    for name in _own_files(prefix):
        try:
            ch = _open(name)
        except (errors.SegmentError, errors.ChannelNotFound, ValueError, PermissionError, OSError):
            continue  # not a channel (or gone meanwhile)
        found.append((name, ch.observe()))
    return found


def other_layouts(prefix: str = "") -> List[Tuple[str, int]]:
    """(name, layout version) of each segment of this user in /dev/shm,
    named with ``prefix``, that carries ringbuf's mark but another layout
    version: made by another release, which this one cannot open (so ls and
    gc cannot tell whether it is in use, and leave it alone).  The mark and
    the version sit first in every layout."""
    magic_at, magic_size = HEADER_FIELDS["magic"]
    version_at, version_size = HEADER_FIELDS["version"]
    found = []
    for name in _own_files(prefix):
        try:
            with open(os.path.join(SHM, name), "rb") as f:
                head = f.read(version_at + version_size)
        except OSError:
            continue
        if len(head) < version_at + version_size:
            continue
        magic = int.from_bytes(head[magic_at:magic_at + magic_size], sys.byteorder)
        version = int.from_bytes(head[version_at:version_at + version_size], sys.byteorder)
        if magic == MAGIC and version != LAYOUT_VERSION:
            found.append((name, version))
    return found


def tell_other_layouts(found: List[Tuple[str, int]], out: TextIO) -> None:
    if found:
        print(f"\n{len(found)} segment(s) in {SHM} were made by a ringbuf release of another layout version (in "
              f"brackets), which this one (layout {LAYOUT_VERSION}) cannot open: " +
              ", ".join(f"{n} ({v})" for n, v in found) +
              f".\nRemove them by hand (rm {SHM}/NAME) once no process of that release uses them.", file=out)


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may be a later one that
    reused the pid: this can only err towards "alive")."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        pass
    return True


def ls(out: TextIO = sys.stdout) -> int:
    rows = list_channels()
    if not rows:
        print(f"no ringbuf channels of this user in {SHM}", file=out)
        tell_other_layouts(other_layouts(), out)
        return 0
    print(f"{'NAME':<40} {'QUEUED':>15} {'BYTES':>21} {'SENDQ':>5} {'RECVQ':>5} {'STATE':>6} {'CREATOR':>14}",
          file=out)
    orphans = 0
    for name, s in rows:
        creator = str(s.creator_pid)
        if not alive(s.creator_pid):
            creator += " (gone)"
            orphans += 1
        print(f"{name:<40} {f'{s.qcount}/{s.capacity}':>15} {f'{s.used}/{s.size}':>21} {s.sendq:>5} "
              f"{s.recvq:>5} {'closed' if s.closed else 'open':>6} {creator:>14}", file=out)
    if orphans:
        print(f"\n{orphans} channel(s) outlived the process that created them (killed before it could unlink "
              f"them).\n`python -m ringbuf gc` removes those that no process uses any more.", file=out)
    tell_other_layouts(other_layouts(), out)
    return 0


def render(name: str, s: Any, senders: List[Tuple[int, int]], receivers: List[Tuple[int, int]],
           holds: Sequence[Tuple[str, int, int]] = ()) -> str:
    """The header drawn as the struct it is, with Go's hchan names, and the
    loans and views out (kind, pid, ring bytes)."""
    lock = f"held by pid {s.lock_owner}" if s.lock_owner else "free"
    pct = 100.0 * s.used / s.size if s.size else 0.0

    def pids(p: List[Tuple[int, int]]) -> str:
        return "" if not p else "  pids " + ", ".join(f"{pid} ({n})" if n > 1 else str(pid) for pid, n in p)

    lines = [
        f"channel {name}   (/dev/shm/{name}, created by pid {s.creator_pid})",
        "struct hchan {",
        f"    lock      {lock:<24} // robust process-shared mutex",
        f"    closed    {int(s.closed):<24} // 1 after close(): senders fail, receivers drain",
        f"    qcount    {s.qcount:<24} // messages queued",
        f"    dataqsiz  {s.capacity:<24} // capacity in messages (0: unbuffered)",
        f"    used      {f'{s.used} / {s.size} bytes':<24} // ring bytes in use ({pct:.1f}%)",
        f"    sendx     {s.sendx:<24} // ring offset of the next message to write",
        f"    recvx     {s.recvx:<24} // ring offset of the next message to read",
        f"    sendq     {s.sendq:<24} // senders parked on the futex{pids(senders)}",
        f"    recvq     {s.recvq:<24} // receivers parked on the futex{pids(receivers)}",
        "}",
        f"peak: {s.peak_qcount} messages, {s.peak_used} bytes   "
        f"sent {s.sent}   received {s.received}   "
        f"sender parks {s.send_parks}   receiver parks {s.recv_parks}",
        f"wake calls for receivers {s.recvq_wakes}   for senders {s.sendq_wakes}   "
        f"baton passes {s.baton_passes}\n"
        f"lock recoveries {s.recoveries}   dead waiters reaped {s.waiters_reaped}",
    ]
    if holds or s.held:
        lines.append(f"loans and views out: {len(holds)}, holding {s.held} bytes beyond `used`   "
                     f"(taken: {s.loans_taken} loans, {s.views_taken} views; of dead holders: "
                     f"{s.loans_reclaimed} loans aborted, {s.views_reclaimed} views queued again)")
        lines += [f"    {kind:<4}  pid {pid:<8} {nbytes} bytes" for kind, pid, nbytes in holds]
    return "\n".join(lines)


def inspect(name: str, out: TextIO = sys.stdout) -> int:
    ch = _open(name)
    waiting = ch.waiters()
    print(render(name, ch.observe(), waiting.senders, waiting.receivers, ch.holds()), file=out)
    return 0


def top(name: str, interval: float = 1.0, count: Optional[int] = None, out: TextIO = sys.stdout) -> int:
    """Redraw ``inspect`` every ``interval`` seconds with send and receive
    rates, ``count`` times (forever when None; Ctrl-C ends it)."""
    ch = _open(name)
    clear = out.isatty()
    prev, t_prev = ch.observe(), time.monotonic()
    n = 0
    try:
        while count is None or n < count:
            time.sleep(interval)
            s, t = ch.observe(), time.monotonic()
            dt = t - t_prev
            if clear:
                out.write("\x1b[H\x1b[2J")
            waiting = ch.waiters()
            print(render(name, s, waiting.senders, waiting.receivers, ch.holds()), file=out)
            print(f"rates over {dt:.1f} s: {(s.sent - prev.sent) / dt:,.0f} sent/s   "
                  f"{(s.received - prev.received) / dt:,.0f} received/s", file=out)
            out.flush()
            prev, t_prev = s, t
            n += 1
    except KeyboardInterrupt:
        pass
    return 0
