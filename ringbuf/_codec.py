"""How Python objects become channel messages, and back.

An object is pickled with protocol 5.  Buffers pickle offers out of band
(numpy arrays, ``pickle.PickleBuffer``) smaller than INBAND_MAX are kept in
the pickle.  When no buffer goes out of band, the message is just the pickle.
When some do, the message is an *object record* whose pieces are copied into
the ring one after another under one lock hold, each straight from its own
memory:

    offset 0   PREFIX: a pickle of the class ObjectRecord (see below)
    then       u32 nbufs, u32 0, u64 pickle length
    then       nbufs x (u64 offset, u64 length) of each buffer in the record
    then       the object's pickle
    then       each buffer, starting at a multiple of 64 bytes

A record begins with a complete pickle, and pickle.loads ignores what follows
one, so a receiver can unpickle every message alike: it gets the object
itself, or ObjectRecord for a record.  That spares a small message any test
before pickle.loads, which is most of its receiving cost.

The receiver takes the whole record into one 64-byte-aligned buffer of its
own and unpickles with the buffers as views of it, so array data is copied
once on the way in and once on the way out, and the arrays are aligned (and
writable, unless they were read-only when sent).  Every offset and length is checked before use: a record is data
from another process.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import numpy.typing as npt


class ObjectRecord:
    """What the first bytes of an object record unpickle to: the sign that
    the message is a record, to be taken apart by decode_record()."""


PREFIX = pickle.dumps(ObjectRecord, protocol=5)
_HEAD = struct.Struct(f"<{len(PREFIX)}sIIQ")
_ENTRY = struct.Struct("<QQ")
ALIGN = 64
ZEROS = bytes(ALIGN)
_loads = pickle.loads  # bound once: runs for every message


def _pad(n: int) -> int:
    return -n % ALIGN


#: Buffers smaller than this travel inside the pickle: for them the
#: bookkeeping of a separate part, on both sides, costs more than copying
#: their bytes twice (figures in docs/performance.md).  It must stay well
#: below the receive scratch size (64 KiB): recv_into() unpickles such a
#: message from the prefix it peeks at.
INBAND_MAX = 32 * 1024


class _Split:
    """pickle's buffer_callback: keeps buffers under INBAND_MAX in the pickle
    (a true answer) and collects the others, which go out of band."""

    __slots__ = ("pbs",)

    def __init__(self) -> None:
        self.pbs: List[pickle.PickleBuffer] = []

    def __call__(self, pb: pickle.PickleBuffer) -> bool:
        if pb.raw().nbytes < INBAND_MAX:
            return True
        self.pbs.append(pb)
        return False


# Idle _Split objects.  A fresh callback for every message is a measurable
# part of pickling a small dict, so encode() takes one off this list and puts
# it back, empty, when pickling succeeded (list.pop and list.append are
# atomic, so threads never share one).
_splits: List[_Split] = []
_dumps = pickle.dumps


def encode(obj: Any) -> Any:
    """The message for obj: the pickle itself (bytes) when every buffer went
    in band, else the list of pieces of an object record."""
    try:
        split = _splits.pop()
    except IndexError:
        split = _Split()
    data = _dumps(obj, 5, buffer_callback=split)
    pbs = split.pbs
    if pbs:
        split.pbs = []
    _splits.append(split)
    if not pbs:
        return data
    return record_parts(data, [pb.raw() for pb in pbs])


def record_parts(data: bytes, bufs: Sequence[memoryview]) -> List[Any]:
    """The pieces of an object record, in order, padding included."""
    table_end = _HEAD.size + _ENTRY.size * len(bufs)
    entries = []
    off = table_end + len(data)
    parts: List[Any] = [b"", data]  # the header goes first, once offsets are known
    for buf in bufs:
        pad = _pad(off)
        if pad:
            parts.append(ZEROS[:pad])
        off += pad
        entries.append(_ENTRY.pack(off, buf.nbytes))
        parts.append(buf)
        off += buf.nbytes
    parts[0] = _HEAD.pack(PREFIX, len(bufs), 0, len(data)) + b"".join(entries)
    return parts


def _array_from(buf: Any, dtype: np.dtype[Any], shape: Tuple[int, ...], order: str) -> npt.NDArray[Any]:
    """An array of dtype, shape and order over buf's memory: how a message
    written through Channel.loan_array unpickles."""
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)  # type: ignore[call-overload,no-any-return]


class _ArrayHead:
    """Pickles as _array_from over one out-of-band buffer: the pickle of an
    array whose data is written later, in place."""

    def __init__(self, dtype: np.dtype[Any], shape: Tuple[int, ...], order: str) -> None:
        self.args = (dtype, shape, order)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A writable placeholder: a read-only one would make the receiver's array read-only.
        return _array_from, (pickle.PickleBuffer(bytearray()),) + self.args


class _Span:
    """Stands for a buffer of nbytes in record_parts, whose bytes are not there yet."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def array_head(shape: Tuple[int, ...], dtype: np.dtype[Any], order: str) -> Tuple[bytes, int]:
    """The first bytes of an object record holding one array (everything
    before the array's data, which starts at a multiple of 64) and the
    data's length.  ``recv()`` returns such a message as an equal array."""
    nbytes = math.prod(shape) * dtype.itemsize
    data = pickle.dumps(_ArrayHead(dtype, shape, order), 5, buffer_callback=lambda pb: False)
    parts = record_parts(data, [_Span(nbytes)])  # type: ignore[list-item]
    return b"".join(parts[:-1]), nbytes


