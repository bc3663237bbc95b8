"""Single-process semantics of ringbuf.Channel."""

from __future__ import annotations

import dataclasses
import os
import pickle
import stat

import pytest

import ringbuf
from ringbuf import Channel


def test_fifo_order_and_contents(make_channel):
    ch = make_channel(capacity=100, size=1 << 16)
    msgs = [bytes([i]) * i for i in range(50)]
    for m in msgs:
        ch.send_bytes(m)
    assert [ch.recv_bytes() for _ in msgs] == msgs


def test_accepts_every_contiguous_bytes_like(make_channel):
    import array

    import numpy as np

    ch = make_channel()
    ch.send_bytes(bytearray(b"ba"))
    ch.send_bytes(memoryview(b"mv"))
    ch.send_bytes(array.array("i", [1, 2]))
    ch.send_bytes(np.arange(3, dtype=np.uint16))
    ch.send_bytes(b"")
    assert ch.recv_bytes() == b"ba"
    assert ch.recv_bytes() == b"mv"
    assert ch.recv_bytes() == array.array("i", [1, 2]).tobytes()
    assert ch.recv_bytes() == np.arange(3, dtype=np.uint16).tobytes()
    assert ch.recv_bytes() == b""


def test_capacity_bounds_message_count(make_channel):
    ch = make_channel(capacity=3, size=1 << 16)
    for _ in range(3):
        ch.try_send_bytes(b"x")
    with pytest.raises(ringbuf.Full):
        ch.try_send_bytes(b"x")
    assert len(ch) == 3
    ch.recv_bytes()
    ch.try_send_bytes(b"y")
    assert [ch.recv_bytes() for _ in range(3)] == [b"x", b"x", b"y"]


def test_size_bounds_bytes(make_channel):
    ch = make_channel(capacity=100, size=256)
    # 100-byte messages take 8 + 104 = 112 ring bytes: two fit in 256, not three.
    ch.try_send_bytes(b"a" * 100)
    ch.try_send_bytes(b"b" * 100)
    with pytest.raises(ringbuf.Full):
        ch.try_send_bytes(b"c" * 100)
    # A small one still fits in the 32 bytes left.
    ch.try_send_bytes(b"d" * 24)
    assert ch.stats().used == 256


def test_largest_message_fills_the_ring_exactly(make_channel):
    ch = make_channel(capacity=4, size=512)
    assert ch.max_message_size == 512 - 8
    big = os.urandom(ch.max_message_size)
    ch.send_bytes(big)
    with pytest.raises(ringbuf.Full):
        ch.try_send_bytes(b"")
    assert ch.recv_bytes() == big


def test_wraparound_with_many_sizes(make_channel):
    ch = make_channel(capacity=7, size=200)
    sizes = [0, 1, 7, 8, 9, 63, 64, 65, 100, 150, 184, 192]
    sent = []
    for _ in range(40):
        for n in sizes:
            if n > ch.max_message_size:
                continue
            msg = os.urandom(n)
            try:
                ch.try_send_bytes(msg)
                sent.append(msg)
            except ringbuf.Full:
                while sent:
                    assert ch.recv_bytes() == sent.pop(0)
                ch.try_send_bytes(msg)
                sent.append(msg)
            ch.check()
    while sent:
        assert ch.recv_bytes() == sent.pop(0)
    ch.check()
    st = ch.stats()
    assert (st.qcount, st.used) == (0, 0)
    assert st.sent == st.received > 100


def test_messages_longer_than_the_scratch_buffer(make_channel):
    ch = make_channel(capacity=4, size=1 << 20)
    big = os.urandom(200_000)
    ch.send_bytes(big)
    ch.send_bytes(b"small")
    assert ch.recv_bytes() == big
    assert ch.recv_bytes() == b"small"


