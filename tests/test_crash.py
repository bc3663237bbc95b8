"""A peer that dies never takes the channel down with it."""

from __future__ import annotations

import multiprocessing
import os
import signal

from ringbuf import Channel
from tests import _workers
from tests.conftest import wait_until

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


def test_a_receiver_killed_while_parked_costs_nothing_but_a_count(make_channel):
    ch = make_channel()
    victim = ctx.Process(target=_workers.recv_one, args=(ch, None, ctx.Queue()))
    victim.start()
    wait_until(lambda: ch.stats().recvq == 1, what="receiver parking")
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    # Its count stays behind (the kernel cannot tell us), so the next send
    # makes a wake system call that wakes nobody...
    ch.send_bytes(b"for whoever comes next")
    st = ch.stats()
    assert (st.recvq, st.send_wakes) == (1, 1)
    # ...and a live receiver still gets the message.
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
    wait_until(lambda: ch.stats().sendq == 2, what="live sender parking")
    assert ch.recv_bytes() == b"full"
    assert results.get(timeout=5) == ("sent", 11)
    assert ch.recv_bytes(timeout=5) == b"live sender"
    proc.join(5)
    ch.check()
