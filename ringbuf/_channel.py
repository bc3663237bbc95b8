"""ringbuf.Channel: a bounded channel whose struct lives in shared memory."""

from __future__ import annotations

import collections
import dataclasses
import numbers
import os
import pickle
import secrets
import time
import weakref
from typing import Any, AsyncIterator, Callable, ContextManager, Deque, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

import numpy as np
import numpy.typing as npt

from ringbuf import _async, _codec, _zerocopy, errors
from ringbuf import _lowlevel
from ringbuf._lowlevel import FOREVER, MAX_CAPACITY, MAX_SIZE, MIN_SIZE, NAME_MAX, SELECT_MAX, Handle
from ringbuf._lowlevel import retrying as _retrying

T = TypeVar("T")
Dumps = Callable[[Any], Any]
Loads = Callable[[bytes], Any]

#: The most messages one recv_many()/recv_bytes_many() call returns.
MAX_BATCH = 8192

__all__ = ["Channel", "ChannelStats", "ChannelWaiters", "DEFAULT_CAPACITY", "DEFAULT_SIZE", "CLOSED", "Selector", "select",
           "select_bytes", "select_async", "select_bytes_async"]

#: Messages a channel holds when ``capacity`` is not given.
DEFAULT_CAPACITY = 1024
#: Ring bytes a channel has when ``size`` is not given (1 MiB).
DEFAULT_SIZE = 1 << 20

# The default codec, bound once for the per-message paths.
_encode = _codec.encode
_pickle_loads = pickle.loads
_ObjectRecord = _codec.ObjectRecord
_aligned_empty = _codec.aligned_empty

# Longest wait a timeout can ask for (about 146 years); keeps deadlines in int64.
_MAX_WAIT_NS = 1 << 62


# A non-blocking call's deadline: now.  It still waits for the lock (held
# for one copy), then finds room or data, or not.
_now = time.monotonic_ns


def _deadline(timeout: float) -> int:
    """Turn a timeout in seconds into an absolute CLOCK_MONOTONIC deadline."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__!r}")
    if not timeout >= 0:  # also rejects NaN
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    return time.monotonic_ns() + int(min(float(timeout) * 1e9, _MAX_WAIT_NS))


def _check_int(param: str, value: object, low: int, high: int) -> int:
    """value as an int (any integer but a bool: numpy's too), in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{param} must be an int, not {type(value).__name__!r}")
    n = int(value)
    if not low <= n <= high:
        raise ValueError(f"{param} must be between {low} and {high}, got {n}")
    return n


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__!r}")
    try:
        size = len(name.encode())
    except UnicodeEncodeError as e:
        raise ValueError(f"name must be text that UTF-8 can encode, got {name!r} ({e.reason})") from None
    if not 1 <= size <= NAME_MAX or "/" in name or "\0" in name or name in (".", ".."):
        raise ValueError(f"name must be 1 to {NAME_MAX} bytes with no '/' or NUL, and not '.' or '..', got {name!r}")
    return name


def _unlink_if_creator(name: str, creator_pid: int, file_id: Tuple[int, int]) -> None:
    # A fork child inherits the creator's Channel object (and this finalizer);
    # only the creating process removes the name, and only while it names
    # this channel's segment.
    if os.getpid() == creator_pid:
        Handle.unlink_if_same(name, file_id)


@dataclasses.dataclass(frozen=True)
class ChannelStats:
    """A snapshot of the channel's shared header, taken under its lock.

    The fields carry the names of Go's ``hchan`` where the meaning matches.
    """

    capacity: int
    """The bound on queued messages (Go's ``dataqsiz``); 0 for an unbuffered channel."""
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
    """Senders parked waiting for room (in any process).  Those of a process
    that died are still counted for a few seconds, until they are reaped."""
    recvq: int
    """Receivers parked waiting for a message (in any process); as ``sendq``."""
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
    recvq_wakes: int
    """Wake system calls made for parked receivers: by sends, and by receivers
    handing on a wake-up for a message they left queued.  None is made when
    no receiver is parked."""
    sendq_wakes: int
    """Wake system calls made for parked senders by receives that freed room
    (one sender each; see ``baton_passes``)."""
    baton_passes: int
    """Wake-ups a woken sender handed on to the next parked sender: after
    sending, when room is left, or when its own message did not fit."""
    recoveries: int
    """Times the lock was taken over from a process that died holding it."""
    waiters_reaped: int
    """Parked senders and receivers struck off the counts because their process
    died (a few seconds after the death; see ``sendq``)."""
    peak_used: int
    """The most ring bytes ever in use at once, since creation."""
    peak_qcount: int
    """The most messages ever queued at once, since creation."""
    loans: int
    """Loans out now (:meth:`Channel.loan`, :meth:`Channel.loan_array`);
    :meth:`Channel.holds` says whose."""
    views: int
    """Views out now (:meth:`Channel.recv_bytes_view`, :meth:`Channel.recv_view`),
    counting those whose block ended while an object made from them lives on."""
    held: int
    """Ring bytes loans and views hold, beyond ``used``: room that is neither
    free nor queued."""
    loans_taken: int
    """Loans taken since creation."""
    views_taken: int
    """Views taken since creation."""
    loans_reclaimed: int
    """Loans of processes that died holding them, aborted by another."""
    views_reclaimed: int
    """Views of processes that died holding them, whose messages were queued again."""
    lock_owner: int = 0
    """Pid of the process holding the lock when :meth:`Channel.observe` read
    the header, 0 if free (always 0 from :meth:`Channel.stats`, which holds
    the lock itself)."""


class ChannelHold(NamedTuple):
    """One loan or view out: its kind ("loan" or "view"), the pid of the
    process holding it, and the ring bytes it holds (its message's length
    rounded up to 8, plus 8)."""

    kind: str
    pid: int
    nbytes: int


