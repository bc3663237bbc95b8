"""asyncio: awaited sends, receives and selects, woken through the channels'
futex words by one helper thread per process."""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import multiprocessing
import os
import random
import signal
import threading
import time
from typing import Any, Callable, Tuple

import numpy as np
import pytest

import ringbuf
from ringbuf import _async
from ringbuf._lowlevel import HEADER_FIELDS, Handle
from tests import _workers
from tests._helpers import in_futex_wait, wait_until
from tests.test_blocking import read_line, run_child

ctx = multiprocessing.get_context("fork")


def send_later(ch: ringbuf.Channel, obj: object, delay: float) -> None:
    time.sleep(delay)
    ch.send(obj)


def start_telling(target: Callable[[Any], None]) -> Tuple[Any, multiprocessing.Process]:
    """A fork child that runs target(tell); what it tells comes out of the
    returned answer end."""
    answer, tell = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(tell,))
    proc.start()
    return answer, proc


def helper_thread_sleeping(pid: int) -> bool:
    """Whether a thread of process pid other than its main one (there: the
    asyncio helper) sleeps in a futex wait."""
    return any(in_futex_wait(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)


def test_an_awaiting_receiver_is_woken_by_another_process_while_the_loop_runs_on(make_channel):
    ch = make_channel()
    proc = ctx.Process(target=send_later, args=(ch, "hello", 0.3))

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        proc.start()
        got = await ch.recv_async(timeout=10)
        t.cancel()
        return got, ticks

    got, ticks = asyncio.run(main())
    proc.join(5)
    assert got == "hello"
    assert ticks >= 5  # the loop was never blocked while the task waited
    assert ch.stats().recvq_wakes >= 1  # woken by the sender's wake call


@pytest.mark.parametrize("capacity", [8, 0])
def test_an_awaited_send_takes_any_bytes_like_message_as_send_bytes_does(make_channel, capacity):
    ch = make_channel(capacity=capacity)
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    messages = [b"bytes", bytearray(b"a bytearray"), memoryview(b"a memoryview"), grid, memoryview(grid)]

    async def main():
        got = []
        for m in messages:
            receiver = asyncio.ensure_future(ch.recv_bytes_async(timeout=10))
            await ch.send_bytes_async(m, timeout=10)
            got.append(await receiver)
        with pytest.raises(ValueError, match="C-contiguous"):
            await ch.send_bytes_async(grid[:, ::2], timeout=10)
        with pytest.raises(TypeError, match="bytes-like"):
            await ch.send_bytes_async("a str", timeout=10)
        return got

    assert asyncio.run(main()) == [bytes(m) for m in messages]
    assert len(ch) == 0


def test_a_hundred_tasks_on_ten_channels_fed_by_three_processes_get_every_message_once(make_channel):
    chans = [make_channel(capacity=16) for _ in range(10)]
    per = 60  # messages per channel from each producer
    producers = [ctx.Process(target=_workers.feed_channels, args=(chans, p, per)) for p in range(3)]

    async def main():
        got = []

        async def receiver(ch):
            while True:
                try:
                    got.append(await ch.recv_async(timeout=30))
                except ringbuf.Closed:
                    return

        tasks = [asyncio.create_task(receiver(chans[i % 10])) for i in range(100)]
        for p in producers:
            p.start()
        await asyncio.get_running_loop().run_in_executor(None, _join_then_close, producers, chans)
        await asyncio.gather(*tasks)
        return got

    got = asyncio.run(main())
    assert sorted(got) == sorted((p, c, s) for p in range(3) for c in range(10) for s in range(per))
    for ch in chans:
        assert ch.stats().recvq == 0


def _join_then_close(procs, chans):
    for p in procs:
        p.join(60)
    for ch in chans:
        ch.close()


def test_cancelling_waiting_tasks_at_random_loses_and_duplicates_nothing(make_channel):
    inbox, outbox = make_channel(capacity=4), make_channel(capacity=4)
    n = 400
    feeder = ctx.Process(target=_workers.produce_and_close, args=(inbox, n))
    rng = random.Random(7)

    async def main():
        received, sent = [], []

        async def receiver():
            while True:
                try:
                    received.append(await inbox.recv_async())
                except ringbuf.Closed:
                    return

        async def forwarder(items):
            for item in items:
                await outbox.send_async(item)
                sent.append(item)

        feeder.start()
        # Receivers are cancelled at random points while messages flow; a
        # cancelled one must not have taken a message.
        while True:
            t = asyncio.create_task(receiver())
            await asyncio.sleep(rng.uniform(0, 0.003))
            if t.done():
                break
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
        # Senders into a channel nobody drains fast enough, cancelled at random.
        drained = []

        async def drain():
            while len(drained) < len(sent) or not done_sending:
                try:
                    drained.append(await outbox.recv_async(timeout=0.05))
                except ringbuf.Timeout:
                    if done_sending and len(drained) >= len(sent):
                        return

        done_sending = False
        d = asyncio.create_task(drain())
        for k in range(0, 200, 10):
            t = asyncio.create_task(forwarder(range(k, k + 10)))
            await asyncio.sleep(rng.uniform(0, 0.002))
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
        done_sending = True
        await d
        return received, sent, drained

    received, sent, drained = asyncio.run(main())
    feeder.join(10)
    assert received == list(range(n))  # every message once, in order
    assert sorted(drained) == sorted(sent)  # every completed send arrived, and only those
    assert len(set(drained)) == len(drained)
    assert (inbox.stats().recvq, outbox.stats().sendq) == (0, 0)


def test_an_idle_process_with_a_hundred_waiting_tasks_uses_no_cpu_and_one_helper_thread(make_channel):
    chans = [make_channel() for _ in range(10)]
    proc = run_child(f"""
        import asyncio, os, ringbuf
        from ringbuf import _async
        chans = [ringbuf.Channel.attach(n) for n in {[c.name for c in chans]!r}]

        async def main():
            tasks = [asyncio.create_task(chans[i % 10].recv_async()) for i in range(100)]
            await asyncio.sleep(0.5)
            t0 = os.times()
            await asyncio.sleep(2)
            t1 = os.times()
            print(round(t1.user - t0.user + t1.system - t0.system, 3), _async.helper_threads(), flush=True)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())
    """)
    cpu, helpers = read_line(proc, timeout=20).split()
    assert proc.wait(10) == 0
    assert float(cpu) < 0.3, f"100 idle tasks used {cpu} s of CPU in 2 s"
    assert helpers == "1"
    wait_until(lambda: all(c.stats().recvq == 0 for c in chans), what="every task counted out")


def test_select_async_over_receive_and_send_cases_and_a_done_channel(make_channel):
    a, out, done = make_channel(), make_channel(capacity=1), make_channel(capacity=1)
    out.send("full")
    closer = ctx.Process(target=_workers.close_later, args=(done, 0.3))

    async def main():
        results = []
        a.send("ready")
        results.append(await ringbuf.select_async(a, (out, "no room"), done))
        closer.start()
        results.append(await ringbuf.select_async(a, (out, "no room"), done, timeout=10))
        return results

    (c1, v1), (c2, v2) = asyncio.run(main())
    closer.join(5)
    assert (c1, v1) == (a, "ready")
    assert c2 is done and v2 is ringbuf.CLOSED
    assert (len(a), len(out)) == (0, 1)


def test_timeouts_and_close_wake_awaiting_tasks(make_channel):
    empty, full = make_channel(), make_channel(capacity=1)
    full.send_bytes(b"x")

    async def main():
        for coro in (empty.recv_async(timeout=0.1), full.send_async("y", timeout=0.1),
                     empty.recv_bytes_async(timeout=0), ringbuf.select_async(empty, (full, 1), timeout=0.1)):
            with pytest.raises(ringbuf.Timeout):
                await coro
        waiting = [asyncio.create_task(empty.recv_async()), asyncio.create_task(full.send_bytes_async(b"z"))]
        await asyncio.sleep(0.1)
        empty.close()
        full.close()
        return await asyncio.gather(*waiting, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [type(o) for o in outcomes] == [ringbuf.Closed, ringbuf.Closed]
    assert full.recv_bytes() == b"x"  # receivers drain a closed channel


def test_async_for_ends_at_close(make_channel):
    ch = make_channel()
    proc = ctx.Process(target=_workers.produce_and_close, args=(ch, 30))
    proc.start()

    async def main():
        return [x async for x in ch]

    assert asyncio.run(main()) == list(range(30))
    proc.join(5)


def test_ctrl_c_in_asyncio_run_leaves_the_channels_usable(make_channel):
    ch = make_channel()
    proc = run_child(f"""
        import asyncio, ringbuf
        ch = ringbuf.Channel.attach({ch.name!r})
        try:
            print("waiting", flush=True)
            asyncio.run(ch.recv_async())
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(asyncio.run(ch.recv_async(timeout=30)), flush=True)
    """)
    assert read_line(proc) == "waiting"
    wait_until(lambda: ch.stats().recvq == 1, what="the task waiting")
    os.kill(proc.pid, signal.SIGINT)
    assert read_line(proc) == "interrupted"
    ch.send("still usable")
    assert read_line(proc) == "still usable"
    assert proc.wait(10) == 0
    assert ch.stats().recvq == 0


def test_an_awaited_receive_that_timed_out_leaves_no_sleeper_to_take_wake_ups(make_channel, no_recheck):
    # The helper thread slept on the channel's word for a task that timed
    # out; a send's wake-up of one receiver must still reach the receiver
    # that is counted (a blocking one in another process), not stop there.
    ch = make_channel()
    timed_out, told = ctx.Pipe(duplex=False)
    got, tell = ctx.Pipe(duplex=False)

    def awaiting_then_idle():
        async def main():
            with pytest.raises(ringbuf.Timeout):
                await ch.recv_bytes_async(timeout=0.1)
        asyncio.run(main())
        told.send(_async.helper_threads())
        time.sleep(60)  # alive, its helper thread too

    def blocking_receiver():
        tell.send(ch.recv_bytes(timeout=60))

    idle = ctx.Process(target=awaiting_then_idle)
    idle.start()
    try:
        assert timed_out.poll(30) and timed_out.recv() == 1
        receiver = ctx.Process(target=blocking_receiver)
        receiver.start()
        wait_until(lambda: ch.stats().recvq == 1, what="the blocking receiver parking")
        ch.send_bytes(b"for the counted receiver")
        assert got.poll(30), "the wake-up stopped at the helper thread of a task that no longer waits"
        assert got.recv() == b"for the counted receiver"
        receiver.join(10)
    finally:
        idle.kill()
        idle.join()


def _hold_the_lock(ch, held, release):
    ch._h.debug_hold_lock()
    held.send("held")
    # Told by the loop that it ran on, or not: then it was blocked all along.
    held.send("released by the loop" if release.poll(20) else "20 s passed")
    os._exit(0)  # dies holding it: the next caller recovers the lock


class _LockHolder:
    """Another process that takes the channel's lock and keeps it until the
    loop under test, ticking, tells it to let go (or 20 s pass)."""

    def __init__(self, ch):
        self.held, tell_held = ctx.Pipe(duplex=False)
        release, self.tell_release = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_hold_the_lock, args=(ch, tell_held, release))

    def take(self):
        self.proc.start()
        assert self.held.poll(30) and self.held.recv() == "held"

    async def ticks(self, on_tick=lambda i: None):
        """Two seconds of ticks, then let go: "released by the loop" if the
        loop ran on all along."""
        for i in range(200):
            await asyncio.sleep(0.01)
            on_tick(i)
        self.tell_release.send("release")
        assert self.held.poll(30)
        return self.held.recv()

    def run(self, main):
        """asyncio.run(main()), and the holder's end."""
        try:
            return asyncio.run(main())
        finally:
            self.proc.join(30)


@pytest.mark.parametrize("capacity", [4, 0])
def test_a_peer_holding_the_lock_does_not_block_the_event_loop_of_a_waiting_task(make_channel, capacity):
    # capacity 4: the send's attempts wait for the lock; capacity 0: the
    # send was offered and waits for a receiver (W13), looking again at each
    # re-check (one falls in the two seconds) while the lock is held.
    ch = make_channel(capacity=capacity)
    holder = _LockHolder(ch)

    async def main():
        send = None
        if capacity == 0:
            send = asyncio.ensure_future(ch.send_bytes_async(b"m", timeout=60))
            while ch.stats().sendq == 0:  # offered, and waiting for a receiver
                await asyncio.sleep(0.005)
        holder.take()
        if send is None:
            send = asyncio.ensure_future(ch.send_bytes_async(b"m", timeout=60))
        ran = await holder.ticks()
        if capacity == 0:
            assert await ch.recv_bytes_async(timeout=30) == b"m"
        await asyncio.wait_for(send, 30)
        return ran

    assert holder.run(main) == "released by the loop"


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_an_awaited_unbuffered_send_giving_up_while_a_peer_holds_the_lock_does_not_block_the_loop(make_channel, how):
    # Its timeout (or a cancellation) comes while the lock is held: taking
    # its message back waits for the lock with the loop running.
    ch = make_channel(capacity=0)
    holder = _LockHolder(ch)

    async def main():
        send = asyncio.ensure_future(ch.send_bytes_async(b"m", timeout=0.5 if how == "timeout" else 60))
        while ch.stats().sendq == 0:  # offered, and waiting for a receiver
            await asyncio.sleep(0.005)
        holder.take()

        def cancel_twice(i):  # the second comes while it takes its message back
            if how == "cancel" and i in (50, 100):
                send.cancel()

        ran = await holder.ticks(cancel_twice)  # the timeout passes in them
        with pytest.raises(ringbuf.Timeout if how == "timeout" else asyncio.CancelledError):
            await asyncio.wait_for(send, 30)
        return ran

    assert holder.run(main) == "released by the loop"
    assert len(ch) == 0  # taken back
    assert ch.stats().sent == 0


def test_an_awaited_sender_that_sent_hands_the_wake_up_on_though_the_lock_is_busy(make_channel, no_recheck):
    # W6: a receive frees room for two and wakes one sender, the awaiting
    # task, which sends and owes the wake-up to the other parked sender.  It
    # cannot look under the lock (another thread holds it for 20 ms), so it
    # hands the wake-up on without looking.
    ch = make_channel(capacity=2)
    ch.send_bytes(b"1")
    ch.send_bytes(b"2")
    lock_at = HEADER_FIELDS["lock"][0]

    def awaiting_sender(tell):
        libc = ctypes.CDLL(None)
        with open(f"/dev/shm/{ch.name}", "r+b") as f:
            segment = mmap.mmap(f.fileno(), mmap.PAGESIZE)
        lock = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(segment, lock_at)))
        wait_end = Handle.wait_end

        def wait_end_while_the_lock_is_held(self, w, served):
            if not (served and w.send):
                return wait_end(self, w, served)
            taken, done = threading.Event(), threading.Event()

            def hold():
                libc.pthread_mutex_lock(lock)
                taken.set()
                done.wait()
                libc.pthread_mutex_unlock(lock)

            holder = threading.Thread(target=hold)
            holder.start()
            taken.wait()
            try:
                wait_end(self, w, served)
            finally:
                done.set()
                holder.join()

        Handle.wait_end = wait_end_while_the_lock_is_held
        asyncio.run(ch.send_bytes_async(b"A", timeout=60))
        tell.send("A")

    def plain_sender(tell):
        ch.send_bytes(b"P", timeout=60)
        tell.send("P")

    answers = []
    for i, send in enumerate((awaiting_sender, plain_sender)):
        answer, proc = start_telling(send)
        answers.append((answer, proc))
        wait_until(lambda: ch.stats().sendq == i + 1, what=f"sender {i} waiting")
        if i == 0:  # its helper thread asleep on the word first, so that it is the one woken
            wait_until(lambda: helper_thread_sleeping(proc.pid), what="the helper thread sleeping")
    assert ch.recv_bytes_many(2) == [b"1", b"2"]
    try:
        for (answer, proc), name in zip(answers, "AP"):
            assert answer.poll(30), f"sender {name} was not woken though there was room"
            assert answer.recv() == name
    finally:
        for _, proc in answers:
            proc.kill()
            proc.join()
    assert sorted(ch.recv_bytes_many(2)) == [b"A", b"P"]


