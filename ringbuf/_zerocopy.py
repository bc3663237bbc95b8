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
import threading
import weakref
from typing import Any, Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt

from ringbuf import _codec, errors
from ringbuf._lowlevel import HOLDS, Handle


# This process's pid, kept current across fork (os.getpid is a system call).
_pid = [os.getpid()]


class _Tally(threading.local):
    """Per thread: how many holds it has out on each handle, counting those
    whose block ended while something made from them lives on."""

    def __init__(self) -> None:
        self.count: Dict[Handle, int] = {}


_tally = _Tally()


def _forked() -> None:
    # In a fork child, in its one thread: the parent's holds are not its own.
    _pid[0] = os.getpid()
    _tally.count = {}


os.register_at_fork(after_in_child=_forked)


def _leave(tally: Dict[Handle, int], h: Handle) -> None:
    n = tally.get(h, 1) - 1
    if n:
        tally[h] = n
    else:
        tally.pop(h, None)


def _late_end(h: Handle, hold: int, loan: bool, tally: Dict[Handle, int], pid: int) -> None:
    """weakref.finalize's callback: the last object made from a hold whose
    block has ended is gone.  End the hold then (a loan is aborted)."""
    if pid != _pid[0]:
        return  # a fork child's copy of the object: the hold is its parent's
    try:
        if loan:
            h.loan_end(hold, False)
        else:
            h.view_end(hold)
    except errors.RingbufError:
        pass  # in a finalizer: nobody to tell; the channel's own calls report a damaged one
    finally:
        _leave(tally, h)


class _Hold:
    """The context manager behind the four calls: begin on entry, end on exit.

    What the caller is given is built on the cffi buffer of the hold (the
    exporter), and only a weak reference to it is kept here: every object
    made from the hold's memory keeps it alive, so at the end of the block,
    once the given object is dropped, the exporter is gone exactly when
    nothing made from the memory is left."""

    __slots__ = ("_h", "_deadline", "_hold", "_ref", "_given", "_tally")
    _LOAN = True

    def __init__(self, h: Handle, deadline: int) -> None:
        self._h = h
        self._deadline = deadline
        self._hold = -1
        self._ref: Any = None
        self._given: Any = None
        self._tally: Optional[Dict[Handle, int]] = None

    def _begin(self, nbytes: int) -> Any:
        """Count the hold against this thread, take it, return its exporter."""
        if self._tally is not None:
            raise RuntimeError("a loan or view can be entered only once")
        h = self._h
        tally = self._tally = _tally.count
        n = tally.get(h, 0)
        if n >= HOLDS:
            kind = "loan" if self._LOAN else "view"
            raise RuntimeError(
                f"this thread already holds {n} loans and views of channel {h.name!r} (counting views kept alive "
                f"by arrays made from them), the most a channel has; another {kind} would wait for this thread itself"
            )
        tally[h] = n + 1
        try:
            while True:  # again after a signal handler ran (InterruptedError); what one raises propagates
                try:
                    if self._LOAN:
                        self._hold, exporter = h.loan_begin(nbytes, self._deadline)
                    else:
                        self._hold, exporter = h.view_begin(self._deadline)
                    break
                except InterruptedError:
                    pass
        except BaseException:
            _leave(tally, h)
            raise
        self._ref = weakref.ref(exporter)
        return exporter

    def _end(self, publish: bool) -> bool:
        """The block ended and what it gave was dropped.  End the hold now if
        nothing made from its memory is left, and return True; otherwise
        leave it to end (a loan aborted) when the last such thing is gone,
        and return False."""
        h, tally = self._h, self._tally
        assert tally is not None
        exporter = self._ref()
        self._ref = None
        if exporter is not None:
            weakref.finalize(exporter, _late_end, h, self._hold, self._LOAN, tally, _pid[0])
            return False
        try:
            if self._LOAN:
                h.loan_end(self._hold, publish)
            else:
                h.view_end(self._hold)
        finally:
            n = tally.get(h, 1) - 1  # _leave, inline: this runs for every hold
            if n:
                tally[h] = n
            else:
                tally.pop(h, None)
        return True

    def _release_given(self) -> None:
        """Release the memoryview given to the caller (ValueError if used
        after the block); exports of it that live on keep the exporter."""
        given, self._given = self._given, None
        try:
            given.release()
        except BufferError:
            pass


