"""Bad input gets a clear exception: never a hang, a crash or a wrong result."""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest

import ringbuf
from ringbuf import Channel
from ringbuf._lowlevel import DATA_OFFSET, LAYOUT_VERSION
from tests._helpers import mapped, write_header


@pytest.mark.parametrize("capacity", [-1, 2**32 - 16, 2**32, 2**32 + 1])
def test_capacity_out_of_range(capacity):
    # Up to 2**32 - 17: held_msgs, 32 bits, counts up to the capacity and one per hold.
    with pytest.raises(ValueError, match=f"capacity must be between 0 and {2**32 - 17}"):
        Channel(capacity=capacity)


def test_the_largest_capacity_makes_a_channel(make_channel):
    ch = make_channel(capacity=2**32 - 17, size=4096)
    ch.send_bytes(b"fits")
    assert ch.stats().capacity == 2**32 - 17 and ch.recv_bytes() == b"fits"


def test_numpy_integers_are_ints(make_channel):
    ch = make_channel(capacity=np.int64(8), size=np.uint32(8192), mode=np.int16(0o600))
    assert (ch.capacity, ch.size) == (8, 8192)
    with ch.loan(np.int32(5)) as buf:
        buf[:] = b"numpy"
    assert ch.recv_bytes_many(np.int64(4)) == [b"numpy"]
    with pytest.raises(TypeError, match="capacity must be an int"):
        Channel(capacity=np.float64(8))


@pytest.mark.parametrize("capacity", [1.5, "10", None, True])
def test_capacity_wrong_type(capacity):
    with pytest.raises(TypeError, match="capacity must be an int"):
        Channel(capacity=capacity)


@pytest.mark.parametrize("size", [0, 63, 2**40 + 8, -64])
def test_size_out_of_range(size):
    with pytest.raises(ValueError, match="size must be between 64 and"):
        Channel(size=size)


@pytest.mark.parametrize("name", ["", "a/b", "/lead", "x" * 201, "nul\0byte", ".", ".."])
def test_bad_names(name):
    with pytest.raises(ValueError, match="name must be 1 to 200 bytes"):
        Channel(name=name)
    with pytest.raises(ValueError, match="name must be 1 to 200 bytes"):
        Channel.attach(name)


def test_a_name_utf8_cannot_encode_is_a_value_error():
    for call in (lambda: Channel(name="lone \udc80 surrogate"), lambda: Channel.attach("lone \udc80 surrogate")):
        with pytest.raises(ValueError, match="UTF-8"):
            call()


def test_attaching_what_is_not_a_file_says_so():
    name = f"ringbuf-{os.getpid()}-a-directory"
    os.mkdir(f"/dev/shm/{name}")
    try:
        with pytest.raises(ringbuf.IncompatibleSegment, match="not a regular file"):
            Channel.attach(name)
    finally:
        os.rmdir(f"/dev/shm/{name}")


def test_name_wrong_type():
    with pytest.raises(TypeError, match="name must be a str"):
        Channel.attach(b"bytes")  # type: ignore[arg-type]


def test_attach_missing_name():
    with pytest.raises(ringbuf.ChannelNotFound, match="no channel named 'ringbuf-does-not-exist'"):
        Channel.attach("ringbuf-does-not-exist")


def test_message_too_large_fails_at_once_even_when_full(make_channel):
    ch = make_channel(capacity=1, size=128)
    ch.send_bytes(b"fills the only slot")
    # No timeout: if this waited for room it would hang the test.
    with pytest.raises(ringbuf.MessageTooLarge, match="121 bytes can never fit.*max_message_size is 120"):
        ch.send_bytes(b"x" * 121)
    with pytest.raises(ValueError):
        ch.try_send_bytes(b"x" * 121)


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, -math.inf])
def test_bad_timeouts(make_channel, timeout):
    ch = make_channel()
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        ch.send_bytes(b"x", timeout=timeout)
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        ch.recv_bytes(timeout=timeout)
    assert len(ch) == 0


def test_timeout_wrong_type(make_channel):
    ch = make_channel()
    with pytest.raises(TypeError, match="timeout must be a number"):
        ch.recv_bytes(timeout="1")  # type: ignore[arg-type]


def test_huge_timeout_is_accepted(make_channel):
    ch = make_channel()
    ch.send_bytes(b"x", timeout=1e300)
    assert ch.recv_bytes(timeout=math.inf) == b"x"


@pytest.mark.parametrize("data", ["text", 42, None, [1, 2]])
def test_send_rejects_non_bytes_like(make_channel, data):
    ch = make_channel()
    with pytest.raises(TypeError, match="expected a bytes-like object"):
        ch.send_bytes(data)
    assert len(ch) == 0


