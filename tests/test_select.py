"""select across processes, and unbuffered channels (capacity 0).

Several tests follow Go's own channel tests (runtime/chan_test.go): the
fairness of a select over two ready channels, selects that send and receive
on many channels in many processes, and close waking a parked select.
"""

from __future__ import annotations

import collections
import math
import multiprocessing
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

import ringbuf
from tests import _workers
from tests._helpers import wait_until
from tests.test_blocking import read_line, run_child

ctx = multiprocessing.get_context("fork")


# -- choosing ---------------------------------------------------------------


def test_a_ready_receive_case_is_taken_and_says_which_channel(make_channel):
    a, b = make_channel(), make_channel()
    b.send({"from": "b"})
    ch, value = ringbuf.select(a, b)
    assert ch is b and value == {"from": "b"}
    assert (len(a), len(b)) == (0, 0)


def test_a_ready_send_case_sends_and_returns_none(make_channel):
    a, full = make_channel(), make_channel(capacity=1)
    full.send("full")
    ch, value = ringbuf.select((full, "no room"), (a, [1, 2, 3]))
    assert ch is a and value is None
    assert a.recv() == [1, 2, 3]
    assert (len(a), len(full)) == (0, 1)


def test_exactly_one_case_happens_when_several_are_ready(make_channel):
    a, b, c = make_channel(), make_channel(), make_channel()
    a.send("a")
    b.send("b")
    for _ in range(20):
        ch, _ = ringbuf.select(a, b, (c, "c"))
        total = len(a) + len(b) + len(c)
        # One receive took one message, or one send added one: never both.
        assert total in (1, 3)
        if ch is c:
            assert c.recv() == "c"
        else:
            (a if ch is a else b).send(ch.name[-1])
            ch.recv()
            ch.send("a" if ch is a else "b")


def test_choice_among_ready_cases_is_fair(make_channel):
    # Go's TestSelectFairness: two channels that are always ready; each must
    # be chosen between 40% and 60% of the time.
    n = 4000
    a, b = make_channel(capacity=n), make_channel(capacity=n)
    for _ in range(n):
        a.send_bytes(b"a")
        b.send_bytes(b"b")
    counts = collections.Counter(ringbuf.select_bytes(a, b)[1] for _ in range(n))
    assert 0.4 * n <= counts[b"a"] <= 0.6 * n, counts


def test_the_same_channel_may_appear_in_several_cases(make_channel):
    a = make_channel()
    a.send(1)
    ch, value = ringbuf.select(a, a, (a, 2))
    assert ch is a
    assert len(a) in (0, 2)  # one case: a receive (of 1) or the send of 2


def test_channels_use_their_own_codec(make_channel):
    js = make_channel(dumps=_workers.json_dumps, loads=_workers.json_loads)
    plain = make_channel()
    ringbuf.select((js, {"k": [1, 2]}))
    assert js.recv_bytes() == _workers.json_dumps({"k": [1, 2]})
    js.send({"k": 3})
    assert ringbuf.select(js, plain) == (js, {"k": 3})


def test_select_bytes_moves_raw_messages(make_channel):
    a, b = make_channel(), make_channel()
    assert ringbuf.select_bytes((a, bytearray(b"raw")), timeout=0) == (a, None)
    assert ringbuf.select_bytes(b, a, timeout=0) == (a, b"raw")


def test_a_long_message_is_received_whole(make_channel):
    a, b = make_channel(size=1 << 22), make_channel()
    arr = np.arange(300_000, dtype=np.float64)  # 2.4 MB: far past the scratch buffer
    a.send(arr)
    ch, got = ringbuf.select(b, a)
    assert ch is a
    np.testing.assert_array_equal(got, arr)
    a.send_bytes(b"x" * 200_000)
    assert ringbuf.select_bytes(a, b) == (a, b"x" * 200_000)


# -- closed channels -----------------------------------------------------------


def test_a_closed_drained_channel_is_a_ready_receive_case_that_gives_closed(make_channel):
    a, done = make_channel(), make_channel()
    done.send("last")
    done.close()
    assert ringbuf.select(a, done) == (done, "last")  # drains first
    for _ in range(3):  # then ready, every time, in every process
        assert ringbuf.select(a, done) == (done, ringbuf.CLOSED)
    assert not ringbuf.CLOSED
    assert pickle.loads(pickle.dumps(ringbuf.CLOSED)) is ringbuf.CLOSED