class Loan(_Hold):
    """``with ch.loan(nbytes) as buf:`` (see Channel.loan)."""

    __slots__ = ("_nbytes",)

    def __init__(self, h: Handle, nbytes: int, deadline: int) -> None:
        super().__init__(h, deadline)
        self._nbytes = nbytes

    def __enter__(self) -> memoryview:
        buf = self._given = memoryview(self._begin(self._nbytes))
        return buf

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self._release_given()
        if not self._end(et is None) and et is None:
            raise BufferError(
                f"a loan of channel {self._h.name!r} ended while something made from its memory still exists "
                "(a slice, an array): it was not sent, and its room is freed once that is gone"
            )


class ArrayLoan(_Hold):
    """``with ch.loan_array(shape, dtype) as arr:`` (see Channel.loan_array)."""

    __slots__ = ("_layout",)

    def __init__(self, h: Handle, shape: Any, dtype: Any, order: str, deadline: int) -> None:
        self._h, self._deadline, self._hold, self._ref, self._given, self._tally = h, deadline, -1, None, None, None
        try:
            layout = _layouts.get((shape, dtype, order))
        except TypeError:  # an unhashable shape, a list say
            layout = None
        if layout is None:
            layout = _array_layout(shape, dtype, order)
        self._layout = layout
        if layout[3] > h.max_message:
            nbytes = layout[3] - len(layout[2])
            raise errors.MessageTooLarge(
                f"an array of {nbytes} bytes ({layout[3]} with its header) can never fit channel {h.name!r} "
                f"(max_message_size is {h.max_message} bytes)"
            )

    def __enter__(self) -> npt.NDArray[Any]:
        shape, dt, head, total, count, order = self._layout
        exporter = self._begin(total)
        exporter[:len(head)] = head
        # The array given is a view of `flat`, so that whatever the caller
        # makes from it (slices, reshapes) refers to `flat`, not to it: it
        # can then be emptied at the end without cutting them loose.
        flat = np.frombuffer(exporter, dt, count, len(head))
        arr = self._given = flat.reshape(shape, order=order)  # type: ignore[call-overload]
        return arr  # type: ignore[no-any-return]

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        # The caller's name for the array outlives the block: empty it in
        # place so that it no longer reaches into the ring.
        arr, self._given = self._given, None
        arr.__setstate__((1, (0,), arr.dtype, False, b""))
        del arr
        if not self._end(et is None) and et is None:
            raise BufferError(
                f"a loaned array of channel {self._h.name!r} ended while a view of it (a slice, a reshape) "
                "still exists: it was not sent, and its room is freed once that is gone"
            )


class BytesView(_Hold):
    """``with ch.recv_bytes_view() as view:`` (see Channel.recv_bytes_view)."""

    __slots__ = ()
    _LOAN = False

    def __enter__(self) -> memoryview:
        view = self._given = memoryview(self._begin(0)).toreadonly()
        return view

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self._release_given()
        self._end(False)


class ObjectView(_Hold):
    """``with ch.recv_view() as obj:`` (see Channel.recv_view)."""

    __slots__ = ()
    _LOAN = False

    def __enter__(self) -> Any:
        view = memoryview(self._begin(0)).toreadonly()
        try:
            return _codec.decode_view(view)
        except BaseException:
            try:
                view.release()
            except BufferError:
                pass  # parts unpickled before the error still use it: they keep the hold
            del view
            self._end(False)
            raise

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self._end(False)


# (shape, dtype, order) as given -> what _array_layout returns: a loop that
# loans arrays of one kind pickles their header once (it costs about 6 us).
_layouts: Dict[Any, Tuple[Tuple[int, ...], np.dtype[Any], bytes, int, int, str]] = {}
_LAYOUTS_KEPT = 64


def _array_layout(shape: Any, dtype: Any, order: str) -> Tuple[Tuple[int, ...], np.dtype[Any], bytes, int, int, str]:
    """(shape, dtype, record head, record bytes, items, order) of a loaned
    array, checked, and kept in _layouts."""
    shape_, dt = check_array(shape, dtype, order)
    head, nbytes = _codec.array_head(shape_, dt, order)
    layout = (shape_, dt, head, len(head) + nbytes, math.prod(shape_), order)
    try:
        if len(_layouts) >= _LAYOUTS_KEPT:
            _layouts.clear()
        _layouts[(shape, dtype, order)] = layout
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
