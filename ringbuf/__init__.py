"""ringbuf: bounded cross-process channels in shared memory.

A :class:`Channel` is Go's channel struct (a lock, a ring buffer, read and
write positions, queues of parked senders and receivers) placed in a POSIX
shared-memory segment, so that any process of the same user can send to and
receive from it.  Blocked senders and receivers sleep on futexes in the
segment; nothing polls.
"""

from ringbuf._channel import (
    CLOSED,
    DEFAULT_CAPACITY,
    DEFAULT_SIZE,
    Channel,
    ChannelStats,
    ChannelHold,
    ChannelWaiters,
    Selector,
    select,
    select_async,
    select_bytes,
    select_bytes_async,
)
from ringbuf._queue import DEFAULT_QUEUE_SIZE, JoinableQueue, Queue
from ringbuf import errors
from ringbuf.errors import (
    BufferTooSmall,
    ChannelExists,
    ChannelNotFound,
    Closed,
    CorruptSegment,
    Empty,
    Full,
    IncompatibleSegment,
    MessageTooLarge,
    RingbufError,
    SegmentError,
    SelectUnsupported,
    ShutDown,
    Timeout,
    WouldBlock,
)

# Spelled out (not built from errors.__all__) so type checkers see the exports.
__all__ = [
    "Channel",
    "ChannelStats",
    "ChannelHold",
    "ChannelWaiters",
    "CLOSED",
    "Selector",
    "select",
    "select_bytes",
    "select_async",
    "select_bytes_async",
    "DEFAULT_CAPACITY",
    "DEFAULT_SIZE",
    "Queue",
    "JoinableQueue",
    "DEFAULT_QUEUE_SIZE",
    "errors",
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

__version__ = "0.1.0"
