"""The one module that touches the compiled core (``ringbuf._rb``).

Each method wraps one C call, checks its status and turns a failure into an
exception through the single table :data:`_ERRORS`.  Nothing here knows about
seconds, pickling or retries: deadlines are absolute ``CLOCK_MONOTONIC``
nanoseconds (``time.monotonic_ns()`` on Linux), and a wait interrupted by a
signal surfaces as :class:`InterruptedError` for the caller to retry.
"""

from __future__ import annotations

import errno
import functools
import logging
import mmap
import os
import time
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")

from ringbuf import errors
from ringbuf._buffers import SCRATCH_SIZE, give_big, new_scratch, scratch as _scratch, take_big
from ringbuf._buffers import give_rx as _give_rx, new_rx as _new_rx, take_rx as _take_rx
from ringbuf._rb import ffi, lib

FOREVER: int = lib.RB_FOREVER
MIN_SIZE: int = lib.RB_MIN_SIZE
MAX_SIZE: int = lib.RB_MAX_SIZE
MAX_CAPACITY: int = lib.RB_MAX_CAPACITY
NAME_MAX: int = lib.RB_NAME_MAX
#: Where shm_open's names live on Linux: a channel named N is /dev/shm/N.
SHM = "/dev/shm"
DATA_OFFSET: int = lib.RB_DATA_OFF
LAYOUT_VERSION: int = lib.RB_LAYOUT_VERSION
#: The mark every ringbuf segment starts with, whatever its layout version.
MAGIC: int = lib.RB_MAGIC
#: Loans and views out at once, per channel.
HOLDS: int = lib.RB_HOLDS


def _header_fields() -> Dict[str, Tuple[int, int]]:
    out = ffi.new("struct rb_field[]", 64)
    n = lib.rb_header_fields(out, 64)
    return {ffi.string(out[i].name).decode(): (int(out[i].offset), int(out[i].size)) for i in range(n)}


#: The shared header's fields, as the compiler laid them out: name ->
#: (byte offset, size).  For observers and tests that read the segment
#: directly; the waiter slot arrays are given by their first slot's word.
HEADER_FIELDS: Dict[str, Tuple[int, int]] = _header_fields()

_OK = lib.RB_OK
_ESMALLBUF = lib.RB_ESMALLBUF
_ESYS = lib.RB_ESYS
_ECHANGED = lib.RB_ECHANGED
_ERECOVERED = lib.RB_ERECOVERED
_EINTR = lib.RB_EINTR
_EINVAL = lib.RB_EINVAL
_ECLOSED = lib.RB_ECLOSED
_EREADY = lib.RB_EREADY
_EHELD = lib.RB_EHELD

#: The most cases one select may have.
SELECT_MAX: int = lib.RB_SELECT_MAX
# Bound once: looked up on every message of the send and receive hot paths.
_rb_recv = lib.rb_recv
_rb_send = lib.rb_send
_rb_select = lib.rb_select
_rb_select_recv = lib.rb_select_recv
_unpack = ffi.unpack
# Those of loans and views made here: the slow paths, and the intent bound to
# each handle (_zerocopy binds the calls it makes on every loan and view).
_rb_loan_begin = lib.rb_loan_begin
_rb_view_begin = lib.rb_view_begin
_rb_hold_intent = lib.rb_hold_intent
_rb_hold_release = lib.rb_hold_release

# status -> (exception class, message template).  Templates may use {name},
# the channel's name, and whatever else the caller passes to _raise.  RB_ESYS is special: errno picks the class.
_ERRORS: Dict[int, Tuple[Callable[[str], BaseException], str]] = {
    lib.RB_ETIMEDOUT: (errors.Timeout, "timed out waiting on channel {name!r}"),
    lib.RB_EINTR: (InterruptedError, "wait on channel {name!r} interrupted by a signal"),
    lib.RB_ECLOSED: (errors.Closed, "channel {name!r} is closed"),
    lib.RB_ETOOBIG: (
        errors.MessageTooLarge,
        "a message of {nbytes} bytes can never fit channel {name!r} (max_message_size is {limit} bytes)",
    ),
    lib.RB_ECORRUPT: (errors.CorruptSegment, "channel {name!r}: the shared header or a record failed its bounds check"),
    lib.RB_EINCOMPAT: (
        errors.IncompatibleSegment,
        "{name!r} is not a ringbuf channel of this layout version, or is too small for its header",
    ),
    lib.RB_EINVAL: (ValueError, "invalid argument for channel {name!r}"),
    lib.RB_ESELF: (
        RuntimeError,
        "every loan and view of channel {name!r} is this thread's (counting views kept alive by arrays made from "
        "them): waiting for another would wait for this thread itself",
    ),
    lib.RB_ENOSYS: (
        errors.SelectUnsupported,
        "select() has to wait on several channels at once ({name!r} among them), which needs the futex_waitv "
        "system call of Linux 5.16 or later; this kernel does not have it",
    ),
}

