"""A peer that dies never takes the channel down with it."""

from __future__ import annotations

import multiprocessing
import os
import signal

from ringbuf import Channel
from tests import _workers
from tests._helpers import park_receivers, wait_until

ctx = multiprocessing.get_context("fork")


def hold_lock_then_die(ch: Channel, how: str) -> None:
    ch._h.debug_hold_lock()
    if how == "exit":
        os._exit(0)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_process_killed_holding_the_lock_does_not_deadlock_the_others(make_channel):
    for how in ("sigkill", "exit"):
        ch = make_channel(capacity=4)
        ch.send_bytes(b"committed before the crash")
        proc = ctx.Process(target=hold_lock_then_die, args=(ch, how))
        proc.start()
        proc.join(10)
        assert proc.exitcode in (0, -signal.SIGKILL)
        # The next process to take the lock recovers it; the state is the last
        # committed one.
        ch.send_bytes(b"after", timeout=5)
        assert ch.recv_bytes(timeout=5) == b"committed before the crash"
        assert ch.recv_bytes(timeout=5) == b"after"
        ch.check()
        assert ch.stats().recoveries == 1


def test_receivers_killed_while_parked_are_struck_off(make_channel):
    ch = make_channel()
    victims = park_receivers(ctx, ch, 3, ctx.Queue())
    for v in victims:
        os.kill(v.pid, signal.SIGKILL)
        v.join(5)
    # Their counts stay behind until reaped, a few seconds later; meanwhile a
    # send makes a wake system call that wakes nobody, never a lost wake-up.
    wait_until(lambda: ch.stats().recvq == 0, timeout=15, what="dead receivers reaped")
    st = ch.stats()
    assert st.waiters_reaped == 3
    ch.send_bytes(b"for whoever comes next")
    assert ch.stats().recvq_wakes == 0  # nobody counted as parked: no system call
    results = ctx.Queue()
    proc = ctx.Process(target=_workers.recv_one, args=(ch, 5, results))
    proc.start()
    assert results.get(timeout=5) == ("message", b"for whoever comes next")
    proc.join(5)


def test_a_sender_killed_while_parked_does_not_block_other_senders(make_channel):
    ch = make_channel(capacity=1)
    ch.send_bytes(b"full")
    victim = ctx.Process(target=_workers.send_one, args=(ch, b"never sent", None, ctx.Queue()))
    victim.start()
    wait_until(lambda: ch.stats().sendq == 1, what="sender parking")
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    results = ctx.Queue()
    proc = ctx.Process(target=_workers.send_one, args=(ch, b"live sender", None, results))
    proc.start()
    wait_until(lambda: ch.stats().sendq == 1 and ch.stats().waiters_reaped == 1, timeout=15,
               what="the dead sender reaped and the live one parked")
    assert ch.recv_bytes() == b"full"
    assert results.get(timeout=5) == ("sent", 11)
    assert ch.recv_bytes(timeout=5) == b"live sender"
    proc.join(5)
    ch.check()
    assert ch.stats().sendq == 0


# -- killed at the commit point ------------------------------------------------

import collections  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

import ringbuf  # noqa: E402


def crash(ch, point, op, payload=b""):
    proc = ctx.Process(target=_workers.die_at, args=(ch, point, op, payload))
    proc.start()
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL


def drain(ch):
    got = []
    while True:
        try:
            got.append(ch.try_recv_bytes())
        except ringbuf.Empty:
            return got


