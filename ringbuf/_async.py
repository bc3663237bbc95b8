"""asyncio: channels awaited without blocking the event loop.

An awaited operation runs in the task's own loop thread.  It is first tried
without waiting; when it cannot proceed, the task counts itself in as a
waiter on the channel (W14 in csrc/ringbuf.h: the first half of a park, so
that every waker sees it) and awaits a future.  One helper thread per
process sleeps in futex_waitv on every word that some task awaits, plus a
private word that tells it the set changed, and when a word moves it hands
the wake-up to the awaiting task's loop with ``call_soon_threadsafe``.  The
task then counts itself out and tries again, in its loop thread.  So a task
that is cancelled while it waits never takes or sends a message: only a
running task does, and it keeps what it took.

The helper thread, like a parked thread (W8), looks again at least once a
second, so that a waiter whose waker died is not stranded.  It sleeps on a
word for tasks that are counted there, so a wake-up that reaches it is
theirs; when a task stops waiting (a timeout, a cancellation), the thread is
told to stop sleeping on its words, and a wake-up it took on them meanwhile
it hands on to one other sleeper there (W12).  After a whole re-check
period with nothing to watch, the thread ends; the next wait starts another.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Callable, List, Optional, Sequence, Set, Tuple, TypeVar

from ringbuf import _lowlevel, errors
from ringbuf._lowlevel import Handle

T = TypeVar("T")

# futex_waitv takes at most 128 words; the helper keeps one for itself.
_MAX_WORDS = 127
# W8: the helper wakes every waiting task at least this often.
_RECHECK_NS = 1_000_000_000
# While a stuck peer holds a channel's lock, a task looks again this often
# (seconds), instead of blocking its loop: each look waits for the lock a
# millisecond at most (RB_LOCK_BRIEF_NS).
_LOCK_BUSY_PAUSE = 0.005
# Before it waits through the helper thread, a task that found nothing tries
# once more with a deadline this far off, spinning in the C core (RB_SPIN_NS)
# as a blocking call does before it parks: a peer that is running usually
# answers within it, and waiting through the helper costs two thread
# hand-offs and several system calls.  The loop's other tasks wait at most
# this long.
_SPIN_NS = 20_000


class _Watch:
    """One awaiting task: the words it waits on, what it saw in them, how to
    wake it, and the handles whose segments hold the words.  The helper's
    snapshot of the watches keeps those handles, so that no segment is
    unmapped while the helper may still read a word in it."""

    __slots__ = ("words", "seen", "loop", "future", "handles")

    def __init__(self, words: List[int], seen: List[int], loop: asyncio.AbstractEventLoop,
                 future: "asyncio.Future[None]", handles: Sequence[Handle]) -> None:
        self.words, self.seen, self.loop, self.future = words, seen, loop, future
        self.handles = list(handles)


def _settle(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class _Helper:
    """The one thread of a process that sleeps on every awaited futex word."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: Set[_Watch] = set()
        self._private = _lowlevel.new_word()
        self._private_word = _lowlevel.word_of(self._private)
        self._thread: Optional[threading.Thread] = None

    def watch(self, words: List[int], seen: List[int], loop: asyncio.AbstractEventLoop,
              handles: Sequence[Handle]) -> "asyncio.Future[None]":
        """A future that completes (in loop) once one of the words (in the
        segments of handles) differs from what was seen in it, or after at
        most a re-check period."""
        future: "asyncio.Future[None]" = loop.create_future()
        w = _Watch(words, seen, loop, future, handles)
        with self._lock:
            distinct = {word for other in self._watches for word in other.words} | set(words)
            if len(distinct) > _MAX_WORDS:
                raise errors.RingbufError(
                    f"this process already awaits {len(distinct) - len(set(words))} channel sides; one helper "
                    f"thread can wait on at most {_MAX_WORDS} at once (futex_waitv's limit, less its own word)"
                )
            self._watches.add(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ringbuf-asyncio", daemon=True)
                self._thread.start()
        future.add_done_callback(lambda _: self._forget(w))
        _lowlevel.wake_word(self._private_word)  # the thread takes the new set
        return future

    def _forget(self, w: _Watch) -> None:
        """A watch whose future is done: if the thread has not fired it (the
        task timed out or was cancelled), the thread stops sleeping on its
        words, where it would take wake-ups meant for waiters that are
        counted (see _run)."""
        with self._lock:
            if w not in self._watches:
                return
            self._watches.discard(w)
        _lowlevel.wake_word(self._private_word)

    def _fire(self, w: _Watch) -> bool:
        """Wake the watch's task; False if it was forgotten already, or its
        loop is closed (nobody to wake)."""
        with self._lock:
            if w not in self._watches:
                return False
            self._watches.discard(w)
        try:
            w.loop.call_soon_threadsafe(_settle, w.future)
        except RuntimeError:  # its loop is closed
            return False
        return True

    def _run(self) -> None:
        idle = False
        while True:
            # The private word is read before the set: a watch added after
            # this read bumps it, so the wait below returns at once.
            private = int(self._private[0])
            with self._lock:
                watches = list(self._watches)
                if idle and not watches:
                    # A whole re-check period with nothing to watch: the
                    # thread ends (a process that awaited once does not keep
                    # a thread for good), and watch() starts another.
                    self._thread = None
                    return
            words, expected = [self._private_word], [private]
            for w in watches:
                words += w.words
                expected += w.seen
            try:
                recheck, now = _lowlevel.waitv(words, expected, time.monotonic_ns() + _RECHECK_NS)
            except Exception:  # never leave tasks waiting on a dead thread: wake them all to retry
                recheck, now = True, expected
                time.sleep(0.01)
            idle = recheck and not watches
            i = 1
            for w in watches:
                k = len(w.words)
                moved = [word for word, seen, value in zip(w.words, w.seen, now[i:i + k]) if value != seen]
                if (recheck or moved) and not self._fire(w):
                    # Forgotten (or its loop closed) while this thread slept
                    # on its words: a wake-up made on one of them may have
                    # woken this thread instead of a waiter that is counted
                    # there.  Hand it on (W12); a spare one costs that waiter
                    # a look.
                    for word in moved:
                        _lowlevel.hand_on(word)
                i += k


_helper: Optional[_Helper] = None
_helper_lock = threading.Lock()


def _the_helper() -> _Helper:
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = _Helper()
        return _helper


def _after_fork() -> None:
    # The helper thread does not exist in a fork child; a new one starts
    # when a task there first waits.
    global _helper, _helper_lock
    _helper, _helper_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_after_fork)