def test_a_send_case_on_a_closed_channel_raises_closed(make_channel):
    a, closed = make_channel(), make_channel()
    closed.close()
    with pytest.raises(ringbuf.Closed):
        ringbuf.select(a, (closed, "x"))


def select_once(cases_spec, timeout, results):
    """In a child: select over channels given as (channel, kind[, value]); report the outcome."""
    cases = [c[0] if c[1] == "recv" else (c[0], c[2]) for c in cases_spec]
    try:
        ch, value = ringbuf.select(*cases, timeout=timeout)
        results.put(("chosen", [c[0] for c in cases_spec].index(ch), value))
    except ringbuf.RingbufError as e:
        results.put((type(e).__name__, None, None))


def test_close_wakes_a_select_parked_in_another_process(make_channel):
    a, b, done = make_channel(), make_channel(), make_channel()
    results = ctx.Queue()
    proc = ctx.Process(target=select_once, args=([(a, "recv"), (b, "recv"), (done, "recv")], None, results))
    proc.start()
    wait_until(lambda: done.stats().recvq == 1 and a.stats().recvq == 1, what="the select parking")
    done.close()
    assert results.get(timeout=5) == ("chosen", 2, ringbuf.CLOSED)
    proc.join(5)
    assert (a.stats().recvq, b.stats().recvq, done.stats().recvq) == (0, 0, 0)


def test_a_select_on_a_channel_whose_last_sender_closes_it(make_channel):
    ch, other = make_channel(), make_channel()
    proc = ctx.Process(target=_workers.produce_and_close, args=(ch, 50))
    proc.start()
    got = []
    while True:
        c, value = ringbuf.select(ch, other, timeout=30)
        assert c is ch
        if value is ringbuf.CLOSED:
            break
        got.append(value)
    proc.join(5)
    assert got == list(range(50))


# -- many processes ---------------------------------------------------------------


def test_selects_across_many_channels_and_processes_deliver_every_message_once_in_order(make_channel):
    # Go's TestSelectStress, across processes: producers send on their
    # channels through selects over sends to two channels each, consumers
    # receive through selects over every channel; every message arrives
    # exactly once, in order per producer on each channel.
    chans = [make_channel(capacity=8) for _ in range(4)]
    per_producer = 400
    results = ctx.Queue()
    producers = [ctx.Process(target=_workers.select_producer, args=(chans, p, per_producer)) for p in range(3)]
    consumers = [ctx.Process(target=_workers.select_consumer, args=(chans, results)) for _ in range(2)]
    for proc in producers + consumers:
        proc.start()
    for proc in producers:
        proc.join(120)
        assert proc.exitcode == 0
    for ch in chans:
        ch.close()
    got = [results.get(timeout=60) for _ in consumers]
    for proc in consumers:
        proc.join(10)
    seen = collections.Counter()
    for per_consumer in got:
        last = {}
        for chan_index, producer, seq in per_consumer:
            key = (chan_index, producer)
            assert seq > last.get(key, -1), f"out of order on channel {chan_index} from producer {producer}"
            last[key] = seq
            seen[(producer, seq)] += 1
    assert sorted(seen) == [(p, s) for p in range(3) for s in range(per_producer)]
    assert set(seen.values()) == {1}


# -- waiting ------------------------------------------------------------------------


def test_select_times_out_and_nothing_happens(make_channel):
    a, full = make_channel(), make_channel(capacity=1)
    full.send("full")
    with pytest.raises(ringbuf.Timeout):
        ringbuf.select(a, (full, "x"), timeout=0.1)
    with pytest.raises(ringbuf.Timeout):
        ringbuf.select(a, (full, "x"), timeout=0)  # Go's default: no wait at all
    assert (len(a), len(full)) == (0, 1)
    st = a.stats()
    assert (st.recvq, full.stats().sendq) == (0, 0)


