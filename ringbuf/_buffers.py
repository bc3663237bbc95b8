"""Receive buffers, kept per process for reuse.

Only memory: nothing here calls the C core.  A receive copies a message from
the ring into one of these buffers (the C call runs with the GIL released, so
the buffer must be the call's own), and from there into the ``bytes`` object
Python returns.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any, Deque, List, Tuple

from ringbuf._rb import ffi

#: Messages up to this size are received through a scratch buffer in one C
#: call; longer ones take a second call into a buffer of their size.
SCRATCH_SIZE = 64 * 1024

# Scratch buffers, each a (buffer, length cell) pair.  Threads of one process
# may receive at once, so a buffer is taken off this list for the length of a
# call (list.pop and list.append are atomic under the GIL), and a new one is
# made when the list is empty.
scratch: List[Tuple[Any, Any]] = []
# Receive buffers need not be zeroed: they are overwritten at once.
_alloc_raw = ffi.new_allocator(should_clear_after_alloc=False)


def new_scratch() -> Tuple[Any, Any]:
    """A fresh (buffer, cells) pair: cells[0] takes a length, cells[1] the
    case a select chose."""
    return _alloc_raw("char[]", SCRATCH_SIZE), ffi.new("uint64_t[2]")


# Receive buffers of the Handle's receives (recv, recv_batch, recv_planned),
# each a (buffer, length cell, view) triple: the view, ``ffi.buffer`` of the
# whole buffer, slices a received message out as ``bytes`` in one step.
# A triple is taken off the deque for the length of a call and given back
# after, so each call has its own (threads of one process may receive at
# once, and a signal handler may receive in the middle of a receive); deque
# pop and append are atomic, and unlike a list's they never reallocate when
# the deque empties and fills again.  The methods are bound once here:
# CPython 3.11 compiles a method call on a name bound by an import (``from
# ... import rx``) as an attribute load plus a call, which makes a bound
# method object on every call (figures in docs/performance.md).
rx: Deque[Tuple[Any, Any, Any]] = collections.deque()
#: A triple off the deque; raises IndexError when none is free.
take_rx = rx.pop
#: Give a triple back.
give_rx = rx.append


def new_rx() -> Tuple[Any, Any, Any]:
    """A fresh (buffer, length cell, view) triple."""
    buf = _alloc_raw("char[]", SCRATCH_SIZE)
    return buf, ffi.new("uint64_t *"), ffi.buffer(buf)


# Buffers for messages longer than SCRATCH_SIZE, received as bytes.  Memory
# fresh from the allocator costs a page fault per page on first touch, so up
# to _BIG_POOL of them, of up to _BIG_KEEP bytes, are kept (the figures are in
# docs/performance.md).  Threads share them under a lock, which is cheap next
# to a copy of 64 KiB or more.
_big: List[Any] = []
_big_lock = threading.Lock()
_BIG_POOL = 4
_BIG_KEEP = 16 << 20


def take_big(need: int) -> Any:
    """A buffer of at least need bytes: a kept one if one is large enough."""
    with _big_lock:
        for i, buf in enumerate(_big):
            if len(buf) >= need:
                return _big.pop(i)
    return _alloc_raw("char[]", need)


def give_big(buf: Any) -> None:
    """Keep buf for a later take_big, if it is not too large to keep."""
    if len(buf) > _BIG_KEEP:
        return
    with _big_lock:
        _big.append(buf)
        if len(_big) > _BIG_POOL:
            _big.remove(min(_big, key=len))


def _after_fork() -> None:
    # Another thread may have held the lock when this process forked: start
    # the child with a fresh lock and pool.
    global _big_lock
    _big_lock = threading.Lock()
    _big.clear()


os.register_at_fork(after_in_child=_after_fork)