def test_several_event_loops_in_several_threads_share_one_helper(make_channel):
    chans = [make_channel() for _ in range(4)]
    got = {}

    def loop_thread(i):
        got[i] = asyncio.run(chans[i].recv_async(timeout=10))

    threads = [threading.Thread(target=loop_thread, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: all(c.stats().recvq == 1 for c in chans), what="four loops waiting")
    assert _async.helper_threads() == 1
    for i, ch in enumerate(chans):
        ch.send(i)
    for t in threads:
        t.join(10)
    assert got == {0: 0, 1: 1, 2: 2, 3: 3}


def test_the_helper_thread_ends_when_nothing_is_awaited_and_another_starts_when_needed(make_channel):
    # A process that awaited once does not keep a thread for good (every
    # later fork would be a fork of a multi-threaded process).
    ch = make_channel()

    async def wait_then_get(message):
        task = asyncio.ensure_future(ch.recv_async(timeout=30))
        while ch.stats().recvq == 0:  # waiting through the helper thread
            await asyncio.sleep(0.005)
        assert _async.helper_threads() == 1
        ch.send(message)
        return await task

    assert asyncio.run(wait_then_get("first")) == "first"
    wait_until(lambda: _async.helper_threads() == 0, timeout=30, what="the idle helper thread ending")
    assert asyncio.run(wait_then_get("second")) == "second"


def test_a_fork_child_gets_a_helper_of_its_own(make_channel):
    ch, reply = make_channel(), make_channel()

    async def wait_once():
        return await ch.recv_async(timeout=10)

    ch.send("warm")
    assert asyncio.run(wait_once()) == "warm"  # the parent may have a helper now
    proc = ctx.Process(target=_workers.async_echo, args=(ch, reply))
    proc.start()
    wait_until(lambda: ch.stats().recvq == 1, what="the child's task waiting")
    ch.send("from the parent")
    assert reply.recv(timeout=10) == ("from the parent", 1)
    proc.join(5)


def test_a_process_killed_while_its_tasks_wait_is_struck_off(make_channel):
    ch = make_channel()
    proc = ctx.Process(target=_workers.async_wait_forever, args=(ch, 5))
    proc.start()
    wait_until(lambda: ch.stats().recvq == 5, what="five tasks waiting")
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)
    wait_until(lambda: ch.stats().recvq == 0, timeout=15, what="the dead process's tasks struck off")
    assert ch.stats().waiters_reaped == 5


