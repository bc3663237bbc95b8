"""Python objects and numpy arrays through a channel, and batches."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import pickle

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import ringbuf
from ringbuf import _codec
from tests import _workers

OBJECTS = [
    None,
    0,
    -(2**70),
    3.25,
    "text",
    "ünïcødé",
    b"",
    b"bytes",
    bytes(range(256)) * 600,  # over the 64 KiB scratch buffer
    bytearray(b"mutable"),
    (1, (2, 3)),
    [1, [2, [3]]],
    {"a": 1, "b": {"c": [None]}},
    {1, 2, 3},
    frozenset({"x"}),
    _workers.Point(1, 2),
    np.float64(2.5),
    {"array": np.arange(5), "list": [np.zeros((2, 2))]},
]


def same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert type(b) is np.ndarray
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.flags.c_contiguous == b.flags.c_contiguous and a.flags.f_contiguous == b.flags.f_contiguous
    assert a.tobytes(order="A") == b.tobytes(order="A")
    assert b.flags.writeable


def test_objects_round_trip(make_channel):
    ch = make_channel(capacity=64, size=1 << 20)
    for obj in OBJECTS:
        ch.send(obj)
        got = ch.recv()
        if isinstance(obj, dict) and "array" in obj:
            same_array(obj["array"], got["array"])
            same_array(obj["list"][0], got["list"][0])
        else:
            assert got == obj and type(got) is type(obj)


def test_objects_round_trip_across_spawned_processes():
    ctx = multiprocessing.get_context("spawn")
    with ringbuf.Channel(capacity=8, size=1 << 22) as requests, ringbuf.Channel(capacity=8, size=1 << 22) as replies:
        proc = ctx.Process(target=_workers.echo_objects, args=(requests, replies))
        proc.start()
        arrays = [
            np.arange(24, dtype=np.int16).reshape(2, 3, 4),
            np.asfortranarray(np.random.default_rng(0).random((300, 200))),
            np.zeros((0, 5)),
            np.array(7.0),
            np.array([(1, 2.0)], dtype=[("a", ">i4"), ("b", "<f8")]),
        ]
        for obj in OBJECTS[:-1] + arrays:
            requests.send(obj)
            got = replies.recv(timeout=30)
            if isinstance(obj, np.ndarray):
                same_array(obj, got)
            else:
                assert got == obj
        requests.close()
        proc.join(30)
        assert proc.exitcode == 0


dtypes = st.one_of(
    hnp.scalar_dtypes(),
    hnp.integer_dtypes(endianness=">"),
    hnp.floating_dtypes(endianness=">"),
    hnp.array_dtypes(subtype_strategy=hnp.scalar_dtypes(), min_size=1, max_size=3),
)


@pytest.fixture(scope="module")
def array_channel():
    """One channel for every hypothesis example (a new segment each would be slow)."""
    with ringbuf.Channel(capacity=4, size=1 << 16) as ch:
        yield ch


# Small writable buffers travel inside the pickle (_codec.INBAND_MAX); with the
# limit at 0, the same small arrays take the object-record path.
@pytest.mark.parametrize("inband_max", [_codec.INBAND_MAX, 0], ids=["as-sent", "all-out-of-band"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arr=hnp.arrays(dtype=dtypes, shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7)),
       fortran=st.booleans())
def test_arrays_of_any_dtype_and_shape(array_channel, monkeypatch, inband_max, arr, fortran):
    monkeypatch.setattr(_codec, "INBAND_MAX", inband_max)
    ch = array_channel
    while len(ch):  # a failed example may have left its message behind
        ch.recv_bytes()
    if fortran:
        arr = np.asfortranarray(arr)
    # The reference is what pickle itself gives back (it drops the byte order
    # of non-native datetimes, for one).
    expected = pickle.loads(pickle.dumps(arr, protocol=5))
    ch.send(arr)
    same_array(expected, ch.recv())
    ch.send(arr)
    same_array(expected, ch.recv_into(np.empty_like(expected)))  # empty_like keeps C or Fortran order
    assert len(ch) == 0


@pytest.mark.parametrize("n", [16, 100_000])  # in band, out of band
def test_arrays_come_back_as_writable_as_they_were_sent(make_channel, n):
    ch = make_channel(capacity=4, size=1 << 20)
    writable = np.arange(n, dtype=np.uint8)
    read_only = np.frombuffer(bytes(range(256)) * (n // 256 + 1), dtype=np.uint8)[:n]
    for src in (writable, read_only):
        ch.send(src)
        got = ch.recv()
        assert got.flags.writeable == src.flags.writeable and (got == src).all()


def test_received_arrays_do_not_alias_the_ring(make_channel):
    ch = make_channel(capacity=4, size=1 << 18)
    first = np.full(40_000, 7, dtype=np.uint8)
    ch.send(first)
    got = ch.recv()
    # Reuse the same ring bytes many times over with other data.
    for i in range(20):
        ch.send(np.full(40_000, i, dtype=np.uint8))
        ch.recv()
    assert (got == 7).all()
    got[:] = 1  # writable, and writing it touches nothing shared
    ch.send(np.arange(3))
    assert ch.recv().tolist() == [0, 1, 2]


@pytest.mark.parametrize("use_out", [False, True])
def test_an_array_that_wraps_around_the_end_of_the_ring(make_channel, use_out):
    size = 64 * 1024
    ch = make_channel(capacity=8, size=size)
    arr = np.random.default_rng(1).integers(0, 255, 40_000, dtype=np.uint8)
    # Move the write position near the end of the ring, then empty it.
    ch.send_bytes(b"x" * (size - 20_000))
    ch.recv_bytes()
    assert ch.stats().sendx > size - 20_000
    ch.send(arr)
    st = ch.stats()
    assert st.sendx < st.recvx  # the record wrapped
    if use_out:
        out = np.empty_like(arr)
        assert ch.recv_into(out) is out
        same_array(arr, out)
    else:
        same_array(arr, ch.recv())
    ch.check()


# -- recv_into and recv_bytes_into ----------------------------------------------


@pytest.mark.parametrize(
    "out,match",
    [
        (np.empty(10, np.float32), "bytes of data"),
        (np.empty(100, np.int32), "dtype"),
        (np.empty((10, 10), np.float32), "shape"),
        (np.empty((20, 5), np.float32, order="F"), "memory order"),
    ],
)
def test_recv_into_mismatch_leaves_the_message(make_channel, out, match):
    ch = make_channel()
    arr = np.arange(100, dtype=np.float32).reshape(20, 5)
    ch.send(arr)
    with pytest.raises(ValueError, match=match):
        ch.recv_into(out)
    assert len(ch) == 1
    same_array(arr, ch.recv())


def test_recv_into_needs_an_array_message(make_channel):
    ch = make_channel()
    ch.send({"not": "an array"})
    with pytest.raises(TypeError, match="is a dict, not a numpy array"):
        ch.recv_into(np.empty(3))
    ch.send_bytes(b"raw")
    assert ch.recv() == {"not": "an array"}
    with pytest.raises(TypeError, match="not an array sent with send"):
        ch.recv_into(np.empty(3))
    assert ch.recv_bytes() == b"raw"


@pytest.mark.parametrize("out", [np.empty(4)[::2], np.arange(4.0).setflags(write=False) or None, [0.0] * 4])
def test_recv_into_rejects_unusable_out(make_channel, out):
    ch = make_channel()
    ch.send(np.arange(2.0))
    if out is None:
        out = np.arange(2.0)
        out.setflags(write=False)
    with pytest.raises(TypeError):
        ch.recv_into(out)
    assert len(ch) == 1


def test_recv_into_a_fortran_array(make_channel):
    ch = make_channel(size=1 << 20)
    arr = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    ch.send(arr)
    out = np.empty((3, 4), order="F")
    same_array(arr, ch.recv_into(out))


def test_recv_into_times_out(make_channel):
    ch = make_channel()
    with pytest.raises(ringbuf.Timeout):
        ch.recv_into(np.empty(3), timeout=0.05)


def test_recv_bytes_into(make_channel):
    ch = make_channel()
    buf = bytearray(8)
    ch.send_bytes(b"abc")
    assert ch.recv_bytes_into(buf) == 3 and buf[:3] == b"abc"
    ch.send_bytes(b"0123456789")
    with pytest.raises(ringbuf.BufferTooSmall) as e:
        ch.recv_bytes_into(buf)
    assert e.value.needed == 10
    assert len(ch) == 1  # still queued
    big = np.empty(16, np.uint8)
    assert ch.recv_bytes_into(big) == 10 and big[:10].tobytes() == b"0123456789"
    with pytest.raises(TypeError, match="writable"):
        ch.recv_bytes_into(b"immutable")
    with pytest.raises(ringbuf.Timeout):
        ch.recv_bytes_into(buf, timeout=0)


# -- errors on the way in and out ------------------------------------------------


def test_an_unpicklable_object_leaves_the_channel_unchanged(make_channel):
    ch = make_channel()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        ch.send(lambda: None)
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        ch.send_many([1, lambda: None])
    st = ch.stats()
    assert (st.qcount, st.sent) == (0, 0)


def test_try_recv_takes_every_kind_of_message(make_channel):
    # Plain pickles, a record that fits the 64 KiB receive scratch buffer and
    # one that does not: try_recv decodes each as recv does.
    ch = make_channel(capacity=8, size=4 << 20)
    with pytest.raises(ringbuf.Empty):
        ch.try_recv()
    small, mid, big = np.arange(6.0), np.arange(10_000, dtype=np.float32), np.ones((512, 512))
    for obj in ({"k": [1, 2]}, small, mid, big):
        ch.send(obj)
    assert ch.try_recv() == {"k": [1, 2]}
    for sent in (small, mid, big):
        same_array(sent, ch.try_recv())
    with pytest.raises(ringbuf.Empty):
        ch.try_recv()


def test_a_bare_record_marker_is_an_unpickling_error(make_channel):
    # The class that marks object records travels like any other class; alone,
    # it is a record without its header, and is refused as one.
    ch = make_channel()
    ch.send(_codec.ObjectRecord)
    ch.send("next")
    with pytest.raises(pickle.UnpicklingError, match="malformed ringbuf object record"):
        ch.recv()
    assert ch.recv() == "next"


def test_a_message_that_fails_to_unpickle_is_consumed(make_channel):
    ch = make_channel()
    ch.send_bytes(b"this is not a pickle")
    ch.send_bytes(_codec.PREFIX + b"\xff" * 40)  # an object record with a nonsense table
    ch.send("fine")
    with pytest.raises(pickle.UnpicklingError):
        ch.recv()
    with pytest.raises(pickle.UnpicklingError, match="malformed ringbuf object record"):
        ch.recv()
    assert ch.recv() == "fine"


# -- custom codecs -----------------------------------------------------------------


def test_custom_codec_round_trip_and_travels_to_children():
    ctx = multiprocessing.get_context("spawn")
    codec = dict(dumps=_workers.json_dumps, loads=_workers.json_loads)
    with ringbuf.Channel(**codec) as requests, ringbuf.Channel(**codec) as replies:
        requests.send({"k": [1, 2]})
        assert requests.recv_bytes() == b'{"k": [1, 2]}'  # the raw API stays available
        proc = ctx.Process(target=_workers.echo_objects, args=(requests, replies))
        proc.start()
        requests.send_many([{"a": 1}, [2]])
        assert replies.recv(timeout=30) == {"a": 1}
        assert replies.recv_many(5, timeout=30) == [[2]]
        requests.close()
        proc.join(30)
        assert proc.exitcode == 0


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_a_codec_may_return_any_bytes_like_object(make_channel, kind):
    def dumps(obj):
        return kind(json.dumps(obj).encode())

    ch = make_channel(dumps=dumps, loads=json.loads)
    ch.send({"by": "send"})
    ch.try_send({"by": "try_send"})
    asyncio.run(ch.send_async({"by": "send_async"}, timeout=10))
    ringbuf.select((ch, {"by": "select"}), timeout=10)
    ch.send_many([{"by": "send_many"}], timeout=10)
    assert [ch.recv(timeout=10)["by"] for _ in range(5)] == ["send", "try_send", "send_async", "select", "send_many"]
    with pytest.raises(TypeError, match="bytes-like"):
        make_channel(dumps=json.dumps, loads=json.loads).send({"a str": "is not bytes"})


def test_codec_arguments_are_checked():
    with pytest.raises(ValueError, match="both dumps and loads"):
        ringbuf.Channel(dumps=pickle.dumps)
    with pytest.raises(TypeError, match="callables"):
        ringbuf.Channel(dumps=1, loads=2)
