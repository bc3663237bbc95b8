"""Batches: send_bytes_many / send_many and recv_bytes_many / recv_many, one
lock hold for as many messages as fit."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle

import numpy as np
import pytest

import ringbuf
from tests import _workers
from tests._helpers import wait_until

ctx = multiprocessing.get_context("fork")


def test_recv_many_returns_what_decoded_and_keeps_the_rest_in_order(make_channel):
    ch = make_channel()
    ch.send(1)
    ch.send(2)
    ch.send_bytes(b"garbage")
    ch.send(4)
    assert ch.recv_many(10) == [1, 2]
    with pytest.raises(pickle.UnpicklingError):
        ch.recv()
    assert ch.recv_many(10) == [4]
    assert len(ch) == 0


def _into(ch):
    buf = bytearray(64)
    n = ch.recv_bytes_into(buf, timeout=0)
    return bytes(buf[:n])


def _bytes_view(ch):
    with ch.recv_bytes_view(timeout=0) as view:
        return bytes(view)


def _object_view(ch):
    with ch.recv_view(timeout=0) as obj:
        return obj


BYTES_RECEIVES = {
    "recv_bytes": lambda ch: ch.recv_bytes(timeout=0),
    "try_recv_bytes": lambda ch: ch.try_recv_bytes(),
    "recv_bytes_into": _into,
    "recv_bytes_many": lambda ch: ch.recv_bytes_many(1, timeout=0)[0],
    "recv_bytes_view": _bytes_view,
    "recv_bytes_async": lambda ch: asyncio.run(ch.recv_bytes_async(timeout=0)),
    "select_bytes": lambda ch: ringbuf.select_bytes(ch, timeout=0)[1],
    "Selector.select_bytes": lambda ch: ringbuf.Selector(ch).select_bytes(timeout=0)[1],
    "select_bytes_async": lambda ch: asyncio.run(ringbuf.select_bytes_async(ch, timeout=0))[1],
}

OBJECT_RECEIVES = {
    "recv": lambda ch: ch.recv(timeout=0),
    "try_recv": lambda ch: ch.try_recv(),
    "recv_many": lambda ch: ch.recv_many(1, timeout=0)[0],
    "recv_view": _object_view,
    "recv_async": lambda ch: asyncio.run(ch.recv_async(timeout=0)),
    "select": lambda ch: ringbuf.select(ch, timeout=0)[1],
    "Selector.select": lambda ch: ringbuf.Selector(ch).select(timeout=0)[1],
    "select_async": lambda ch: asyncio.run(ringbuf.select_async(ch, timeout=0))[1],
}


def _left_undecoded(ch):
    """A channel whose handle holds three messages recv_many() took and did
    not decode (a bad one, then 3 and 4), with 5 still in the ring."""
    for m in (1, b"garbage", 3, 4, 5):
        if isinstance(m, bytes):
            ch.send_bytes(m)
        else:
            ch.send(m)
    assert ch.recv_many(4) == [1]
    assert len(ch) == 1


@pytest.mark.parametrize("how", list(BYTES_RECEIVES))
def test_every_bytes_receive_takes_what_recv_many_left_first_in_order(make_channel, how):
    ch = make_channel()
    _left_undecoded(ch)
    receive = BYTES_RECEIVES[how]
    got = [receive(ch) for _ in range(4)]
    assert got == [b"garbage"] + [pickle.dumps(i, protocol=5) for i in (3, 4, 5)]
    assert len(ch) == 0


@pytest.mark.parametrize("how", list(OBJECT_RECEIVES))
def test_every_object_receive_takes_what_recv_many_left_first_in_order(make_channel, how):
    ch = make_channel()
    _left_undecoded(ch)
    receive = OBJECT_RECEIVES[how]
    with pytest.raises(pickle.UnpicklingError):
        receive(ch)
    assert [receive(ch) for _ in range(3)] == [3, 4, 5]
    assert len(ch) == 0


def test_bad_arguments_raise_while_recv_many_leftovers_wait(make_channel):
    ch = make_channel()
    _left_undecoded(ch)
    for bad in (lambda: ch.recv(timeout=-1), lambda: ch.recv_bytes(timeout=float("nan")),
                lambda: ch.recv_many(0), lambda: ch.recv_bytes_many(-3), lambda: ch.recv_view(timeout=-1),
                lambda: ch.recv_bytes_into(bytes(64), timeout=0)):
        with pytest.raises((ValueError, TypeError)):
            bad()
    with pytest.raises(ringbuf.BufferTooSmall) as e:
        ch.recv_bytes_into(bytearray(3), timeout=0)
    assert e.value.needed == len(b"garbage")
    with pytest.raises(ringbuf.RingbufError, match="recv_many"):
        ch.recv_into(np.empty(1))
    assert ch.recv_bytes(timeout=0) == b"garbage"  # still first, after all of these


def test_batches_round_trip(make_channel):
    ch = make_channel(capacity=100)
    msgs = [bytes([i]) * i for i in range(50)]
    ch.send_bytes_many(msgs)
    assert ch.recv_bytes_many(20) == msgs[:20]
    assert ch.recv_bytes_many(100) == msgs[20:]
    ch.send_many([{"i": i} for i in range(5)])
    assert ch.recv_many(3) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert ch.recv_many(3) == [{"i": 3}, {"i": 4}]
    assert ch.stats().sent == 55


def test_recv_many_does_not_wait_for_more_than_is_queued(make_channel):
    ch = make_channel()
    ch.send(1)
    assert ch.recv_many(1000, timeout=60) == [1]
    with pytest.raises(ringbuf.Timeout):
        ch.recv_many(5, timeout=0.05)
    with pytest.raises(ValueError, match="max_items"):
        ch.recv_many(0)


def test_recv_bytes_many_takes_a_long_message_alone(make_channel):
    ch = make_channel(size=1 << 20)
    ch.send_bytes(b"a" * 100_000)
    ch.send_bytes(b"b")
    assert ch.recv_bytes_many(10) == [b"a" * 100_000]
    assert ch.recv_bytes_many(10) == [b"b"]


def test_a_batch_that_only_partly_fits_before_the_timeout(make_channel):
    ch = make_channel(capacity=3)
    with pytest.raises(ringbuf.Timeout) as e:
        ch.send_bytes_many([b"1", b"2", b"3", b"4", b"5"], timeout=0.05)
    assert e.value.sent == 3
    assert ch.recv_bytes_many(10) == [b"1", b"2", b"3"]


def test_a_batch_with_a_message_too_large_sends_nothing(make_channel):
    ch = make_channel(size=128)
    with pytest.raises(ringbuf.MessageTooLarge) as e:
        ch.send_bytes_many([b"ok", b"x" * 500])
    assert e.value.sent == 0 and len(ch) == 0


def test_a_batch_waits_for_room_and_continues(make_channel):
    ctx = multiprocessing.get_context("fork")
    ch = make_channel(capacity=2)
    results = ctx.Queue()
    msgs = [str(i).encode() for i in range(10)]
    proc = ctx.Process(target=_workers.send_bytes_many, args=(ch, msgs, None, results))
    proc.start()
    got = []
    while len(got) < 10:
        got += ch.recv_bytes_many(10, timeout=10)
    assert got == msgs
    assert results.get(timeout=10) == ("sent", 10)
    proc.join(10)


def test_close_part_way_through_a_batch_reports_how_many_went(make_channel):
    ctx = multiprocessing.get_context("fork")
    ch = make_channel(capacity=2)
    results = ctx.Queue()
    proc = ctx.Process(target=_workers.send_bytes_many, args=(ch, [b"a", b"b", b"c", b"d"], None, results))
    proc.start()
    wait_until(lambda: ch.stats().sendq == 1, what="batch sender parking")
    ch.close()
    assert results.get(timeout=10) == ("Closed", 2)
    assert ch.recv_bytes_many(10) == [b"a", b"b"]
    proc.join(10)


def test_one_batch_wakes_several_parked_receivers(make_channel):
    ctx = multiprocessing.get_context("fork")
    ch = make_channel()
    results = ctx.Queue()
    procs = [ctx.Process(target=_workers.recv_one, args=(ch, None, results)) for _ in range(3)]
    for p in procs:
        p.start()
    wait_until(lambda: ch.stats().recvq == 3, what="receivers parking")
    ch.send_bytes_many([b"x", b"y", b"z"])
    assert sorted(results.get(timeout=5)[1] for _ in procs) == [b"x", b"y", b"z"]
    for p in procs:
        p.join(5)


def test_a_batch_message_shrunk_while_the_batch_is_prepared_is_never_read_past_its_end(make_channel):
    # Python code that runs while send_bytes_many prepares its batch (here a
    # gc callback, which runs at almost any allocation) shrinks a bytearray
    # of the batch.  Each message must go out as one consistent buffer:
    # whole as it was, or as it became, never its old length read from its
    # new memory.  The shrink is tried at the k-th collection, for each k, so
    # that it lands at every step of the preparation.
    import gc

    ch = make_channel(size=1 << 20)
    threshold = gc.get_threshold()
    for k in range(1, 12):
        victim = bytearray(b"v" * 200_000)
        calls = []

        def shrink(phase, info):
            calls.append(phase)
            if len(calls) == k:
                try:
                    victim[8:] = b""
                except BufferError:
                    pass  # exported for the send: it cannot be resized now

        gc.callbacks.append(shrink)
        gc.set_threshold(1)
        try:
            ch.send_bytes_many([bytearray(b"first"), victim] + [bytearray(b"%d" % i) for i in range(20)])
        finally:
            gc.callbacks.remove(shrink)
            gc.set_threshold(*threshold)
        assert ch.recv_bytes() == b"first"
        assert ch.recv_bytes() in (b"v" * 200_000, b"v" * 8)
        assert ch.recv_bytes_many(100) == [b"%d" % i for i in range(20)]
