"""Every exception ringbuf raises on purpose.

They share one base class, :class:`RingbufError`, and each also inherits the
builtin or :mod:`queue` exception that code written for
:class:`multiprocessing.Queue` already catches.  They are named for what
happened: the channel was closed, the wait ran out, a non-blocking call would
have had to wait, the segment cannot be used.
"""

from __future__ import annotations

import queue
import sys

__all__ = [
    "RingbufError",
    "Closed",
    "Timeout",
    "WouldBlock",
    "Full",
    "Empty",
    "MessageTooLarge",
    "BufferTooSmall",
    "ChannelNotFound",
    "ChannelExists",
    "SegmentError",
    "IncompatibleSegment",
    "CorruptSegment",
    "SelectUnsupported",
    "ShutDown",
]


class RingbufError(Exception):
    """Base class of every ringbuf exception."""


class Closed(RingbufError):
    """The channel is closed.

    Raised by a send on a closed channel, and by a receive once a closed
    channel has been drained (the end of the stream).
    """


class Timeout(RingbufError, TimeoutError):
    """A blocking call's timeout expired before it could complete."""


class WouldBlock(RingbufError):
    """A non-blocking call could not complete without waiting."""


class Full(WouldBlock, queue.Full):
    """A non-blocking send found no room (message count or bytes)."""


class Empty(WouldBlock, queue.Empty):
    """A non-blocking receive found nothing queued."""


class MessageTooLarge(RingbufError, ValueError):
    """The message is larger than the ring can ever hold; waiting would not help."""


class BufferTooSmall(RingbufError, ValueError):
    """The next message does not fit the buffer given; it stays queued.

    ``needed`` is the message's length in bytes.
    """

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


class ChannelNotFound(RingbufError, FileNotFoundError):
    """No shared-memory segment has that name."""


class ChannelExists(RingbufError, FileExistsError):
    """A shared-memory segment with that name already exists."""


class SegmentError(RingbufError):
    """The shared-memory segment cannot be used as a channel."""


class IncompatibleSegment(SegmentError):
    """The segment is not a ringbuf channel, has another layout version, or is too small."""


class CorruptSegment(SegmentError):
    """A header field or record in the segment failed its bounds check."""


class SelectUnsupported(RingbufError, OSError):
    """select() had to wait on several channels at once, and the kernel lacks
    the futex_waitv system call it needs (Linux 5.16 or later)."""


# queue.ShutDown exists from Python 3.13; before, ShutDown has its base
# (Exception) through RingbufError.
if sys.version_info >= (3, 13):
    _QueueShutDown = queue.ShutDown
else:
    _QueueShutDown = Exception


class ShutDown(RingbufError, _QueueShutDown):
    """A put on a queue that was shut down, or a get on one that was shut down
    and is empty (or was shut down with ``immediate=True``).  From Python 3.13
    it is also a :class:`queue.ShutDown`."""