# A side to wait on: the handle, whether it is the senders' side, and the
# message length (for a sender).
Side = Tuple[Handle, bool, int]


async def _woken(future: "asyncio.Future[None]", deadline: int, now: int) -> None:
    """Await the helper's wake-up, or the deadline (-1: none), whichever
    comes first; the caller then looks again."""
    if deadline < 0:
        await future
        return
    try:
        await asyncio.wait_for(future, (deadline - now) / 1e9)
    except asyncio.TimeoutError:
        pass


def _same_side(a: Side, b: Side) -> bool:
    """Whether a and b are one side of one channel (perhaps through two
    handles: a select may name a channel twice, attached twice)."""
    return a[1] == b[1] and (a[0] is b[0] or (a[0].file_id == b[0].file_id and a[0].file_id[1] != 0))


def _wait_order(sides: Sequence[Side]) -> List[Tuple[int, int]]:
    """The sides to count in on (W14), as side number and message length:
    each side of a channel once, the receivers' sides first; a senders' side
    for the smallest of its messages, the first to fit (W7)."""
    order = [(i, min(s[2] for s in sides if _same_side(s, side))) for i, side in enumerate(sides)
             if not any(_same_side(side, sides[j]) for j in range(i))]
    order.sort(key=lambda o: sides[o[0]][1])
    return order


def _leave(sides: Sequence[Side], waits: List[Tuple[int, Any]]) -> None:
    """W14: count the task out of every side it waits on (waits: side number
    and ``struct rb_wait``), before it tries again or hands anything on, so
    that neither takes the task for a waiter of the other side."""
    for i, w in waits:
        sides[i][0].wait_leave(w)


def _end(sides: Sequence[Side], waits: List[Tuple[int, Any]], served: Optional[int]) -> None:
    """W14's end for every side the task waited on; ``served``, the side
    number the operation used."""
    _leave(sides, waits)
    while waits:  # each taken off first: an exception from a signal handler must not end it twice
        i, w = waits.pop()
        sides[i][0].wait_end(w, served is not None and _same_side(sides[i], sides[served]))


def spin_until(deadline: int) -> int:
    """The deadline for a first attempt: far enough to spin (_SPIN_NS), never
    past the caller's deadline."""
    until = time.monotonic_ns() + _SPIN_NS
    return until if deadline < 0 or deadline > until else deadline