# RB_ESYS: errno -> (exception class, message template).
_ERRNO_ERRORS: Dict[int, Tuple[Callable[..., OSError], str]] = {
    errno.ENOENT: (errors.ChannelNotFound, "no channel named {name!r} (nothing at /dev/shm/{name})"),
    errno.EEXIST: (errors.ChannelExists, "a segment named {name!r} already exists in /dev/shm"),
}


def _raise(rc: int, name: str, **details: object) -> NoReturn:
    if rc == _ESYS:
        err = ffi.errno
        cls, template = _ERRNO_ERRORS.get(err, (OSError, "channel {name!r}: {strerror}"))
        raise cls(err, template.format(name=name, strerror=os.strerror(err)))
    cls_, template = _ERRORS[rc]
    raise cls_(template.format(name=name, **details))


def export(data: Any) -> memoryview:
    """A flat memoryview of one C-contiguous bytes-like message, checked
    once, for a message sent more than once (an awaited one's attempts):
    every send takes it as it takes the object, and ``len`` gives its bytes.
    While it lives, a bytearray under it cannot be resized."""
    return _view(data).cast("B")


def _export(data: Any) -> Any:
    """A cffi view of a bytes-like object's memory, with clear errors."""
    try:
        return ffi.from_buffer(data)
    except TypeError:
        raise TypeError(
            f"expected a bytes-like object (bytes, bytearray, memoryview, ...), not {type(data).__name__!r}"
        ) from None
    except BufferError as e:
        raise ValueError(f"a message must be one C-contiguous buffer: {e}") from None


def _view(data: Any) -> memoryview:
    """A memoryview of one C-contiguous bytes-like message, with clear errors."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"expected a bytes-like object (bytes, bytearray, memoryview, ...), not {type(data).__name__!r}"
        ) from None
    if not view.c_contiguous:
        raise ValueError("a message must be one C-contiguous buffer: this one is not")
    return view


def writable_view(buffer: Any) -> memoryview:
    """A memoryview of a writable C-contiguous buffer to receive into, with
    clear errors."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"expected a writable bytes-like object, not {type(buffer).__name__!r}") from None
    if view.readonly:
        raise TypeError(f"expected a writable bytes-like object; this {type(buffer).__name__} is read-only")
    if not view.c_contiguous:
        raise ValueError("the buffer must be C-contiguous")
    return view


def _iovec(parts: Sequence[Any]) -> Tuple[Any, List[Any]]:
    """A ``struct rb_iov[]`` over parts, and the views that keep them alive."""
    iov = ffi.new("struct rb_iov[]", len(parts))
    keep = [_export(p) for p in parts]
    for i, b in enumerate(keep):
        iov[i].base = b
        iov[i].len = len(b)
    return iov, keep


def retrying(call: Callable[..., T], *args: Any) -> T:
    """call(*args), again each time it returns early for Python's signal
    handlers (InterruptedError): they run between the tries, and what one
    raises (KeyboardInterrupt) propagates.  The arguments, deadline included,
    stay the same."""
    while True:
        try:
            return call(*args)
        except InterruptedError:
            pass


_log = logging.getLogger("ringbuf")


def _note_recovery(name: str) -> None:
    _log.warning(
        "channel %r: a process died holding the lock; process %d took it over and repaired the header",
        name, os.getpid(),
    )