class ChannelWaiters(NamedTuple):
    """Who is parked on a channel: (pid, count) for each process with parked
    senders or receivers (tasks and selectors included).  Processes beyond the
    header's 64 slots a side share the last slot, shown with the pid of the
    one that parked there last."""

    senders: List[Tuple[int, int]]
    receivers: List[Tuple[int, int]]


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

    A channel carries Python objects (:meth:`send`, :meth:`recv`: pickled,
    with numpy arrays copied once each way) and raw bytes
    (:meth:`send_bytes`, :meth:`recv_bytes`).

    Args:
        capacity: most messages queued at once (0 to 2**32 - 17), Go's buffer size.
            0 makes an unbuffered channel, Go's rendezvous: a send returns
            only once a receiver has taken its message, and a send that gives
            up (timeout, signal, Ctrl-C, close) takes its message back, so it
            is never delivered later.  ``len()`` is then the message in
            flight (0 or 1).
        size: bytes in the ring (64 to 2**40), rounded up to a multiple of 8.
            The largest message is ``size - 8`` bytes.
        name: the segment's name, without a leading ``/``; a unique one is made
            when ``None``.  The segment is created exclusively.
        mode: its permission bits, 0600 (owner only) unless you ask for more,
            for example 0660 to share with the owner's group; the umask does
            not apply.
        dumps, loads: a codec for :meth:`send` and :meth:`recv` in place of
            pickle (give both or neither): ``dumps(obj)`` returns a bytes-like
            object and ``loads(data)`` rebuilds the object from ``bytes``.
            They travel with the channel when it is pickled, so a channel
            meant for other processes needs module-level functions.  The
            codec belongs to this handle; every process must use the same one.

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
    _finalizer: Optional[weakref.finalize[[str, int, Tuple[int, int]], "Channel"]]
    _dumps: Optional[Dumps]
    _loads: Optional[Loads]
    # Messages recv_many() took from the ring but did not return because an
    # earlier one failed to decode; every receive on this handle takes them
    # first (recv_into refuses while they wait), so nothing is lost or
    # reordered.
    _undecoded: Deque[bytes]

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        size: int = DEFAULT_SIZE,
        name: Optional[str] = None,
        *,
        mode: int = 0o600,
        dumps: Optional[Dumps] = None,
        loads: Optional[Loads] = None,
    ) -> None:
        capacity = _check_int("capacity", capacity, 0, MAX_CAPACITY)
        mode = _check_int("mode", mode, 0, 0o777)
        size = (_check_int("size", size, MIN_SIZE, MAX_SIZE) + 7) & ~7
        if name is None:
            name = f"ringbuf-{os.getpid()}-{secrets.token_hex(6)}"
        _check_name(name)
        self._set_codec(dumps, loads)
        self._h = Handle.create(name, capacity, size, mode)
        self._finalizer = weakref.finalize(self, _unlink_if_creator, name, os.getpid(), self._h.file_id)

    @classmethod
    def attach(cls, name: str, *, dumps: Optional[Dumps] = None, loads: Optional[Loads] = None) -> "Channel":
        """Open an existing channel by name, from any process of the same user.

        The returned handle does not own the segment: leaving a ``with`` block
        on it does nothing, and it never removes the name by itself.
        ``dumps``/``loads`` are as for the constructor.

        Raises:
            ChannelNotFound: no segment has that name.
            IncompatibleSegment: the segment is not a ringbuf channel of this
                layout version, or is smaller than its header says.
        """
        self = cls.__new__(cls)
        self._set_codec(dumps, loads)
        self._h = Handle.attach(_check_name(name))
        self._finalizer = None
        return self

    def _set_codec(self, dumps: Optional[Dumps], loads: Optional[Loads]) -> None:
        if (dumps is None) != (loads is None):
            raise ValueError("give both dumps and loads, or neither")
        if dumps is not None and not (callable(dumps) and callable(loads)):
            raise TypeError("dumps and loads must be callables")
        self._dumps, self._loads = dumps, loads
        self._undecoded = collections.deque()

    # -- identity ---------------------------------------------------------

    @property
    def name(self) -> str:
        """The segment's name (``/dev/shm/<name>``); :meth:`attach` takes it."""
        return self._h.name

    @property
    def capacity(self) -> int:
        """The most messages the channel holds at once (0: unbuffered)."""
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
        try:
            return self._h.send(data, deadline)
        except InterruptedError:
            return _retrying(self._h.send, data, deadline)

    def try_send_bytes(self, data: Any) -> None:
        """Send one message if there is room now, without waiting.

        Raises:
            Full: no room for this message (count or bytes).
            Closed, MessageTooLarge, TypeError: as :meth:`send_bytes`.
        """
        deadline = _now()
        try:
            try:
                self._h.send(data, deadline)
            except InterruptedError:
                _retrying(self._h.send, data, deadline)
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
        if self._undecoded:
            return self._undecoded.popleft()
        try:
            data: bytes = self._h.recv(deadline)
        except InterruptedError:
            data = _retrying(self._h.recv, deadline)
        return data

    def try_recv_bytes(self) -> bytes:
        """Receive the oldest message if there is one now, without waiting.

        Raises:
            Empty: nothing is queued.
            Closed: the channel is closed and drained.
        """
        if self._undecoded:
            return self._undecoded.popleft()
        deadline = _now()
        try:
            try:
                data: bytes = self._h.recv(deadline)
            except InterruptedError:
                data = _retrying(self._h.recv, deadline)
            return data
        except errors.Timeout:
            raise errors.Empty(f"channel {self.name!r} is empty") from None

    def recv_bytes_into(self, buffer: Any, timeout: Optional[float] = None) -> int:
        """Receive the oldest message into ``buffer``; return its length.

        Args:
            buffer: a writable C-contiguous bytes-like object (``bytearray``,
                ``memoryview``, numpy array...).  Nothing is allocated.
            timeout: as :meth:`recv_bytes`.

        Raises:
            BufferTooSmall: the message is longer than ``buffer``; it stays
                queued, and the exception's ``needed`` says its length.
            Timeout, Closed, KeyboardInterrupt: as :meth:`recv_bytes`.
        """
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if self._undecoded:
            data = self._undecoded[0]
            view = _lowlevel.writable_view(buffer).cast("B")
            if len(data) > view.nbytes:
                raise errors.BufferTooSmall(
                    f"the next message on channel {self.name!r} is {len(data)} bytes; the buffer holds {view.nbytes}",
                    len(data),
                )
            view[:len(data)] = self._undecoded.popleft()
            return len(data)
        return _retrying(self._h.recv_into, buffer, deadline)

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield raw messages until the channel is closed and drained."""
        while True:
            try:
                yield self.recv_bytes()
            except errors.Closed:
                return

    # -- objects ----------------------------------------------------------

    def send(self, obj: Any, timeout: Optional[float] = None) -> None:
        """Send any picklable object, waiting for room if the channel is full.

        The object is pickled with protocol 5.  Buffers that pickle hands out
        of band (the data of numpy arrays, ``pickle.PickleBuffer`` objects)
        are not joined into the pickle: each is copied once, straight from its
        own memory into the ring, as one piece of the message.

        Args:
            obj: the object; pickled before anything is sent, so an object
                that cannot be pickled raises here and leaves the channel as
                it was.
            timeout: as :meth:`send_bytes`.

        Raises:
            pickle.PicklingError, TypeError, ...: whatever pickling raised.
            Timeout, Closed, MessageTooLarge, KeyboardInterrupt: as
                :meth:`send_bytes` (the size is that of the whole message).
        """
        deadline = FOREVER if timeout is None else _deadline(timeout)
        parts = _encode(obj) if self._dumps is None else self._dumps(obj)
        send = self._h.send_parts if type(parts) is list else self._h.send
        try:
            return send(parts, deadline)
        except InterruptedError:
            return _retrying(send, parts, deadline)

    def try_send(self, obj: Any) -> None:
        """Send an object if there is room now, without waiting.

        Raises:
            Full: no room for this message.
            Closed, MessageTooLarge, pickling errors: as :meth:`send`.
        """
        parts = _encode(obj) if self._dumps is None else self._dumps(obj)
        send = self._h.send_parts if type(parts) is list else self._h.send
        deadline = _now()
        try:
            try:
                send(parts, deadline)
            except InterruptedError:
                _retrying(send, parts, deadline)
        except errors.Timeout:
            raise errors.Full(f"channel {self.name!r} has no room for this object") from None

    def recv(self, timeout: Optional[float] = None) -> Any:
        """Receive the oldest message and unpickle it, waiting if the channel is empty.

        Arrays come back writable, with the sender's dtype, shape and memory
        order, in memory of their own (never a view of the shared ring).

        Raises:
            Timeout, Closed, KeyboardInterrupt: as :meth:`recv_bytes`.
            pickle.UnpicklingError, ...: the message did not unpickle; it has
                been consumed all the same, so the channel moves on.
        """
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if self._undecoded:
            return self._decode(self._undecoded.popleft(), False)
        loads = self._loads
        alloc = _aligned_empty if loads is None else None
        try:
            data = self._h.recv(deadline, alloc)
        except InterruptedError:
            data = _retrying(self._h.recv, deadline, alloc)
        if loads is not None:
            return loads(data)
        # _codec.decode, inline: this runs for every message.
        obj = _pickle_loads(data)
        if obj is _ObjectRecord:
            return _codec.decode_record(data, type(data) is not bytes)
        return obj

    def try_recv(self) -> Any:
        """Receive and unpickle the oldest message if there is one now.

        Raises:
            Empty: nothing is queued.
            Closed: the channel is closed and drained.
            pickle.UnpicklingError, ...: as :meth:`recv`.
        """
        if self._undecoded:
            return self._decode(self._undecoded.popleft(), False)
        try:
            data = _retrying(self._h.recv, _now(), _aligned_empty if self._loads is None else None)
        except errors.Timeout:
            raise errors.Empty(f"channel {self.name!r} is empty") from None
        return self._decode(data, type(data) is not bytes)

    def recv_into(self, out: npt.NDArray[Any], timeout: Optional[float] = None) -> npt.NDArray[Any]:
        """Receive an array sent with :meth:`send` straight into ``out``.

        The array's data is copied from the ring into ``out``'s memory and
        nowhere else; nothing is allocated for it.  (The few arrays numpy
        pickles in band, such as datetimes, are unpickled and then copied;
        they must fit in 64 KiB.)

        Args:
            out: a writable, contiguous (C or Fortran) numpy array with the
                same dtype, shape and memory order as the array that was sent.
            timeout: as :meth:`recv`.

        Returns:
            ``out``.

        Raises:
            ValueError: the next message's array differs from ``out`` in size,
                dtype, shape or memory order.  The message stays queued.
            TypeError: ``out`` is not a writable contiguous array, or the next
                message is not a single array (it stays queued), or the
                channel has a custom codec.
            Timeout, Closed, KeyboardInterrupt: as :meth:`recv`.
        """
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, not {type(out).__name__!r}")
        if not out.flags.writeable or not (out.flags.c_contiguous or out.flags.f_contiguous):
            raise TypeError("out must be writable and contiguous (C or Fortran order)")
        if self._loads is not None:
            raise TypeError("recv_into() needs the default pickle codec")
        if self._undecoded:
            raise errors.RingbufError("messages taken by recv_many() are waiting; receive them with recv() first")
        into = _codec.ArrayInto(out)
        _retrying(self._h.recv_planned, into.flat, into.plan, FOREVER if timeout is None else _deadline(timeout))
        into.finish()
        return out

    def __iter__(self) -> Iterator[Any]:
        """Yield objects until the channel is closed and drained (Go's ``range``)."""
        while True:
            try:
                yield self.recv()
            except errors.Closed:
                return

    # -- batches ----------------------------------------------------------

    def send_bytes_many(self, messages: Iterable[Any], timeout: Optional[float] = None) -> None:
        """Send several bytes-like messages in order, taking the lock once for
        as many as fit at a time.

        Waits for room as :meth:`send_bytes` does whenever the channel fills
        part way through.  If the timeout expires or the channel is closed
        before all are sent, the first ``e.sent`` of them were sent and the
        rest were not; ``e.sent`` is an attribute of the exception raised.

        Raises:
            Timeout, Closed: with ``sent`` as above.
            MessageTooLarge: one of them can never fit; none was sent.
            TypeError, ValueError: one of them is not a contiguous bytes-like
                object; none was sent.
            KeyboardInterrupt: Ctrl-C while waiting; some may have been sent.
        """
        msgs = messages if isinstance(messages, list) else list(messages)
        deadline = FOREVER if timeout is None else _deadline(timeout)
        done = 0
        while done < len(msgs):
            try:
                done += self._h.send_batch(msgs[done:] if done else msgs, deadline)
            except InterruptedError as e:
                done += e.sent  # type: ignore[attr-defined]
            except errors.RingbufError as e:
                e.sent = done + e.sent  # type: ignore[attr-defined]
                raise

    def send_many(self, objs: Iterable[Any], timeout: Optional[float] = None) -> None:
        """Pickle several objects and send them as :meth:`send_bytes_many` does.

        Each object is pickled whole (arrays included, in band), so this suits
        many small objects; send large arrays one at a time with :meth:`send`.
        Every object is pickled before anything is sent.
        """
        dumps = self._dumps
        if dumps is None:
            msgs = [pickle.dumps(o, protocol=5) for o in objs]
        else:
            msgs = [dumps(o) for o in objs]
        self.send_bytes_many(msgs, timeout)

    def recv_bytes_many(self, max_items: int, timeout: Optional[float] = None) -> List[bytes]:
        """Wait for at least one message, then take up to ``max_items`` of
        those queued (at most MAX_BATCH) under one lock hold, without waiting
        for more.

        Raises:
            Timeout: nothing came before the timeout.
            Closed: the channel is closed and drained.
            KeyboardInterrupt: Ctrl-C while waiting.
        """
        max_items = _check_int("max_items", max_items, 1, 1 << 62)
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if self._undecoded:
            return [self._undecoded.popleft() for _ in range(min(max_items, len(self._undecoded)))]
        return _retrying(self._h.recv_batch, min(max_items, MAX_BATCH), deadline)

    def recv_many(self, max_items: int, timeout: Optional[float] = None) -> List[Any]:
        """Receive up to ``max_items`` objects as :meth:`recv_bytes_many` does.

        If one of them fails to unpickle, the objects before it are returned;
        the failing one and those after it wait on this handle, and every
        receive on it takes them first, in order: the next object receive
        raises for the failing one (it is consumed), a bytes receive returns
        its bytes.  (:meth:`recv_into` raises RingbufError while they wait.)

        Raises:
            as :meth:`recv_bytes_many`, and unpickling errors as :meth:`recv`.
        """
        raws = self.recv_bytes_many(max_items, timeout)  # messages left undecoded first
        out: List[Any] = []
        for i, raw in enumerate(raws):
            try:
                out.append(self._decode(raw, False))
            except Exception:
                rest = raws[i + 1:] if not out else raws[i:]
                self._undecoded.extendleft(reversed(rest))
                _undecoded_somewhere[0] = True
                if not out:
                    raise
                return out
        return out

    # -- asyncio ----------------------------------------------------------

    async def send_bytes_async(self, data: Any, timeout: Optional[float] = None) -> None:
        """:meth:`send_bytes` for asyncio: the event loop runs on while this
        task waits for room.

        The message is copied into the ring in this task's loop thread.  A
        task cancelled while it waits (``asyncio.wait_for``, ``task.cancel``)
        has sent nothing.  Waiting tasks are woken through the channel's own
        futex words by one helper thread per process; nothing polls.

        Raises:
            Timeout, Closed (``close`` wakes every waiting task),
            MessageTooLarge, TypeError: as :meth:`send_bytes`.
            asyncio.CancelledError: the task was cancelled; nothing was sent.
                On an unbuffered channel the message is taken back, unless a
                receiver took it in that very instant: then it was delivered,
                and the cancellation still propagates.
        """
        h = self._h
        buf = data if type(data) is bytes else _lowlevel.export(data)
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if self.capacity == 0:
            return await self._rendezvous_async([buf], len(buf), deadline)
        await _async.operate([(h, True, len(buf))], lambda d: h.send(buf, d), deadline, what=repr(self.name))

    async def recv_bytes_async(self, timeout: Optional[float] = None) -> bytes:
        """:meth:`recv_bytes` for asyncio: the event loop runs on while this
        task waits for a message.

        The message is taken in this task's loop thread: a task cancelled
        while it waits has taken nothing, and the message stays for another
        receiver.

        Raises:
            Timeout, Closed: as :meth:`recv_bytes` (``close`` wakes every
                waiting task; they drain, then raise Closed).
            asyncio.CancelledError: the task was cancelled; nothing was taken.
        """
        h = self._h
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if self._undecoded:
            return self._undecoded.popleft()
        try:  # the common case, at once: a message is there, or comes within the spin
            data: bytes = h.recv(_async.spin_until(deadline))
            return data
        except (errors.Timeout, InterruptedError):
            pass
        data = await _async.operate([(h, False, 0)], lambda d: h.recv(d), deadline, what=repr(self.name), spun=True)
        return data

    async def send_async(self, obj: Any, timeout: Optional[float] = None) -> None:
        """:meth:`send` for asyncio, as :meth:`send_bytes_async` (the object is
        pickled, or encoded with the channel's codec, before anything waits)."""
        parts = _encode(obj) if self._dumps is None else self._dumps(obj)
        h = self._h
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if type(parts) is not list:
            one = parts if type(parts) is bytes else _lowlevel.export(parts)
            pieces, send, nbytes = [one], (lambda d: h.send(one, d)), len(one)
        else:
            pieces, send = parts, (lambda d: h.send_parts(parts, d))
            nbytes = sum(memoryview(p).nbytes for p in parts)
        if self.capacity == 0:
            return await self._rendezvous_async(pieces, nbytes, deadline)
        await _async.operate([(h, True, nbytes)], send, deadline, what=repr(self.name))

    async def _rendezvous_async(self, parts: List[Any], nbytes: int, deadline: int) -> None:
        """An awaited send on an unbuffered channel (W13): publish once there
        is room, then await a receiver's acknowledgement."""
        h = self._h
        seq = await _async.operate([(h, True, nbytes)], lambda d: h.offer(parts, d), deadline, what=repr(self.name))
        await _async.await_taken(h, seq, deadline, repr(self.name))

    async def recv_async(self, timeout: Optional[float] = None) -> Any:
        """:meth:`recv` for asyncio, as :meth:`recv_bytes_async`; the object is
        unpickled (or decoded with the channel's codec) in this task."""
        h, alloc = self._h, (_aligned_empty if self._loads is None else None)
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if self._undecoded:
            return self._decode(self._undecoded.popleft(), False)
        try:  # the common case, at once (see recv_bytes_async)
            data = h.recv(_async.spin_until(deadline), alloc)
        except (errors.Timeout, InterruptedError):
            data = await _async.operate([(h, False, 0)], lambda d: h.recv(d, alloc), deadline, what=repr(self.name),
                                        spun=True)
        return self._decode(data, type(data) is not bytes)

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for obj in ch``: receive objects until the channel is
        closed and drained."""
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Any]:
        while True:
            try:
                obj = await self.recv_async()
            except errors.Closed:
                return
            yield obj

    # -- tasks ------------------------------------------------------------

    def task_done(self) -> None:
        """Mark one message as processed, for :meth:`join`.

        Every message sent on the channel counts as a task from the moment
        its send commits; ``task_done`` marks one done, from any process.
        :class:`JoinableQueue` is built on this pair.

        Raises:
            ValueError: every message sent is marked done already.
        """
        if not self._h.task_done():
            raise ValueError("task_done() called too many times")

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait until every message sent has been marked done with :meth:`task_done`.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes.

        Raises:
            Timeout: tasks were still unfinished at the deadline.
            KeyboardInterrupt: Ctrl-C while waiting (signal handlers run, and
                the wait then resumes with the same deadline unless the
                handler raised).  ``close`` does not end the wait: tasks are
                counted whether the channel is open or not.
        """
        _retrying(self._h.tasks_join, FOREVER if timeout is None else _deadline(timeout))

    # -- codec ------------------------------------------------------------

    def _decode(self, raw: Any, owned: bool) -> Any:
        if self._loads is not None:
            return self._loads(bytes(raw))
        return _codec.decode(raw, owned)

    # -- closing and lifetime ---------------------------------------------

    def close(self, *, discard: bool = False) -> int:
        """Close the channel for every process, as Go's ``close``.

        Afterwards every send raises :class:`Closed`; receivers still get the
        messages already queued, then :class:`Closed`.  Every parked sender
        and receiver, in every process, is woken.  Closing twice is harmless.

        Args:
            discard: also drop every message still queued, in the same
                critical section, so that receivers see the end at once.
                Each one dropped counts as received and as a done task
                (:meth:`join`).  This is ``Queue.shutdown(immediate=True)``.

        Returns:
            How many messages were dropped (0 unless ``discard``).
        """
        if discard:
            return self._h.close_and_drop()
        self._h.close()
        return 0

    def unlink(self) -> None:
        """Remove the channel's name from ``/dev/shm``.

        Processes that have the channel open keep using it; the memory is
        freed when the last one lets go.  New :meth:`attach` calls fail.  On
        the creating handle this happens at most once (later calls do
        nothing).  Only this channel's name is removed: if the name was
        removed already and a newer channel took it, that one stays.  (The
        check and the removal are two steps: a name removed and taken again
        in the instant between them is the one case this cannot tell.)

        Raises:
            ChannelNotFound: on a handle from :meth:`attach`, when the name is
                gone or names another channel now.
        """
        if self._finalizer is not None:
            self._finalizer()
        elif not Handle.unlink_if_same(self.name, self._h.file_id):
            raise errors.ChannelNotFound(
                f"no channel named {self.name!r} to remove: the name is gone, or names another channel now"
            )

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: object) -> None:
        """On the creating handle: close the channel and remove its name.
        On a handle from :meth:`attach`: nothing."""
        if self._finalizer is not None:
            self.close()
            self.unlink()

    def __reduce__(self) -> Tuple[Any, Tuple[str, Optional[Dumps], Optional[Loads], Tuple[int, int]]]:
        # Unpickling (in a spawned child, a pool worker, ...) attaches by
        # name, and checks that the name still names this channel.
        return (_attach, (self.name, self._dumps, self._loads, self._h.file_id))

    # -- looking inside ---------------------------------------------------

    def stats(self) -> ChannelStats:
        """A consistent snapshot of the shared header (taken under the lock)."""
        return _stats(self._h.stats())

    def observe(self) -> ChannelStats:
        """The same snapshot read without the lock: it never waits, never
        disturbs the channel, and works while another process holds the lock
        (``lock_owner`` says which).  The fields are read one by one while
        the channel runs, so it is close, not exact.  For monitoring."""
        return _stats(self._h.observe())

    def waiters(self) -> ChannelWaiters:
        """Who is parked on the channel now, read without the lock."""
        return ChannelWaiters(self._h.parked("senders"), self._h.parked("receivers"))

    def holds(self) -> List[ChannelHold]:
        """The loans and views out now, with the pids holding them (read
        without the lock)."""
        return [ChannelHold(*h) for h in self._h.holds()]

    # -- zero copy: loans and views -----------------------------------------

    def loan(self, nbytes: int, timeout: Optional[float] = None) -> ContextManager[memoryview]:
        """Write a bytes message in place: ``with ch.loan(n) as buf: ...``.

        Entering waits for room for ``nbytes``, as :meth:`send_bytes` does,
        and reserves it; ``buf`` is a writable memoryview of exactly those
        bytes, inside the ring.  Leaving the block normally publishes them as
        one message (:meth:`recv_bytes` returns it); leaving it by an
        exception aborts the loan: nothing is delivered and the room is freed.

        Messages are delivered in the order their room was reserved: one sent
        (or loaned) after this loan was taken waits behind it until it ends.
        So a receive in this thread, with nothing queued before the loan,
        waits for the loan: for this thread itself (it is not refused, as
        another thread may end the loan; give it a timeout).  Up to 16 loans
        and views may be out at once per channel, from any threads and
        processes; past that, entering waits like a send without room.  A loan
        belongs to its process: one that dies holding it is aborted by the
        next process that waits on the channel (within about a second).

        After the block ``buf`` is released (using it raises ValueError).  If
        something made from it still exists then (a slice, a numpy array),
        the loan is not published: :class:`BufferError` is raised, and the
        loan is aborted once that object is gone.  An exception from a
        signal handler (Ctrl-C) during the end of the block aborts the loan,
        unless it came after the publish (the message is then sent, and the
        exception still propagates); it may leave ``buf`` unreleased, and
        the loan then ends when ``buf`` and what was made from it are gone.

        Args:
            nbytes: the message's length, 1 to ``max_message_size``.
            timeout: seconds to wait for room; ``None`` waits as long as it
                takes, ``0`` does not wait.

        Raises:
            Timeout: no room came before the timeout.
            Closed: the channel was closed, before the loan (no room is
                taken) or while it was out (on leaving: it is aborted).
                ``close`` wakes a caller waiting for room.  Messages sent
                behind a loan before the close are still received: receivers
                wait for the loan to end before they see the channel drained.
            MessageTooLarge: ``nbytes`` can never fit.
            ValueError: ``nbytes`` < 1; or a channel without room to lend: an
                unbuffered one, or one whose size is not a multiple of the
                page size (4096).
            RuntimeError: every one of the channel's 16 loans and views is
                this thread's, through any of this process's handles of it
                (another would wait for itself); or the context manager was
                entered twice, or left twice or without being entered.
            KeyboardInterrupt: Ctrl-C while waiting (signal handlers run, and
                the wait resumes with the same deadline unless one raised).
        """
        nbytes = _check_int("nbytes", nbytes, 1, 2**64 - 1)
        if nbytes > self._h.max_message:
            raise errors.MessageTooLarge(
                f"a message of {nbytes} bytes can never fit channel {self.name!r} "
                f"(max_message_size is {self._h.max_message} bytes)"
            )
        return _zerocopy.Loan(self._h, nbytes, FOREVER if timeout is None else _deadline(timeout))

    def loan_array(self, shape: Any, dtype: Any, order: str = "C",
                   timeout: Optional[float] = None) -> ContextManager[npt.NDArray[Any]]:
        """Write a numpy array in place: ``with ch.loan_array(shape, dtype) as arr:``.

        Like :meth:`loan`, for an array: ``arr`` is an uninitialised array of
        that shape, dtype and memory order (``"C"`` or ``"F"``) living in the
        ring.  Leaving the block publishes it as a message that :meth:`recv`
        returns as an equal array (one copy out) and :meth:`recv_view` as a
        read-only view.  After the block ``arr`` is emptied in place (its
        shape becomes ``(0,)``) so that it no longer reaches into the ring; a
        view of it kept past the block (a slice, a reshape) stops the publish
        with :class:`BufferError`, as for :meth:`loan`, and so does anything
        but the ``with`` target holding ``arr`` itself at the end of the
        block (another name for it, a container, a memoryview or ctypes
        object made from it, which would keep pointing into the ring): then
        ``arr`` is left as it is, and the loan is aborted once all of these
        are gone.

        Raises:
            TypeError: ``shape`` is not ints, ``dtype`` not a dtype (None
                is one, as for numpy: float64).
            ValueError: a negative dimension or one past numpy's limit, a
                dtype holding Python objects or of no size (``"S0"``),
                another order, or a channel without room to lend (see
                :meth:`loan`).
            MessageTooLarge: the array and its header can never fit.
            Timeout, Closed, RuntimeError, KeyboardInterrupt: as :meth:`loan`.
        """
        return _zerocopy.ArrayLoan(self._h, shape, dtype, order, FOREVER if timeout is None else _deadline(timeout))

    def recv_bytes_view(self, timeout: Optional[float] = None) -> ContextManager[memoryview]:
        """Read the next message in place: ``with ch.recv_bytes_view() as view:``.

        Entering waits for a message, as :meth:`recv_bytes` does, and takes
        it; ``view`` is a read-only memoryview of its bytes inside the ring.
        Leaving the block completes the receive and frees the message's room,
        once every view taken before it has been freed too (room is freed in
        order).  A process that dies holding a view did not complete its
        receive: the message is queued again (behind those queued meanwhile)
        by the next process that waits on the channel.

        After the block ``view`` is released (using it raises ValueError).
        Anything made from it that still exists then (a numpy array over it)
        stays valid: the room stays held, and is freed when the last such
        object is gone, so no later message ever reuses memory it reads.

        Args:
            timeout: seconds to wait for a message; ``None`` waits as long as
                it takes, ``0`` does not wait.

        Raises:
            Timeout: no message came before the timeout.
            Closed: the channel is closed and drained (``close`` wakes a
                waiting receiver).
            ValueError: a channel without room to lend (see :meth:`loan`).
            RuntimeError: as :meth:`loan`.
            KeyboardInterrupt: Ctrl-C while waiting (as :meth:`loan`).
        """
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if self._undecoded:  # a message recv_many() took: it is no longer in the ring
            return _Taken(memoryview(self._undecoded.popleft()).toreadonly())
        return _zerocopy.BytesView(self._h, deadline)

    def recv_view(self, timeout: Optional[float] = None) -> ContextManager[Any]:
        """Receive the next object without copying its arrays: ``with ch.recv_view() as obj:``.

        Like :meth:`recv_bytes_view`, for an object sent with :meth:`send` or
        :meth:`loan_array`: the numpy arrays in it whose data travelled out of
        band (those of 32 KiB or more) are read-only views of the ring; the
        rest is unpickled as by :meth:`recv`.  The room is freed once none
        of those arrays is left (at once for an object without any): keep
        one past the block (``obj`` itself stays bound) and its room stays
        held until it is dropped or replaced, which ``stats().views`` shows.
        Copy an array (``arr.copy()``) to keep its data for longer.

        Raises:
            Timeout, Closed, ValueError, KeyboardInterrupt: as
                :meth:`recv_bytes_view`.
            RuntimeError: as :meth:`recv_bytes_view`, but for leaving: the
                end of this block ends nothing (the object's arrays do), so
                leaving it again does nothing either.
            pickle.UnpicklingError: the message is not a pickled object (it
                was sent with send_bytes); it is received all the same.
        """
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if self._undecoded:  # a message recv_many() took, decoded in memory of its own
            return _Taken(self._decode(self._undecoded.popleft(), False))
        return _zerocopy.ObjectView(self._h, deadline)

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