def wrap_positions(ch):
    """Move the ring positions so that the next record straddles the end."""
    ch.send_bytes(b"w" * (ch.size - 300))
    ch.recv_bytes()


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("point,delivered", [("send-before-commit", False), ("send-after-commit", True)])
def test_a_sender_killed_at_its_commit(make_channel, caplog, point, delivered, wrapped):
    ch = make_channel(capacity=8, size=4096)
    if wrapped:
        wrap_positions(ch)
    ch.send_bytes(b"earlier")
    crash(ch, point, "send", b"m" * 500)
    with caplog.at_level(logging.WARNING, logger="ringbuf"):
        got = drain(ch)  # the first call takes over the lock and repairs
    assert got == [b"earlier", b"m" * 500] if delivered else [b"earlier"]
    assert any("took it over" in r.getMessage() for r in caplog.records)
    ch.check()
    st = ch.stats()
    assert (st.recoveries, st.qcount, st.sent - st.received) == (1, 0, 0)
    ch.send_bytes(b"after")
    assert ch.recv_bytes() == b"after"


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("point,consumed", [("recv-before-commit", False), ("recv-after-commit", True)])
def test_a_receiver_killed_at_its_commit(make_channel, point, consumed, wrapped):
    ch = make_channel(capacity=8, size=4096)
    if wrapped:
        wrap_positions(ch)
    ch.send_bytes(b"first" * 100)
    ch.send_bytes(b"second")
    crash(ch, point, "recv")
    assert drain(ch) == ([b"second"] if consumed else [b"first" * 100, b"second"])
    ch.check()
    assert ch.stats().recoveries == 1


def test_recovery_finds_a_scribbled_commit_word(make_channel):
    from tests._helpers import mapped, write_header

    ch = make_channel(capacity=8, size=4096)
    ch.send_bytes(b"x")
    with mapped(ch) as m:
        write_header(m, "sendpos", 12345)  # not a record boundary
    crash(ch, "send-before-commit", "send", b"y")
    with pytest.raises(ringbuf.CorruptSegment):
        ch.recv_bytes(timeout=1)


