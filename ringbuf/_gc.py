"""Removing channels left behind: ``python -m ringbuf gc [--dry-run] [--prefix PREFIX]``.

The handle that creates a channel removes its name when it is done with it.
A creator killed outright (SIGKILL, the out-of-memory killer) never gets
there, and its segment keeps its memory in /dev/shm until someone unlinks it.
``gc`` removes such a segment of this user when

* the process that created it is gone (a pid reused since counts as alive),
  and
* no live process has it mapped or open: every process's /proc/PID/maps and
  /proc/PID/fd are searched for the segment's device and inode.

Removing the name never disturbs a process that still has the segment mapped;
what the checks prevent is taking the name from a channel that is in use, so
that nobody else could attach to it.  A process that attaches in the instant
between the search and the removal keeps working, but the name is gone.

gc can only search the processes it may read.  Run as root, that is all of
them.  Run as another user, it cannot read the processes of other users; they
cannot open a segment that is the owner's alone (mode 0600, the default), but
they may open one made with a wider ``mode``, so such a segment is kept
whenever some process could not be searched.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Dict, List, Set, TextIO, Tuple

from ringbuf._inspect import alive, list_channels, other_layouts, tell_other_layouts
from ringbuf._lowlevel import SHM, Handle

# A file's identity: (st_dev, st_ino).
_FileId = Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Leftover:
    """A channel of this user whose creating process is gone."""

    name: str
    """The segment's name in /dev/shm."""
    creator_pid: int
    """The process that created it, no longer running."""
    qcount: int
    """Messages still queued in it (removing the name discards them)."""
    users: Tuple[int, ...]
    """Pids of the live processes that have it mapped or open."""
    shared: bool
    """Whether its mode lets users other than its owner open it."""
    file_id: _FileId
    """(st_dev, st_ino) of the segment when it was found."""


def _maps(pid: int, wanted: Set[_FileId]) -> Set[_FileId]:
    """The files of ``wanted`` that process ``pid`` has mapped."""
    found = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            # address perms offset dev inode [path]; dev is "major:minor" in hex.
            fields = line.split(maxsplit=5)
            if len(fields) < 5 or fields[4] == "0":
                continue
            major, minor = fields[3].split(":")
            file_id = (os.makedev(int(major, 16), int(minor, 16)), int(fields[4]))
            if file_id in wanted:
                found.add(file_id)
    return found


def _fds(pid: int, wanted: Set[_FileId]) -> Set[_FileId]:
    """The files of ``wanted`` that process ``pid`` has open."""
    found = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        path = os.path.join(fd_dir, fd)
        try:
            # Only stat what points into /dev/shm: sockets, pipes and files on
            # slow file systems are none of our business.
            if not os.readlink(path).startswith(SHM + "/"):
                continue
            st = os.stat(path)
        except FileNotFoundError:
            continue  # closed meanwhile
        if (st.st_dev, st.st_ino) in wanted:
            found.add((st.st_dev, st.st_ino))
    return found


def users_of(wanted: Set[_FileId]) -> Tuple[Dict[_FileId, List[int]], int]:
    """For each file of ``wanted``, the live processes that have it mapped or
    open; and how many processes could not be searched (not permitted)."""
    users: Dict[_FileId, List[int]] = {file_id: [] for file_id in wanted}
    unsearched = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        found: Set[_FileId] = set()
        try:
            found |= _maps(pid, wanted)
            found |= _fds(pid, wanted)  # what the maps showed counts even if this fails
        except (FileNotFoundError, ProcessLookupError):
            pass  # exited meanwhile
        except PermissionError:
            unsearched += 1
        for file_id in found:
            users[file_id].append(pid)
    return users, unsearched


def find_leftovers(prefix: str = "") -> Tuple[List[Leftover], int]:
    """The channels of this user whose names start with ``prefix`` and whose
    creator is gone, with the processes that still use each; and how many
    processes could not be searched."""
    found: List[Tuple[str, int, int, os.stat_result]] = []
    for name, s in list_channels(prefix):  # the handles it opened are closed again on return
        if alive(s.creator_pid):
            continue
        try:
            st = os.stat(os.path.join(SHM, name))
        except FileNotFoundError:
            continue  # removed meanwhile
        found.append((name, s.creator_pid, s.qcount, st))
    users, unsearched = users_of({(st.st_dev, st.st_ino) for *_, st in found})
    leftovers = [Leftover(name, creator, qcount, tuple(sorted(users[(st.st_dev, st.st_ino)])),
                          bool(st.st_mode & 0o077), (st.st_dev, st.st_ino))
                 for name, creator, qcount, st in found]
    return leftovers, unsearched


def gc(dry_run: bool = False, prefix: str = "", out: TextIO = sys.stdout) -> int:
    """Remove the channels of this user whose names start with ``prefix``,
    whose creator is gone and that no live process uses; with ``dry_run``,
    only say which.  Prints a line for every channel whose creator is gone."""
    if "/" in prefix:
        raise ValueError(f"prefix must be the start of a name in {SHM}, with no '/', got {prefix!r}")
    leftovers, unsearched = find_leftovers(prefix)
    removed = kept = 0
    for left in leftovers:
        what = f"{left.name}   creator {left.creator_pid} gone, {left.qcount} message(s) queued"
        if left.users:
            kept += 1
            print(f"kept          {what}; in use by pid {', '.join(map(str, left.users))}", file=out)
        elif left.shared and unsearched:
            kept += 1
            print(f"kept          {what}; its mode lets other users open it, and {unsearched} "
                  f"process(es) could not be searched", file=out)
        elif dry_run:
            removed += 1
            print(f"would remove  {what}", file=out)
        elif Handle.unlink_if_same(left.name, left.file_id):
            removed += 1
            print(f"removed       {what}", file=out)
    print(f"{'would remove' if dry_run else 'removed'} {removed}, kept {kept} "
          f"of {len(leftovers)} channel(s) whose creator is gone", file=out)
    tell_other_layouts(other_layouts(prefix), out)
    return 0