def _stats(s: Any) -> ChannelStats:
    """A ChannelStats from a ``struct rb_stats``."""
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
        recvq_wakes=s.recvq_wakes,
        sendq_wakes=s.sendq_wakes,
        baton_passes=s.baton_passes,
        recoveries=s.recoveries,
        waiters_reaped=s.waiters_reaped,
        peak_used=s.peak_used,
        peak_qcount=s.peak_qcount,
        loans=s.loans,
        views=s.views,
        held=s.held,
        loans_taken=s.loans_taken,
        views_taken=s.views_taken,
        loans_reclaimed=s.loans_reclaimed,
        views_reclaimed=s.views_reclaimed,
        lock_owner=s.lock_owner,
    )


def _nbytes(data: Any) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return 0


def _attach(name: str, dumps: Optional[Dumps], loads: Optional[Loads], file_id: Tuple[int, int]) -> Channel:
    ch = Channel.attach(name, dumps=dumps, loads=loads)
    if ch._h.file_id != file_id:
        raise errors.ChannelNotFound(
            f"channel {name!r} was removed, and the name now names another channel: a pickled handle of the "
            "old one cannot open it"
        )
    return ch


class _ClosedType:
    """The type of :data:`CLOSED`; there is only the one."""

    _instance: Optional["_ClosedType"] = None

    def __new__(cls) -> "_ClosedType":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ringbuf.CLOSED"

    def __reduce__(self) -> str:
        return "CLOSED"

    def __bool__(self) -> bool:
        return False