class Handle:
    """This process's mapping of one channel segment.

    The mapping is released when the handle is garbage-collected, never
    earlier, so no thread can be left using an unmapped segment.

    Any call that takes the lock can find that its last owner died: the C
    core then repairs the header and answers RB_ERECOVERED, having done
    nothing else.  Every method here logs that (logger ``ringbuf``, level
    WARNING) and makes the call again.
    """

    __slots__ = ("_ch", "name", "capacity", "size", "max_message", "hold_intent", "file_id")

    def __init__(self, ch: Any, name: str) -> None:
        self._ch = ffi.gc(ch, lib.rb_detach)
        self.name = name
        #: hold_intent(where, publish): say what releasing this handle's loan
        #: does, publish (1) or abort (0); returns 0 if it was released
        #: already.  The C function itself, bound to this handle without a
        #: Python frame: the end of a loan's block calls it, and so does what
        #: cleans up after a Ctrl-C there, where a Python frame's entry would
        #: be one more place for a second Ctrl-C to land.
        self.hold_intent: Callable[[Any, int], int] = functools.partial(_rb_hold_intent, self._ch)
        out = ffi.new("uint64_t[2]")
        lib.rb_file_id(self._ch, out)
        #: The segment's file, (device, inode): it names this segment for as
        #: long as it exists, where the name may be removed and reused.
        self.file_id: Tuple[int, int] = (int(out[0]), int(out[1]))
        st = self.observe()  # the bounds come from this handle's own copies: no lock needed
        self.capacity: int = st.dataqsiz
        self.size: int = st.size
        self.max_message: int = lib.rb_max_message(self._ch)

    @classmethod
    def create(cls, name: str, capacity: int, size: int, mode: int = 0o600) -> "Handle":
        out = ffi.new("struct rb_chan **")
        rc = lib.rb_create(name.encode(), capacity, size, mode, out)
        if rc != _OK:
            _raise(rc, name)
        return cls(out[0], name)

    @classmethod
    def attach(cls, name: str) -> "Handle":
        out = ffi.new("struct rb_chan **")
        rc = lib.rb_attach(name.encode(), out)
        if rc == _ESYS and ffi.errno in (errno.EINVAL, errno.EISDIR):  # the name is checked: not a file
            raise errors.IncompatibleSegment(f"{name!r} in {SHM} is not a ringbuf channel (not a regular file)")
        if rc != _OK:
            _raise(rc, name)
        return cls(out[0], name)

    @staticmethod
    def unlink(name: str) -> None:
        rc = lib.rb_unlink(name.encode())
        if rc != _OK:
            _raise(rc, name)

    @staticmethod
    def unlink_if_same(name: str, file_id: Tuple[int, int]) -> bool:
        """Remove ``name`` if it still names the segment whose file is
        ``file_id`` (Handle.file_id); False if it is gone or names another
        segment now.  Two steps, a look and the removal: a segment removed
        and made again under that name in between would be the one removed
        (Linux has no removal on condition)."""
        try:
            st = os.stat(os.path.join(SHM, name))
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) != file_id or file_id == (0, 0):
            return False
        try:
            Handle.unlink(name)
        except errors.ChannelNotFound:
            return False
        return True

    def _failed(self, rc: int, **details: object) -> None:
        """A call answered ``rc`` (not RB_OK).  Return after a recovery, which
        is logged, for the caller to make the call again; raise for anything
        else (InterruptedError for RB_EINTR: the caller's caller retries)."""
        if rc != _ERECOVERED:
            _raise(rc, self.name, **details)
        _note_recovery(self.name)

    def _call(self, fn: Callable[..., int], *args: Any) -> None:
        """fn(self._ch, *args) for a call that waits for nothing but the lock:
        again after a recovery, and again after RB_EINTR (the lock stayed
        held; signal handlers run between the tries); raise on failure."""
        rc = fn(self._ch, *args)
        while rc != _OK:
            if rc != _EINTR:
                self._failed(rc)
            rc = fn(self._ch, *args)

    def send(self, data: Any, deadline: int) -> None:
        """Send one bytes-like message.  ``bytes`` go to C as they are; other
        buffers are exported with ``ffi.from_buffer`` (C-contiguous only)."""
        buf = data if type(data) is bytes else _export(data)
        rc = _rb_send(self._ch, buf, len(buf), deadline)
        while rc != _OK:
            self._failed(rc, nbytes=len(buf), limit=self.max_message)
            rc = _rb_send(self._ch, buf, len(buf), deadline)

    def send_parts(self, parts: Sequence[Any], deadline: int) -> None:
        """Send one message made of the bytes-like ``parts``, each copied
        straight from its own memory into the ring."""
        iov, keep = _iovec(parts)
        rc = lib.rb_sendv(self._ch, iov, len(parts), deadline)
        while rc != _OK:
            self._failed(rc, nbytes=sum(len(b) for b in keep), limit=self.max_message)
            rc = lib.rb_sendv(self._ch, iov, len(parts), deadline)

    def send_batch(self, msgs: Sequence[Any], deadline: int) -> int:
        """Send bytes-like messages in order; returns how many were sent
        before any exception, which then carries that count as ``sent``.

        Each message is read through one buffer export that gives both its
        length and its bytes: ``bytes`` as they are (immutable), anything
        else through a memoryview held until the bytes are joined, so that a
        bytearray cannot be resized in between."""
        lens = [len(m) if type(m) is bytes else -1 for m in msgs]
        if -1 in lens:
            views: Sequence[Any] = [m if type(m) is bytes else _view(m) for m in msgs]
            lens = [len(v) if type(v) is bytes else v.nbytes for v in views]
        else:
            views = msgs
        data = b"".join(views)
        del views
        sent = ffi.new("uint64_t *")
        c_lens, src = ffi.new("uint64_t[]", lens), ffi.from_buffer(data)
        done, offset = 0, 0
        while True:  # again from where a recovery left off
            rc = lib.rb_send_batch(self._ch, src + offset, c_lens + done, len(lens) - done, sent, deadline)
            now = int(sent[0])
            offset += sum(lens[done:done + now])
            done += now
            if rc == _OK:
                return done
            try:
                self._failed(rc, nbytes=max(lens), limit=self.max_message)
            except BaseException as e:
                e.sent = done  # type: ignore[attr-defined]
                raise

    def recv(self, deadline: int, alloc: Optional[Callable[[int], Any]] = None) -> Any:
        """Receive one message: as ``bytes``, or, when ``alloc`` is given and
        the message is longer than the scratch buffer, as a memoryview of
        ``alloc(n)``, memory of its own that the caller may keep."""
        # The common case, a message that fits the scratch buffer, in as few
        # Python steps as possible: for small messages these steps are a good
        # part of the cost.  Every other outcome goes to _recv_slow.
        try:
            rx = _take_rx()
        except IndexError:
            rx = _new_rx()
        n = _rb_recv(self._ch, rx[0], SCRATCH_SIZE, rx[1], deadline)
        if n >= 0:
            data: bytes = rx[2][:n]
            _give_rx(rx)
            return data
        try:
            return self._recv_slow(n, rx, deadline, alloc)
        finally:
            _give_rx(rx)

    def _recv_slow(self, n: int, rx: Tuple[Any, Any, Any], deadline: int,
                   alloc: Optional[Callable[[int], Any]]) -> Any:
        """recv() after rb_recv answered ``-n``: a message longer than the
        scratch buffer, a recovery, or an error to raise."""
        buf, needp, view = rx
        while True:
            # Longer than the scratch buffer: receive it into memory of its
            # own size.  It stays queued in between, so another receiver may
            # take it first; this one then takes whatever comes next.
            while n == -_ESMALLBUF:
                need = needp[0]
                try:
                    if alloc is None:  # bytes: through a kept buffer
                        big = take_big(need)
                    else:  # the result keeps this memory: a buffer of its own
                        own = alloc(need)
                        big = ffi.from_buffer(own)
                except BaseException:
                    # W10: the message stays queued and this receiver may
                    # have been woken for it: wake another one.
                    lib.rb_pass_wake(self._ch)
                    raise
                if alloc is None:
                    try:
                        n = lib.rb_recv(self._ch, big, len(big), needp, deadline)
                        if n >= 0:
                            return ffi.unpack(big, n)
                    finally:
                        give_big(big)
                else:
                    n = lib.rb_recv(self._ch, big, need, needp, deadline)
                    if n >= 0:
                        return memoryview(own)[:n]
            self._failed(-n)
            n = lib.rb_recv(self._ch, buf, SCRATCH_SIZE, needp, deadline)
            if n >= 0:
                return view[:n]

    def recv_into(self, buffer: Any, deadline: int) -> int:
        """Receive one message into a writable buffer; returns its length.

        Raises BufferTooSmall (the message stays queued) if it does not fit.
        """
        writable_view(buffer)
        dst = ffi.from_buffer(buffer, require_writable=True)
        needp = ffi.new("uint64_t *")
        while True:
            n = lib.rb_recv(self._ch, dst, len(dst), needp, deadline)
            if n >= 0:
                return int(n)
            if n == -_ESMALLBUF:
                lib.rb_pass_wake(self._ch)
                raise errors.BufferTooSmall(
                    f"the next message on channel {self.name!r} is {needp[0]} bytes; the buffer holds {len(dst)}",
                    needp[0],
                )
            self._failed(-n)

    def recv_batch(self, max_items: int, deadline: int) -> List[bytes]:
        """Wait for a message, then receive up to max_items of those queued."""
        try:
            rx = _take_rx()
        except IndexError:
            rx = _new_rx()
        try:
            buf, needp, view = rx
            lens = ffi.new("uint64_t[]", max_items)
            while True:
                n = lib.rb_recv_batch(self._ch, buf, SCRATCH_SIZE, lens, max_items, needp, deadline)
                if n >= 0:
                    break
                if n == -_ESMALLBUF:
                    # Not even the first fits the scratch buffer: take it alone.
                    return [self.recv(deadline)]
                self._failed(-n)
            out, off = [], 0
            for size in ffi.unpack(lens, n):
                end = off + size
                out.append(view[off:end])
                off = end
            return out
        finally:
            _give_rx(rx)

    def recv_planned(self, dst: Any, plan: Callable[[Any, int], Tuple[int, int]], deadline: int) -> None:
        """Receive part of the next message straight into ``dst``.

        ``plan(prefix, length)`` sees the first bytes of the next message
        (without receiving it) and returns the (offset, length) of the part
        to copy, or raises; then the message is received, copying only that
        part.  If plan raises, the message stays queued.
        """
        dst_buf = ffi.from_buffer(dst, require_writable=True)
        try:
            rx = _take_rx()
        except IndexError:
            rx = _new_rx()
        try:
            buf, tokenp = rx[0], rx[1]
            while True:
                n = lib.rb_peek(self._ch, buf, SCRATCH_SIZE, tokenp, deadline)
                if n < 0:
                    self._failed(-n)
                    continue
                try:
                    skip, length = plan(ffi.buffer(buf, min(n, SCRATCH_SIZE)), n)
                    if length > len(dst_buf):
                        raise ValueError(f"{length} bytes do not fit the destination of {len(dst_buf)}")
                except BaseException:
                    lib.rb_pass_wake(self._ch)
                    raise
                rc = lib.rb_recv_at(self._ch, tokenp[0], skip, dst_buf, length)
                if rc == _OK:
                    return
                if rc == _ERECOVERED:
                    _note_recovery(self.name)
                elif rc != _ECHANGED:  # ECHANGED: another receiver took it; look again
                    lib.rb_pass_wake(self._ch)  # W10: the message stays for another receiver
                    self._failed(rc)
        finally:
            _give_rx(rx)

    def close(self) -> None:
        self._call(lib.rb_close)

    def close_and_drop(self) -> int:
        """Close, dropping every message queued; returns how many."""
        dropped = ffi.new("uint64_t *")
        self._call(lib.rb_close_and_drop, dropped)
        return int(dropped[0])

    # -- loans and views (L1..L7 in csrc/ringbuf.h) --------------------------

    def hold_wait(self, rc: int, loan: bool, nbytes: int, deadline: int, where: Any) -> None:
        """The slow path of taking a hold, after a first begin (rb_loan_begin
        for a loan, ``loan``, of nbytes; rb_view_begin for a view) answered
        ``rc``, not RB_OK: raise its error, or begin again after a recovery
        or after RB_EINTR (the loop's jump back runs signal handlers, whose
        exceptions propagate) until a begin takes the hold and fills in
        ``where``.  _zerocopy makes the first call itself and the buffer
        over the hold after: a Python frame fewer for every loan and view."""
        c = self._ch
        while rc != _OK:
            if rc == _EINVAL:
                self._cannot_hold()
            if rc != _EINTR:
                self._failed(rc, nbytes=nbytes, limit=self.max_message)
            rc = _rb_loan_begin(c, nbytes, deadline, where) if loan else _rb_view_begin(c, deadline, where)

    def hold_release(self, where: Any) -> None:
        """Release a hold now, as its buffer's death would (twice is
        harmless, and so is a ``where`` no begin filled in)."""
        _rb_hold_release(self._ch, where)

    def hold_unsettled(self, rc: int) -> None:
        """rb_hold_settle answered ``rc``, not RB_OK (published): return if
        something made from the loan's memory still exists (RB_EHELD; the
        loan is now to be aborted when that is gone); raise Closed if the
        channel was closed before it was published (it was aborted
        instead), CorruptSegment if the lock or the loan's record was
        damaged (not published), ValueError if the ``where`` settled was not
        filled in by a begin on this handle."""
        if rc != _EHELD:
            _raise(rc, self.name)

    def _cannot_hold(self) -> NoReturn:
        reason = ("an unbuffered channel holds no room to lend" if self.capacity == 0
                  else f"its size ({self.size} bytes) is not a multiple of the page size"
                  if self.size % mmap.PAGESIZE else "this process cannot (a fork child that could not open the "
                  "segment again, or a ring that could not be mapped twice)")
        raise ValueError(f"channel {self.name!r} cannot lend or lend out its ring: {reason}")

    def holds(self) -> List[Tuple[str, int, int]]:
        """(kind, pid, ring bytes) of each loan ("loan") and view ("view")
        out, read without the lock."""
        out = ffi.new("struct rb_hold_info[]", lib.RB_HOLDS)
        n = lib.rb_holds(self._ch, out, lib.RB_HOLDS)
        return [("loan" if out[i].kind == lib.RB_HOLD_LOAN else "view", int(out[i].pid), int(out[i].bytes))
                for i in range(n)]

    def stats(self) -> Any:
        """A ``struct rb_stats`` snapshot taken under the lock."""
        out = ffi.new("struct rb_stats *")
        self._call(lib.rb_stats, out)
        return out

    def check(self) -> None:
        self._call(lib.rb_check)

    def observe(self) -> Any:
        """A ``struct rb_stats`` read without the lock (approximate; disturbs nothing)."""
        out = ffi.new("struct rb_stats *")
        lib.rb_observe(self._ch, out)
        return out

    def parked(self, side: str) -> List[Tuple[int, int]]:
        """(pid, count) for each process with "senders" or "receivers" parked
        (read without the lock).  Processes beyond the slots share the last,
        shown with the pid of the one that parked there last."""
        out = ffi.new("struct rb_parked[]", lib.RB_WAITER_SLOTS)
        n = lib.rb_parked(self._ch, 0 if side == "senders" else 1, out, lib.RB_WAITER_SLOTS)
        return [(int(out[i].pid), int(out[i].count)) for i in range(n)]

    def wait_begin(self, send: bool, nbytes: int = 0, self_recv: bool = False) -> Optional[Any]:
        """W14: count this caller in as a waiter (a sender of nbytes, or a
        receiver), for a wait made elsewhere.  ``self_recv``: the caller is
        counted in as a receiver of this channel already, and is no receiver
        for its own send.  Returns the ``struct rb_wait`` to hand to
        wait_leave and wait_end, or None if the operation can proceed now.
        Raises InterruptedError if the lock stayed held for a millisecond (a
        stuck peer): the caller, an event loop's task, looks again later."""
        w = ffi.new("struct rb_wait *")
        while True:
            rc = lib.rb_wait_begin(self._ch, int(send), nbytes, int(self_recv), w)
            if rc == _OK:
                return w
            if rc == _EREADY:
                return None
            if rc == _EINTR:
                raise InterruptedError
            self._failed(rc)

    def offer(self, parts: Sequence[Any], deadline: int) -> int:
        """W13 in steps: publish the message made of parts on an unbuffered
        channel once there is room, without waiting for a receiver; returns
        its number for ack_begin/take_back."""
        iov, keep = _iovec(parts)
        seq = ffi.new("uint64_t *")
        rc = lib.rb_offer(self._ch, iov, len(parts), seq, deadline)
        while rc != _OK:
            self._failed(rc, nbytes=sum(len(b) for b in keep), limit=self.max_message)
            rc = lib.rb_offer(self._ch, iov, len(parts), seq, deadline)
        return int(seq[0])

    def ack_begin(self, seq: int) -> Optional[Any]:
        """None once message seq was taken; else count in to wait for it (a
        ``struct rb_wait`` for wait_end).  Raises Closed, having taken the
        message back, if the channel was closed first; InterruptedError as
        wait_begin."""
        w = ffi.new("struct rb_wait *")
        rc = lib.rb_ack_begin(self._ch, seq, w)
        if rc == _OK:
            return None
        if rc == _EREADY:
            return w
        if rc == _EINTR:
            raise InterruptedError
        _raise(rc, self.name)

    def take_back(self, seq: int) -> bool:
        """Take message seq back unless a receiver took it; True if it did
        (then the send happened).  InterruptedError as wait_begin: nothing
        was done, call again."""
        rc = lib.rb_take_back(self._ch, seq)
        if rc == _OK:
            return True
        if rc == lib.RB_ETIMEDOUT:
            return False
        if rc == _EINTR:
            raise InterruptedError
        _raise(rc, self.name)

    def wait_leave(self, w: Any) -> None:
        """W14: count out the waiter that wait_begin counted in, before it
        tries its operation again (once; wait_end then does not)."""
        lib.rb_wait_leave(self._ch, w)

    def wait_end(self, w: Any, served: bool) -> None:
        """W14: count out the waiter, unless wait_leave did, and hand on a
        wake-up it took (W12), or pass the baton if it sent (W6, served)."""
        lib.rb_wait_end(self._ch, w, int(served))

    def debug_hold_lock(self) -> None:
        """For tests: take the lock and keep it until this process exits."""
        self._call(lib.rb_debug_hold_lock)

    @staticmethod
    def debug_crash_at(point: str) -> None:
        """For tests: SIGKILL this process at ``point`` of the next send,
        receive or park: "send-before-commit", "send-after-commit",
        "recv-before-commit", "recv-after-commit" (lock held each time),
        "park-counted" (lock held, counted in) or "park-woken" (no lock,
        woken, not yet counted out)."""
        lib.rb_debug_crash_at(getattr(lib, "RB_CRASH_" + point.upper().replace("-", "_")))

    @staticmethod
    def debug_recheck(seconds: float) -> None:
        """For tests: how long a parked waiter of this process (and of the
        children it forks after) sleeps before it looks again (W8), instead
        of one second; 0 restores that.  A long one turns a wake-up that
        should have been made and was not into a wait that does not end."""
        lib.rb_debug_recheck(int(seconds * 1e9))

    def task_done(self) -> bool:
        """Mark one task (every message sent is one) done; False, with
        nothing changed, if every task sent is done already."""
        return bool(lib.rb_task_done(self._ch) == _OK)

    def tasks_join(self, deadline: int) -> None:
        """Wait until the unfinished-task count is zero."""
        rc = lib.rb_tasks_join(self._ch, deadline)
        if rc != _OK:
            _raise(rc, self.name)


