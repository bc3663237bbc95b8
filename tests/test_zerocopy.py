"""Loans and views: messages written and read in place (Channel.loan,
loan_array, recv_bytes_view, recv_view), with real processes and kills."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import pickle
import signal
import struct
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ringbuf
from tests import _workers
from ringbuf._lowlevel import HEADER_FIELDS
from tests._helpers import in_futex_wait, mapped, record_bytes, wait_until, write_header
from tests.test_blocking import read_line, run_child

ctx = multiprocessing.get_context("fork")
PAGE = os.sysconf("SC_PAGESIZE")


# -- round trips --------------------------------------------------------------


def test_a_loan_is_published_as_one_bytes_message(make_channel):
    ch = make_channel(capacity=4, size=PAGE)
    with ch.loan(11) as buf:
        assert isinstance(buf, memoryview) and not buf.readonly and buf.nbytes == 11
        buf[:] = b"hello world"
    assert ch.recv_bytes() == b"hello world"
    st = ch.stats()
    assert (st.loans, st.views, st.held, st.loans_taken, st.sent, st.received) == (0, 0, 0, 1, 1, 1)
    ch.check()


def test_a_view_reads_the_next_message_in_place_and_its_end_frees_the_room(make_channel):
    ch = make_channel(capacity=4, size=PAGE)
    ch.send_bytes(b"abc")
    ch.send_bytes(b"defgh")
    with ch.recv_bytes_view() as view:
        assert view.readonly and bytes(view) == b"abc"
        st = ch.stats()
        assert (st.views, st.qcount, st.held, st.received) == (1, 1, record_bytes(3), 0)
        assert [(h.kind, h.pid, h.nbytes) for h in ch.holds()] == [("view", os.getpid(), record_bytes(3))]
    st = ch.stats()
    assert (st.views, st.held, st.received, st.views_taken) == (0, 0, 1, 1)
    assert ch.recv_bytes() == b"defgh"
    ch.check()


@settings(max_examples=60, deadline=None)
@given(arr=hnp.arrays(
    dtype=st.one_of(hnp.integer_dtypes(), hnp.floating_dtypes(), hnp.complex_number_dtypes(), hnp.boolean_dtypes(),
                    hnp.datetime64_dtypes(), st.just(np.dtype([("a", "<i4"), ("b", "<f8")]))),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=30)),
    order=st.sampled_from("CF"))
def test_loaned_arrays_round_trip_through_recv_and_recv_view(arr, order):
    ch = ringbuf.Channel(capacity=8, size=1 << 20)
    try:
        for receive in ("recv", "recv_view"):
            with ch.loan_array(arr.shape, arr.dtype, order=order) as out:
                assert out.shape == arr.shape and out.dtype == arr.dtype
                if arr.ndim > 1 and arr.size > 1 and min(arr.shape) > 1:
                    assert out.flags.f_contiguous == (order == "F")
                out[...] = arr
            if receive == "recv":
                got = ch.recv()
                assert got.flags.writeable
            else:
                with ch.recv_view() as got:
                    assert not got.flags.writeable
                    got = got.copy()
            assert got.dtype == arr.dtype and got.shape == arr.shape
            assert got.tobytes() == arr.tobytes()  # NaN and NaT compare unequal to themselves
        ch.check()
    finally:
        ch.close()
        ch.unlink()


def test_recv_view_gives_out_of_band_arrays_as_read_only_views_of_the_ring(make_channel):
    ch = make_channel(capacity=4, size=64 * PAGE)
    big = np.arange(20000, dtype=np.float64)
    ch.send({"frame": big, "n": 7, "small": np.arange(3)})
    with ch.recv_view() as obj:
        assert obj["n"] == 7 and obj["small"].tolist() == [0, 1, 2]
        frame = obj["frame"]
        assert not frame.flags.writeable
        np.testing.assert_array_equal(frame, big)
        with pytest.raises(ValueError):
            frame[0] = 1
    del frame
    assert ch.stats().views == 1  # `obj` still holds the array: its room stays held
    del obj
    assert (ch.stats().views, ch.stats().held) == (0, 0)
    ch.check()


def test_records_of_one_array_decode_alike_the_second_time(make_channel):
    # recv_view learns how a record of one array decodes and takes the next
    # with the same head apart without unpickling: it must give what
    # unpickling (recv) gives, and must not skip a rebuilder that is not numpy's.
    from ringbuf import _codec

    ch = make_channel(capacity=8, size=256 * PAGE)
    rng = np.random.default_rng(7)
    kinds = [  # name, array maker, loan order (None: send), learnt
        ("loan C", lambda i: rng.random((100, 300), dtype=np.float32), "C", True),
        ("loan F", lambda i: np.asfortranarray(rng.integers(0, 999, (50, 700), dtype=np.int16)), "F", True),
        ("loan F, a dimension of 1", lambda i: np.asfortranarray(rng.random((1, 5000))), "F", True),
        ("send", lambda i: rng.random((90, 110)), None, True),
        ("send F", lambda i: np.asfortranarray(rng.random((90, 110))), None, True),
        ("send structured", lambda i: np.array([(i, i / 2)] * 5000, dtype=[("a", "<i4"), ("b", "<f8")]), None, False),
    ]
    _codec._arrays.clear()
    learnt = 0
    for name, make, order, learns in kinds:
        for i in range(3):
            arr = make(i)
            for receive in ("recv", "recv_view"):
                if order is None:
                    ch.send(arr)
                else:
                    with ch.loan_array(arr.shape, arr.dtype, order) as out:
                        out[...] = arr
                if receive == "recv":
                    expected = ch.recv()
                    continue
                with ch.recv_view() as got:
                    assert type(got) is np.ndarray and not got.flags.writeable, name
                    assert (got.dtype, got.shape, got.strides) == (expected.dtype, expected.shape, expected.strides), name
                    assert got.tobytes("A") == arr.tobytes("A"), name
                    if got.dtype.names:
                        got.dtype.names = ("x", "y")  # a structured dtype can be changed in place
                    del got
        learnt += learns
        assert len(_codec._arrays) == learnt, f"{name}: learnt {len(_codec._arrays)}, expected {learnt}"
    _workers.frombuffer_calls[0] = 0
    for i in range(3):
        ch.send(_workers.CountedArray(bytes([i]) * 65536))
        with ch.recv_view() as got:
            assert type(got) is np.ndarray and got[0] == i and got.nbytes == 65536
            del got
    assert _workers.frombuffer_calls[0] == 3
    assert ch.stats().views == 0


def test_recv_view_of_a_plain_object(make_channel):
    ch = make_channel(capacity=4, size=PAGE)
    ch.send({"a": [1, 2, 3]})
    with ch.recv_view() as obj:
        assert obj == {"a": [1, 2, 3]}
    assert ch.stats().views == 0
    ch.send_bytes(b"\xffnot a pickle")
    with pytest.raises(pickle.UnpicklingError):
        with ch.recv_view():
            pass
    assert (ch.stats().views, ch.stats().qcount, ch.stats().received) == (0, 0, 2)


def test_records_that_wrap_at_the_ring_end_are_contiguous(make_channel):
    ch = make_channel(capacity=64, size=PAGE)
    for i in range(300):  # sizes that put the wrap at every offset of a record
        n = 1 + (i * 37) % 900
        data = bytes((i + k) % 251 for k in range(n))
        if i % 2:
            with ch.loan(n) as buf:
                buf[:] = data
        else:
            ch.send_bytes(data)
        with ch.recv_bytes_view() as view:
            assert bytes(view) == data
    assert ch.stats().sent == 300
    ch.check()


# -- order and holding ---------------------------------------------------------


def test_messages_are_delivered_in_the_order_their_room_was_reserved(make_channel):
    ch = make_channel(capacity=16, size=PAGE)
    first = ch.loan(5)
    a = first.__enter__()
    ch.send_bytes(b"sent behind the loan")
    second = ch.loan(6)
    b = second.__enter__()
    b[:] = b"second"
    second.__exit__(None, None, None)  # published before the earlier loan: waits for it
    with pytest.raises(ringbuf.Timeout):
        ch.recv_bytes(timeout=0)
    st = ch.stats()
    assert (st.qcount, st.loans, st.sent) == (0, 1, 2)
    a[:] = b"first"
    first.__exit__(None, None, None)
    assert [ch.recv_bytes(timeout=0) for _ in range(3)] == [b"first", b"sent behind the loan", b"second"]
    ch.check()


def test_an_aborted_loan_delivers_nothing_and_frees_its_room(make_channel):
    ch = make_channel(capacity=16, size=PAGE)
    with pytest.raises(KeyError):
        with ch.loan(100) as buf:
            buf[:3] = b"abc"
            raise KeyError("changed my mind")
    st = ch.stats()
    assert (st.qcount, st.used, st.held, st.loans, st.sent) == (0, 0, 0, 0, 0)
    # An aborted loan in the middle: what was reserved after it still goes through, in order.
    first = ch.loan(8)
    first.__enter__()[:] = b"aborted!"
    with ch.loan(4) as buf:
        buf[:] = b"kept"
    ch.send_bytes(b"plain")
    first.__exit__(RuntimeError, RuntimeError("x"), None)
    assert [ch.recv_bytes(timeout=0) for _ in range(2)] == [b"kept", b"plain"]
    assert (ch.stats().held, ch.stats().qcount) == (0, 0)
    ch.check()


def test_room_held_by_views_is_freed_in_order(make_channel):
    ch = make_channel(capacity=16, size=PAGE)
    for m in (b"one", b"two", b"three"):
        ch.send_bytes(m)
    v1, v2 = ch.recv_bytes_view(), ch.recv_bytes_view()
    assert bytes(v1.__enter__()) == b"one" and bytes(v2.__enter__()) == b"two"
    assert ch.recv_bytes() == b"three"  # received while views hold earlier room
    held = record_bytes(3) * 2 + record_bytes(5)
    assert ch.stats().held == held
    v2.__exit__(None, None, None)  # released first, but one before it is still out
    assert (ch.stats().held, ch.stats().views) == (held, 1)
    v1.__exit__(None, None, None)
    assert (ch.stats().held, ch.stats().views, ch.stats().received) == (0, 0, 3)
    ch.check()


def test_capacity_counts_messages_being_written_and_read(make_channel):
    ch = make_channel(capacity=2, size=PAGE)
    ch.send_bytes(b"queued")
    with ch.recv_bytes_view():
        with ch.loan(3):
            with pytest.raises(ringbuf.Full):
                ch.try_send_bytes(b"no count left")
    ch.try_send_bytes(b"room again")
    ch.check()


def test_a_full_ring_waits_for_a_view_to_end(make_channel):
    ch = make_channel(capacity=64, size=PAGE)
    big = PAGE // 2 - 64
    ch.send_bytes(b"a" * big)
    ch.send_bytes(b"b" * big)
    view = ch.recv_bytes_view()
    view.__enter__()
    assert ch.recv_bytes() == b"b" * big  # its room stays held behind the view
    with pytest.raises(ringbuf.Full):
        ch.try_send_bytes(b"c" * big)
    done = threading.Event()
    t = threading.Thread(target=lambda: (ch.send_bytes(b"c" * big, timeout=10), done.set()))
    t.start()
    wait_until(lambda: ch.stats().sendq == 1, what="the sender parking for room")
    view.__exit__(None, None, None)
    t.join(10)
    assert done.is_set() and ch.recv_bytes(timeout=0) == b"c" * big


def test_a_kept_slice_of_a_loan_stops_its_publish_until_it_is_gone(make_channel):
    ch = make_channel(capacity=4, size=PAGE)
    with pytest.raises(BufferError):
        with ch.loan(8) as buf:
            buf[:] = b"12345678"
            kept = np.frombuffer(buf, dtype=np.uint8)
    with pytest.raises(ValueError):
        buf[0]  # released
    assert (ch.stats().loans, ch.stats().qcount) == (1, 0)
    del kept
    gc.collect()
    st = ch.stats()
    assert (st.loans, st.qcount, st.held, st.sent) == (0, 0, 0, 0)
    with ch.loan_array(4, np.int32) as arr:
        arr[:] = 1
    assert arr.shape == (0,)  # emptied in place: it no longer reaches into the ring
    with pytest.raises(BufferError):
        with ch.loan_array(4, np.int32) as arr:
            arr[:] = 2
            part = arr[1:]
    del part
    np.testing.assert_array_equal(ch.recv(timeout=0), [1, 1, 1, 1])
    assert (ch.stats().qcount, ch.stats().loans) == (0, 0)


@pytest.mark.parametrize("keep", ["memoryview", "np.frombuffer", "as_strided", "ctypes", "a second name"])
def test_a_loaned_array_held_past_its_block_is_not_sent(make_channel, keep):
    # Objects holding the loaned array itself (not a numpy view of it) point
    # where it pointed: emptying it would not stop them writing into a
    # message already sent.  The loan is refused and aborted once they go.
    import ctypes
    from numpy.lib.stride_tricks import as_strided

    makers = {
        "memoryview": memoryview,
        "np.frombuffer": lambda a: np.frombuffer(a, np.uint8),
        "as_strided": as_strided,
        "ctypes": lambda a: (ctypes.c_uint8 * 8).from_buffer(a),
        "a second name": lambda a: a,
    }
    ch = make_channel(capacity=4, size=PAGE)
    with pytest.raises(BufferError, match="it was not sent"):
        with ch.loan_array(8, np.uint8) as arr:
            arr[:] = 1
            kept = makers[keep](arr)
    kept[0] = 99  # still the loan's memory, which nothing will deliver
    st = ch.stats()
    assert (st.loans, st.sent, st.qcount) == (1, 0, 0)
    del kept, arr
    gc.collect()
    st = ch.stats()
    assert (st.loans, st.sent, st.held) == (0, 0, 0)
    ch.check()


def test_an_array_kept_past_its_view_keeps_its_room_and_stays_valid(make_channel):
    ch = make_channel(capacity=4, size=4 * PAGE)
    ch.send_bytes(bytes(range(200)))
    with ch.recv_bytes_view() as view:
        arr = np.frombuffer(view, dtype=np.uint8)
    ch.send_bytes(b"\x00" * 200)
    assert ch.recv_bytes() == b"\x00" * 200
    for _ in range(40):  # traffic that would reuse the room if it were freed
        ch.send_bytes(b"\xee" * 200)
        ch.recv_bytes()
    assert arr.tolist() == list(range(200)) and ch.stats().views == 1
    del arr
    assert ch.stats().views == 0


# -- bad input -------------------------------------------------------------------


def test_bad_input_raises_clear_errors(make_channel):
    ch = make_channel(capacity=4, size=PAGE)
    with pytest.raises(ValueError, match="nbytes"):
        ch.loan(0)
    with pytest.raises(TypeError, match="nbytes"):
        ch.loan(1.5)  # type: ignore[arg-type]
    with pytest.raises(ringbuf.MessageTooLarge):
        ch.loan(PAGE)
    with pytest.raises(ringbuf.MessageTooLarge):
        ch.loan_array((PAGE,), np.float32)
    with pytest.raises(ValueError, match="negative"):
        ch.loan_array((3, -1), np.float32)
    with pytest.raises(TypeError):
        ch.loan_array((3, 1.5), np.float32)
    with pytest.raises(TypeError):
        ch.loan_array(3, "not a dtype")
    with ch.loan_array(3, None) as arr:  # numpy's rule: None is float64
        assert arr.dtype == np.float64
        arr[:] = 1.5
    assert ch.recv().tolist() == [1.5, 1.5, 1.5]
    with pytest.raises(ValueError, match="Python objects"):
        ch.loan_array(3, object)
    with pytest.raises(ValueError, match="order"):
        ch.loan_array(3, np.float32, order="K")
    for huge in ((2**31, 2**31, 2**31), (2**40, 2**40), (2**62,)):  # bytes past any ring, and past 2**64
        with pytest.raises(ringbuf.MessageTooLarge, match="no channel can hold it"):
            ch.loan_array(huge, np.float64)
    with pytest.raises(ValueError, match="numpy's limit"):
        ch.loan_array((0, 2**64), np.float64)
    full = make_channel(capacity=1, size=PAGE)
    full.send_bytes(b"x")
    for empty in ("S0", "V0", "U0"):  # refused before any wait for room (a full channel would time out)
        with pytest.raises(ValueError, match="no size"):
            full.loan_array(3, empty, timeout=5)
    with pytest.raises(ValueError, match="timeout"):
        ch.recv_bytes_view(timeout=-1)
    loan = ch.loan(4)
    with loan as buf:
        buf[:] = b"once"
    with pytest.raises(RuntimeError, match="once"):
        loan.__enter__()
    for other in (make_channel(capacity=0, size=PAGE), make_channel(capacity=4, size=PAGE + 8)):
        for call in (lambda: other.loan(8), other.recv_bytes_view, other.recv_view, lambda: other.loan_array(2, "i4")):
            with pytest.raises(ValueError, match="cannot lend"):
                call().__enter__()
    assert ch.stats().held == 0


def test_a_thread_cannot_take_more_holds_than_a_channel_has(make_channel):
    ch = make_channel(capacity=64, size=PAGE)
    loans = [ch.loan(8) for _ in range(ringbuf._lowlevel.HOLDS)]
    for loan in loans:
        loan.__enter__()
    with pytest.raises(RuntimeError, match="wait for this thread itself"):
        ch.loan(8).__enter__()
    for loan in loans:
        loan.__exit__(KeyError, KeyError(), None)
    assert ch.stats().loans == 0
    ch.check()


def test_the_hold_limit_counts_every_handle_of_the_channel_in_this_thread(make_channel):
    ch = make_channel(capacity=64, size=PAGE)
    other = ringbuf.Channel.attach(ch.name)
    for _ in range(ringbuf._lowlevel.HOLDS + 1):
        ch.send_bytes(b"m")
    views = [ch.recv_bytes_view() for _ in range(ringbuf._lowlevel.HOLDS)]
    for view in views:
        view.__enter__()
    with pytest.raises(RuntimeError, match="wait for this thread itself"):
        other.recv_bytes_view(timeout=10).__enter__()  # not a wait for itself
    for view in views:
        view.__exit__(None, None, None)
    with other.recv_bytes_view(timeout=0) as view:
        assert view == b"m"


def test_a_receive_in_another_thread_waits_for_the_loan(make_channel):
    ch = make_channel(capacity=8, size=PAGE)
    got = []
    with ch.loan(8) as buf:
        receiver = threading.Thread(target=lambda: got.append(ch.recv_bytes(timeout=30)))
        receiver.start()
        wait_until(lambda: ch.stats().recvq == 1, what="the receiver parked")
        buf[:] = b"the loan"
    receiver.join(30)
    assert got == [b"the loan"]


def test_a_send_waits_for_room_behind_a_loan_that_a_receive_makes(make_channel):
    # The channel is full with a message queued before this thread's loan:
    # a receiver in another thread takes it, and the send goes on.
    ch = make_channel(capacity=2, size=PAGE)
    ch.send_bytes(b"first")
    with ch.loan(8) as buf:
        buf[:] = b"the loan"

        def receive_once_the_sender_parks() -> None:
            wait_until(lambda: ch.stats().sendq == 1, what="the sender parked")
            assert ch.recv_bytes() == b"first"

        receiver = threading.Thread(target=receive_once_the_sender_parks)
        receiver.start()
        ch.send_bytes(b"third", timeout=30)
        receiver.join(30)
    assert ch.recv_bytes_many(3) == [b"the loan", b"third"]


def test_views_ended_in_another_thread_leave_the_hold_limit_right(make_channel):
    # Arrays from views handed to a thread that drops them: their holds end
    # there, and the taking thread never sees more than it holds.
    import queue

    ch = make_channel(capacity=64, size=1 << 22)
    arr = np.zeros(40000, np.uint8)  # out of band: recv_view gives a view of the ring
    handoff: queue.Queue = queue.Queue()
    slots = threading.Semaphore(4)

    def drop() -> None:
        while handoff.get() is not None:
            slots.release()

    dropper = threading.Thread(target=drop)
    dropper.start()
    try:
        for _ in range(3000):
            ch.send(arr)
            slots.acquire()
            with ch.recv_view() as obj:
                handoff.put(obj)
            del obj
    finally:
        handoff.put(None)
        dropper.join(30)
    assert ch.stats().views == 0
    ch.check()


def test_another_thread_waits_for_a_free_hold(make_channel):
    ch = make_channel(capacity=64, size=PAGE)
    loans = [ch.loan(8) for _ in range(ringbuf._lowlevel.HOLDS)]
    for loan in loans:
        loan.__enter__()
    got = []
    t = threading.Thread(target=lambda: got.append(ch.loan(8, timeout=10).__enter__()))
    t.start()
    t.join(0.2)
    assert t.is_alive() and not got
    # It waits for a hold, not for room: no wake-up for room may go to it.
    assert (ch.stats().sendq, ch.stats().recvq) == (0, 0)
    loans[0].__exit__(KeyError, KeyError(), None)
    t.join(10)
    assert len(got) == 1
    with pytest.raises(ringbuf.Timeout):
        with ch.loan(8, timeout=0.05):
            pass
    for loan in loans[1:]:
        loan.__exit__(KeyError, KeyError(), None)


# -- blocking: timeout, close, Ctrl-C --------------------------------------------


def test_loan_and_view_time_out(make_channel):
    ch = make_channel(capacity=1, size=PAGE)
    with pytest.raises(ringbuf.Timeout):
        ch.recv_bytes_view(timeout=0.05).__enter__()
    ch.send_bytes(b"full")
    with pytest.raises(ringbuf.Timeout):
        ch.loan(8, timeout=0.05).__enter__()
    assert (ch.stats().loans, ch.stats().views, ch.stats().held) == (0, 0, 0)


def test_close_wakes_a_waiting_loan_and_view(make_channel):
    full, empty = make_channel(capacity=1, size=PAGE), make_channel(capacity=1, size=PAGE)
    full.send_bytes(b"full")
    errs = []

    def run(call):
        try:
            call().__enter__()
        except ringbuf.Closed as e:
            errs.append(e)

    threads = [threading.Thread(target=run, args=(lambda: full.loan(8),)),
               threading.Thread(target=run, args=(empty.recv_bytes_view,))]
    for t in threads:
        t.start()
    wait_until(lambda: full.stats().sendq == 1 and empty.stats().recvq == 1, what="both parking")
    full.close()
    empty.close()
    for t in threads:
        t.join(10)
    assert len(errs) == 2


def test_close_wakes_a_loan_waiting_for_a_free_hold(make_channel, no_recheck):
    ch = make_channel(capacity=64, size=4 * PAGE)
    answer, tell = ctx.Pipe(duplex=False)

    def waiter():
        try:
            with ch.loan(8):
                tell.send("entered")
        except ringbuf.Closed:
            tell.send("closed")

    with pytest.raises(ringbuf.Closed):  # the loans below, aborted on leaving
        with contextlib.ExitStack() as holds:
            for _ in range(ringbuf._lowlevel.HOLDS):
                holds.enter_context(ch.loan(8))
            proc = ctx.Process(target=waiter)
            proc.start()
            wait_until(lambda: in_futex_wait(proc.pid), what="the child waiting for a free hold")
            ch.close()
            assert answer.poll(30), "close did not wake a loan waiting for a free hold"
            assert answer.recv() == "closed"
    proc.join(10)
    assert proc.exitcode == 0


def test_a_loan_out_when_the_channel_closes_is_aborted(make_channel):
    ch = make_channel(capacity=4, size=PAGE)
    with pytest.raises(ringbuf.Closed):
        with ch.loan(4) as buf:
            buf[:] = b"late"
            ch.close()
    assert (ch.stats().loans, ch.stats().held) == (0, 0)
    with pytest.raises(ringbuf.Closed):
        ch.recv_bytes(timeout=0)


def test_a_message_sent_behind_a_loan_before_the_close_is_received_before_closed(make_channel):
    # Go's rule: what was sent before close is received before the end.  A
    # message committed behind a loan waits for the loan's end, closed or not.
    ch = make_channel(capacity=4, size=PAGE)
    got = []

    def receive():
        try:
            while True:
                got.append(ch.recv_bytes(timeout=30))
        except ringbuf.Closed:
            got.append("closed")

    receiver = threading.Thread(target=receive)
    with pytest.raises(ringbuf.Closed):  # published after the close: aborted
        with ch.loan(8) as buf:
            buf[:] = b"the loan"
            ch.send_bytes(b"sent before the close")
            ch.close()
            with pytest.raises(ringbuf.Timeout):
                ch.recv_bytes(timeout=0)
            with pytest.raises(ringbuf.Timeout):
                ringbuf.select_bytes(ch, timeout=0)
            receiver.start()
            wait_until(lambda: ch.stats().recvq == 1, what="the receiver waiting for the loan's end")
            assert got == []
    receiver.join(10)
    assert got == [b"sent before the close", "closed"]


def test_sigint_interrupts_a_waiting_loan_and_view(make_channel):
    full, empty = make_channel(capacity=1, size=PAGE), make_channel(capacity=1, size=PAGE)
    full.send_bytes(b"full")
    proc = run_child(f"""
        import ringbuf
        full, empty = ringbuf.Channel.attach({full.name!r}), ringbuf.Channel.attach({empty.name!r})
        for call in (lambda: full.loan(8), empty.recv_bytes_view):
            try:
                with call():
                    print("not interrupted", flush=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
        with empty.recv_bytes_view(timeout=30) as view:
            print(bytes(view).decode(), flush=True)
    """)
    wait_until(lambda: full.stats().sendq == 1, what="child parking in loan")
    os.kill(proc.pid, signal.SIGINT)
    assert read_line(proc) == "interrupted"
    wait_until(lambda: empty.stats().recvq == 1, what="child parking in view")
    os.kill(proc.pid, signal.SIGINT)
    assert read_line(proc) == "interrupted"
    empty.send_bytes(b"still usable")
    assert read_line(proc) == "still usable"
    assert proc.wait(10) == 0
    assert (full.stats().held, empty.stats().held) == (0, 0)


# -- processes ---------------------------------------------------------------------


def test_loans_and_views_across_processes_deliver_each_message_once_in_order(make_channel):
    ch = make_channel(capacity=16, size=8 * PAGE)
    results = ctx.Queue()
    producers = [ctx.Process(target=_workers.loan_produce, args=(ch, p, 400, 700)) for p in range(3)]
    producers.append(ctx.Process(target=_workers.produce, args=(ch, 3, 400, 700)))
    consumers = [ctx.Process(target=_workers.view_consume, args=(ch, results)) for _ in range(3)]
    for p in producers + consumers:
        p.start()
    for p in producers:
        p.join(60)
        assert p.exitcode == 0
    ch.close()
    logs = [results.get(timeout=60) for _ in consumers]
    for p in consumers:
        p.join(10)
    got = [m for log in logs for m in log]
    assert sorted(got) == [(p, s) for p in range(4) for s in range(400)]
    for log in logs:
        for producer in range(4):
            seqs = [s for p, s in log if p == producer]
            assert seqs == sorted(seqs)
    st = ch.stats()
    assert (st.held, st.loans, st.views, st.loans_taken, st.views_taken) == (0, 0, 0, 1200, 1600)
    ch.check()


# -- crashes -----------------------------------------------------------------------


def test_a_loan_whose_holder_dies_is_aborted_and_what_waits_behind_it_goes_through(make_channel):
    ch = make_channel(capacity=16, size=PAGE)
    ready = ctx.Event()
    proc = ctx.Process(target=_workers.hold_loan_and_wait, args=(ch, 64, ready))
    proc.start()
    assert ready.wait(10)
    ch.send_bytes(b"behind the loan")
    with pytest.raises(ringbuf.Timeout):
        ch.recv_bytes(timeout=0)
    assert [h.pid for h in ch.holds()] == [proc.pid]
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert ch.recv_bytes(timeout=10) == b"behind the loan"
    st = ch.stats()
    assert (st.loans, st.loans_reclaimed, st.held, st.qcount) == (0, 1, 0, 0)
    ch.check()


def test_a_dead_loan_holder_is_found_even_if_its_fork_child_lives(make_channel):
    # The child shares its parent's open files; it must not keep the parent's
    # liveness locks alive.
    ch = make_channel(capacity=16, size=PAGE)
    ready, child = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_workers.hold_loan_and_wait, args=(ch, 64, ready, child))
    proc.start()
    assert ready.wait(10)
    orphan = child.get(timeout=10)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        ch.send_bytes(b"after")
        assert ch.recv_bytes(timeout=10) == b"after"
        assert ch.stats().loans_reclaimed == 1
        os.kill(orphan, 0)  # it was alive all along
    finally:
        os.kill(orphan, signal.SIGKILL)


@pytest.mark.parametrize("channel_dropped", [False, True], ids=["holding its channel", "its channel dropped"])
def test_a_dead_holder_that_forked_is_found_while_its_child_lives(make_channel, channel_dropped):
    # A holder that attached the channel itself, then forked: the child's
    # inherited mappings refer to the file the holder mapped it through, so
    # the liveness lock must not live on that file's description.  Nor on the
    # descriptor of a handle whose Channel the holder dropped while its loan's
    # buffer lived (the handle stays, detached, for the buffer).
    ch = make_channel(capacity=16, size=PAGE)
    proc = run_child(f"""
        import gc, os, time, ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        loan = ch.loan(64)
        buf = loan.__enter__()
        buf[:8] = b"unsent.."
        if {channel_dropped!r}:
            del ch, loan
            gc.collect()
        pid = os.fork()
        if pid == 0:
            time.sleep(60)  # a worker that outlives its parent, holding nothing
            os._exit(0)
        print(pid, flush=True)
        time.sleep(60)
    """)
    orphan = int(read_line(proc))
    try:
        assert [h.pid for h in ch.holds()] == [proc.pid]
        ch.send_bytes(b"behind the loan")
        proc.kill()
        proc.wait(10)
        assert ch.recv_bytes(timeout=10) == b"behind the loan"
        assert (ch.stats().loans, ch.stats().loans_reclaimed) == (0, 1)
        os.kill(orphan, 0)  # it was alive all along
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_a_view_whose_holder_dies_is_delivered_again(make_channel):
    ch = make_channel(capacity=16, size=PAGE)
    for m in (b"first", b"second"):
        ch.send_bytes(m)
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_workers.hold_view_and_wait, args=(ch, ready, results))
    proc.start()
    assert ready.wait(10) and results.get(timeout=10) == b"first"
    assert ch.recv_bytes() == b"second"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert ch.recv_bytes(timeout=10) == b"first"  # its receive never completed
    st = ch.stats()
    assert (st.views, st.views_reclaimed, st.held, st.qcount, st.sent, st.received) == (0, 1, 0, 0, 2, 2)
    ch.check()


def test_a_receiver_killed_inside_view_begin_leaves_the_message_queued(make_channel):
    ch = make_channel(capacity=16, size=PAGE)
    ch.send_bytes(b"kept")
    for point in ("recv-before-commit", "recv-after-commit"):
        proc = run_child(f"""
            import ringbuf
            ch = ringbuf.Channel.attach({ch.name!r})
            ch._h.debug_crash_at({point!r})
            with ch.recv_bytes_view(timeout=10):
                pass
        """)
        assert proc.wait(10) == -signal.SIGKILL
        with ch.recv_bytes_view(timeout=10) as view:
            assert bytes(view) == b"kept"
        ch.send_bytes(b"kept")
        ch.check()
    st = ch.stats()
    assert (st.recoveries, st.views, st.held, st.qcount) == (2, 0, 0, 1)


# -- defects found in review: each test failed before its fix ----------------------


def test_a_receiver_killed_at_its_commit_does_not_strand_what_waits_behind_an_aborted_loan(make_channel):
    ch = make_channel(capacity=8, size=PAGE)
    ch.send_bytes(b"M0")
    loan = ch.loan(4)
    loan.__enter__()
    ch.send_bytes(b"M2")  # committed behind the loan
    loan.__exit__(RuntimeError, RuntimeError("abort"), None)  # not the last reserved: marked aborted
    proc = ctx.Process(target=_workers.crash_in_recv, args=(ch, "recv-after-commit"))
    proc.start()
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    ch.send_bytes(b"M3")
    assert [ch.recv_bytes(timeout=10), ch.recv_bytes(timeout=10)] == [b"M2", b"M3"]
    ch.check()


def test_two_views_waiting_for_a_hold_do_not_wake_each_other(make_channel):
    ch = make_channel(capacity=64, size=PAGE)
    ch.send_bytes(b"waiting")
    loans = [ch.loan(8) for _ in range(ringbuf._lowlevel.HOLDS)]
    for loan in loans:
        loan.__enter__()
    proc = run_child(f"""
        import threading, time, ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        def view():
            try:
                with ch.recv_bytes_view(timeout=30):
                    pass
            except ringbuf.Closed:
                pass
        threads = [threading.Thread(target=view) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.process_time()
        time.sleep(2)
        print(time.process_time() - t0, flush=True)
        for t in threads:
            t.join()
    """)
    cpu = float(read_line(proc, timeout=20))
    for loan in loans:
        loan.__exit__(KeyError, KeyError(), None)
    assert proc.wait(30) == 0
    assert cpu < 0.3, f"two views waiting for a hold used {cpu:.2f} s of CPU in 2 s"


def test_a_view_that_steps_over_an_aborted_loan_wakes_a_sender_for_the_slot(make_channel):
    ch = make_channel(capacity=3, size=PAGE)
    ch.send_bytes(b"M0")
    aborted, live = ch.loan(8), ch.loan(8)
    aborted.__enter__()
    live.__enter__()
    aborted.__exit__(RuntimeError, RuntimeError("abort"), None)  # two slots taken by lent records, one queued
    done = threading.Event()
    t = threading.Thread(target=lambda: (ch.send_bytes(b"waits for a slot", timeout=10), done.set()))
    t.start()
    wait_until(lambda: ch.stats().sendq == 1, what="the sender parking")
    with ch.recv_bytes_view() as view:  # empties the queue, then steps over the aborted record
        assert bytes(view) == b"M0"
        # While the view holds M0's slot, only the step over the aborted
        # record can have made room, and woken the sender.  (Counted within
        # the block: the view's end may wake it again if it has not yet
        # counted itself out, W5.)
        t.join(10)
        assert done.is_set() and ch.stats().sendq_wakes >= 1
    live.__exit__(RuntimeError, RuntimeError("abort"), None)


def test_close_and_drop_drops_messages_sent_behind_a_loan(make_channel):
    ch = make_channel(capacity=8, size=PAGE)
    ch.send_bytes(b"queued")
    loan = ch.loan(4)
    loan.__enter__()
    ch.send_bytes(b"behind the loan")
    assert ch._h.close_and_drop() == 2
    with pytest.raises(ringbuf.Closed):
        loan.__exit__(None, None, None)
    with pytest.raises(ringbuf.Closed):
        ch.recv_bytes(timeout=0)
    st = ch.stats()
    assert (st.sent - st.received, st.held, st.qcount) == (0, 0, 0)
    ch.check()


def test_a_scribbled_hold_is_reported_not_followed(make_channel):
    ch = make_channel(capacity=8, size=PAGE)
    for _ in range(40):  # positions well past three rings
        ch.send_bytes(b"x" * 500)
        ch.recv_bytes()
    ch.send_bytes(b"q")
    with mapped(ch) as m:
        off, size = HEADER_FIELDS["recvpos"]
        rp = int.from_bytes(m[off:off + size], "little")
        off = HEADER_FIELDS["holds"][0]
        m[off:off + 32] = struct.pack("<QQQiI", rp - 3 * PAGE, 3 * PAGE, 0x1234, 999999, 2)  # a "dead view"
        write_header(m, "freepos", rp - 3 * PAGE)
        write_header(m, "held_msgs", 1)
    proc = run_child(f"""
        import ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        try:
            ch.stats()
            print("stats returned", flush=True)
        except ringbuf.CorruptSegment:
            print("corrupt", flush=True)
    """)
    assert proc.wait(20) == 0, "the reclaimer crashed"
    assert read_line(proc) in ("corrupt", "stats returned")


def test_a_fork_child_sharing_its_parents_file_neither_holds_nor_reclaims(make_channel):
    ch = make_channel(capacity=8, size=PAGE)
    proc = run_child(f"""
        import os, resource, ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        loan = ch.loan(16)
        buf = loan.__enter__()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        fill = []
        try:
            while True:
                fill.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        pid = os.fork()  # the child cannot open the segment again: no descriptor left
        if pid == 0:
            for fd in fill[:8]:
                os.close(fd)
            s = ch.stats()
            try:
                ch.loan(8).__enter__()
                refused = 0
            except ValueError:
                refused = 1
            os.write(1, b"%d %d\\n" % (s.loans_reclaimed, refused))
            os._exit(0)
        os.waitpid(pid, 0)
        for fd in fill:
            os.close(fd)
        buf[:] = b"parent's message"
        loan.__exit__(None, None, None)
        print(ch.recv_bytes(timeout=0).decode(), flush=True)
    """)
    assert read_line(proc) == "0 1"
    assert read_line(proc) == "parent's message"
    assert proc.wait(10) == 0


def test_views_kept_alive_count_toward_a_threads_holds(make_channel):
    ch = make_channel(capacity=64, size=1 << 20)
    for _ in range(ringbuf._lowlevel.HOLDS + 1):
        ch.send(np.zeros(8192, dtype=np.float32))  # out of band: recv_view gives views of the ring
    kept = []
    for _ in range(ringbuf._lowlevel.HOLDS):
        with ch.recv_view() as arr:
            kept.append(arr)
    with pytest.raises(RuntimeError, match="kept alive"):
        ch.recv_view(timeout=5).__enter__()
    del kept, arr
    with ch.recv_view(timeout=5) as arr:
        assert arr.shape == (8192,)
    del arr
    assert ch.stats().views == 0


def test_select_takes_back_what_a_dead_holder_held(make_channel):
    behind, full, other = (make_channel(capacity=4, size=PAGE) for _ in range(3))
    ready = ctx.Event()
    holders = [ctx.Process(target=_workers.hold_loan_and_wait, args=(behind, 64, ready))]
    holders[0].start()
    assert ready.wait(10)
    behind.send_bytes(b"behind a dead loan")
    ready2 = ctx.Event()
    holders.append(ctx.Process(target=_workers.hold_loan_and_wait, args=(full, PAGE - 64, ready2)))
    holders[1].start()
    assert ready2.wait(10)
    for proc in holders:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    ch, value = ringbuf.select_bytes(behind, other, timeout=10)
    assert (ch, value) == (behind, b"behind a dead loan")
    ch, value = ringbuf.select_bytes((full, b"room a dead loan held"), other, timeout=10)
    assert ch is full and full.recv_bytes(timeout=0) == b"room a dead loan held"
    assert (behind.stats().loans_reclaimed, full.stats().loans_reclaimed) == (1, 1)


def _liveness_locks(ch: ringbuf.Channel) -> int:
    """The type of a lock found on the bytes where handles keep their
    liveness locks (fcntl.F_UNLCK if there is none)."""
    import fcntl

    fd = os.open(f"/dev/shm/{ch.name}", os.O_RDWR)
    try:
        flock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 1 << 60, 1 << 60, 0)
        return struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_OFD_GETLK, flock))[0]
    finally:
        os.close(fd)


def test_a_handle_keeps_its_liveness_lock_between_holds_until_it_dies(make_channel):
    # One lock per handle, taken at its first hold and kept, not one
    # taken and dropped (two system calls) per hold; its process's death
    # drops it, which is what tells the others (L4, L6).
    import fcntl

    ch = make_channel(capacity=8, size=PAGE)
    proc = run_child(f"""
        import sys, ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        print("attached", flush=True)
        sys.stdin.readline()
        for _ in range(3):
            with ch.loan(8) as buf:
                buf[:] = b"12345678"
            with ch.recv_bytes_view() as view:
                assert view == b"12345678"
        print("held and ended", flush=True)
        sys.stdin.readline()
    """, stdin=True)
    assert read_line(proc) == "attached"
    assert _liveness_locks(ch) == fcntl.F_UNLCK  # nothing held yet: no lock taken
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert read_line(proc) == "held and ended"
    assert ch.stats().loans + ch.stats().views == 0
    assert _liveness_locks(ch) == fcntl.F_WRLCK
    proc.kill()
    proc.wait(10)
    assert _liveness_locks(ch) == fcntl.F_UNLCK


def test_a_hold_is_named_so_that_a_stale_release_ends_nothing_else(make_channel):
    # An aborted loan gives its room back: the next loan takes the same slot
    # at the same place.  Ending the first again (a late cleanup, say) must
    # not touch the second.
    ch = make_channel(capacity=8, size=PAGE)
    first = ch.loan(8)
    buf = first.__enter__()
    buf.release()  # let go inside the block: aborted at once
    with pytest.raises(BufferError, match="let go inside its block"):
        first.__exit__(None, None, None)
    with ch.loan(8) as buf:
        buf[:] = b"second.."
        ch._h.hold_release(first._where)  # the first, ended again
        ch._h.hold_intent(first._where, 0)
    assert ch.recv_bytes(timeout=0) == b"second.."
    assert (ch.stats().loans, ch.stats().sent) == (0, 1)


def test_a_block_left_twice_or_never_entered_raises_and_ends_nothing_else(make_channel):
    # Leaving a loan's block again (by hand) found nothing to release, and
    # fell over (AttributeError) or blamed a kept reference (BufferError).
    ch = make_channel(capacity=8, size=PAGE)
    for make, fill, read in (
        (lambda: ch.loan(4), lambda b: b.__setitem__(slice(None), b"abcd"), lambda: ch.recv_bytes(timeout=0)),
        (lambda: ch.loan_array(4, np.uint8), lambda a: a.__setitem__(slice(None), np.frombuffer(b"abcd", np.uint8)),
         lambda: ch.recv(timeout=0).tobytes()),
    ):
        first = make()
        with pytest.raises(RuntimeError, match="left only once"):
            first.__exit__(None, None, None)  # never entered
        with first as given:
            fill(given)
        del given
        second = make()
        given = second.__enter__()
        with pytest.raises(RuntimeError, match="left only once"):
            first.__exit__(None, None, None)
        assert (ch.stats().qcount, ch.stats().loans) == (1, 1)  # the second is still out
        fill(given)
        del given
        second.__exit__(None, None, None)
        assert (ch.stats().qcount, ch.stats().loans) == (2, 0)
        assert [read(), read()] == [b"abcd", b"abcd"]
    ch.send_bytes(b"view")
    view = ch.recv_bytes_view()
    with pytest.raises(RuntimeError, match="left only once"):
        view.__exit__(None, None, None)  # never entered
    with view as got:
        assert got == b"view"
    with pytest.raises(RuntimeError, match="left only once"):
        view.__exit__(None, None, None)
    assert (ch.stats().qcount, ch.stats().views) == (0, 0)


def test_a_loans_block_left_from_two_threads_at_once_is_ended_once(make_channel):
    # The guard against a second exit and the end it guards must not be
    # apart: the first exit, inside a C call (the GIL released), must not
    # let a second one by to end the same loan.
    ch = make_channel(capacity=8, size=PAGE)
    h = ch._h
    real = h.hold_intent
    inside, go_on = threading.Event(), threading.Event()

    def intent(where, publish):  # the first exit stops just after its intent is set
        done = real(where, publish)
        if threading.current_thread().name == "first":
            inside.set()
            go_on.wait(10)
        return done

    loan = ch.loan(4)
    buf = loan.__enter__()
    buf[:] = b"abcd"
    del buf
    outcome = []

    def leave() -> None:
        try:
            loan.__exit__(None, None, None)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    h.hold_intent = intent
    try:
        first = threading.Thread(target=leave, name="first")
        first.start()
        assert inside.wait(10)
        second = threading.Thread(target=leave, name="second")
        second.start()
        second.join(10)
        go_on.set()
        first.join(10)
    finally:
        go_on.set()
        h.hold_intent = real
    assert not first.is_alive() and not second.is_alive()
    assert isinstance(outcome[0], RuntimeError) and outcome[1] is None  # the second was refused
    assert ch.recv_bytes(timeout=0) == b"abcd"
    assert (ch.stats().sent, ch.stats().loans, ch.stats().qcount) == (1, 0, 0)


def test_a_loans_closed_is_reported_though_another_hold_ends_in_between(make_channel):
    # The loan's release (aborted: its channel was closed) and the end of the
    # block's check for it are steps apart; another hold released in between
    # (a signal handler dropping a view's array, here a profile hook standing
    # in for it) must not hide the Closed.
    import sys
    from ringbuf._lowlevel import lib

    a, b = make_channel(capacity=8, size=PAGE), make_channel(capacity=8, size=PAGE)
    b.send_bytes(b"x" * 64)
    with b.recv_bytes_view() as view:
        kept = [np.frombuffer(view, np.uint8)]
    del view

    def hook(frame, event, arg):
        if event == "c_call" and arg is lib.rb_hold_settle and kept:
            kept.clear()  # b's view ends here

    with pytest.raises(ringbuf.Closed):
        try:
            with a.loan(8) as buf:
                buf[:] = b"LOANDATA"
                ringbuf.Channel.attach(a.name).close()
                sys.setprofile(hook)
        finally:
            sys.setprofile(None)
    assert not kept and b.stats().views == 0
    assert (a.stats().qcount, a.stats().loans) == (0, 0)


def test_a_loans_closed_survives_an_older_hold_of_its_channel_ending_in_between(make_channel):
    # As above, with the hold that ends in between an older view of the same
    # channel, kept out by an array, whose generation is the loan's less 16:
    # the status of a release was kept by generation modulo 16 per handle,
    # and that view's release overwrote the loan's Closed.
    import sys
    from ringbuf._lowlevel import lib

    a, b = make_channel(capacity=8, size=PAGE), make_channel(capacity=8, size=PAGE)
    a.send_bytes(b"x" * 64)
    old = a.recv_bytes_view()
    with old as view:
        kept = [np.frombuffer(view, np.uint8)]
    del view
    while True:  # begins elsewhere in the process, up to the generation 15 after the view's
        loan = b.loan(1)
        with loan as buf:
            buf[:] = b"y"
        assert b.recv_bytes(timeout=0) == b"y"
        if loan._where.gen == old._where.gen + 15:
            break
    del buf

    def hook(frame, event, arg):
        if event == "c_call" and arg is lib.rb_hold_settle and kept:
            kept.clear()  # the old view of `a` ends here

    loan = a.loan(8)
    with pytest.raises(ringbuf.Closed):
        try:
            with loan as buf:
                buf[:] = b"LOANDATA"
                ringbuf.Channel.attach(a.name).close()
                sys.setprofile(hook)
        finally:
            sys.setprofile(None)
    assert loan._where.gen == old._where.gen + 16 and not kept
    assert (a.stats().sent, a.stats().loans, a.stats().views) == (1, 0, 0)  # only the first message


def test_ctrl_c_at_the_end_of_a_loans_block_does_not_publish_what_a_kept_slice_writes(make_channel):
    # A slice kept past the block stops the publish (BufferError).  An
    # exception from a signal handler just before that check (a profile hook
    # raising there stands in for Ctrl-C) left the loan to be published when
    # the slice died, with whatever it had written since.
    import sys
    from ringbuf._lowlevel import lib

    ch = make_channel(capacity=4, size=PAGE)

    def hook(frame, event, arg):
        if event == "c_call" and arg is lib.rb_hold_settle:
            sys.setprofile(None)
            raise KeyboardInterrupt

    keep = []
    with pytest.raises(KeyboardInterrupt):
        try:
            with ch.loan(8) as buf:
                buf[:] = b"original"
                keep.append(buf[0:8])
                sys.setprofile(hook)
        finally:
            sys.setprofile(None)
    keep[0][:] = b"too late"
    keep.clear()  # the loan ends here: aborted
    with pytest.raises(ringbuf.Timeout):
        ch.recv_bytes(timeout=0)
    assert (ch.stats().sent, ch.stats().loans) == (0, 0)


def test_a_hold_is_ended_and_settled_only_through_the_handle_that_took_it(make_channel):
    # Another handle of the same channel has records of its own: asked to
    # settle this handle's loan, it waited for its own record to reach the
    # loan's generation, which it never does (a hang).  Now: ValueError.
    import threading
    from ringbuf._lowlevel import lib

    ch = make_channel(capacity=8, size=PAGE)
    other = ringbuf.Channel.attach(ch.name)
    loan = ch.loan(8)
    buf = loan.__enter__()
    buf[:] = b"mine...."
    outcome = []

    def settle() -> None:
        try:
            other._h.hold_unsettled(lib.rb_hold_settle(other._h._ch, loan._where))
        except ValueError as e:
            outcome.append(e)

    t = threading.Thread(target=settle, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive() and len(outcome) == 1
    other._h.hold_release(loan._where)  # nothing: not its hold
    assert other._h.hold_intent(loan._where, 0) == 0
    assert ch.stats().loans == 1
    del buf
    loan.__exit__(None, None, None)
    assert ch.recv_bytes(timeout=0) == b"mine...."


def test_a_fork_childs_inherited_views_do_not_end_its_own(make_channel):
    # The child's copy of an array over its parent's view dies in the child;
    # a view the child took meanwhile at the same place must stay held.
    ch = make_channel(capacity=8, size=PAGE)
    half = PAGE // 2 - 8  # two records fill the ring
    ch.send_bytes(b"\x01" * half)
    with ch.recv_bytes_view() as view:
        box = [np.frombuffer(view, np.uint8)]  # the parent's view, kept past its block
    del view
    go, results = ctx.Event(), ctx.Queue()

    def child() -> None:
        assert go.wait(10)  # the parent's view has ended
        ch.send_bytes(b"\x02" * half)
        assert ch.recv_bytes(timeout=10) == b"\x02" * half
        ch.send_bytes(b"\x03" * half)  # where the parent's view was
        with ch.recv_bytes_view(timeout=10) as view:
            mine = np.frombuffer(view, np.uint8)
        box.clear()  # the inherited copy of the parent's array dies here
        gc.collect()
        results.put((int(mine[0]), [h.pid for h in ch.holds()].count(os.getpid())))

    proc = ctx.Process(target=child)
    proc.start()
    box.clear()
    gc.collect()
    assert ch.stats().views == 0
    go.set()
    assert results.get(timeout=20) == (3, 1)  # the child's own view is still held
    proc.join(10)
    assert proc.exitcode == 0


def test_a_signal_handler_raising_anywhere_in_loans_and_views_leaves_no_hold(make_channel):
    # Ctrl-C comes between any two steps.  Whatever step an exception from a
    # signal handler cuts short, the hold ends once its memory is let go.
    class Tick(Exception):
        pass

    armed = [False]

    def handler(signum, frame):
        if armed[0]:
            armed[0] = False
            raise Tick

    ch = make_channel(capacity=64, size=16 * PAGE)
    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 50e-6, 50e-6)
    ticks = 0
    try:
        for i in range(6000):
            buf = view = None
            try:
                try:
                    if i % 2:
                        armed[0] = True
                        with ch.loan(8) as buf:
                            buf[:] = b"12345678"
                    else:
                        ch.send_bytes(b"x")
                        armed[0] = True
                        with ch.recv_bytes_view() as view:
                            pass
                finally:
                    armed[0] = False  # (the tick may come here too, before this)
            except Tick:
                ticks += 1
            buf = view = None  # a block cut short leaves its target holding the memory
            while True:
                try:
                    ch.recv_bytes(timeout=0)
                except ringbuf.Timeout:
                    break
            st = ch.stats()
            assert (st.loans, st.views) == (0, 0), f"a hold left after {ticks} interruptions"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert ticks > 100  # the handler did interrupt
    ch.check()


def test_a_views_array_stays_readable_after_its_channel_is_gone(make_channel):
    proc = run_child("""
        import gc, numpy as np, ringbuf
        ch = ringbuf.Channel(capacity=4, size=1 << 20)
        ch.send(np.arange(20000, dtype=np.int64))
        with ch.recv_view() as arr:
            pass
        ch.close()
        ch.unlink()
        del ch
        gc.collect()
        print(int(arr.sum()), flush=True)  # the mapping stays while the view's memory is used
    """)
    assert read_line(proc) == str(sum(range(20000)))
    assert proc.wait(10) == 0


def test_loans_and_views_make_no_wake_call_when_nobody_is_parked(make_channel):
    ch = make_channel(capacity=8, size=PAGE)
    for _ in range(20):
        with ch.loan(64) as buf:
            buf[:] = bytes(64)
        with ch.recv_bytes_view():
            pass
    with pytest.raises(KeyError):
        with ch.loan(64):
            raise KeyError
    st = ch.stats()
    assert (st.recvq_wakes, st.sendq_wakes, st.baton_passes) == (0, 0, 0)
