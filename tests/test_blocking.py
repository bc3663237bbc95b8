"""Blocking calls: wake-ups across processes, timeouts, close, and signals.

Every wait here is bounded (liveness: "within a few seconds"); nothing asserts
how fast anything is.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import ringbuf
from tests import _workers
from tests._helpers import park_receivers, wait_until

ctx = multiprocessing.get_context("fork")


def start(target, *args):
    proc = ctx.Process(target=target, args=args)
    proc.start()
    return proc


# -- waking a parked peer ----------------------------------------------------


def test_parked_receiver_wakes_when_another_process_sends(make_channel):
    ch = make_channel()
    results = ctx.Queue()
    proc = start(_workers.recv_one, ch, None, results)
    wait_until(lambda: ch.stats().recvq == 1, what="receiver parking")
    ch.send_bytes(b"wake up")
    assert results.get(timeout=5) == ("message", b"wake up")
    proc.join(5)
    st = ch.stats()
    assert (st.recvq, st.recv_parks, st.recvq_wakes) == (0, 1, 1)


def test_parked_sender_wakes_when_another_process_receives(make_channel):
    ch = make_channel(capacity=1)
    ch.send_bytes(b"first")
    results = ctx.Queue()
    proc = start(_workers.send_one, ch, b"second", None, results)
    wait_until(lambda: ch.stats().sendq == 1, what="sender parking")
    assert ch.recv_bytes() == b"first"
    assert results.get(timeout=5) == ("sent", 6)
    assert ch.recv_bytes(timeout=5) == b"second"
    proc.join(5)
    st = ch.stats()
    assert (st.sendq, st.send_parks, st.sendq_wakes) == (0, 1, 1)


def start_parked_sender(ch, payload, results, parked=1):
    """Start a process sending payload into ch; return it once `parked` senders are parked."""
    proc = start(_workers.send_one, ch, payload, None, results)
    wait_until(lambda: ch.stats().sendq == parked, what=f"{parked} sender(s) parking")
    return proc


def full_256_byte_ring(make_channel):
    """A 256-byte ring holding two 100-byte messages (2 x 112 ring bytes): 32 bytes free."""
    ch = make_channel(capacity=100, size=256)
    ch.send_bytes(b"a" * 100)
    ch.send_bytes(b"b" * 100)
    return ch


def test_sender_waiting_for_bytes_wakes_when_enough_room_frees(make_channel):
    ch = full_256_byte_ring(make_channel)
    results = ctx.Queue()
    proc = start_parked_sender(ch, b"c" * 100, results)
    ch.recv_bytes()
    assert results.get(timeout=5) == ("sent", 100)
    proc.join(5)


def test_one_send_wakes_one_of_several_parked_receivers(make_channel):
    ch = make_channel()
    results = ctx.Queue()
    procs = park_receivers(ctx, ch, 3, results)
    for i in range(3):
        ch.send_bytes(str(i).encode())
    got = sorted(results.get(timeout=5) for _ in procs)
    assert got == [("message", b"0"), ("message", b"1"), ("message", b"2")]
    for p in procs:
        p.join(5)


def test_a_receive_wakes_one_parked_sender_not_all_of_them(make_channel):
    # Thirty threads parked on a full channel of capacity 1.  Each receive
    # frees room for exactly one of them; waking all thirty would send 29
    # back to sleep, and send_parks would climb by about 29 per receive.
    ch = make_channel(capacity=1)
    ch.send_bytes(b"x")
    threads = [threading.Thread(target=ch.send_bytes, args=(b"y",)) for _ in range(30)]
    for t in threads:
        t.start()
    wait_until(lambda: ch.stats().sendq == 30, what="thirty senders parking")
    parks = ch.stats().send_parks
    for _ in range(10):
        ch.recv_bytes(timeout=5)
    wait_until(lambda: ch.stats().sendq == 20 and len(ch) == 1, what="ten senders getting through")
    # Ten woken senders, plus at most one periodic re-check per sleeper.
    assert ch.stats().send_parks - parks <= 10 + 30
    for _ in range(20):
        ch.recv_bytes(timeout=5)
    for t in threads:
        t.join(5)
    assert ch.recv_bytes(timeout=5) == b"y" and len(ch) == 0


def test_room_that_suits_a_later_parked_sender_reaches_it(make_channel):
    # A big record parks first, a small one second.  A receive frees room for
    # the small one only: the wake-up goes to the big sender, which must hand
    # it on rather than keep it.
    ch = full_256_byte_ring(make_channel)
    results = ctx.Queue()
    big = start_parked_sender(ch, b"B" * 200, results)
    small = start_parked_sender(ch, b"s" * 50, results, parked=2)
    assert ch.recv_bytes() == b"a" * 100
    assert results.get(timeout=5) == ("sent", 50)
    small.join(5)
    # Still parked (its count may be out for an instant at a re-check, W8).
    wait_until(lambda: ch.stats().sendq == 1, what="the big sender parked still")
    assert ch.recv_bytes() == b"b" * 100
    assert ch.recv_bytes() == b"s" * 50
    assert results.get(timeout=5) == ("sent", 200)
    assert ch.recv_bytes(timeout=5) == b"B" * 200
    big.join(5)


def test_room_too_small_for_every_parked_sender_wakes_nobody(make_channel):
    ch = full_256_byte_ring(make_channel)
    results = ctx.Queue()
    proc = start_parked_sender(ch, b"B" * 200, results)
    assert ch.recv_bytes() == b"a" * 100  # frees 112 of the 208 bytes it needs
    assert ch.stats().sendq_wakes == 0
    assert ch.recv_bytes() == b"b" * 100  # now it fits
    assert results.get(timeout=5) == ("sent", 200)
    proc.join(5)
    assert ch.stats().sendq_wakes == 1


# -- timeouts ----------------------------------------------------------------


def test_waits_that_taught_a_receiver_to_spin_longer_still_park(make_channel):
    # A handle spins longer before parking while its waits end soon after it
    # would have parked (learn_spin), up to 100 us a wait: a receiver fed in
    # quick succession, then left waiting 2 s, spins once and parks.
    ch = make_channel(capacity=64)
    proc = run_child(f"""
        import os, threading, time, ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        def feed():
            for i in range(3000):
                t = time.perf_counter() + 40e-6
                while time.perf_counter() < t:
                    pass
                ch.send(i)
        feeder = threading.Thread(target=feed)
        feeder.start()
        assert [ch.recv(timeout=30) for _ in range(3000)] == list(range(3000))
        feeder.join()
        t0 = os.times()
        print("waiting", flush=True)
        v = ch.recv(timeout=60)
        t1 = os.times()
        print(round((t1.user - t0.user) + (t1.system - t0.system), 3), v, flush=True)
    """)
    assert read_line(proc) == "waiting"
    wait_until(lambda: ch.stats().recvq == 1, what="the receiver parking")
    time.sleep(2)
    ch.send("go")
    cpu, value = read_line(proc).split()
    assert value == "go"
    assert float(cpu) < 0.3, f"the parked receiver used {cpu} s of CPU in 2 s"
    assert proc.wait(10) == 0


def test_recv_timeout_expires(make_channel):
    ch = make_channel()
    t0 = time.monotonic()
    with pytest.raises(ringbuf.Timeout):
        ch.recv_bytes(timeout=0.2)
    assert time.monotonic() - t0 >= 0.2  # never returns early
    assert ch.stats().recvq == 0


def test_send_timeout_expires_and_sends_nothing(make_channel):
    ch = make_channel(capacity=1)
    ch.send_bytes(b"x")
    t0 = time.monotonic()
    with pytest.raises(ringbuf.Timeout):
        ch.send_bytes(b"y", timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    assert len(ch) == 1 and ch.stats().sendq == 0


def test_timeout_in_another_process_is_reported(make_channel):
    ch = make_channel()
    results = ctx.Queue()
    proc = start(_workers.recv_one, ch, 0.1, results)
    kind, _ = results.get(timeout=5)
    assert kind == "Timeout"
    proc.join(5)


# -- close wakes everyone ----------------------------------------------------


def test_close_wakes_parked_receivers_in_other_processes(make_channel):
    ch = make_channel()
    results = ctx.Queue()
    procs = park_receivers(ctx, ch, 2, results)
    ch.close()
    assert [results.get(timeout=5)[0] for _ in procs] == ["Closed", "Closed"]
    for p in procs:
        p.join(5)
    assert ch.stats().recvq == 0


def test_close_wakes_parked_senders_in_other_processes(make_channel):
    ch = make_channel(capacity=1)
    ch.send_bytes(b"full")
    results = ctx.Queue()
    procs = [start(_workers.send_one, ch, b"x", None, results) for _ in range(2)]
    wait_until(lambda: ch.stats().sendq == 2, what="senders parking")
    ch.close()
    assert [results.get(timeout=5)[0] for _ in procs] == ["Closed", "Closed"]
    for p in procs:
        p.join(5)
    # What was queued before the close is still delivered.
    assert ch.recv_bytes() == b"full"


def test_close_wakes_a_receiver_with_a_timeout(make_channel):
    ch = make_channel()
    results = ctx.Queue()
    proc = start(_workers.recv_one, ch, 60, results)
    wait_until(lambda: ch.stats().recvq == 1, what="receiver parking")
    ch.close()
    assert results.get(timeout=5)[0] == "Closed"
    proc.join(5)


# -- signals -----------------------------------------------------------------


def read_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """One line of the child's stdout, failing rather than hanging."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"no output from the child within {timeout} s")
    return proc.stdout.readline().strip()