def is_record(view: Any) -> bool:
    return bool(view[:len(PREFIX)] == PREFIX)


def _layout(view: Any, total: int) -> Tuple[int, int, List[Tuple[int, int]]]:
    """(pickle offset, pickle length, [(offset, length)]) of an object record
    whose first len(view) bytes are in view and whose full length is total."""
    if total < _HEAD.size or len(view) < _HEAD.size:
        raise pickle.UnpicklingError("malformed ringbuf object record: shorter than its header")
    _, nbufs, _, plen = _HEAD.unpack_from(view)
    table_end = _HEAD.size + _ENTRY.size * nbufs
    if table_end > len(view) or table_end > total or plen > total - table_end:
        raise pickle.UnpicklingError("malformed ringbuf object record: table or pickle out of bounds")
    spans = []
    low = table_end + plen
    for i in range(nbufs):
        off, n = _ENTRY.unpack_from(view, _HEAD.size + _ENTRY.size * i)
        if off < low or off > total or n > total - off:
            raise pickle.UnpicklingError(f"malformed ringbuf object record: buffer {i} out of bounds")
        spans.append((off, n))
        low = off + n
    return table_end, plen, spans


def aligned_empty(n: int) -> npt.NDArray[np.uint8]:
    """An uninitialised, writable uint8 array of n bytes starting on a 64-byte boundary."""
    raw = np.empty(n + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + n]


def decode(view: Any, owned: bool) -> Any:
    """Unpickle one message.

    ``view`` is the message's bytes; ``owned`` says whether its memory belongs
    to this message alone (then out-of-band buffers become views of it) or is
    a copy about to be dropped or reused (then an object record is first
    copied to memory of its own).  Channel.recv does the same, inline.
    """
    obj = _loads(view)
    if obj is ObjectRecord:
        return decode_record(view, owned)
    return obj


def decode_record(view: Any, owned: bool) -> Any:
    """Unpickle an object record (``owned`` as for decode)."""
    if not is_record(view):
        raise pickle.UnpicklingError("malformed ringbuf object record: it does not start with the record prefix")
    if not owned:
        own = aligned_empty(len(view))
        own[:] = np.frombuffer(view, dtype=np.uint8)
        view = own
    mv = memoryview(view).cast("B")
    pstart, plen, spans = _layout(mv, len(mv))
    return pickle.loads(mv[pstart:pstart + plen], buffers=[mv[o:o + n] for o, n in spans])


def decode_view(mv: memoryview) -> Any:
    """Unpickle one message in place, given as a one-dimensional memoryview
    of bytes: an object record's out-of-band buffers become views of it
    (read-only if it is)."""
    if mv[:len(PREFIX)] != PREFIX:
        return _loads(mv)
    total = len(mv)
    # A record of one array seen before (_arrays), checked inline: this runs for every view.
    if total >= _ONE_ARRAY_MIN and _HEAD.unpack_from(mv)[1] == 1:
        start, n = _ENTRY.unpack_from(mv, _HEAD.size)
        if start <= _HEAD_MAX and start + n == total:
            known = _arrays.get(mv[:start].tobytes())
            if known is not None:
                dtype, shape, strides = known
                return np.ndarray(shape, dtype, mv, start, strides)
    pstart, plen, spans = _layout(mv, total)
    found = _Globals(mv[pstart:pstart + plen], buffers=[mv[o:o + n] for o, n in spans])
    obj = found.load()
    _learn(mv, total, spans, obj, found.seen)
    return obj


# Records that hold one array and nothing more (every message of a
# loan_array loop, or of ``send(array)``), by their bytes up to the array's
# data: (dtype, shape, strides).  decode_view takes such a record apart
# without unpickling it: equal bytes unpickle alike, as long as the pickle
# calls nothing but numpy's own array and dtype rebuilders (the globals it
# names are checked when a record is learnt).  Arrays of structured dtypes
# are not learnt: such a dtype can be changed in place (its field names),
# and each unpickling makes a new one.
_arrays: Dict[bytes, Tuple[np.dtype[Any], Tuple[int, ...], Tuple[int, ...]]] = {}
_ARRAYS_KEPT = 64
_ONE_ARRAY_MIN = _HEAD.size + _ENTRY.size
_HEAD_MAX = 4096  # longer heads are not looked up
_ARRAY_GLOBALS = frozenset({
    ("numpy", "dtype"), ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    (__name__, "_array_from"),
})