def test_an_awaited_send_on_an_unbuffered_channel_is_a_rendezvous(make_channel):
    ch = make_channel(capacity=0)
    results = ctx.Queue()

    async def send_then_look():
        await ch.send_async("hand-off", timeout=10)
        return ch.stats().received  # the receive had happened when the send returned

    proc = ctx.Process(target=_workers.recv_one, args=(ch, 30, results))
    proc.start()
    assert asyncio.run(send_then_look()) == 1
    proc.join(5)

    # Nobody receives: the send times out and takes its message back.
    with pytest.raises(ringbuf.Timeout):
        asyncio.run(ch.send_bytes_async(b"nobody", timeout=0.1))
    st = ch.stats()
    assert (st.qcount, st.sent, st.received, st.sendq) == (0, 1, 1, 0)

    # A cancelled one takes it back too, and a later receiver gets nothing.
    async def cancel_it():
        t = asyncio.create_task(ch.send_async("cancelled"))
        await asyncio.sleep(0.1)
        assert len(ch) == 1  # in flight, offered
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(cancel_it())
    with pytest.raises(ringbuf.Timeout):
        ch.recv(timeout=0.1)

    # Close wakes a waiting sender, which takes its message back.
    async def close_it():
        t = asyncio.create_task(ch.send_async("closed"))
        await asyncio.sleep(0.1)
        ch.close()
        with pytest.raises(ringbuf.Closed):
            await t

    asyncio.run(close_it())
    with pytest.raises(ringbuf.Closed):
        ch.recv(timeout=1)
    ch.check()