def run_child(code: str, stdin: bool = False) -> subprocess.Popen:
    """A Python child running code, its stdout a pipe (and its stdin, if asked)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
        stdin=subprocess.PIPE if stdin else None,
    )


def test_sigint_interrupts_a_blocked_recv_and_the_channel_stays_usable(make_channel):
    ch = make_channel()
    proc = run_child(f"""
        import ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        try:
            ch.recv_bytes()
            print("not interrupted", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(ch.recv_bytes(timeout=30).decode(), flush=True)
    """)
    wait_until(lambda: ch.stats().recvq == 1, what="child parking in recv")
    os.kill(proc.pid, signal.SIGINT)
    assert read_line(proc) == "interrupted"
    ch.send_bytes(b"still usable")
    assert read_line(proc) == "still usable"
    assert proc.wait(10) == 0
    assert ch.stats().recvq == 0


def test_sigint_interrupts_a_blocked_send(make_channel):
    ch = make_channel(capacity=1)
    ch.send_bytes(b"full")
    proc = run_child(f"""
        import ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        try:
            ch.send_bytes(b"blocked")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        ch.send_bytes(b"after", timeout=30)
        print("sent", flush=True)
    """)
    wait_until(lambda: ch.stats().sendq == 1, what="child parking in send")
    os.kill(proc.pid, signal.SIGINT)
    assert read_line(proc) == "interrupted"
    assert ch.recv_bytes() == b"full"
    assert read_line(proc) == "sent"
    assert ch.recv_bytes(timeout=5) == b"after"
    assert proc.wait(10) == 0


def test_a_signal_handler_that_returns_lets_the_wait_resume(make_channel):
    ch = make_channel()
    proc = run_child(f"""
        import signal, ringbuf
        hits = []
        signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))
        ch = ringbuf.Channel.attach({ch.name!r})
        msg = ch.recv_bytes(timeout=60)
        print(len(hits), msg.decode(), flush=True)
    """)
    wait_until(lambda: ch.stats().recvq == 1, what="child parking")
    os.kill(proc.pid, signal.SIGUSR1)
    # The handler ran and the child parked again, still inside the same call.
    wait_until(lambda: ch.stats().recv_parks >= 2 and ch.stats().recvq == 1, what="child parking again")
    ch.send_bytes(b"done")
    assert read_line(proc) == "1 done"
    assert proc.wait(10) == 0


def test_signals_do_not_restart_the_timeout(make_channel):
    ch = make_channel()
    proc = run_child(f"""
        import signal, ringbuf
        signal.signal(signal.SIGUSR1, lambda *a: None)
        ch = ringbuf.Channel.attach({ch.name!r})
        try:
            ch.recv_bytes(timeout=0.5)
        except ringbuf.Timeout:
            print("timed out", flush=True)
    """)
    wait_until(lambda: ch.stats().recvq == 1 or proc.poll() is not None, what="child parking")
    # Interrupt the wait every 50 ms.  If each retry started a fresh 0.5 s
    # timeout, the call would never end and read_line would fail.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not select.select([proc.stdout], [], [], 0.05)[0]:
        os.kill(proc.pid, signal.SIGUSR1)
    assert read_line(proc) == "timed out"
    assert proc.wait(10) == 0


# -- waits for the lock --------------------------------------------------------


def check_forever(ch, stop):
    while not stop.is_set():
        ch.check()


def test_non_blocking_calls_wait_for_a_busy_lock_then_decide(make_channel):
    # Other processes take the lock over and over (check() holds it for a
    # walk of the ring).  A busy lock is not a full or empty channel: every
    # non-blocking call must get the lock, then find the room or the data.
    ch = make_channel(capacity=100_000, size=1 << 22)
    for _ in range(50_000):
        ch.send_bytes(b"m")
    stop = ctx.Event()
    checkers = [start(check_forever, ch, stop) for _ in range(2)]
    try:
        failures = 0
        for _ in range(1500):
            for call in (lambda: ch.send_bytes(b"n", timeout=0), lambda: ch.recv_bytes(timeout=0),
                         lambda: ch.try_send_bytes(b"n"), ch.try_recv_bytes):
                try:
                    call()
                except (ringbuf.Timeout, ringbuf.Full, ringbuf.Empty):
                    failures += 1
    finally:
        stop.set()
        for c in checkers:
            c.join(10)
    assert failures == 0


def test_sigint_interrupts_a_wait_for_a_lock_held_by_a_stuck_peer(make_channel):
    ch = make_channel()
    ready = ctx.Event()
    holder = start(_workers.hold_lock_and_wait, ch, ready)
    assert ready.wait(10)
    try:
        for call in ("ch.recv_bytes()", "ch.try_recv_bytes()", "ch.send_bytes(b'x')", "len(ch)"):
            proc = run_child(f"""
                import ringbuf
                ch = ringbuf.Channel.attach({ch.name!r})
                print("ready", flush=True)
                try:
                    {call}
                    print("not interrupted", flush=True)
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
            """)
            assert read_line(proc) == "ready"
            time.sleep(0.2)  # let it reach the wait for the lock
            os.kill(proc.pid, signal.SIGINT)
            assert read_line(proc) == "interrupted", call
            assert proc.wait(10) == 0
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(5)
    # The holder's death frees the lock; the channel works on.
    ch.send_bytes(b"after", timeout=5)
    assert ch.recv_bytes(timeout=5) == b"after"
    assert ch.stats().recoveries == 1


def test_a_timed_call_gives_up_on_a_lock_that_stays_held(make_channel):
    ch = make_channel()
    ready = ctx.Event()
    holder = start(_workers.hold_lock_and_wait, ch, ready)
    assert ready.wait(10)
    try:
        with pytest.raises(ringbuf.Timeout):
            ch.recv_bytes(timeout=0.1)
        with pytest.raises(ringbuf.Full):
            ch.try_send_bytes(b"x")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(5)


# -- counting wake calls ---------------------------------------------------------


def test_a_batch_receive_makes_one_wake_call_and_counts_one(make_channel):
    ch = make_channel(capacity=100, size=256)
    for i in range(16):  # 16 x 16 ring bytes: full
        ch.send_bytes(b"%08d" % i)
    results = ctx.Queue()
    proc = start_parked_sender(ch, b"late", results)
    # Every record released makes room for the parked sender; the batch
    # still wakes it with one call, and counts one.
    assert ch.recv_bytes_many(16) == [b"%08d" % i for i in range(16)]
    assert results.get(timeout=5) == ("sent", 4)
    proc.join(5)
    assert ch.stats().sendq_wakes == 1


def test_a_receiver_that_cannot_take_its_message_hands_the_wake_up_on(make_channel):
    # The first parked receiver is woken for a long message but fails to
    # allocate memory for it; the message stays queued and the second parked
    # receiver is woken for it at once.
    ch = make_channel(size=1 << 20)
    first, second = ctx.Queue(), ctx.Queue()
    p1 = start(_workers.recv_with_failing_alloc, ch, first)
    wait_until(lambda: ch.stats().recvq == 1, what="the first receiver parking")
    p2 = start(_workers.recv_one, ch, 30, second)
    wait_until(lambda: ch.stats().recvq == 2, what="the second receiver parking")
    ch.send_bytes(b"L" * 100_000)
    assert first.get(timeout=5) == "MemoryError"
    assert second.get(timeout=5) == ("message", b"L" * 100_000)
    p1.join(5)
    p2.join(5)
    assert ch.stats().recvq_wakes == 2  # the send's, and the one handed on