#: What :func:`select` gives for a receive case whose channel is closed and
#: drained: Go's ``v, ok := <-ch`` with ``ok`` false.  It is falsy, and the
#: same object in every process.
CLOSED = _ClosedType()

Case = Any  # a Channel (receive), or a (Channel, value) pair (send)


def select(*cases: Case, timeout: Optional[float] = None) -> Tuple[Channel, Any]:
    """Go's ``select``: wait until one of the cases can proceed, do exactly
    that one, and say which.

    A case is a :class:`Channel` (receive one object from it) or a pair
    ``(channel, obj)`` (send ``obj`` on it).  Each channel uses its own codec
    (pickle unless it was made with ``dumps``/``loads``).

    Returns:
        ``(channel, value)``: the channel object of the case that happened,
        so that ``if ch is done:`` works; for a receive case the object
        received, or :data:`CLOSED` if the channel is closed and drained;
        for a send case ``None``.

    Among cases that can proceed at the same time, each is equally likely to
    be chosen, as in Go, so that no channel starves.  Exactly one case
    happens: no message is taken, and none is sent, for the others.  The
    same channel may appear in several cases.  A send case on an unbuffered
    channel proceeds only once a receiver takes its value.

    A closed and drained channel is a receive case that is always ready, in
    every process at once (drained: its queued messages were received, and
    any sent before the close behind a loan still out, once the loan ended):
    closing a ``done`` channel is how one process tells any number of others
    to stop, as Go's ``ctx.Done()``::

        ch, value = ringbuf.select((events, event), done)
        if ch is done:
            return

    While nothing can proceed, the caller sleeps on every channel's futex at
    once (Linux's futex_waitv, 5.16 or later), counted as a parked sender or
    receiver on each; nothing polls.

    A loop that receives from the same channels again and again is faster
    with a :class:`Selector`, which sets its cases up once.  (A select
    whose cases all receive keeps them set up for the next call on the same
    channels too, without keeping any channel alive, but still has to find
    them each time.)

    Args:
        timeout: seconds to wait; ``None`` waits as long as it takes, ``0``
            does not wait (Go's ``default``).  A deadline on the monotonic
            clock, kept across signals.

    Raises:
        Timeout: no case could proceed before the timeout; nothing happened.
        Closed: the chosen case sends on a closed channel.
        MessageTooLarge: a send case's message can never fit its channel
            (checked before anything waits or happens).
        TypeError, ValueError: no cases, a case that is neither a channel nor
            a (channel, value) pair, more than 64 cases, or a bad timeout;
            raised before anything waits.  A value that cannot be pickled
            raises too, before anything happens.
        SelectUnsupported: it had to wait, and the kernel has no futex_waitv.
        KeyboardInterrupt: Ctrl-C while waiting (signal handlers run, and the
            wait resumes with the same deadline unless the handler raised).
    """
    entry = _recent.get(tuple(map(id, cases)))
    receive = entry[0] if entry is not None else _receive_cases(cases)
    if receive is None:
        return _select(cases, timeout, raw=False)
    return _select_objects(cases, receive, FOREVER if timeout is None else _deadline(timeout))