def test_a_select_async_send_case_on_an_unbuffered_channel_waits_for_a_receiver(make_channel):
    ch, other = make_channel(capacity=0), make_channel()

    async def nobody():
        with pytest.raises(ringbuf.Timeout):
            await ringbuf.select_async((ch, "nobody"), other, timeout=0.2)

    asyncio.run(nobody())
    assert len(ch) == 0 and ch.stats().sent == 0
    results = ctx.Queue()
    proc = ctx.Process(target=_workers.recv_one, args=(ch, 30, results))
    proc.start()
    assert asyncio.run(ringbuf.select_async((ch, b"taken"), other, timeout=10)) == (ch, None)
    assert results.get(timeout=5)[0] == "message"
    proc.join(5)
    assert (len(ch), len(other)) == (0, 0)


@pytest.mark.parametrize("peer", ["sender", "receiver"])
@pytest.mark.parametrize("order", ["send case first", "receive case first", "two receive cases", "two handles"])
def test_a_select_async_sending_and_receiving_on_one_unbuffered_channel_meets_a_peer(make_channel, no_recheck,
                                                                                        peer, order):
    # The task's own receive wait is no receiver for its send case: offered
    # to itself, its message would fill the channel's one slot for a
    # re-check period (here: for good), and a peer's send would find no room.
    ch = make_channel(capacity=0)
    recv = ringbuf.Channel.attach(ch.name) if order == "two handles" else ch
    mine = (ch, b"mine")
    cases = {"send case first": (mine, recv), "receive case first": (recv, mine),
             "two receive cases": (recv, mine, recv), "two handles": (mine, recv)}[order]

    def other_process(tell):
        wait_until(lambda: ch.stats().sendq == 1, what="the task waiting")  # counted in on both sides
        if peer == "sender":
            ch.send_bytes(b"yours", timeout=30)
            tell.send("sent")
        else:
            tell.send(ch.recv_bytes(timeout=30))

    answer, proc = start_telling(other_process)
    try:
        got = asyncio.run(ringbuf.select_bytes_async(*cases, timeout=40))
        assert answer.poll(30), "the peer is still waiting"
        assert answer.recv() == ("sent" if peer == "sender" else b"mine")
    finally:
        proc.join(30)
    assert got == ((recv, b"yours") if peer == "sender" else (ch, None))
    assert ch.stats().sent == 1 and len(ch) == 0