def test_send_rejects_non_contiguous_buffers(make_channel):
    ch = make_channel()
    with pytest.raises(ValueError, match="C-contiguous"):
        ch.send_bytes(memoryview(b"abcdef")[::2])
    assert len(ch) == 0


# -- segments that are not (or no longer) sound --------------------------------


@pytest.fixture
def raw_segment():
    """Write arbitrary bytes as /dev/shm/<name>; removed afterwards."""
    names = []

    def make(content: bytes) -> str:
        name = f"ringbuf-{os.getpid()}-raw{len(names)}"
        with open(f"/dev/shm/{name}", "wb") as f:
            f.write(content)
        names.append(name)
        return name

    yield make
    for n in names:
        try:
            os.unlink(f"/dev/shm/{n}")
        except FileNotFoundError:
            pass


def test_attach_to_a_segment_that_is_too_small(raw_segment):
    with pytest.raises(ringbuf.IncompatibleSegment):
        Channel.attach(raw_segment(b"\0" * 100))


def test_attach_to_a_segment_with_a_wrong_magic(raw_segment):
    with pytest.raises(ringbuf.IncompatibleSegment, match="not a ringbuf channel"):
        Channel.attach(raw_segment(os.urandom(DATA_OFFSET + 4096)))


def _patched_copy(ch: Channel, raw_segment, field: str, value: int) -> str:
    with open(f"/dev/shm/{ch.name}", "rb") as f:
        content = bytearray(f.read())
    write_header(content, field, value)
    return raw_segment(bytes(content))


def test_attach_to_another_layout_version(make_channel, raw_segment):
    name = _patched_copy(make_channel(), raw_segment, "version", LAYOUT_VERSION + 1)
    with pytest.raises(ringbuf.IncompatibleSegment):
        Channel.attach(name)


def test_attach_to_a_segment_shorter_than_its_declared_ring(make_channel, raw_segment):
    ch = make_channel(size=4096)
    name = _patched_copy(ch, raw_segment, "size", 1 << 20)
    with pytest.raises(ringbuf.IncompatibleSegment, match="too small"):
        Channel.attach(name)


@pytest.mark.parametrize("field,value", [("capacity", 0), ("size", 12)])
def test_attach_with_header_bounds_out_of_range(make_channel, raw_segment, field, value):
    ch = make_channel()
    name = _patched_copy(ch, raw_segment, "dataqsiz" if field == "capacity" else "size", value)
    with pytest.raises(ringbuf.IncompatibleSegment):
        Channel.attach(name)


def scribble(ch: Channel, field: str, value: int) -> None:
    """Overwrite a header field of a live channel, as a buggy or hostile peer would."""
    with mapped(ch) as m:
        write_header(m, field, value)


@pytest.mark.parametrize(
    "field,value",
    [
        ("recvx", 1 << 40),  # far outside the ring
        ("recvx", 4),  # inside, but not on a record boundary
        ("sendx", 4096),  # one past the end
        ("used", 1 << 33),
        ("qcount", 1 << 33),
    ],
)
def test_out_of_range_positions_raise_corrupt(make_channel, field, value):
    ch = make_channel(capacity=8, size=4096)
    ch.send_bytes(b"payload")
    scribble(ch, field, value)
    with pytest.raises(ringbuf.CorruptSegment):
        ch.check()
    with pytest.raises(ringbuf.CorruptSegment):
        ch.send_bytes(b"more") if field == "sendx" else ch.recv_bytes()


def test_record_length_past_the_used_bytes_raises_corrupt(make_channel):
    ch = make_channel(capacity=8, size=4096)
    ch.send_bytes(b"payload")
    with open(f"/dev/shm/{ch.name}", "r+b") as f:
        f.seek(DATA_OFFSET)  # the first record's length field
        f.write(struct.pack("<Q", 1000))
    with pytest.raises(ringbuf.CorruptSegment):
        ch.recv_bytes()
    with pytest.raises(ringbuf.CorruptSegment):
        ch.check()


def test_record_length_beyond_the_ring_raises_corrupt(make_channel):
    ch = make_channel(capacity=8, size=4096)
    ch.send_bytes(b"payload")
    with open(f"/dev/shm/{ch.name}", "r+b") as f:
        f.seek(DATA_OFFSET)
        f.write(struct.pack("<Q", 2**63))
    with pytest.raises(ringbuf.CorruptSegment):
        ch.recv_bytes(timeout=0)


def test_send_bytes_many_rejects_non_contiguous_buffers_like_send_bytes(make_channel):
    ch = make_channel()
    with pytest.raises(ValueError, match="C-contiguous"):
        ch.send_bytes_many([b"ok", memoryview(b"abcdef")[::2]])
    with pytest.raises(TypeError, match="expected a bytes-like object"):
        ch.send_bytes_many([b"ok", "text"])
    assert len(ch) == 0