class _Globals(pickle.Unpickler):
    """An unpickler that notes the globals a pickle names."""

    def __init__(self, data: Any, buffers: List[Any]) -> None:
        super().__init__(io.BytesIO(data), buffers=buffers)
        self.seen: Set[Tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.seen.add((module, name))
        return super().find_class(module, name)


def _learn(mv: memoryview, total: int, spans: List[Tuple[int, int]], obj: Any, seen: Set[Tuple[str, str]]) -> None:
    """Keep the record in ``mv`` for decode_view if it decoded to one
    contiguous array over the whole of its one buffer, the rest of the
    record, through numpy's rebuilders alone."""
    if type(obj) is not np.ndarray or len(spans) != 1 or not seen <= _ARRAY_GLOBALS or obj.dtype.names is not None:
        return
    start, n = spans[0]
    if start > _HEAD_MAX or start + n != total or n == 0 or obj.nbytes != n:
        return
    if not (obj.flags.c_contiguous or obj.flags.f_contiguous):
        return
    if obj.ctypes.data != np.frombuffer(mv, np.uint8, 1, start).ctypes.data:
        return
    if len(_arrays) >= _ARRAYS_KEPT:
        _arrays.clear()
    _arrays[mv[:start].tobytes()] = (obj.dtype, obj.shape, obj.strides)


class ArrayInto:
    """How Channel.recv_into receives an array straight into ``out``: ``flat``
    is out's memory as bytes, ``plan`` (for Handle.recv_planned) checks the
    next message against ``out`` and says which of its bytes to copy, and
    ``finish`` completes the few arrays numpy pickles in band."""

    def __init__(self, out: npt.NDArray[Any]) -> None:
        self.out = out
        self.flat = out.reshape(-1, order="A").view(np.uint8) if out.size else np.empty(0, np.uint8)
        self.inband: Optional[npt.NDArray[Any]] = None

    def plan(self, prefix: Any, total: int) -> Tuple[int, int]:
        skip, length, self.inband = array_target(prefix, total, self.out)
        return skip, length

    def finish(self) -> None:
        if self.inband is not None:
            self.out[...] = self.inband


def array_target(prefix: Any, total: int, out: npt.NDArray[Any]) -> Tuple[int, int, Optional[npt.NDArray[Any]]]:
    """Check that the message whose first bytes are ``prefix`` holds one array
    that fits ``out``; return (offset, length, inband).

    For an array sent out of band, (offset, length) locate its data in the
    message, to be copied straight into ``out``, and ``inband`` is None.
    Numpy pickles a few arrays in band (datetimes, for one); such a message
    must fit in ``prefix`` whole; it is unpickled here and returned as
    ``inband`` for the caller to copy into ``out``, and (0, 0) says to copy
    nothing from the message itself.

    Raises TypeError if the message is not a single array, ValueError if its
    size, dtype, shape or memory order differs from ``out``'s.
    """
    if not is_record(prefix):
        if total > len(prefix):
            raise TypeError("the next message is not an array sent with send(); receive it with recv()")
        try:
            sent = pickle.loads(prefix)
        except Exception:
            raise TypeError("the next message is not an array sent with send(); receive it with recv()") from None
        # The same checks, in the same order, as for an array out of band, so
        # that what recv_into accepts does not depend on the array's size.
        if isinstance(sent, np.ndarray) and sent.nbytes != out.nbytes:
            raise ValueError(f"the next message's array has {sent.nbytes} bytes of data; out has {out.nbytes}")
        _check_like(sent, out, order=True)
        return 0, 0, sent
    pstart, plen, spans = _layout(prefix, total)
    if len(spans) != 1:
        raise TypeError(f"the next message holds {len(spans)} out-of-band buffers, not one array")
    if pstart + plen > len(prefix):
        raise TypeError("the next message's pickle is too large to be a single array")
    off, n = spans[0]
    if n != out.nbytes:
        raise ValueError(f"the next message's array has {n} bytes of data; out has {out.nbytes}")
    # Rebuild the sender's array as a view of out's memory: that yields its
    # dtype, shape and memory order without copying any data.
    flat = out.reshape(-1, order="A").view(np.uint8) if out.size else np.empty(0, np.uint8)
    _check_like(pickle.loads(prefix[pstart:pstart + plen], buffers=[flat]), out, order=True)
    return off, n, None


def _check_like(sent: Any, out: npt.NDArray[Any], order: bool) -> None:
    if not isinstance(sent, np.ndarray):
        raise TypeError(f"the next message is a {type(sent).__name__}, not a numpy array")
    for what in ("dtype", "shape"):
        if getattr(sent, what) != getattr(out, what):
            raise ValueError(
                f"the next message's array has {what} {getattr(sent, what)}; out has {getattr(out, what)}"
            )
    # Raw bytes copied from the message must be in out's order of elements.
    if order and not (sent.flags.c_contiguous and out.flags.c_contiguous) and not (
        sent.flags.f_contiguous and out.flags.f_contiguous
    ):
        raise ValueError("the next message's array is laid out in the other memory order (C vs Fortran) than out")
