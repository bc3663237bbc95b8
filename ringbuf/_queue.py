"""ringbuf.Queue and ringbuf.JoinableQueue: multiprocessing.Queue's API on a channel."""

from __future__ import annotations

import queue
from typing import Any, Optional, Tuple

from ringbuf import errors
from ringbuf._channel import Channel
from ringbuf._lowlevel import MAX_CAPACITY

__all__ = ["Queue", "JoinableQueue", "DEFAULT_QUEUE_SIZE"]

#: Ring bytes of a Queue when ``size`` is not given (32 MiB): the bound on the
#: memory the queue's items may take, and on the size of one pickled item.
DEFAULT_QUEUE_SIZE = 32 << 20


class Queue:
    """A process-shared FIFO queue with the interface of :class:`multiprocessing.Queue`.

    Change ``from multiprocessing import Queue`` to ``from ringbuf import
    Queue``; the methods, their arguments and their exceptions are the same.
    Items are pickled into a ringbuf :class:`Channel` in shared memory.

    What differs, on purpose:

    * **Memory is always bounded.**  ``maxsize <= 0`` means no bound on the
      number of items, as in multiprocessing, but the items' pickled bytes
      can never take more than ``size`` bytes (32 MiB unless given).  When
      they would, ``put`` blocks (or raises ``queue.Full``) instead of letting
      the queue grow until the machine runs out of memory.  One item larger
      than ``size - 8`` bytes raises :class:`ringbuf.MessageTooLarge`.
    * **No feeder thread.**  ``put`` returns once the item is in shared
      memory, so an item put just before a process exits is never lost,
      ``qsize()`` and ``empty()`` are exact, and ``join_thread()`` and
      ``cancel_join_thread()`` have nothing to do.
    * It may also be pickled outside process start-up (for example as a
      ``Pool`` task argument); the copy attaches to the same queue.
    * Items go through :mod:`pickle`, not multiprocessing's reducers, so
      objects only those can pickle (such as ``Connection`` objects) cannot
      be put.

    Args:
        maxsize: the most items queued at once; ``<= 0`` for no item bound.
        size: ring bytes (see above).
        ctx: accepted for compatibility with ``multiprocessing.Queue`` and
            ignored; the queue needs no locks, pipes or threads from a context.
    """

    def __init__(self, maxsize: int = 0, *, size: int = DEFAULT_QUEUE_SIZE, ctx: Any = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__!r}")
        self._maxsize = maxsize if maxsize > 0 else 0
        self._ch = Channel(capacity=min(maxsize, MAX_CAPACITY) if maxsize > 0 else MAX_CAPACITY, size=size)
        self._closed = False

    @classmethod
    def _rebuild(cls, ch: Channel, maxsize: int) -> "Queue":
        self = cls.__new__(cls)
        self._ch, self._maxsize, self._closed = ch, maxsize, False
        return self

    def __reduce__(self) -> Tuple[Any, Tuple[Channel, int]]:
        # The channel pickles by name; the copy starts open in its process.
        return (type(self)._rebuild, (self._ch, self._maxsize))

    def __repr__(self) -> str:
        return f"<ringbuf.{type(self).__name__} {self._ch.name!r} maxsize={self._maxsize}>"

    @property
    def channel(self) -> Channel:
        """The channel underneath, for :meth:`Channel.stats` and friends."""
        return self._ch

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    @staticmethod
    def _wait(block: bool, timeout: Optional[float]) -> Optional[float]:
        # As multiprocessing.Queue: block=False ignores the timeout, and a
        # negative timeout means "do not wait" rather than an error.
        if not block:
            return 0
        if timeout is not None and timeout < 0:
            return 0
        return timeout

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put ``obj`` into the queue.

        With ``block`` true (the default), wait up to ``timeout`` seconds
        (``None``: as long as it takes) for room; otherwise do not wait.  The
        item is in shared memory when this returns.

        Raises:
            queue.Full: no room came in time.
            ShutDown: the queue was shut down (by any process), before or
                while waiting.
            ValueError: this process called :meth:`close`; or the pickled item
                is larger than the queue's ring (``MessageTooLarge``, a
                ValueError: make the queue with a larger ``size``).
            KeyboardInterrupt: Ctrl-C while waiting.
        """
        self._check_open()
        try:
            self._ch.send(obj, self._wait(block, timeout))
        except errors.Timeout:
            raise queue.Full from None
        except errors.Closed:
            raise errors.ShutDown(f"queue {self._ch.name!r} is shut down") from None

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return the oldest item.

        With ``block`` true (the default), wait up to ``timeout`` seconds
        (``None``: as long as it takes) for one; otherwise do not wait.

        Raises:
            queue.Empty: nothing came in time.
            ShutDown: the queue was shut down and is empty, before or while
                waiting.
            ValueError: this process called :meth:`close`.
            KeyboardInterrupt: Ctrl-C while waiting.
        """
        self._check_open()
        try:
            return self._ch.recv(self._wait(block, timeout))
        except errors.Timeout:
            raise queue.Empty from None
        except errors.Closed:
            raise errors.ShutDown(f"queue {self._ch.name!r} is shut down and empty") from None

    def shutdown(self, immediate: bool = False) -> None:
        """Shut the queue down for every process, as Python 3.13's
        :meth:`queue.Queue.shutdown`.

        Afterwards ``put`` raises :class:`ShutDown`, and ``get`` returns the
        items still queued, then raises :class:`ShutDown`.  With
        ``immediate`` true the items still queued are dropped, each counted
        as done for ``join``, and ``get`` raises at once.  Every ``put`` and
        ``get`` blocked in any process is woken.  It is the channel's
        ``close`` (see :meth:`Channel.close`); shutting down twice is
        harmless.
        """
        self._ch.close(discard=immediate)

    @property
    def is_shutdown(self) -> bool:
        """Whether any process has shut the queue down."""
        return self._ch.closed

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, False)``."""
        self.put(obj, False)

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self.get(False)

    def qsize(self) -> int:
        """The number of items in the queue, exactly (every process's puts count
        as soon as they return)."""
        return len(self._ch)

    def empty(self) -> bool:
        """Whether the queue holds no item (exact, see :meth:`qsize`)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (always False when
        ``maxsize <= 0``).  A queue that is not full by this count can still
        lack the bytes for a large item."""
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    def close(self) -> None:
        """Indicate that this process will use the queue no more; later ``put``
        and ``get`` calls here raise ValueError.  Other processes are not
        affected, and nothing already put is lost."""
        self._closed = True

    def join_thread(self) -> None:
        """Nothing to join (there is no feeder thread); allowed after
        :meth:`close` only, as in multiprocessing.

        Raises:
            AssertionError: the queue is not closed (as multiprocessing does).
        """
        if not self._closed:
            raise AssertionError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: items are in shared memory once ``put`` returns,
        so exiting never waits for a queue, and never loses an item."""


class JoinableQueue(Queue):
    """:class:`Queue` with ``task_done()`` and ``join()``, as
    :class:`multiprocessing.JoinableQueue`.

    The count of unfinished tasks lives in the shared header: it is the
    number of items ever put less the ``task_done`` calls, so an item counts
    exactly when its ``put`` commits (a producer killed while blocked in
    ``put`` leaves nothing behind), and ``join`` parks on a futex until the
    count is zero.
    """

    def task_done(self) -> None:
        """Mark one item taken by ``get`` as processed.

        Raises:
            ValueError: called more times than items were put.
        """
        self._ch.task_done()

    def join(self) -> None:
        """Block until every item put has been marked done with :meth:`task_done`.

        Ctrl-C interrupts the wait with KeyboardInterrupt.
        """
        self._ch.join()
