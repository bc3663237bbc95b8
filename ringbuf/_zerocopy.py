"""Loans and views: messages written and read in place in the ring.

A loan reserves room at the tail of the ring and hands its bytes to the
caller to write; a view takes the head message and hands its bytes to the
caller to read.  The lock covers the reservation and the taking, and their
ends; the writing and reading happen outside it (L1..L7 in csrc/ringbuf.h).

What lives after the block.  Every object handed out is built on one cffi
buffer per hold (the *exporter*): memoryviews, numpy arrays and anything
unpickled from the message keep it alive, and its death releases the hold
in C (_Hold._begin).  At the end of the block the memoryview given to
the caller is released (using it raises ValueError), and the array a loan
gave is emptied in place (its shape becomes (0,)).  Then:

* a loan is published (or, after an exception, aborted) if nothing made from
  its memory is left; if something is (a slice, an array kept elsewhere, or
  anything holding the loaned array itself besides the ``with`` target),
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
import sys
from typing import Any, Dict, NoReturn, Tuple

import numpy as np
import numpy.typing as npt

from ringbuf import _codec, errors
from ringbuf._lowlevel import Handle
from ringbuf._rb import ffi, lib

# The calls every loan and view makes, bound once and made from here, with
# no Python frame between: each step costs more than it does alone, since the
# copy a loan exists for has pushed the interpreter's objects out of the
# caches (docs/performance.md).
_OK = lib.RB_OK
_loan_begin = lib.rb_loan_begin
_view_begin = lib.rb_view_begin
_settle = lib.rb_hold_settle
_release = lib.rb_release
_buffer = ffi.buffer
_gc = ffi.gc
_new = ffi.new
_WHERE = ffi.typeof("struct rb_where *")
_frombuffer = np.frombuffer
_refcount = sys.getrefcount
_MAX_SIZE: int = lib.RB_MAX_SIZE
_INTP_MAX = int(np.iinfo(np.intp).max)


class _Hold:
    """The context manager behind the four calls: begin on entry, end on exit.

    What the caller is given is built on the cffi buffer of the hold (the
    exporter).  Every object made from the hold's memory keeps the exporter
    alive, and the exporter's death releases the hold in C (``_begin``
    gives it ``rb_release`` as destructor): a loan is then published if the
    block ended normally with nothing else left, aborted otherwise, and a
    view's room is freed.  At the end of a loan's block, ``rb_hold_settle``
    tells whether that happened or something made from its memory still
    lives.

    So the ending does not depend on Python code running to completion: a
    signal handler's exception (Ctrl-C) between any two steps still leaves
    the hold to end when its memory is let go.  The one gap is between the C
    call that takes the hold and the buffer's making, and ``where`` (filled
    in by the C call before it returns) closes it.
    """

    __slots__ = ("_h", "_deadline", "_where", "_given")
    _LOAN = True

    def __init__(self, h: Handle, deadline: int) -> None:
        self._h = h
        self._deadline = deadline
        self._where: Any = None
        # What the block was given, in a list while the block is open: the
        # exit that ends it pops it, one C call under the GIL, so that of
        # two exits of one block (by hand, from two threads) only one ends
        # it.  None before the entry.
        self._given: Any = None

    def _begin(self, nbytes: int) -> Any:
        """Take the hold and return its exporter."""
        if self._where is not None:
            raise RuntimeError("a loan or view can be entered only once")
        where = self._where = _new(_WHERE)
        h = self._h
        try:
            rc = (_loan_begin(h._ch, nbytes, self._deadline, where) if self._LOAN
                  else _view_begin(h._ch, self._deadline, where))
            if rc != _OK:
                h.hold_wait(rc, self._LOAN, nbytes, self._deadline, where)
            # The mapping stays while the buffer lives; its death releases
            # the hold: a view's room is freed, a loan published or aborted
            # by its intent (hold_intent).
            return _buffer(_gc(where.addr, _release), where.len)
        except BaseException:
            # If the hold was taken just before the exception, a loan is
            # aborted, a view's message consumed; if not, nothing happens.
            h.hold_release(where)
            raise

    def _unsettled(self, rc: int, what: str, kept: str) -> NoReturn:
        """A loan's block ended well, and rb_hold_settle answered ``rc``, not
        RB_OK: raise (``what`` names what the loan gave, ``kept`` what can
        keep its memory, for the message)."""
        h = self._h
        h.hold_unsettled(rc)  # raises, unless something made from its memory still exists
        raise BufferError(
            f"{what} of channel {h.name!r} ended while {kept} still exists: it was not sent, "
            "and its room is freed once that is gone"
        )


def _left_twice() -> NoReturn:
    raise RuntimeError("the block of a loan or view can be left only once, after it was entered")


def _released_early(h: Handle) -> None:
    raise BufferError(
        f"a loan of channel {h.name!r} was let go inside its block (its buffer released): it was aborted then, "
        "and nothing was sent"
    )


class Loan(_Hold):
    """``with ch.loan(nbytes) as buf:`` (see Channel.loan)."""

    __slots__ = ("_nbytes",)

    def __init__(self, h: Handle, nbytes: int, deadline: int) -> None:
        super().__init__(h, deadline)
        self._nbytes = nbytes

    def __enter__(self) -> memoryview:
        buf = memoryview(self._begin(self._nbytes))
        self._given = [buf]
        return buf

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        try:
            buf = self._given.pop()
        except (AttributeError, IndexError):  # never entered (None), or left already ([])
            _left_twice()
        h, where = self._h, self._where
        try:
            if et is None and not h.hold_intent(where, 1):
                _released_early(h)
            try:
                buf.release()  # using it after the block raises ValueError
            except BufferError:
                pass  # exports of it live on: they keep the exporter
            del buf
            if et is not None:
                return  # aborted when the exporter dies (at once, unless exports of it live on)
            rc = _settle(h._ch, where)
        except BaseException:
            # Cut short (Ctrl-C) after the intent was set to publish: abort
            # instead, unless it was published already, so that something
            # made from its memory and kept (a slice) cannot write into a
            # message delivered when it dies.  A C call, no Python frame.
            h.hold_intent(where, 0)
            raise
        if rc != _OK:
            self._unsettled(rc, "a loan", "something made from its memory (a slice, an array)")


class ArrayLoan(_Hold):
    """``with ch.loan_array(shape, dtype) as arr:`` (see Channel.loan_array)."""

    __slots__ = ("_layout", "_refs")

    def __init__(self, h: Handle, shape: Any, dtype: Any, order: str, deadline: int) -> None:
        self._h = h  # _Hold.__init__, inline: this runs once per array
        self._deadline = deadline
        self._where = None
        self._given = None
        try:
            layout = _layouts.get((shape, dtype, order))
        except TypeError:  # an unhashable shape, a list say
            layout = None
        if layout is None:
            layout = _array_layout(shape, dtype, order)
        self._layout = layout
        self._refs = 0
        if layout[3] > h.max_message:
            nbytes = layout[3] - len(layout[2])
            raise errors.MessageTooLarge(
                f"an array of {nbytes} bytes ({layout[3]} with its header) can never fit channel {h.name!r} "
                f"(max_message_size is {h.max_message} bytes)"
            )

    def __enter__(self) -> npt.NDArray[Any]:
        shape, dt, head, total, count, order, _ = self._layout
        exporter = self._begin(total)
        exporter[:len(head)] = head
        # The array given is a view of `flat`, so that whatever the caller
        # makes from it (slices, reshapes) refers to `flat`, not to it: it
        # can then be emptied at the end without cutting them loose.
        flat = _frombuffer(exporter, dt, count, len(head))
        # (order="C" is reshape's default; passing it costs about 100 ns.)
        arr = flat.reshape(shape) if order == "C" else flat.reshape(shape, order="F")
        self._given = [arr]
        # Its references now: this name, _given's list, getrefcount's
        # argument; in __exit__, after the pop: that name, the `with`
        # target, the argument.
        self._refs = _refcount(arr)
        return arr

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        try:
            arr = self._given.pop()
        except (AttributeError, IndexError):  # never entered (None), or left already ([])
            _left_twice()
        h = self._h
        if _refcount(arr) > self._refs:
            # Something beside the `with` target holds the array itself (a
            # second name, a container, a memoryview or ctypes object made
            # from it, which would go on writing where it points): the array
            # is left as it is, keeping the loan's memory, and the loan is
            # aborted once everything holding it is gone.
            if et is None:
                raise BufferError(
                    f"a loaned array of channel {h.name!r} was still referenced at the end of its block "
                    "by more than the with target (another name, a container, a memoryview of it): it was "
                    "not sent, and its room is freed once that is gone"
                )
            return
        where = self._where
        try:
            if et is None and not h.hold_intent(where, 1):
                _released_early(h)
            # The caller's name for the array outlives the block: empty it
            # in place so that it no longer reaches into the ring.
            arr.__setstate__(self._layout[6])
            del arr
            if et is not None:
                return  # aborted when the exporter dies (at once, unless a view of the array lives on)
            rc = _settle(h._ch, where)
        except BaseException:
            h.hold_intent(where, 0)  # cut short: abort, as in Loan.__exit__ (inline: no Python frame)
            raise
        if rc != _OK:
            self._unsettled(rc, "a loaned array", "a view of it (a slice, a reshape)")


class BytesView(_Hold):
    """``with ch.recv_bytes_view() as view:`` (see Channel.recv_bytes_view)."""

    __slots__ = ()
    _LOAN = False

    def __enter__(self) -> memoryview:
        view = memoryview(self._begin(0)).toreadonly()
        self._given = [view]
        return view

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        try:
            view = self._given.pop()
        except (AttributeError, IndexError):  # never entered (None), or left already ([])
            _left_twice()
        try:
            view.release()  # using it after the block raises ValueError
        except BufferError:
            pass  # exports of it live on: they keep the room held


class ObjectView(_Hold):
    """``with ch.recv_view() as obj:`` (see Channel.recv_view)."""

    __slots__ = ()
    _LOAN = False

    def __enter__(self) -> Any:
        # The room is freed when the object's last view of it dies: at once
        # for an object with none (unpickled from the message), or after
        # the block when the caller keeps an array from it.
        return _codec.decode_view(memoryview(self._begin(0)).toreadonly())

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        pass  # the object's last view of the ring ends the hold, not the block


# (shape, dtype, order) as given -> what _array_layout returns: a loop that
# loans arrays of one kind pickles their header once (it costs about 6 us).
_Layout = Tuple[Tuple[int, ...], "np.dtype[Any]", bytes, int, int, str, Tuple[Any, ...]]
_layouts: Dict[Any, _Layout] = {}
_LAYOUTS_KEPT = 64


def _array_layout(shape: Any, dtype: Any, order: str) -> _Layout:
    """(shape, dtype, record head, record bytes, items, order, the state
    that empties such an array) of a loaned array, checked, and kept in
    _layouts."""
    shape_, dt = check_array(shape, dtype, order)
    nbytes = math.prod(shape_) * dt.itemsize
    if nbytes > _MAX_SIZE:
        raise errors.MessageTooLarge(
            f"an array of shape {shape_} and dtype {dt} is {nbytes} bytes: no channel can hold it "
            f"(a ring has at most {_MAX_SIZE} bytes)"
        )
    head, nbytes = _codec.array_head(shape_, dt, order)
    layout = (shape_, dt, head, len(head) + nbytes, math.prod(shape_), order, (1, (0,), dt, False, b""))
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
        if n > _INTP_MAX:
            raise ValueError(f"a dimension of shape can be at most {_INTP_MAX} (numpy's limit), got {shape}")
    shape = tuple(int(n) for n in shape)
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"not a numpy dtype: {dtype!r} ({e})") from None
    if dt.hasobject:
        raise ValueError(f"an array of dtype {dt} holds Python objects, which cannot live in shared memory")
    if dt.itemsize == 0:
        raise ValueError(f"dtype {dt} has no size (itemsize 0): give one with a length, such as 'S8'")
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    return shape, dt
