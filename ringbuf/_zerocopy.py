"""Loans and views: messages written and read in place in the ring.

A loan reserves room at the tail of the ring and hands its bytes to the
caller to write; a view takes the head message and hands its bytes to the
caller to read.  The lock covers the reservation and the taking, and their
ends; the writing and reading happen outside it (L1..L7 in csrc/ringbuf.h).

What lives after the block.  Every object handed out is built on one cffi
buffer per hold (the *exporter*): memoryviews, numpy arrays and anything
unpickled from the message keep it alive, and a weak reference tells when
the last of them is gone.  At the end of the block the memoryview given to
the caller is released (using it raises ValueError), and the array a loan
gave is emptied in place (its shape becomes (0,)).  Then:

* a loan is published (or, after an exception, aborted) if nothing made from
  its memory is left; if something is (a slice, an array kept elsewhere),
  publishing would let it write into a message already delivered, so the
  loan is refused: ``BufferError`` is raised and the loan is aborted once
  the last such object is gone;
* a view's room is freed once nothing made from it is left: at once, or,
  if the caller keeps an array (recv_view's objects are such), when the
  last one is dropped.  Until then the room stays held, so no later message
  ever reuses memory a live object reads; ``stats().views`` and ``inspect``
  show it.
"""

from __future__ import annotations

import math
import os
import pickle
import threading
import weakref
from typing import Any, Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt

from ringbuf import _codec, errors
from ringbuf._lowlevel import HOLDS, Handle, retrying


# This process's pid, kept current across fork (os.getpid is a system call).
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


class _Tally(threading.local):
    """Per thread: how many holds it has out on each handle,
    counting those whose block ended while something made from them lives
    on.  A fork child starts afresh: its parent's holds are not its own."""

    def __init__(self) -> None:
        self.pid = _pid[0]
        self.count: Dict[Handle, int] = {}

    def mine(self) -> Dict[Handle, int]:
        if self.pid != _pid[0]:
            self.pid, self.count = _pid[0], {}
        return self.count


_tally = _Tally()


class _End:
    """How a hold ends, shared by the block's exit and the exporter's
    finalizer: whichever comes second does it, under `lock`.  ``tally`` is
    the taking thread's count, which the end decrements wherever it runs."""

    __slots__ = ("h", "hold", "loan", "lock", "gone", "armed", "tally", "pid")

    def __init__(self, h: Handle, hold: int, loan: bool, tally: Dict[Handle, int]) -> None:
        self.h, self.hold, self.loan, self.tally, self.pid = h, hold, loan, tally, _pid[0]
        self.lock = threading.Lock()
        self.gone = False     # the exporter died
        self.armed = False    # the block ended: the exporter's death ends the hold

    def finalize(self) -> None:
        """The exporter died (weakref.finalize): end now if the block has."""
        with self.lock:
            self.gone = True
            if not self.armed:
                return
        self.run()

    def run(self) -> None:
        if self.pid != _pid[0]:
            return  # a fork child's copy: the hold is its parent's
        try:
            if self.loan:
                self.h.loan_end(self.hold, False)
            else:
                self.h.view_end(self.hold)
        except errors.RingbufError:
            pass  # in a finalizer: nobody to tell; the channel's own calls report a damaged one
        finally:
            self.ended()

    def ended(self) -> None:
        _leave(self.tally, self.h)

    def block_ended(self) -> bool:
        """The block ended.  Returns True if the exporter is gone (then the
        caller ends the hold itself, and sees its errors), False if it lives
        on: its finalizer will end the hold then, a loan by aborting it."""
        with self.lock:
            if self.gone:
                return True
            self.armed = True
            return False


def _enter(h: Handle, kind: str) -> Dict[Handle, int]:
    if not h.can_hold():
        raise ValueError(
            f"channel {h.name!r} cannot lend or lend out its ring: "
            + ("an unbuffered channel holds no room to lend" if h.capacity == 0
               else f"its size ({h.size} bytes) is not a multiple of the page size")
        )
    tally = _tally.mine()
    n = tally.get(h, 0)
    if n >= HOLDS:
        raise RuntimeError(
            f"this thread already holds {n} loans and views of channel {h.name!r} (counting views kept alive "
            f"by arrays made from them), the most a channel has; another {kind} would wait for this thread itself"
        )
    tally[h] = n + 1
    return tally


def _leave(tally: Dict[Handle, int], h: Handle) -> None:
    n = tally.get(h, 1) - 1
    if n:
        tally[h] = n
    else:
        tally.pop(h, None)


class _Hold:
    """The context manager behind the four calls: begin on entry, end on exit."""

    __slots__ = ("_h", "_deadline", "_end", "_exporter", "_given", "_used")

    def __init__(self, h: Handle, deadline: int) -> None:
        self._h = h
        self._deadline = deadline
        self._end: Optional[_End] = None
        self._exporter: Any = None
        self._given: Any = None
        self._used = False

    def _begin(self, loan: bool, nbytes: int) -> Any:
        if self._used:
            raise RuntimeError("a loan or view can be entered only once")
        self._used = True
        tally = _enter(self._h, "loan" if loan else "view")
        try:
            if loan:
                hold, exporter = retrying(self._h.loan_begin, nbytes, self._deadline)
            else:
                hold, exporter = retrying(self._h.view_begin, self._deadline)
        except BaseException:
            _leave(tally, self._h)
            raise
        self._end = _End(self._h, hold, loan, tally)
        weakref.finalize(exporter, self._end.finalize)
        self._exporter = exporter
        return exporter

    def _finish(self, publish: bool) -> bool:
        """Release what was given, drop the exporter, and end the hold if
        nothing else keeps it.  Returns whether it was ended here."""
        end = self._end
        assert end is not None
        given, self._given = self._given, None
        if isinstance(given, memoryview):
            try:
                given.release()
            except BufferError:
                pass  # exports of it live on: they keep the exporter, seen below
        elif isinstance(given, np.ndarray) and end.loan:
            # The caller's name for the array outlives the block: empty it in
            # place so that it no longer reaches into the ring.
            given.__setstate__((1, (0,), given.dtype, False, b""))  # type: ignore[arg-type]
        del given
        self._exporter = None
        if not end.block_ended():
            return False
        try:
            if end.loan:
                self._h.loan_end(end.hold, publish)
            else:
                self._h.view_end(end.hold)
        finally:
            end.ended()
        return True


