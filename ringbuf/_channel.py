"""ringbuf.Channel: a bounded channel whose struct lives in shared memory."""

from __future__ import annotations

import dataclasses
import numbers
import os
import secrets
import time
import weakref
from typing import Any, Iterator, Optional, Tuple

from ringbuf import errors
from ringbuf._lowlevel import FOREVER, MAX_CAPACITY, MAX_SIZE, MIN_SIZE, NAME_MAX, Handle

__all__ = ["Channel", "ChannelStats", "DEFAULT_CAPACITY", "DEFAULT_SIZE"]

#: Messages a channel holds when ``capacity`` is not given.
DEFAULT_CAPACITY = 1024
#: Ring bytes a channel has when ``size`` is not given (1 MiB).
DEFAULT_SIZE = 1 << 20

# Longest wait a timeout can ask for (about 146 years); keeps deadlines in int64.
_MAX_WAIT_NS = 1 << 62


def _deadline(timeout: float) -> int:
    """Turn a timeout in seconds into an absolute CLOCK_MONOTONIC deadline."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__!r}")
    if not timeout >= 0:  # also rejects NaN
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    return time.monotonic_ns() + int(min(float(timeout) * 1e9, _MAX_WAIT_NS))


def _check_int(param: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int, not {type(value).__name__!r}")
    if not low <= value <= high:
        raise ValueError(f"{param} must be between {low} and {high}, got {value}")
    return value


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__!r}")
    if not 1 <= len(name.encode()) <= NAME_MAX or "/" in name or "\0" in name:
        raise ValueError(f"name must be 1 to {NAME_MAX} bytes with no '/' or NUL, got {name!r}")
    return name


def _unlink_if_creator(name: str, creator_pid: int) -> None:
    # A fork child inherits the creator's Channel object (and this finalizer);
    # only the creating process removes the name.
    if os.getpid() == creator_pid:
        try:
            Handle.unlink(name)
        except errors.ChannelNotFound:
            pass


@dataclasses.dataclass(frozen=True)
class ChannelStats:
    """A snapshot of the channel's shared header, taken under its lock.

    The fields carry the names of Go's ``hchan`` where the meaning matches.
    """

    capacity: int
    """The bound on queued messages (Go's ``dataqsiz``)."""
    size: int
    """Bytes in the ring."""
    qcount: int
    """Messages queued now."""
    used: int
    """Ring bytes the queued messages occupy (each has an 8-byte header and is padded to 8)."""
    sendx: int
    """Byte offset in the ring where the next message will be written."""
    recvx: int
    """Byte offset in the ring of the next message to be read."""
    sendq: int
    """Senders parked waiting for room (in any process)."""
    recvq: int
    """Receivers parked waiting for a message (in any process)."""
    closed: bool
    """Whether :meth:`Channel.close` has been called."""
    creator_pid: int
    """Process id of the channel's creator."""
    sent: int
    """Messages sent since creation."""
    received: int
    """Messages received since creation."""
    send_parks: int
    """Times a sender found no room and parked on the futex."""
    recv_parks: int
    """Times a receiver found nothing and parked on the futex."""
    send_wakes: int
    """Wake system calls made by senders (only when a receiver was parked)."""
    recv_wakes: int
    """Wake system calls made by receivers (only when a sender was parked)."""
    recoveries: int
    """Times the lock was taken over from a process that died holding it."""


class Channel:
    """A bounded channel shared between processes, like a Go channel.

    The channel is a struct in a shared-memory segment (``/dev/shm/NAME``): a
    lock, a ring of variable-length messages, the read and write positions,
    and counts of parked senders and receivers.  Sending copies the message
    into the ring under the lock; a sender that finds no room parks on a futex
    until a receiver makes room, and a receiver that finds nothing parks until
    a sender sends.

    The channel is bounded twice: at most ``capacity`` messages, and at most
    ``size`` bytes of ring (each message takes its length rounded up to 8,
    plus 8 bytes of header).  A send waits when either bound is reached.

    Args:
        capacity: most messages queued at once (1 to 2**32).  Go's buffer size;
            there is no unbuffered (capacity 0) form.
        size: bytes in the ring (64 to 2**40), rounded up to a multiple of 8.
            The largest message is ``size - 8`` bytes.
        name: the segment's name, without a leading ``/``; a unique one is made
            when ``None``.  The segment is created exclusively, mode 0600.

    The creating handle owns the segment: its name is removed by
    :meth:`unlink`, by leaving a ``with`` block, or when the creator exits or
    drops the last reference.  Other processes get the channel by pickling it
    (``multiprocessing`` does this for you) or with :meth:`attach`.

    Raises:
        ValueError: capacity or size out of range, or a bad name.
        ChannelExists: a segment with that name exists already.
        OSError: the segment could not be created (for example ``ENOSPC``
            when ``/dev/shm`` cannot hold ``size`` bytes).
    """

    _h: Handle
    _finalizer: Optional[weakref.finalize[[str, int], "Channel"]]

    def __init__(self, capacity: int = DEFAULT_CAPACITY, size: int = DEFAULT_SIZE, name: Optional[str] = None) -> None:
        _check_int("capacity", capacity, 1, MAX_CAPACITY)
        size = (_check_int("size", size, MIN_SIZE, MAX_SIZE) + 7) & ~7
        if name is None:
            name = f"ringbuf-{os.getpid()}-{secrets.token_hex(6)}"
        _check_name(name)
        self._h = Handle.create(name, capacity, size)
        self._finalizer = weakref.finalize(self, _unlink_if_creator, name, os.getpid())

    @classmethod
    def attach(cls, name: str) -> "Channel":
        """Open an existing channel by name, from any process of the same user.

        The returned handle does not own the segment: leaving a ``with`` block
        on it does nothing, and it never removes the name by itself.

        Raises:
            ChannelNotFound: no segment has that name.
            IncompatibleSegment: the segment is not a ringbuf channel of this
                layout version, or is smaller than its header says.
        """
        self = cls.__new__(cls)
        self._h = Handle.attach(_check_name(name))
        self._finalizer = None
        return self

    # -- identity ---------------------------------------------------------

    @property
    def name(self) -> str:
        """The segment's name (``/dev/shm/<name>``); :meth:`attach` takes it."""
        return self._h.name

    @property
    def capacity(self) -> int:
        """The most messages the channel holds at once."""
        return self._h.capacity

    @property
    def size(self) -> int:
        """Bytes in the ring."""
        return self._h.size

    @property
    def max_message_size(self) -> int:
        """The longest message, in bytes, that can ever be sent (``size - 8``)."""
        return self._h.max_message

    @property
    def closed(self) -> bool:
        """Whether the channel has been closed (by any process)."""
        return bool(self._h.stats().closed)

    # -- sending ----------------------------------------------------------

    def send_bytes(self, data: Any, timeout: Optional[float] = None) -> None:
        """Send one message, waiting for room if the channel is full.

        Args:
            data: a bytes-like object (``bytes``, ``bytearray``, a C-contiguous
                ``memoryview`` or array); its bytes are copied into the ring.
            timeout: seconds to wait for room; ``None`` waits as long as it
                takes, ``0`` does not wait.

        Raises:
            Timeout: no room came before the timeout; nothing was sent.
            Closed: the channel is closed, or was closed while waiting
                (``close`` wakes every waiting sender).
            MessageTooLarge: ``len(data)`` exceeds :attr:`max_message_size`;
                raised at once, since waiting could never help.
            TypeError: ``data`` is not bytes-like.
            KeyboardInterrupt: Ctrl-C while waiting (any signal handler runs,
                and the wait then resumes with the same deadline unless the
                handler raised).
        """
        deadline = FOREVER if timeout is None else _deadline(timeout)
        h = self._h
        while True:
            try:
                return h.send(data, deadline)
            except InterruptedError:
                pass  # Python runs signal handlers here, then we retry.

    def try_send_bytes(self, data: Any) -> None:
        """Send one message if there is room now, without waiting.

        Raises:
            Full: no room for this message (count or bytes).
            Closed, MessageTooLarge, TypeError: as :meth:`send_bytes`.
        """
        try:
            self._h.send(data, 0)
        except errors.Timeout:
            raise errors.Full(f"channel {self.name!r} has no room for {_nbytes(data)} bytes") from None

    # -- receiving --------------------------------------------------------

    def recv_bytes(self, timeout: Optional[float] = None) -> bytes:
        """Receive the oldest message, waiting for one if the channel is empty.

        Args:
            timeout: seconds to wait for a message; ``None`` waits as long as
                it takes, ``0`` does not wait.

        Raises:
            Timeout: no message came before the timeout.
            Closed: the channel is closed and every message sent before the
                close has been received (``close`` wakes every waiting
                receiver).
            KeyboardInterrupt: Ctrl-C while waiting (any signal handler runs,
                and the wait then resumes with the same deadline unless the
                handler raised).
        """
        deadline = FOREVER if timeout is None else _deadline(timeout)
        h = self._h
        while True:
            try:
                return h.recv(deadline)
            except InterruptedError:
                pass  # Python runs signal handlers here, then we retry.

    def try_recv_bytes(self) -> bytes:
        """Receive the oldest message if there is one now, without waiting.

        Raises:
            Empty: nothing is queued.
            Closed: the channel is closed and drained.
        """
        try:
            return self._h.recv(0)
        except errors.Timeout:
            raise errors.Empty(f"channel {self.name!r} is empty") from None

    def __iter__(self) -> Iterator[bytes]:
        """Yield messages until the channel is closed and drained (Go's ``range``)."""
        while True:
            try:
                yield self.recv_bytes()
            except errors.Closed:
                return

    # -- closing and lifetime ---------------------------------------------

    def close(self) -> None:
        """Close the channel for every process, as Go's ``close``.

        Afterwards every send raises :class:`Closed`; receivers still get the
        messages already queued, then :class:`Closed`.  Every parked sender
        and receiver, in every process, is woken.  Closing twice is harmless.
        """
        self._h.close()

    def unlink(self) -> None:
        """Remove the channel's name from ``/dev/shm``.

        Processes that have the channel open keep using it; the memory is
        freed when the last one lets go.  New :meth:`attach` calls fail.  On
        the creating handle this happens at most once (later calls do
        nothing), so it can never remove a newer segment that reuses the name.

        Raises:
            ChannelNotFound: on a handle from :meth:`attach`, when the name is
                already gone.
        """
        if self._finalizer is not None:
            self._finalizer()
        else:
            Handle.unlink(self.name)

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: object) -> None:
        """On the creating handle: close the channel and remove its name.
        On a handle from :meth:`attach`: nothing."""
        if self._finalizer is not None:
            self.close()
            self.unlink()

    def __reduce__(self) -> Tuple[Any, Tuple[str]]:
        # Unpickling (in a spawned child, a pool worker, ...) attaches by name.
        return (Channel.attach, (self.name,))

    # -- looking inside ---------------------------------------------------

    def stats(self) -> ChannelStats:
        """A consistent snapshot of the shared header (taken under the lock)."""
        s = self._h.stats()
        return ChannelStats(
            capacity=s.dataqsiz,
            size=s.size,
            qcount=s.qcount,
            used=s.used,
            sendx=s.sendx,
            recvx=s.recvx,
            sendq=s.sendq,
            recvq=s.recvq,
            closed=bool(s.closed),
            creator_pid=s.creator_pid,
            sent=s.sent,
            received=s.received,
            send_parks=s.send_parks,
            recv_parks=s.recv_parks,
            send_wakes=s.send_wakes,
            recv_wakes=s.recv_wakes,
            recoveries=s.recoveries,
        )

    def check(self) -> None:
        """Verify the shared header's invariants and walk every queued record.

        Raises:
            CorruptSegment: an invariant does not hold.
        """
        self._h.check()

    def __len__(self) -> int:
        """Messages queued now."""
        return int(self._h.stats().qcount)

    def __repr__(self) -> str:
        try:
            s = self._h.stats()
        except errors.RingbufError as e:  # pragma: no cover - a damaged segment
            return f"<ringbuf.Channel {self.name!r} unreadable: {e}>"
        state = "closed" if s.closed else "open"
        return (
            f"<ringbuf.Channel {self.name!r} {s.qcount}/{s.dataqsiz} messages, "
            f"{s.used}/{s.size} bytes, {state}>"
        )


def _nbytes(data: Any) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return 0