def test_a_parked_select_is_woken_by_data_room_or_close_with_a_wake_call(make_channel):
    # Woken by the event itself (the peer's wake system call is counted),
    # not found later by the one-second re-check.
    for event in ("data", "room", "close"):
        a, full = make_channel(), make_channel(capacity=1)
        full.send("full")
        results = ctx.Queue()
        proc = ctx.Process(target=select_once, args=([(a, "recv"), (full, "send", "mine")], 30, results))
        proc.start()
        wait_until(lambda: a.stats().recvq == 1 and full.stats().sendq == 1, what="the select parking")
        if event == "data":
            a.send("data")
            assert results.get(timeout=5) == ("chosen", 0, "data")
            assert a.stats().recvq_wakes == 1
        elif event == "room":
            assert full.recv() == "full"
            assert results.get(timeout=5) == ("chosen", 1, None)
            assert full.stats().sendq_wakes == 1
            assert full.recv() == "mine"
        else:
            a.close()
            assert results.get(timeout=5) == ("chosen", 0, ringbuf.CLOSED)
        proc.join(5)


def test_a_parked_select_uses_no_cpu(make_channel):
    chans = [make_channel() for _ in range(8)]
    proc = run_child(f"""
        import os, ringbuf
        chans = [ringbuf.Channel.attach(n) for n in {[c.name for c in chans]!r}]
        t0 = os.times()
        print("parking", flush=True)
        ch, v = ringbuf.select(*chans)
        t1 = os.times()
        print(round((t1.user - t0.user) + (t1.system - t0.system), 3), v, flush=True)
    """)
    assert read_line(proc) == "parking"
    wait_until(lambda: all(c.stats().recvq == 1 for c in chans), what="the select parking on 8 channels")
    time.sleep(2)
    chans[5].send("go")
    cpu, value = read_line(proc).split()
    assert value == "go"
    assert float(cpu) < 0.3, f"the parked select used {cpu} s of CPU in 2 s"
    assert proc.wait(10) == 0


def test_sigint_interrupts_a_parked_select_and_the_channels_stay_usable(make_channel):
    a, b = make_channel(), make_channel()
    proc = run_child(f"""
        import ringbuf
        a, b = ringbuf.Channel.attach({a.name!r}), ringbuf.Channel.attach({b.name!r})
        try:
            ringbuf.select(a, b)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(ringbuf.select(a, b, timeout=30)[1], flush=True)
    """)
    wait_until(lambda: a.stats().recvq == 1 and b.stats().recvq == 1, what="the select parking")
    os.kill(proc.pid, signal.SIGINT)
    assert read_line(proc) == "interrupted"
    b.send("still usable")
    assert read_line(proc) == "still usable"
    assert proc.wait(10) == 0
    assert (a.stats().recvq, b.stats().recvq) == (0, 0)


def test_a_selector_killed_while_parked_is_struck_off(make_channel):
    a, b, full = make_channel(), make_channel(), make_channel(capacity=1)
    full.send("full")
    proc = ctx.Process(target=select_once, args=([(a, "recv"), (b, "recv"), (full, "send", "x")], None, ctx.Queue()))
    proc.start()
    wait_until(lambda: a.stats().recvq == 1 and b.stats().recvq == 1 and full.stats().sendq == 1,
               what="the select parking on three channels")
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)
    wait_until(lambda: (a.stats().recvq, b.stats().recvq, full.stats().sendq) == (0, 0, 0), timeout=15,
               what="the dead selector struck off everywhere")
    assert (a.stats().waiters_reaped, b.stats().waiters_reaped, full.stats().waiters_reaped) == (1, 1, 1)
    # Nothing lasting: messages move with no wake calls for a dead waiter.
    a.send("x")
    assert a.recv() == "x"
    assert a.stats().recvq_wakes == 0
    for ch in (a, b, full):
        ch.check()


def _select_send(ch, data, done):
    ringbuf.select_bytes((ch, data), timeout=60)
    done.send("sent")


def _plain_send(ch, data, done):
    ch.send_bytes(data, timeout=60)
    done.send("sent")