#: What select() reports for a case: a message received (bytes, or a
#: memoryview from ``alloc`` for a long one), a message sent, or a receive
#: case whose channel is closed and drained.
RECEIVED, SENT, DRAINED, OFFERED = "received", "sent", "drained", "offered"


def select(handles: Sequence[Handle], sends: Optional[Sequence[Optional[Sequence[Any]]]], deadline: int,
           alloc: Optional[Callable[[int], Any]] = None, offer: bool = False) -> Tuple[int, str, Any]:
    """Go's select: perform exactly one case that can proceed, waiting until
    one can.  Case i receives from handles[i] when sends is None or sends[i]
    is None, else sends the message made of the bytes-like parts sends[i].
    Returns (i, RECEIVED, data), (i, SENT, None) or (i, DRAINED, None).
    With ``offer``, a send case on an unbuffered channel is published
    without waiting for a receiver to take it: (i, OFFERED, its number), for
    the caller to wait (Handle.ack_begin, Handle.take_back).

    Raises as the single-channel calls do (Closed for a send case on a
    closed channel, MessageTooLarge, Timeout, InterruptedError for the
    caller to retry), and SelectUnsupported when it would have to wait and
    the kernel has no futex_waitv."""
    keep: Dict[int, Any] = {}  # the send cases' iovecs and views, alive for the call
    chans = ffi.new("struct rb_chan *[]", [h._ch for h in handles])
    if sends is None:  # receive cases only: no case array at all
        cases = ffi.NULL
    else:
        cases = ffi.new("struct rb_case[]", len(handles))
        for i, parts in enumerate(sends):
            if parts is not None:
                keep[i] = iov, views = _iovec(parts)
                cases[i].send = 1
                cases[i].niov = len(parts)
                cases[i].iov = iov
    try:
        scratch = _scratch.pop()
    except IndexError:
        scratch = new_scratch()
    offered = ffi.new("uint64_t *") if offer else ffi.NULL
    try:
        buf, cells = scratch
        while True:
            rc = _rb_select(chans, cases, len(handles), buf, SCRATCH_SIZE, cells + 1, cells, offered, deadline)
            if rc == _EREADY:
                return int(cells[1]), OFFERED, int(offered[0])
            if rc == _OK:
                i = int(cells[1])
                if keep.get(i) is not None:
                    return i, SENT, None
                return i, RECEIVED, _unpack(buf, cells[0])
            i = int(cells[1])
            sending = rc not in _NO_CASE and i in keep
            done = _select_failed(rc, handles, i, sending, alloc,
                                  sum(len(v) for v in keep[i][1]) if sending else 0)
            if done is not None:
                return i, done[0], done[1]
    finally:
        _scratch.append(scratch)