def select_bytes(*cases: Case, timeout: Optional[float] = None) -> Tuple[Channel, Any]:
    """:func:`select` for raw messages: a send case's value is a bytes-like
    object, sent as :meth:`Channel.send_bytes` does, and a receive case gives
    ``bytes`` (or :data:`CLOSED`), as :meth:`Channel.recv_bytes`.  The
    channels' codecs are not used."""
    entry = _recent.get(tuple(map(id, cases)))
    receive = entry[0] if entry is not None else _receive_cases(cases)
    if receive is None:
        return _select(cases, timeout, raw=True)
    deadline = FOREVER if timeout is None else _deadline(timeout)
    if _undecoded_somewhere[0]:
        left = _leftover(cases, None, True)
        if left is not None:
            return left
    try:
        return receive.recv(cases, deadline, None, CLOSED)
    except InterruptedError:
        return _retrying(receive.recv, cases, deadline, None, CLOSED)


class Selector:
    """:func:`select` over receive cases on the same channels, again and
    again, set up once: the cases are checked and the C array of channels
    is built when the selector is made, so each select is one C call.  Use
    it in a loop that receives from several channels::

        sel = ringbuf.Selector(jobs, done)
        while True:
            ch, job = sel.select()
            if ch is done:
                break
            handle(job)

    ``sel.select()`` is ``ringbuf.select(jobs, done)``: the same choice among
    ready channels (uniformly random), the same result, the same waiting
    (counted as a parked receiver on every channel, no polling).  A closed
    and drained channel is always ready and gives :data:`CLOSED`.  For send
    cases, whose values change from one select to the next, use
    :func:`select`.

    The selector holds its channels (they stay open and mapped as long as it
    lives); it owns nothing and has nothing to close.  It can be pickled (it
    is rebuilt from its channels) and shared by threads.

    Args:
        *channels: 1 to 64 channels; the same channel may appear more than
            once.

    Raises:
        TypeError: an argument is not a :class:`Channel`.
        ValueError: no channels, or more than 64.
    """

    __slots__ = ("_channels", "_cases")

    def __init__(self, *channels: Channel) -> None:
        if not channels:
            raise ValueError("a select needs at least one case")
        if len(channels) > SELECT_MAX:
            raise ValueError(f"a select takes at most {SELECT_MAX} cases, got {len(channels)}")
        for n, ch in enumerate(channels):
            if not isinstance(ch, Channel):
                raise TypeError(f"Selector() argument {n}: expected a Channel, not {type(ch).__name__!r}")
        self._channels: Tuple[Channel, ...] = channels
        self._cases = _lowlevel.ReceiveCases([ch._h for ch in channels])

    @property
    def channels(self) -> Tuple[Channel, ...]:
        """The channels, in the order given."""
        return self._channels

    def select(self, timeout: Optional[float] = None) -> Tuple[Channel, Any]:
        """Receive one object from whichever channel has one, waiting until
        one has.

        Returns:
            ``(channel, obj)``: the channel it came from (one of
            :attr:`channels`, so ``if ch is done:`` works) and the object,
            decoded with that channel's codec, or :data:`CLOSED` if the
            channel is closed and drained.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes,
                ``0`` does not wait (Go's ``default``).  A deadline on the
                monotonic clock, kept across signals.

        Raises:
            Timeout: no channel had a message before the timeout; nothing
                was received.
            TypeError, ValueError: a bad timeout, raised before anything
                waits.
            SelectUnsupported: it had to wait, and the kernel has no
                futex_waitv (Linux 5.16 or later).
            KeyboardInterrupt: Ctrl-C while waiting (signal handlers run,
                and the wait resumes with the same deadline unless the
                handler raised); every channel stays usable.
            pickle.UnpicklingError, ...: as :meth:`Channel.recv`.

        Closing one of the channels, in any process, wakes a waiting select,
        which then returns that channel with its queued messages first and
        :data:`CLOSED` once it is drained.
        """
        return _select_objects(self._channels, self._cases, FOREVER if timeout is None else _deadline(timeout))

    def select_bytes(self, timeout: Optional[float] = None) -> Tuple[Channel, Any]:
        """:meth:`select` for raw messages: ``(channel, bytes)``, or
        ``(channel, CLOSED)``, as :meth:`Channel.recv_bytes` receives them;
        the channels' codecs are not used.  Timeout, close, Ctrl-C and
        errors as :meth:`select`."""
        deadline = FOREVER if timeout is None else _deadline(timeout)
        if _undecoded_somewhere[0]:
            left = _leftover(self._channels, None, True)
            if left is not None:
                return left
        try:
            return self._cases.recv(self._channels, deadline, None, CLOSED)
        except InterruptedError:
            return _retrying(self._cases.recv, self._channels, deadline, None, CLOSED)

    def __reduce__(self) -> Tuple[Any, Tuple[Channel, ...]]:
        return Selector, self._channels

    def __repr__(self) -> str:
        return f"<ringbuf.Selector over {', '.join(repr(ch.name) for ch in self._channels)}>"