def test_a_select_woken_for_room_passes_the_wake_up_on_to_the_next_parked_sender(make_channel, no_recheck):
    # W6: a receive that frees room for two wakes one sender, which owes the
    # wake-up to the next; the one woken here is a select's send case.
    ch = make_channel(capacity=2)
    ch.send_bytes(b"a")
    ch.send_bytes(b"b")
    answers = []
    for i, send in enumerate((_select_send, _plain_send)):
        answer, tell = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=send, args=(ch, b"%d" % i, tell))
        proc.start()
        answers.append((answer, proc))
        wait_until(lambda: ch.stats().sendq == i + 1, what=f"sender {i} parking")
    assert ch.recv_bytes_many(2) == [b"a", b"b"]  # room for both
    for answer, proc in answers:
        assert answer.poll(30), "a parked sender was not woken though there was room for it"
        assert answer.recv() == "sent"
        proc.join(10)
    assert sorted(ch.recv_bytes_many(2)) == [b"0", b"1"]


def test_a_select_receiving_from_an_unbuffered_channel_calls_its_parked_select_sender(make_channel, no_recheck):
    # W13: a send case of an unbuffered channel waits for a receiver to be
    # counted in; a select that comes to receive must call it, as recv does.
    ch, other = make_channel(capacity=0), make_channel()
    answer, tell = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_select_send, args=(ch, b"hello", tell))
    proc.start()
    wait_until(lambda: ch.stats().sendq == 1, what="the select sender parking")
    got = []
    receiver = threading.Thread(target=lambda: got.append(ringbuf.select_bytes(ch, other, timeout=60)))
    receiver.start()
    receiver.join(30)
    assert not receiver.is_alive(), "the select receiving did not call the parked select sender"
    assert got == [(ch, b"hello")]
    assert answer.poll(30) and answer.recv() == "sent"
    proc.join(10)


@pytest.mark.parametrize("handles", ["one handle", "two handles"])
def test_a_select_sending_and_receiving_on_one_unbuffered_channel_parks_instead_of_spinning(make_channel, handles):
    # Its receive case calls a parked sender (W13): never itself; nor is it
    # a receiver for its own send case, though it names the channel through
    # two handles (attached twice).
    ch = make_channel(capacity=0)
    other = ch if handles == "one handle" else ringbuf.Channel.attach(ch.name)
    cpu = time.process_time()
    with pytest.raises(ringbuf.Timeout):
        ringbuf.select_bytes((ch, b"mine"), other, timeout=2)
    assert time.process_time() - cpu < 1.0
    assert ch.stats().send_parks < 10  # a park per re-check; spinning made a million
    assert len(ch) == 0
    got = []
    receiver = threading.Thread(target=lambda: got.append(ch.recv_bytes(timeout=30)))
    receiver.start()
    assert ringbuf.select_bytes((ch, b"for a peer"), other, timeout=30) == (ch, None)
    receiver.join(10)
    assert got == [b"for a peer"]
    sender = threading.Thread(target=lambda: got.append(ch.send_bytes(b"from a peer", timeout=30)))
    sender.start()
    assert ringbuf.select_bytes((ch, b"mine"), other, timeout=30) == (other, b"from a peer")
    sender.join(10)
    assert got == [b"for a peer", None]


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "str", "int", "3-tuple", "pair without a channel"])
def test_bad_cases_raise_before_anything_waits(make_channel, kind):
    ch = make_channel()
    ch.send("kept")
    cases = {"none": (), "str": (ch, "not a channel"), "int": (42,), "3-tuple": ((ch, 1, 2),),
             "pair without a channel": (("x", 1),)}[kind]
    with pytest.raises(ValueError if kind == "none" else TypeError):
        ringbuf.select(*cases)
    assert len(ch) == 1


@pytest.mark.parametrize("timeout", [-1, math.nan, "1"])
def test_bad_timeouts_raise_before_anything_waits(make_channel, timeout):
    ch = make_channel()
    ch.send("kept")
    with pytest.raises((TypeError, ValueError)):
        ringbuf.select(ch, timeout=timeout)
    assert len(ch) == 1


def test_too_many_cases_and_too_large_messages_are_clear_errors(make_channel):
    ch, small = make_channel(), make_channel(size=64)
    with pytest.raises(ValueError, match="at most 64"):
        ringbuf.select(*[ch] * 65)
    with pytest.raises(ringbuf.MessageTooLarge):
        ringbuf.select(ch, (small, b"x" * 100))
    with pytest.raises(TypeError):  # cannot be pickled: raised before anything happens
        ringbuf.select(ch, (ch, threading.Lock()))
    assert len(ch) == 0