def test_long_messages_received_by_several_threads_at_once(make_channel):
    # Long messages go through kept receive buffers; threads receiving at
    # once must each get whole messages of their own, whatever their sizes.
    import threading

    ch = make_channel(capacity=8, size=4 << 20)
    msgs = [os.urandom(n) for n in range(70_000, 700_000, 9_000)]
    got, lock = [], threading.Lock()

    def receiver():
        for msg in ch.iter_bytes():
            with lock:
                got.append(msg)

    threads = [threading.Thread(target=receiver) for _ in range(4)]
    for t in threads:
        t.start()
    for msg in msgs:
        ch.send_bytes(msg)
    ch.close()
    for t in threads:
        t.join(30)
    assert sorted(got) == sorted(msgs)


def test_short_messages_received_by_several_threads_at_once(make_channel):
    # Short messages go through a receive buffer taken for the length of each
    # call; threads receiving at once, one at a time and in batches, must
    # each get whole messages of their own.
    import threading

    ch = make_channel(capacity=64, size=1 << 16)
    msgs = [i.to_bytes(4, "little") * (1 + i % 70) for i in range(20_000)]
    got, lock = [], threading.Lock()

    def one_at_a_time():
        for msg in ch.iter_bytes():
            with lock:
                got.append(msg)

    def in_batches():
        while True:
            try:
                batch = ch.recv_bytes_many(16)
            except ringbuf.Closed:
                return
            with lock:
                got.extend(batch)

    threads = [threading.Thread(target=f) for f in (one_at_a_time, in_batches) * 2]
    for t in threads:
        t.start()
    for msg in msgs:
        ch.send_bytes(msg)
    ch.close()
    for t in threads:
        t.join(30)
    assert sorted(got) == sorted(msgs)


def test_a_receive_inside_another_receive_gets_a_buffer_of_its_own(make_channel):
    # Python code can run in the middle of a receive: a signal handler
    # between two bytecodes, or, as here because it can be placed exactly, a
    # profiler called when the C receive returns, before the message has
    # been taken out of the receive buffer.  A receive made there must not
    # overwrite the one it interrupted.
    import sys

    ch = make_channel()
    ch.send_bytes(b"first " * 10)
    ch.send_bytes(b"second")
    inner = []

    def profiler(frame, event, arg):
        if event == "c_return" and getattr(arg, "__name__", "") == "rb_recv" and not inner:
            inner.append(ch.recv_bytes())

    sys.setprofile(profiler)
    try:
        outer = ch.recv_bytes()
    finally:
        sys.setprofile(None)
    assert (outer, inner) == (b"first " * 10, [b"second"])


def test_close_drains_then_ends(make_channel):
    ch = make_channel(capacity=10)
    ch.send_bytes(b"1")
    ch.send_bytes(b"2")
    ch.close()
    assert ch.closed
    with pytest.raises(ringbuf.Closed):
        ch.send_bytes(b"3")
    with pytest.raises(ringbuf.Closed):
        ch.try_send_bytes(b"3")
    assert ch.recv_bytes() == b"1"
    assert ch.try_recv_bytes() == b"2"
    with pytest.raises(ringbuf.Closed):
        ch.recv_bytes()
    with pytest.raises(ringbuf.Closed):
        ch.try_recv_bytes()
    with pytest.raises(ringbuf.Closed):
        ch.recv_bytes(timeout=0.01)


def test_close_is_idempotent(make_channel):
    ch = make_channel()
    ch.close()
    ch.close()
    assert ch.closed


def test_iteration_yields_until_closed_and_drained(make_channel):
    ch = make_channel(capacity=10)
    for i in range(5):
        ch.send_bytes(str(i).encode())
    ch.close()
    assert list(ch.iter_bytes()) == [b"0", b"1", b"2", b"3", b"4"]


def test_iterating_the_channel_yields_objects(make_channel):
    ch = make_channel(capacity=10)
    for obj in (1, "two", [3]):
        ch.send(obj)
    ch.close()
    assert list(ch) == [1, "two", [3]]