# Statuses of rb_select and rb_select_recv that name no case: nothing was done.
_NO_CASE = (lib.RB_ETIMEDOUT, _EINTR, _ERECOVERED)


def _select_failed(rc: int, handles: Sequence[Handle], i: int, sending: bool,
                   alloc: Optional[Callable[[int], Any]], nbytes: int = 0) -> Optional[Tuple[str, Any]]:
    """A select answered ``rc``, not RB_OK, for case i (a send case if
    ``sending``).  Returns (DRAINED, None) or (RECEIVED, data) for a receive
    case that happened after all, None to select again; raises otherwise."""
    if rc == lib.RB_ETIMEDOUT:
        raise errors.Timeout("select timed out: no case could proceed")
    if rc == _EINTR:
        raise InterruptedError("select interrupted by a signal")
    if rc == _ERECOVERED:
        _note_recovery("(one of a select's channels)")
        return None
    if rc == _ECLOSED and not sending:
        return DRAINED, None
    if rc == _ESMALLBUF:
        # A long message on a receive case: take it from that channel alone,
        # without waiting.  If another receiver took it meanwhile, select
        # again.
        try:
            return RECEIVED, handles[i].recv(time.monotonic_ns(), alloc)
        except errors.Timeout:
            return None
        except errors.Closed:
            return DRAINED, None
    h = handles[i]
    _raise(rc, h.name, nbytes=nbytes, limit=h.max_message)