@pytest.mark.parametrize("handles", ["one handle", "two handles"])
def test_a_select_async_with_two_send_cases_on_one_channel_is_woken_for_room_for_the_smaller(make_channel, no_recheck,
                                                                                                handles):
    # The task waits on the channel's senders' side once, for the smaller
    # message (W7: a receive that frees room for it only must wake the task).
    ch = make_channel(capacity=16, size=64)
    for _ in range(4):
        ch.send_bytes(b"12345678")  # four records of 16 bytes: full
    other = ringbuf.Channel.attach(ch.name) if handles == "two handles" else ch

    def receive_one():
        wait_until(lambda: ch.stats().sendq == 1, what="the task waiting")
        ch.recv_bytes(timeout=30)  # frees 16 bytes: room for the small message only

    proc = ctx.Process(target=receive_one)
    proc.start()
    try:
        got = asyncio.run(asyncio.wait_for(ringbuf.select_bytes_async((ch, b"B" * 40), (other, b"s")), 30))
    finally:
        proc.join(30)
    assert got == (other, None)
    assert ch.recv_bytes_many(4) == [b"12345678"] * 3 + [b"s"]


def test_a_select_async_that_leaves_a_receivers_call_unused_passes_it_on(make_channel, no_recheck):
    # W13 and W12: a receiver about to park on an unbuffered channel calls
    # one parked sender, here the task's select (its helper thread asleep on
    # the senders' word first).  The task is cancelled before it can act on
    # the call, so it must pass the call on to the other parked sender, a
    # select in another process; else both sleep on with the receiver.
    ch, other, other2 = make_channel(capacity=0), make_channel(), make_channel()

    def selector(tell):
        tell.send(ringbuf.select_bytes((ch, b"from S2"), other2, timeout=60)[1])

    def receiver(tell):
        tell.send(ch.recv_bytes(timeout=30))

    async def main():
        task = asyncio.create_task(ringbuf.select_bytes_async((ch, b"from the task"), other))
        while ch.stats().sendq < 1:
            await asyncio.sleep(0.001)
        # From here on the loop is held up, so that the task can only act
        # once it has been cancelled.
        wait_until(lambda: helper_thread_sleeping(os.getpid()), what="the helper thread sleeping")
        procs = []
        for i, target in enumerate((selector, receiver)):
            answer, proc = start_telling(target)
            procs.append((answer, proc))
            if i == 0:
                wait_until(lambda: ch.stats().sendq == 2 and in_futex_wait(proc.pid), what="the selector parked")
        wait_until(lambda: not _async._the_helper()._watches, what="the receiver's call woke the task's helper")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return procs

    procs = asyncio.run(main())
    try:
        for (answer, _), expected in zip(procs, (None, b"from S2")):
            assert answer.poll(30), "the call was not passed on"
            assert answer.recv() == expected
    finally:
        for _, proc in procs:
            proc.join(30)
    assert ch.stats().sent == 1 and len(ch) == 0