# -- unbuffered channels --------------------------------------------------------------


def test_unbuffered_send_returns_only_after_a_receiver_took_the_message(make_channel):
    ch = make_channel(capacity=0)
    assert ch.capacity == 0 and ch.stats().capacity == 0
    results = ctx.Queue()
    proc = ctx.Process(target=_workers.send_then_report_received, args=(ch, "hand-off", results))
    proc.start()
    # The message is in flight, its sender parked until it is taken.
    wait_until(lambda: len(ch) == 1 and ch.stats().sendq == 1, what="the sender waiting for a receiver")
    assert results.empty()
    assert ch.recv() == "hand-off"
    # Read by the sender right after its send returned: the receive had
    # already happened.
    assert results.get(timeout=5) == ("sent", 1)
    proc.join(5)


def test_an_unbuffered_send_that_times_out_takes_its_message_back(make_channel):
    ch = make_channel(capacity=0)
    with pytest.raises(ringbuf.Timeout):
        ch.send("never delivered", timeout=0.1)
    with pytest.raises(ringbuf.Timeout):
        ch.recv(timeout=0.1)
    st = ch.stats()
    assert (st.qcount, st.sent, st.received, st.sendq) == (0, 0, 0, 0)
    ch.check()
    with pytest.raises(ringbuf.Full):
        ch.try_send("nobody is receiving")
    assert len(ch) == 0


def test_close_wakes_an_unbuffered_sender_which_takes_its_message_back(make_channel):
    ch = make_channel(capacity=0)
    results = ctx.Queue()
    proc = ctx.Process(target=_workers.send_one, args=(ch, b"in flight", None, results))
    proc.start()
    wait_until(lambda: len(ch) == 1, what="the message in flight")
    ch.close()
    assert results.get(timeout=5)[0] == "Closed"
    proc.join(5)
    with pytest.raises(ringbuf.Closed):
        ch.recv_bytes(timeout=1)  # it was taken back: nothing to drain


def test_sigint_interrupts_an_unbuffered_send_and_takes_the_message_back(make_channel):
    ch = make_channel(capacity=0)
    proc = run_child(f"""
        import ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        try:
            ch.send("interrupted")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        ch.send("after", timeout=30)
        print("sent", flush=True)
    """)
    wait_until(lambda: len(ch) == 1 and ch.stats().sendq == 1, what="the sender waiting")
    os.kill(proc.pid, signal.SIGINT)
    assert read_line(proc) == "interrupted"
    assert ch.recv(timeout=5) == "after"  # the interrupted one was taken back
    assert read_line(proc) == "sent"
    assert proc.wait(10) == 0


def test_ping_pong_through_two_unbuffered_channels(make_channel):
    ping, pong = make_channel(capacity=0), make_channel(capacity=0)
    proc = ctx.Process(target=_workers.echo_objects, args=(ping, pong))
    proc.start()
    for i in range(300):
        ping.send(i)
        assert pong.recv(timeout=10) == i
    ping.close()
    proc.join(10)
    assert proc.exitcode == 0


def test_a_select_send_on_an_unbuffered_channel_waits_for_a_receiver(make_channel):
    ch = make_channel(capacity=0)
    with pytest.raises(ringbuf.Timeout):
        ringbuf.select((ch, "nobody"), timeout=0.2)
    assert len(ch) == 0 and ch.stats().sent == 0
    results = ctx.Queue()
    proc = ctx.Process(target=_workers.recv_one, args=(ch, 30, results))
    proc.start()
    assert ringbuf.select((ch, b"taken"), timeout=10) == (ch, None)
    assert results.get(timeout=5) == ("message", pickle.dumps(b"taken", protocol=5))
    proc.join(5)


def test_a_select_send_case_on_an_unbuffered_channel_is_chosen_when_a_receiver_comes(make_channel):
    ch, other = make_channel(capacity=0), make_channel()
    results = ctx.Queue()
    proc = ctx.Process(target=select_once, args=([(other, "recv"), (ch, "send", "offered")], 30, results))
    proc.start()
    wait_until(lambda: ch.stats().sendq == 1, what="the select parking")
    assert ch.recv(timeout=10) == "offered"
    assert results.get(timeout=5) == ("chosen", 1, None)
    proc.join(5)