# -- the torture test ---------------------------------------------------------


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copies", "loans-and-views"])
def test_random_kills_never_tear_duplicate_lose_or_hang(make_channel, tmp_path, zero_copy):
    """Producers and consumers exchange numbered, checksummed messages while
    this process SIGKILLs random ones of them (and their replacements), and
    some replacements die on purpose inside a send's critical section.  With
    zero_copy, half the producers write through loans and half the
    consumers read through views, so that kills land inside those too.

    Afterwards: no message is torn or received twice; each consumer saw each
    producer's messages in order; every message a producer logged as sent was
    received, except at most one per killed consumer (it may have received a
    message and died before logging it); and nothing hung.  A message given
    back by a killed view is queued again behind those queued meanwhile:
    those are the only ones a consumer may see out of order."""
    rng = random.Random(1234)
    ch = make_channel(capacity=32, size=32 * 1024)
    points = ["send-before-commit", "send-after-commit"]
    producers, consumers = {}, {}
    next_id = [0]
    kills = collections.Counter()

    def start_producer():
        pid_ = next_id[0]
        next_id[0] += 1
        crash_after = rng.randrange(1, 50) if rng.random() < 0.3 else -1
        if zero_copy and rng.random() < 0.5:
            p = ctx.Process(target=_workers.torture_loan_producer, args=(ch, pid_, str(tmp_path / f"p{pid_}")))
        else:
            p = ctx.Process(target=_workers.torture_producer,
                            args=(ch, pid_, str(tmp_path / f"p{pid_}"), crash_after, rng.choice(points)))
        p.start()
        producers[pid_] = p

    def start_consumer():
        cid = next_id[0]
        next_id[0] += 1
        worker = _workers.torture_view_consumer if zero_copy and rng.random() < 0.5 else _workers.torture_consumer
        p = ctx.Process(target=worker, args=(ch, str(tmp_path / f"c{cid}")))
        p.start()
        consumers[cid] = p

    for _ in range(3):
        start_producer()
        start_consumer()
    unbidden = []  # exit codes of consumers that died without being killed

    def replace_the_dead():
        for key, p in list(producers.items()):
            if not p.is_alive():  # died at its own crash point
                del producers[key]
                kills["producer (crash point)"] += 1
                start_producer()
        for key, p in list(consumers.items()):
            if not p.is_alive():
                del consumers[key]
                unbidden.append(p.exitcode)
                start_consumer()

    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.005, 0.05))
        replace_the_dead()
        group, start, kind = rng.choice([(producers, start_producer, "producer"),
                                         (consumers, start_consumer, "consumer")])
        key = rng.choice(list(group))
        try:
            os.kill(group[key].pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # it died by itself a moment ago (a crash point) and was reaped
        group[key].join(5)
        del group[key]
        kills[kind] += 1
        start()
    replace_the_dead()
    assert not unbidden, f"consumers died without being killed, exit codes {unbidden}"

    for p in producers.values():
        os.kill(p.pid, signal.SIGKILL)
        p.join(5)
    ch.close()  # consumers drain what is left, then stop
    for p in consumers.values():
        p.join(60)
        assert p.exitcode == 0, "a consumer hung or failed after close"
    ch.check()

    def read(prefix):
        logs = {}
        for path in tmp_path.glob(prefix + "*"):
            data = path.read_bytes()
            logs[path.name] = [_workers.LOG_RECORD.unpack_from(data, i)
                               for i in range(0, len(data) - len(data) % _workers.LOG_RECORD.size,
                                              _workers.LOG_RECORD.size)]
        return logs

    sent = {(p, s) for log in read("p").values() for p, s, _ in log}
    consumer_logs = read("c")
    assert all(ok for log in consumer_logs.values() for _, _, ok in log), "a torn message was received"
    received = collections.Counter((p, s) for log in consumer_logs.values() for p, s, _ in log)
    assert not [m for m, n in received.items() if n > 1], "a message was received twice"
    st = ch.stats()
    late = 0  # messages a consumer saw after a later one of the same producer
    for log in consumer_logs.values():
        last = {}
        for p, s, _ in log:
            if s < last.get(p, -1):
                late += 1
            last[p] = max(s, last.get(p, -1))
    # Only a message given back by a dead view is queued again behind later ones.
    assert late <= st.views_reclaimed, "a consumer saw a producer's messages out of order"
    missing = sent - set(received)
    assert len(missing) <= kills["consumer"], (len(missing), kills)
    assert len(sent) > 1000 and sum(kills.values()) > 50, (len(sent), kills)
    assert st.recoveries >= kills["producer (crash point)"]
    assert (st.loans, st.views, st.held) == (0, 0, 0)
    print(f"loans {st.loans_taken} ({st.loans_reclaimed} reclaimed), views {st.views_taken} "
          f"({st.views_reclaimed} reclaimed)")
    print(f"torture: {len(sent)} sent, {sum(received.values())} received, {len(missing)} unaccounted, "
          f"kills {dict(kills)}, recoveries {st.recoveries}")


def test_every_parked_waiter_of_a_killed_process_is_struck_off(make_channel):
    # 100 sender threads parked on one channel and 100 receiver threads on
    # another, all in one process that is then killed: the counts must go
    # back to zero, however many waiters there were.
    full, empty = make_channel(capacity=1), make_channel()
    full.send_bytes(b"full")
    ready = ctx.Event()
    victim = ctx.Process(target=_workers.park_many, args=(full, empty, 100, ready))
    victim.start()
    assert ready.wait(10)
    wait_until(lambda: full.stats().sendq == 100 and empty.stats().recvq == 100, timeout=15,
               what="200 threads parking")
    assert full.waiters().senders == [(victim.pid, 100)]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    wait_until(lambda: full.stats().sendq == 0 and empty.stats().recvq == 0, timeout=15,
               what="every dead waiter reaped")
    assert (full.stats().waiters_reaped, empty.stats().waiters_reaped) == (100, 100)
    # Nobody is counted any more, so messages move without wake calls.
    assert full.recv_bytes() == b"full"
    empty.send_bytes(b"x")
    assert empty.recv_bytes() == b"x"
    assert (full.stats().sendq_wakes, empty.stats().recvq_wakes) == (0, 0)
    full.check()
    empty.check()


def park_and_die_at(ch: Channel, point: str) -> None:
    ch._h.debug_crash_at(point)
    ch.recv_bytes(timeout=30)
    os._exit(3)  # not reached when the crash point fires


def test_a_waiter_killed_while_counting_in_leaves_live_waiters_counted(make_channel):
    # The victim dies holding the lock, counted in but not yet asleep.  The
    # recovery and the reaper may strike off only what it counted: the live
    # receiver parked beside it stays counted, and a send wakes it.
    ch = make_channel()
    results = ctx.Queue()
    live = ctx.Process(target=_workers.recv_one, args=(ch, 30, results))
    live.start()
    wait_until(lambda: ch.stats().recvq == 1, what="the live receiver parking")
    victim = ctx.Process(target=park_and_die_at, args=(ch, "park-counted"))
    victim.start()
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    wait_until(lambda: ch.stats().waiters_reaped == 1, timeout=15, what="the dead receiver reaped")
    # The live one's count may be out for an instant at a re-check (W8).
    wait_until(lambda: ch.stats().recvq == 1, what="the live receiver counted")
    assert ch.stats().recoveries == 1
    ch.send_bytes(b"for the live one")
    assert results.get(timeout=5) == ("message", b"for the live one")
    live.join(5)
    assert ch.stats().recvq == 0
    ch.check()


def test_a_waiter_killed_between_waking_and_counting_out_is_struck_off(make_channel):
    ch = make_channel()
    victim = ctx.Process(target=park_and_die_at, args=(ch, "park-woken"))
    victim.start()
    wait_until(lambda: ch.stats().recvq == 1, what="the victim parking")
    ch.send_bytes(b"wakes the victim, who dies before counting out")
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    wait_until(lambda: ch.stats().recvq == 0, timeout=15, what="the dead receiver reaped")
    assert ch.stats().waiters_reaped == 1
    # The message it was woken for is still there for the next receiver.
    assert ch.recv_bytes(timeout=5) == b"wakes the victim, who dies before counting out"
    ch.check()


def test_waiters_of_two_pid_namespaces_are_told_apart(make_channel):
    # Two processes that both have pid 1, each in a pid namespace of its own,
    # share /dev/shm.  Waiter slots are keyed by a random per-process id, not
    # by pid, so that killing one strikes off exactly its own waiter.
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) from util-linux")
    if subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not let us make a pid namespace")
    ch = make_channel()
    code = ("import os, ringbuf; ch = ringbuf.Channel.attach(%r); print(os.getpid(), flush=True); "
            "print(ch.recv_bytes(timeout=60).decode(), flush=True)" % ch.name)
    procs = [subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", code],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["1", "1"]
        # A parked receiver counts out and in again at each re-check (W8), so
        # the counts are waited for, not read once: one may be an instant low.
        wait_until(lambda: sorted(ch.waiters().receivers) == [(1, 1), (1, 1)], what="both receivers parking")
        procs[0].kill()  # unshare --kill-child takes its pid-1 child with it
        procs[0].wait(5)
        wait_until(lambda: ch.stats().waiters_reaped == 1, timeout=15, what="the dead receiver struck off")
        wait_until(lambda: ch.stats().recvq == 1, what="the survivor counted, alone")
        ch.send_bytes(b"for the survivor")
        assert procs[1].stdout.readline().strip() == "for the survivor"
        assert procs[1].wait(10) == 0
    finally:
        for p in procs:
            p.kill()
            p.wait(5)


def test_a_dead_waiters_count_is_reaped_even_when_nobody_parks_again(make_channel):
    # The victim dies parked; afterwards messages only flow, nobody parks and
    # nobody asks for stats() (both of which reap).  The sends themselves
    # must strike the dead count off, or each would make a wake call forever.
    ch = make_channel()
    victims = park_receivers(ctx, ch, 1, ctx.Queue())
    os.kill(victims[0].pid, signal.SIGKILL)
    victims[0].join(5)

    def one_message_then_look() -> bool:
        ch.send_bytes(b"x")
        assert ch.recv_bytes() == b"x"
        return ch.observe().recvq == 0  # read without the lock: reaps nothing

    wait_until(one_message_then_look, timeout=15, what="the dead receiver struck off by the sends")
    wakes = ch.observe().recvq_wakes
    for _ in range(100):
        ch.send_bytes(b"y")
        ch.recv_bytes()
    assert ch.observe().recvq_wakes == wakes