class _SelectCall(NamedTuple):
    """A select's cases, ready for _lowlevel.select."""

    chans: Sequence[Channel]
    handles: List[Handle]
    sends: Optional[List[Optional[List[Any]]]]  # None: every case receives
    deadline: int
    alloc: Optional[Callable[[int], Any]]


def _select_call(cases: Tuple[Case, ...], timeout: Optional[float], raw: bool) -> _SelectCall:
    """Check and encode select's cases; raises before anything waits."""
    if not cases:
        raise ValueError("select() needs at least one case")
    if len(cases) > SELECT_MAX:
        raise ValueError(f"select() takes at most {SELECT_MAX} cases, got {len(cases)}")
    deadline = FOREVER if timeout is None else _deadline(timeout)
    sends: Optional[List[Optional[List[Any]]]] = None
    chans: Sequence[Channel] = cases
    try:  # receive cases only, the common select: channels have handles
        handles = [c._h for c in cases]
    except AttributeError:
        chans, sends = _select_cases(cases, raw)
        handles = [ch._h for ch in chans]
    return _SelectCall(chans, handles, sends, deadline, None if raw else _aligned_empty)


class _Taken:
    """What recv_view and recv_bytes_view give for a message recv_many()
    took from the ring and left undecoded: the object, or a read-only
    memoryview of the bytes (released after the block, as a view's is)."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __enter__(self) -> Any:
        return self._value

    def __exit__(self, *exc: object) -> None:
        if type(self._value) is memoryview:
            self._value.release()


# Whether recv_many() ever left messages undecoded on a handle of this
# process: until then, selects do not look for them (a look costs about half
# a microsecond a select).  Set once, never cleared.
_undecoded_somewhere = [False]


def _leftover(chans: Sequence[Channel], sends: Optional[Sequence[Optional[List[Any]]]] = None,
              raw: bool = False) -> Optional[Tuple[Channel, Any]]:
    """A receive case whose handle holds messages recv_many() left undecoded
    is ready at once: the first of them, on one such case chosen at random
    (decoded, unless raw), or None."""
    waiting = [ch for i, ch in enumerate(chans) if ch._undecoded and (sends is None or sends[i] is None)]
    if not waiting:
        return None
    ch = waiting[secrets.randbelow(len(waiting))]
    data = ch._undecoded.popleft()
    return ch, data if raw else ch._decode(data, False)


def _select_result(call: _SelectCall, done: Tuple[int, str, Any], raw: bool) -> Tuple[Channel, Any]:
    i, what, data = done
    ch = call.chans[i]
    if what == _lowlevel.RECEIVED:
        return ch, data if raw else ch._decode(data, type(data) is not bytes)
    return ch, CLOSED if what == _lowlevel.DRAINED else None


def _select_objects(chans: Tuple[Channel, ...], receive: _lowlevel.ReceiveCases, deadline: int) -> Tuple[Channel, Any]:
    """Receive one object through a select whose cases all receive."""
    if _undecoded_somewhere[0]:
        left = _leftover(chans)
        if left is not None:
            return left
    try:
        ch, data = receive.recv(chans, deadline, _aligned_empty, CLOSED)
    except InterruptedError:
        ch, data = _retrying(receive.recv, chans, deadline, _aligned_empty, CLOSED)
    if data is CLOSED:
        return ch, data
    return ch, ch._decode(data, type(data) is not bytes)


# The receive cases of recent select() calls, so that a loop of selects on
# the same channels builds them once: the ids of the channels -> their
# ReceiveCases, and a weak reference to each channel.  Nothing here keeps a
# channel alive, and an entry leaves when any of its channels goes, before
# that id can be reused: an entry found by ids is on the very channels asked
# for.
_recent: Dict[Tuple[int, ...], Tuple[_lowlevel.ReceiveCases, List["weakref.ref[Channel]"]]] = {}
_RECENT_MAX = 64


def _receive_cases(cases: Tuple[Case, ...]) -> Optional[_lowlevel.ReceiveCases]:
    """The ReceiveCases of a select whose cases all receive, made now and
    kept in _recent; None for any other select."""
    if not 1 <= len(cases) <= SELECT_MAX or not all(isinstance(c, Channel) for c in cases):
        return None
    key = tuple(map(id, cases))
    made = _lowlevel.ReceiveCases([c._h for c in cases])
    if len(_recent) >= _RECENT_MAX:
        _recent.clear()
    forget = lambda _: _recent.pop(key, None)  # noqa: E731
    _recent[key] = made, [weakref.ref(c, forget) for c in cases]
    return made


def _select(cases: Tuple[Case, ...], timeout: Optional[float], raw: bool) -> Tuple[Channel, Any]:
    """select() with send cases, or with bad ones (raised here)."""
    call = _select_call(cases, timeout, raw)
    left = _leftover(call.chans, call.sends, raw)
    if left is not None:
        return left
    try:
        done = _lowlevel.select(call.handles, call.sends, call.deadline, call.alloc)
    except InterruptedError:
        done = _retrying(_lowlevel.select, call.handles, call.sends, call.deadline, call.alloc)
    return _select_result(call, done, raw)


def _select_cases(cases: Tuple[Case, ...], raw: bool) -> Tuple[List[Channel], List[Optional[List[Any]]]]:
    """The channels of select's cases, and for each a send's message (its
    parts, encoded with that channel's codec) or None for a receive."""
    chans: List[Channel] = []
    sends: List[Optional[List[Any]]] = []
    for n, case in enumerate(cases):
        if isinstance(case, Channel):
            chans.append(case)
            sends.append(None)
        elif isinstance(case, tuple) and len(case) == 2 and isinstance(case[0], Channel):
            ch, value = case
            chans.append(ch)
            if raw:
                sends.append([value])
            else:
                parts = _encode(value) if ch._dumps is None else ch._dumps(value)
                sends.append(parts if type(parts) is list else [parts])
        else:
            raise TypeError(
                f"select() case {n}: expected a Channel (receive) or a (channel, value) pair (send), "
                f"not {type(case).__name__!r}"
            )
    return chans, sends


async def select_async(*cases: Case, timeout: Optional[float] = None) -> Tuple[Channel, Any]:
    """:func:`select` for asyncio: the same cases and result, awaited.

    The event loop runs on while the task waits; the chosen case is done in
    the task's loop thread, so a task cancelled while it waits has done no
    case at all (a send case on an unbuffered channel, once offered, is
    taken back, unless a receiver took it in that very instant)."""
    return await _select_async(cases, timeout, raw=False)


async def select_bytes_async(*cases: Case, timeout: Optional[float] = None) -> Tuple[Channel, Any]:
    """:func:`select_bytes` for asyncio."""
    return await _select_async(cases, timeout, raw=True)


async def _select_async(cases: Tuple[Case, ...], timeout: Optional[float], raw: bool) -> Tuple[Channel, Any]:
    call = _select_call(cases, timeout, raw)
    sides = []
    for i, h in enumerate(call.handles):
        parts = None if call.sends is None else call.sends[i]
        sides.append((h, parts is not None, 0 if parts is None else sum(memoryview(p).nbytes for p in parts)))
    left = _leftover(call.chans, call.sends, raw)
    if left is not None:
        return left
    while True:
        done = await _async.operate(sides, lambda d: _lowlevel.select(call.handles, call.sends, d, call.alloc, True),
                                    call.deadline, served=lambda r: r[0], what="any case of a select")
        if done[1] != _lowlevel.OFFERED:
            return _select_result(call, done, raw)
        # A send case on an unbuffered channel: offered to the receiver that
        # made it ready for at most a re-check period, as select() does; if
        # nobody takes it, it is taken back and the select goes on.
        i, seq = done[0], done[2]
        offer_until = time.monotonic_ns() + _async.OFFER_NS
        until = offer_until if call.deadline < 0 else min(call.deadline, offer_until)
        try:
            await _async.await_taken(call.handles[i], seq, until, repr(call.chans[i].name))
        except errors.Timeout:
            if 0 <= call.deadline <= time.monotonic_ns():
                raise
            continue
        return call.chans[i], None