def test_try_recv_on_empty_raises_empty(make_channel):
    ch = make_channel()
    with pytest.raises(ringbuf.Empty):
        ch.try_recv_bytes()
    with pytest.raises(ringbuf.WouldBlock):
        ch.try_recv_bytes()


def test_exceptions_are_catchable_as_the_familiar_kinds(make_channel):
    import queue

    ch = make_channel(capacity=1)
    with pytest.raises(queue.Empty):
        ch.try_recv_bytes()
    ch.send_bytes(b"x")
    with pytest.raises(queue.Full):
        ch.try_send_bytes(b"y")
    with pytest.raises(TimeoutError):
        ch.send_bytes(b"y", timeout=0)


def test_zero_timeout_does_not_wait_but_succeeds_when_possible(make_channel):
    ch = make_channel(capacity=1)
    ch.send_bytes(b"a", timeout=0)
    with pytest.raises(ringbuf.Timeout):
        ch.send_bytes(b"b", timeout=0)
    assert ch.recv_bytes(timeout=0) == b"a"
    with pytest.raises(ringbuf.Timeout):
        ch.recv_bytes(timeout=0)


def test_stats_walk_every_field(make_channel):
    ch = make_channel(capacity=4, size=128)
    st = ch.stats()
    assert st == ringbuf.ChannelStats(
        capacity=4, size=128, qcount=0, used=0, sendx=0, recvx=0, sendq=0, recvq=0,
        closed=False, creator_pid=os.getpid(), sent=0, received=0, send_parks=0,
        recv_parks=0, recvq_wakes=0, sendq_wakes=0, baton_passes=0, recoveries=0, waiters_reaped=0,
        peak_used=0, peak_qcount=0, loans=0, views=0, held=0, loans_taken=0, views_taken=0,
        loans_reclaimed=0, views_reclaimed=0, lock_owner=0,
    )
    ch.send_bytes(b"x" * 10)  # 8 + 16 = 24 bytes
    ch.send_bytes(b"y" * 3)  # 8 + 8 = 16 bytes
    st = ch.stats()
    assert (st.qcount, st.used, st.sendx, st.recvx, st.sent, st.received) == (2, 40, 40, 0, 2, 0)
    assert ch.recv_bytes() == b"x" * 10
    st = ch.stats()
    assert (st.qcount, st.used, st.sendx, st.recvx, st.sent, st.received) == (1, 16, 40, 24, 2, 1)
    assert (st.peak_qcount, st.peak_used) == (2, 40)  # high-water marks stay
    # A timed-out receive on an empty channel parks once, and undoes its count.
    ch.recv_bytes()
    with pytest.raises(ringbuf.Timeout):
        ch.recv_bytes(timeout=0.05)
    st = ch.stats()
    assert (st.recv_parks, st.recvq) == (1, 0)
    # Likewise a timed-out send on a full channel.
    for _ in range(4):
        ch.send_bytes(b"")
    with pytest.raises(ringbuf.Timeout):
        ch.send_bytes(b"", timeout=0.05)
    st = ch.stats()
    assert (st.send_parks, st.sendq, st.qcount) == (1, 0, 4)
    assert (st.peak_qcount, st.peak_used) == (4, 40)  # four empty messages: 8 bytes each
    # Nobody was parked while messages moved, so no wake system call was made.
    assert (st.recvq_wakes, st.sendq_wakes, st.baton_passes) == (0, 0, 0)
    ch.close()
    assert ch.stats().closed is True
    assert dataclasses.fields(ringbuf.ChannelStats)  # a frozen record
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.qcount = 0  # type: ignore[misc]


def test_len_and_repr(make_channel):
    ch = make_channel(capacity=8, size=1024, name=f"ringbuf-{os.getpid()}-repr")
    ch.send_bytes(b"abc")
    assert len(ch) == 1
    assert repr(ch) == f"<ringbuf.Channel 'ringbuf-{os.getpid()}-repr' 1/8 messages, 16/1024 bytes, open>"
    ch.close()
    assert repr(ch).endswith("closed>")