# -- Selector: select over the same receive cases, set up once -------------------------------


def test_a_selector_receives_from_whichever_channel_has_a_message(make_channel):
    a, b, js = make_channel(), make_channel(), make_channel(dumps=_workers.json_dumps, loads=_workers.json_loads)
    sel = ringbuf.Selector(a, b, js)
    assert sel.channels == (a, b, js)
    b.send({"from": "b"})
    ch, value = sel.select()
    assert ch is b and value == {"from": "b"}
    js.send({"k": [1]})
    assert sel.select() == (js, {"k": [1]})  # each channel's own codec
    a.send_bytes(b"raw")
    assert sel.select_bytes(timeout=0) == (a, b"raw")
    assert (len(a), len(b), len(js)) == (0, 0, 0)


def test_a_selector_is_fair_among_ready_channels(make_channel):
    n = 4000
    a, b = make_channel(capacity=n), make_channel(capacity=n)
    for _ in range(n):
        a.send_bytes(b"a")
        b.send_bytes(b"b")
    sel = ringbuf.Selector(a, b)
    counts = collections.Counter(sel.select_bytes()[1] for _ in range(n))
    assert 0.4 * n <= counts[b"a"] <= 0.6 * n, counts


def test_a_selector_receives_long_messages_whole(make_channel):
    a, b = make_channel(size=1 << 22), make_channel()
    sel = ringbuf.Selector(b, a)
    arr = np.arange(300_000, dtype=np.float64)
    a.send(arr)
    ch, got = sel.select()
    assert ch is a
    np.testing.assert_array_equal(got, arr)
    a.send_bytes(b"x" * 200_000)
    assert sel.select_bytes() == (a, b"x" * 200_000)


def test_a_selector_gives_closed_for_a_closed_drained_channel(make_channel):
    a, done = make_channel(), make_channel()
    sel = ringbuf.Selector(a, done)
    done.send_bytes(b"last")
    done.close()
    assert sel.select_bytes() == (done, b"last")
    for _ in range(3):
        assert sel.select() == (done, ringbuf.CLOSED)
        assert sel.select_bytes() == (done, ringbuf.CLOSED)


def test_a_selector_times_out_and_takes_nothing(make_channel):
    a, b = make_channel(), make_channel()
    sel = ringbuf.Selector(a, b)
    with pytest.raises(ringbuf.Timeout):
        sel.select(timeout=0.1)
    with pytest.raises(ringbuf.Timeout):
        sel.select_bytes(timeout=0)
    assert (a.stats().recvq, b.stats().recvq) == (0, 0)
    b.send_bytes(b"after")
    assert sel.select_bytes(timeout=0) == (b, b"after")


def selector_once(sel, raw, results):
    """In a child: one select through a Selector; report the channel's position and the value."""
    ch, value = sel.select_bytes(timeout=60) if raw else sel.select(timeout=60)
    results.put((sel.channels.index(ch), value))


def test_close_wakes_a_selector_parked_in_another_process(make_channel, mp_context):
    # Under spawn and forkserver the selector reaches the child pickled.
    a, b, done = make_channel(), make_channel(), make_channel()
    sel = ringbuf.Selector(a, b, done)
    results = mp_context.Queue()
    proc = mp_context.Process(target=selector_once, args=(sel, False, results))
    proc.start()
    wait_until(lambda: all(ch.stats().recvq == 1 for ch in (a, b, done)), timeout=30, what="the selector parking")
    done.close()
    assert results.get(timeout=10) == (2, ringbuf.CLOSED)
    proc.join(10)
    assert (a.stats().recvq, b.stats().recvq, done.stats().recvq) == (0, 0, 0)


def test_a_message_wakes_a_parked_selector_with_a_wake_call(make_channel):
    chans = [make_channel() for _ in range(8)]
    sel = ringbuf.Selector(*chans)
    results = ctx.Queue()
    proc = ctx.Process(target=selector_once, args=(sel, True, results))
    proc.start()
    wait_until(lambda: all(ch.stats().recvq == 1 for ch in chans), what="the selector parking on 8 channels")
    chans[6].send_bytes(b"go")
    assert results.get(timeout=5) == (6, b"go")
    assert chans[6].stats().recvq_wakes == 1
    proc.join(5)