class ReceiveCases:
    """A select whose cases all receive, on channels fixed once, for
    selecting on them again and again: each select is one C call
    (rb_select_recv) on an array built here.  It keeps the handles, so the
    mappings the array points into live as long as it does."""

    __slots__ = ("handles", "_chans", "_n")

    def __init__(self, handles: Sequence[Handle]) -> None:
        if not 1 <= len(handles) <= SELECT_MAX:
            raise ValueError(f"a select takes 1 to {SELECT_MAX} cases, got {len(handles)}")
        self.handles = tuple(handles)
        self._chans = ffi.new("struct rb_chan *[]", [h._ch for h in self.handles])
        self._n = len(self.handles)

    def recv(self, tags: Sequence[Any], deadline: int, alloc: Optional[Callable[[int], Any]],
             closed: Any) -> Tuple[Any, Any]:
        """Receive one message from whichever case can, waiting until one
        can; returns ``(tags[i], message)`` for case i: ``bytes``, a
        memoryview of ``alloc(n)`` for a message longer than the scratch
        buffer when alloc is given, or ``closed`` for a channel closed and
        drained.  Raises as select() does."""
        # The common case in as few Python steps as possible, as Handle.recv.
        try:
            scratch = _scratch.pop()
        except IndexError:
            scratch = new_scratch()
        buf, cells = scratch
        n = _rb_select_recv(self._chans, self._n, buf, SCRATCH_SIZE, cells, deadline)
        if n >= 0:
            data = _unpack(buf, n)
            _scratch.append(scratch)
            return tags[cells[1]], data
        try:
            while True:
                i = cells[1]
                done = _select_failed(-n, self.handles, i, False, alloc)
                if done is not None:
                    return tags[i], closed if done[0] == DRAINED else done[1]
                n = _rb_select_recv(self._chans, self._n, buf, SCRATCH_SIZE, cells, deadline)
                if n >= 0:
                    return tags[cells[1]], _unpack(buf, n)
        finally:
            _scratch.append(scratch)