def test_more_awaited_channel_sides_than_the_helper_can_watch_is_a_clear_error(make_channel):
    chans = [make_channel(capacity=1, size=64) for _ in range(128)]

    async def main():
        tasks = [asyncio.create_task(ch.recv_async()) for ch in chans]
        done, pending = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return [t.exception() for t in done]

    errors_ = asyncio.run(main())
    assert len(errors_) == 1 and isinstance(errors_[0], ringbuf.RingbufError)
    assert "at most 127" in str(errors_[0])
    wait_until(lambda: all(c.stats().recvq == 0 for c in chans), what="every task counted out")


def test_channels_dropped_while_tasks_wait_on_them_are_never_read_after_unmapping():
    # The helper thread reads the futex words of every awaited channel.  A
    # task cancelled and its channel dropped (unmapped) while the helper is
    # about to read its word must not crash the process: the helper keeps
    # the segments of the words it watches mapped until it is done with them.
    proc = run_child("""
        import asyncio, gc, ringbuf

        async def main():
            for i in range(200):
                # Each ring larger than the last, so that no new segment is
                # mapped where an old one was.
                ch = ringbuf.Channel(capacity=1, size=(i + 1) * 8192)
                t = asyncio.create_task(ch.recv_async())
                await asyncio.sleep(0.001)  # the task waits, and the helper sleeps on its word
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
                ch.close()
                ch.unlink()
                del ch, t
                gc.collect()
            print("survived", flush=True)

        asyncio.run(main())
    """)
    assert read_line(proc, timeout=60) == "survived"
    assert proc.wait(10) == 0