def test_sigint_interrupts_a_parked_selector_and_the_channels_stay_usable(make_channel):
    a, b = make_channel(), make_channel()
    proc = run_child(f"""
        import ringbuf
        a, b = ringbuf.Channel.attach({a.name!r}), ringbuf.Channel.attach({b.name!r})
        sel = ringbuf.Selector(a, b)
        try:
            sel.select_bytes()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(sel.select_bytes(timeout=30)[1].decode(), flush=True)
    """)
    wait_until(lambda: a.stats().recvq == 1 and b.stats().recvq == 1, what="the selector parking")
    os.kill(proc.pid, signal.SIGINT)
    assert read_line(proc) == "interrupted"
    b.send_bytes(b"still usable")
    assert read_line(proc) == "still usable"
    assert proc.wait(10) == 0
    assert (a.stats().recvq, b.stats().recvq) == (0, 0)


def test_a_selector_receives_every_message_of_many_producers_once(make_channel):
    chans = [make_channel(capacity=8) for _ in range(4)]
    per_producer = 400
    producers = [ctx.Process(target=_workers.select_producer, args=(chans, p, per_producer)) for p in range(3)]
    for proc in producers:
        proc.start()
    sel = ringbuf.Selector(*chans)
    seen = collections.Counter()
    last = {}
    for _ in range(3 * per_producer):
        ch, (producer, seq) = sel.select(timeout=60)
        key = (chans.index(ch), producer)
        assert seq > last.get(key, -1)
        last[key] = seq
        seen[(producer, seq)] += 1
    for proc in producers:
        proc.join(30)
        assert proc.exitcode == 0
    assert sorted(seen) == [(p, s) for p in range(3) for s in range(per_producer)]
    assert set(seen.values()) == {1}


@pytest.mark.parametrize("kind", ["none", "str", "int", "send case", "65 channels"])
def test_a_selector_checks_its_channels(make_channel, kind):
    ch = make_channel()
    args = {"none": (), "str": (ch, "not a channel"), "int": (42,), "send case": (ch, (ch, b"x")),
            "65 channels": (ch,) * 65}[kind]
    with pytest.raises(TypeError if kind in ("str", "int", "send case") else ValueError):
        ringbuf.Selector(*args)


def test_a_selector_may_name_a_channel_twice(make_channel):
    ch = make_channel()
    ch.send_bytes(b"once")
    assert ringbuf.Selector(ch, ch).select_bytes(timeout=0) == (ch, b"once")


@pytest.mark.parametrize("timeout", [-1, math.nan, "1"])
def test_a_selector_rejects_bad_timeouts_before_anything_waits(make_channel, timeout):
    ch = make_channel()
    ch.send("kept")
    sel = ringbuf.Selector(ch)
    with pytest.raises((TypeError, ValueError)):
        sel.select(timeout=timeout)
    with pytest.raises((TypeError, ValueError)):
        sel.select_bytes(timeout=timeout)
    assert len(ch) == 1


def test_a_selector_pickles_and_shows_its_channels(make_channel):
    a, b = make_channel(), make_channel()
    sel = pickle.loads(pickle.dumps(ringbuf.Selector(a, b)))
    assert [ch.name for ch in sel.channels] == [a.name, b.name]
    b.send_bytes(b"through the copy")
    ch, value = sel.select_bytes(timeout=0)
    assert ch is sel.channels[1] and value == b"through the copy"
    assert a.name in repr(sel) and b.name in repr(sel)


def test_select_keeps_no_channel_alive_and_never_confuses_channels():
    # select() keeps the receive cases of recent calls for the next call on
    # the same channels.  A channel dropped afterwards still goes (its
    # segment is removed), and a new channel that happens to get the old
    # one's id (CPython reuses memory) is never served by the old entry.
    for i in range(50):
        a, b = ringbuf.Channel(size=64), ringbuf.Channel(size=64)
        name = b.name
        b.send_bytes(b"%d" % i)
        assert ringbuf.select_bytes(a, b, timeout=0) == (b, b"%d" % i)
        b.send_bytes(b"again")
        assert ringbuf.select_bytes(a, b, timeout=0) == (b, b"again")
        del a, b
        assert not os.path.exists(f"/dev/shm/{name}")