def test_size_is_rounded_up_to_a_multiple_of_8(make_channel):
    ch = make_channel(size=1001)
    assert ch.size == 1008


def test_segment_is_owner_only_and_named(make_channel):
    ch = make_channel(name=f"ringbuf-{os.getpid()}-mode")
    st = os.stat(f"/dev/shm/{ch.name}")
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


def test_wider_permissions_only_when_asked(make_channel):
    old = os.umask(0o077)  # a strict umask must not narrow what was asked for
    try:
        ch = make_channel(mode=0o660)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(f"/dev/shm/{ch.name}").st_mode) == 0o660
    with pytest.raises(ValueError, match="mode must be between 0 and 511"):
        Channel(mode=0o1777)


def test_creating_an_existing_name_fails(make_channel):
    ch = make_channel()
    with pytest.raises(ringbuf.ChannelExists):
        Channel(name=ch.name)
    with pytest.raises(FileExistsError):
        Channel(name=ch.name)


def test_attach_in_the_same_process_shares_the_struct(make_channel):
    ch = make_channel(capacity=5, size=4096)
    other = Channel.attach(ch.name)
    assert (other.name, other.capacity, other.size) == (ch.name, 5, 4096)
    ch.send_bytes(b"hello")
    assert other.recv_bytes() == b"hello"
    other.close()
    assert ch.closed


def test_unlink_removes_the_name_but_not_the_channel(make_channel):
    ch = make_channel()
    other = Channel.attach(ch.name)
    ch.unlink()
    assert not os.path.exists(f"/dev/shm/{ch.name}")
    ch.send_bytes(b"still works")
    assert other.recv_bytes() == b"still works"
    with pytest.raises(ringbuf.ChannelNotFound):
        Channel.attach(ch.name)
    ch.unlink()  # the creator's unlink happens once; later calls do nothing
    with pytest.raises(ringbuf.ChannelNotFound):
        other.unlink()


def test_creator_unlink_never_removes_a_newer_segment_with_the_same_name(make_channel):
    first = Channel()
    name = first.name
    first.unlink()
    second = make_channel(name=name)
    first.unlink()
    assert os.path.exists(f"/dev/shm/{second.name}")


def test_no_handle_of_a_channel_removes_or_opens_a_newer_channel_that_took_its_name(make_channel):
    old = make_channel()
    name = old.name
    attached = Channel.attach(name)
    pickled = pickle.dumps(old)
    Channel.attach(name).unlink()  # someone else removes the name (as `ringbuf rm` would)
    new = make_channel(name=name)  # and a newer channel takes it
    with pytest.raises(ringbuf.ChannelNotFound, match="names another channel"):
        attached.unlink()
    old.unlink()
    with old:
        pass
    del old
    assert os.path.exists(f"/dev/shm/{name}")
    assert Channel.attach(name)._h.file_id == new._h.file_id
    with pytest.raises(ringbuf.ChannelNotFound, match="names another channel"):
        pickle.loads(pickled)
    assert pickle.loads(pickle.dumps(new))._h.file_id == new._h.file_id


def test_with_block_closes_and_unlinks_for_the_creator():
    with Channel() as ch:
        name = ch.name
        other = Channel.attach(name)
        with other:
            pass
        assert not ch.closed  # leaving an attached handle's block does nothing
        assert os.path.exists(f"/dev/shm/{name}")
    assert not os.path.exists(f"/dev/shm/{name}")
    assert other.closed


def test_dropping_the_creator_unlinks():
    ch = Channel()
    name = ch.name
    del ch
    assert not os.path.exists(f"/dev/shm/{name}")


def test_check_passes_on_a_healthy_channel(make_channel):
    ch = make_channel(capacity=3, size=96)
    for _ in range(10):
        ch.send_bytes(b"abcdefghij")
        ch.check()
        ch.recv_bytes()
        ch.check()
