"""A damaged or hostile segment: whatever a peer writes into the header or the
ring of a live channel, operations on it raise ringbuf exceptions (or work);
they never crash, hang or touch memory outside the segment.

The lock's own bytes are left alone: a peer that forges or holds the lock can
stall everyone, which no shared-memory design can prevent among processes of
one user.
"""

from __future__ import annotations

import mmap
import os

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

import ringbuf
from ringbuf._lowlevel import DATA_OFFSET, HEADER_FIELDS
from tests._helpers import write_header

SIZE = 1024

# Every field of the shared header, as the C core lists them, but the lock
# itself and its owner hint (a pid, used only by observers).
FIELDS = sorted(set(HEADER_FIELDS) - {"lock_owner", "lock"})

interesting = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 7, 8, SIZE - 8, SIZE, SIZE + 8, 2**32, 2**63, 2**64 - 1]),
    st.integers(0, 2 * SIZE),
)


OPS = ["try_send", "try_recv", "send_many", "recv_many", "recv_into", "check", "stats", "len", "close", "attach"]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefill=st.lists(st.integers(0, 300), max_size=6),
    writes=st.lists(st.tuples(st.sampled_from(FIELDS), interesting), max_size=4),
    noise=st.lists(st.tuples(st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=16)), max_size=4),
    ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=8),
)
def test_damaged_segments_raise_ringbuf_errors_only(prefill, writes, noise, ops):
    with ringbuf.Channel(capacity=8, size=SIZE) as ch:
        for n in prefill:
            try:
                ch.try_send_bytes(b"p" * n)
            except ringbuf.Full:
                break
        fd = os.open(f"/dev/shm/{ch.name}", os.O_RDWR)
        try:
            m = mmap.mmap(fd, DATA_OFFSET + SIZE)
        finally:
            os.close(fd)
        try:
            for field, value in writes:
                write_header(m, field, value)
            for off, data in noise:
                m[DATA_OFFSET + off:DATA_OFFSET + min(SIZE, off + len(data))] = data[:SIZE - off]
            for op in ops:
                try:
                    if op == "try_send":
                        ch.try_send_bytes(b"s" * 40)
                    elif op == "try_recv":
                        ch.try_recv_bytes()
                    elif op == "send_many":
                        ch.send_bytes_many([b"a", b"b" * 100], timeout=0)
                    elif op == "recv_many":
                        ch.recv_bytes_many(5, timeout=0)
                    elif op == "recv_into":
                        ch.recv_bytes_into(bytearray(64), timeout=0)
                    elif op == "check":
                        ch.check()
                    elif op == "stats":
                        ch.stats()
                    elif op == "len":
                        len(ch)
                    elif op == "close":
                        ch.close()
                    elif op == "attach":
                        ringbuf.Channel.attach(ch.name).try_recv_bytes()
                except ringbuf.RingbufError:
                    pass  # Full, Empty, Timeout, Closed, CorruptSegment, BufferTooSmall, ...
        finally:
            m.close()