class Loan(_Hold):
    """``with ch.loan(nbytes) as buf:`` (see Channel.loan)."""

    __slots__ = ("_nbytes",)

    def __init__(self, h: Handle, nbytes: int, deadline: int) -> None:
        super().__init__(h, deadline)
        self._nbytes = nbytes

    def __enter__(self) -> memoryview:
        self._given = memoryview(self._begin(True, self._nbytes))
        return self._given  # type: ignore[no-any-return]

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if not self._finish(et is None) and et is None:
            raise BufferError(
                f"a loan of channel {self._h.name!r} ended while something made from its memory still exists "
                "(a slice, an array): it was not sent, and its room is freed once that is gone"
            )


class ArrayLoan(_Hold):
    """``with ch.loan_array(shape, dtype) as arr:`` (see Channel.loan_array)."""

    __slots__ = ("_shape", "_dtype", "_order", "_head")

    def __init__(self, h: Handle, shape: Any, dtype: Any, order: str, deadline: int) -> None:
        super().__init__(h, deadline)
        self._shape, self._dtype, self._head, nbytes = _array_layout(shape, dtype, order)
        self._order = order
        total = len(self._head) + nbytes
        if total > h.max_message:
            raise errors.MessageTooLarge(
                f"an array of {nbytes} bytes ({total} with its header) can never fit channel {h.name!r} "
                f"(max_message_size is {h.max_message} bytes)"
            )

    def __enter__(self) -> npt.NDArray[Any]:
        head = self._head
        buf = memoryview(self._begin(True, len(head) + math.prod(self._shape) * self._dtype.itemsize))
        buf[:len(head)] = head
        arr = np.frombuffer(buf[len(head):], dtype=self._dtype).reshape(self._shape, order=self._order)  # type: ignore[call-overload]
        buf.release()
        self._given = arr
        return arr  # type: ignore[no-any-return]

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if not self._finish(et is None) and et is None:
            raise BufferError(
                f"a loaned array of channel {self._h.name!r} ended while a view of it (a slice, a reshape) "
                "still exists: it was not sent, and its room is freed once that is gone"
            )


class BytesView(_Hold):
    """``with ch.recv_bytes_view() as view:`` (see Channel.recv_bytes_view)."""

    def __enter__(self) -> memoryview:
        self._given = memoryview(self._begin(False, 0)).toreadonly()
        return self._given  # type: ignore[no-any-return]

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self._finish(False)


class ObjectView(_Hold):
    """``with ch.recv_view() as obj:`` (see Channel.recv_view)."""

    def __enter__(self) -> Any:
        view = memoryview(self._begin(False, 0)).toreadonly()
        try:
            obj = pickle.loads(view)
            if obj is _codec.ObjectRecord:
                obj = _codec.decode_view(view)
        except BaseException:
            view.release()
            self._finish(False)
            raise
        view.release()
        return obj

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self._finish(False)


# (shape, dtype, order) as given -> what _array_layout returns: a loop that
# loans arrays of one kind pickles their header once (it costs about 6 us).
_layouts: Dict[Any, Tuple[Tuple[int, ...], np.dtype[Any], bytes, int]] = {}
_LAYOUTS_KEPT = 64


def _array_layout(shape: Any, dtype: Any, order: str) -> Tuple[Tuple[int, ...], np.dtype[Any], bytes, int]:
    """(shape, dtype, record head, data bytes) of a loaned array, checked."""
    key = (shape, dtype, order)
    try:
        return _layouts[key]
    except (KeyError, TypeError):  # TypeError: an unhashable shape, a list say
        pass
    shape_, dt = check_array(shape, dtype, order)
    layout = (shape_, dt) + _codec.array_head(shape_, dt, order)
    try:
        if len(_layouts) >= _LAYOUTS_KEPT:
            _layouts.clear()
        _layouts[key] = layout
    except TypeError:
        pass
    return layout


def check_array(shape: Any, dtype: Any, order: str) -> Tuple[Tuple[int, ...], np.dtype[Any]]:
    """(shape as a tuple, dtype) for loan_array, or a clear error."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a sequence of ints, not {type(shape).__name__!r}") from None
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"shape must hold ints, not {type(n).__name__!r}")
        if n < 0:
            raise ValueError(f"shape must not be negative, got {shape}")
    shape = tuple(int(n) for n in shape)
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"not a numpy dtype: {dtype!r} ({e})") from None
    if dt.hasobject:
        raise ValueError(f"an array of dtype {dt} holds Python objects, which cannot live in shared memory")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    return shape, dt