def waitv(words: Sequence[int], expected: Sequence[int], deadline: int) -> Tuple[bool, List[int]]:
    """Sleep (GIL released) until one of the 32-bit words at these addresses
    differs from its expected value, or the deadline.  Returns whether the
    deadline passed, and the words' values at return."""
    n = len(words)
    now = ffi.new("uint32_t[]", n)
    rc = lib.rb_waitv(ffi.new("uint64_t[]", words), ffi.new("uint32_t[]", expected), n, now, deadline)
    if rc not in (_OK, lib.RB_ETIMEDOUT, _EINTR):
        _raise(rc, "(the asyncio helper's wait)")
    return rc == lib.RB_ETIMEDOUT, list(now)


def wake_word(word: int) -> None:
    """Bump a 32-bit word and wake whoever waits on it in waitv."""
    lib.rb_wake_word(word)


def hand_on(word: int) -> None:
    """Bump a channel's 32-bit word at this address and wake one sleeper on
    it (W12: a wake-up taken and not used)."""
    lib.rb_hand_on(word)


def word_of(cell: Any) -> int:
    """The address of a ``uint32_t *`` cell, as waitv takes it."""
    return int(ffi.cast("uintptr_t", cell))


def new_word() -> Any:
    """A private 32-bit word (a ``uint32_t *`` cell)."""
    return ffi.new("uint32_t *")