async def operate(sides: Sequence[Side], attempt: Callable[[int], T], deadline: int,
                  served: Callable[[T], int] = lambda _: 0, what: str = "a channel", spun: bool = False) -> T:
    """Await ``attempt``, the operation with a deadline of now: it returns
    the result or raises Timeout when it cannot proceed.  Between attempts
    the task waits on every side of ``sides`` (``served(result)`` says which
    one the successful attempt used).  The first attempt spins a little
    (spin_until) unless the caller ``spun`` already.  Raises Timeout at
    ``deadline`` (-1: none)."""
    loop = asyncio.get_running_loop()
    waits: List[Tuple[int, Any]] = []
    order: List[Tuple[int, int]] = []
    try:
        while True:
            _leave(sides, waits)
            try:
                result = attempt(time.monotonic_ns() if spun else spin_until(deadline))
            except (errors.Timeout, InterruptedError):
                pass
            else:
                _end(sides, waits, served(result))
                return result
            _end(sides, waits, None)
            now = time.monotonic_ns()
            if 0 <= deadline <= now:
                raise errors.Timeout(f"timed out waiting on {what}")
            if not spun:
                spun = True
                continue
            if not order:
                order = _wait_order(sides)
            busy = ready = False
            for i, nbytes in order:
                h, send, _ = sides[i]
                self_recv = send and any(_same_side((h, False, 0), sides[j]) for j, _ in waits)
                try:
                    w = h.wait_begin(send, nbytes, self_recv)
                except InterruptedError:  # the lock is held for long: look again soon
                    busy = True
                    break
                if w is None:
                    ready = True
                    break
                waits.append((i, w))
            if ready:
                continue
            if busy:
                _end(sides, waits, None)
                await asyncio.sleep(_LOCK_BUSY_PAUSE)
                continue
            await _woken(_the_helper().watch([int(w.word) for _, w in waits], [int(w.seen) for _, w in waits], loop,
                                             [sides[i][0] for i, _ in waits]),
                         deadline, now)  # then one more attempt, and Timeout if the deadline passed
    except BaseException:
        _end(sides, waits, None)
        raise


#: How long select_async offers a message on an unbuffered channel before taking
#: it back and selecting again (as select() does: one re-check period).
OFFER_NS = _RECHECK_NS


async def await_taken(h: Handle, seq: int, deadline: int, what: str) -> None:
    """W13 for a task: wait until a receiver takes message seq of an
    unbuffered channel.  A task that gives up (timeout, cancellation) takes
    the message back, unless a receiver took it first: then the send
    happened, and a timeout is not raised (a cancellation still is: the task
    was cancelled, though its message went)."""
    loop = asyncio.get_running_loop()
    w: Any = None
    try:
        while True:
            try:
                w = h.ack_begin(seq)
            except InterruptedError:  # the lock is held for long: look again soon
                if 0 <= deadline <= time.monotonic_ns():
                    raise errors.Timeout(f"timed out waiting for a receiver on {what}") from None
                await asyncio.sleep(_LOCK_BUSY_PAUSE)
                continue
            if w is None:
                return
            now = time.monotonic_ns()
            if 0 <= deadline <= now:
                raise errors.Timeout(f"timed out waiting for a receiver on {what}")
            await _woken(_the_helper().watch([int(w.word)], [int(w.seen)], loop, [h]), deadline, now)
            h.wait_end(w, True)  # the acknowledgement's word: nothing to hand on
            w = None
    except errors.Closed:  # ack_begin took the message back already
        raise
    except errors.Timeout:
        if w is not None:
            h.wait_end(w, False)
        if await _take_back(h, seq):
            return  # taken at the deadline: the send succeeded
        raise
    except BaseException:
        if w is not None:
            h.wait_end(w, False)
        await _take_back(h, seq)
        raise


async def _take_back(h: Handle, seq: int) -> bool:
    """Handle.take_back for a task: while a stuck peer holds the lock, the
    loop runs on between the tries.  A cancellation meanwhile waits until
    the message is taken back (it must not stay offered once its sender has
    given up), and then propagates."""
    cancelled: Optional[BaseException] = None
    while True:
        try:
            taken = h.take_back(seq)
        except InterruptedError:
            try:
                await asyncio.sleep(_LOCK_BUSY_PAUSE)
            except asyncio.CancelledError as e:
                cancelled = e
            continue
        if cancelled is not None:
            raise cancelled
        return taken


def helper_threads() -> int:
    """How many helper threads this process runs (0 or 1)."""
    return sum(1 for t in threading.enumerate() if t.name == "ringbuf-asyncio")
