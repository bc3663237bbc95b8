"""ringbuf.Queue against multiprocessing.Queue's documented behaviour."""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import ringbuf
from tests import _workers
from tests._helpers import wait_until

ctx = multiprocessing.get_context("fork")


@pytest.fixture(params=["multiprocessing", "ringbuf"])
def make_queue(request):
    """Both queue classes, for behaviour their documentation says they share."""
    made = []

    def make(maxsize=0, joinable=False, context=ctx):
        if request.param == "multiprocessing":
            q = context.JoinableQueue(maxsize) if joinable else context.Queue(maxsize)
        else:
            q = (ringbuf.JoinableQueue if joinable else ringbuf.Queue)(maxsize, size=1 << 20)
        made.append(q)
        return q

    yield make
    for q in made:
        if isinstance(q, ringbuf.Queue):
            q.channel.unlink()


# -- shared behaviour ----------------------------------------------------------


def test_fifo_of_many_kinds(make_queue):
    q = make_queue()
    items = [None, 1, "two", b"three", [4], {"five": 5}, (6, 7), 8.5, {9}]
    for item in items:
        q.put(item)
    assert [q.get(timeout=10) for _ in items] == items


def test_get_on_empty(make_queue):
    q = make_queue()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get(block=False, timeout=5)  # block=False ignores the timeout
    with pytest.raises(queue.Empty):
        q.get(timeout=-1)  # a negative timeout does not wait (and is no error)


def test_put_on_full(make_queue):
    q = make_queue(maxsize=2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    with pytest.raises(queue.Full):
        q.put(3, timeout=-1)
    assert q.get(timeout=10) == 1
    assert not q.full()
    q.put(3, timeout=10)
    assert [q.get(timeout=10), q.get(timeout=10)] == [2, 3]


def test_qsize_and_full_count_items(make_queue):
    q = make_queue(maxsize=5)
    assert q.qsize() == 0 and not q.full()
    for i in range(5):
        q.put(i)
    assert q.qsize() == 5 and q.full()
    q.get(timeout=10)
    assert q.qsize() == 4


def test_unbounded_queue_is_never_full(make_queue):
    q = make_queue(maxsize=0)
    for i in range(100):
        q.put(i)
    assert not q.full()
    q2 = make_queue(maxsize=-3)
    assert not q2.full()


def test_close_in_this_process(make_queue):
    q = make_queue()
    q.put("before")
    with pytest.raises(AssertionError):
        q.join_thread()  # only after close()
    q.close()
    q.close()  # harmless twice
    with pytest.raises(ValueError):
        q.put(1)
    with pytest.raises(ValueError):
        q.get()
    with pytest.raises(ValueError):
        q.get_nowait()
    q.join_thread()
    q.cancel_join_thread()


def test_producers_in_child_processes(make_queue, mp_context):
    q = make_queue(context=mp_context)
    procs = [mp_context.Process(target=_workers.queue_put_all, args=(q, [(p, i) for i in range(50)]))
             for p in range(3)]
    for p in procs:
        p.start()
    got = [q.get(timeout=30) for _ in range(150)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    for producer in range(3):
        assert [i for p, i in got if p == producer] == list(range(50))


def test_pool_initializer(make_queue):
    q = make_queue()
    with ctx.Pool(2, initializer=_workers.pool_init, initargs=(q,)) as pool:
        assert sorted(pool.map(_workers.pool_put, range(20))) == list(range(20))
        # Workers that exit, rather than the with block's terminate(): a
        # multiprocessing.Queue's feeder thread may still hold what a worker
        # put, and a terminated worker loses it.
        pool.close()
        pool.join()
    assert sorted(q.get(timeout=10) for _ in range(20)) == list(range(20))


def test_process_pool_executor_initializer(make_queue, mp_context):
    q = make_queue(context=mp_context)  # mp.Queue must come from the context the pool uses
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=mp_context, initializer=_workers.pool_init,
                                                initargs=(q,)) as ex:
        assert sorted(ex.map(_workers.pool_put, range(10))) == list(range(10))
    assert sorted(q.get(timeout=10) for _ in range(10)) == list(range(10))


def test_joinable_queue(make_queue, mp_context):
    # (join() has no timeout in multiprocessing's API; its Ctrl-C test is below.)
    q = make_queue(joinable=True, context=mp_context)
    results = mp_context.Queue()
    workers = [mp_context.Process(target=_workers.joinable_worker, args=(q, results)) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(20):
        q.put(i)
    for _ in workers:
        q.put(None)
    q.join()  # returns once every item has been marked done
    assert sorted(results.get(timeout=10) for _ in range(20)) == [2 * i for i in range(20)]
    for w in workers:
        w.join(10)
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()


# -- what ringbuf.Queue does differently, on purpose ----------------------------


@pytest.fixture
def rq():
    made = []

    def make(*args, **kwargs):
        q = ringbuf.Queue(*args, **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.channel.unlink()


def test_memory_is_bounded_even_without_maxsize(rq):
    q = rq(size=4096)
    put = 0
    with pytest.raises(queue.Full):
        while True:
            q.put(b"x" * 100, block=False)
            put += 1
    assert 0 < put < 4096 // 100
    assert not q.full()  # the item count has no bound...
    assert q.channel.stats().used <= 4096  # ...the bytes do
    q.get()
    q.put(b"x" * 100, timeout=5)


def test_an_item_larger_than_the_ring_is_a_clear_error(rq):
    q = rq(size=1024)
    with pytest.raises(ringbuf.MessageTooLarge, match="can never fit"):
        q.put(b"x" * 4096)
    with pytest.raises(ValueError):
        q.put(b"x" * 4096, block=False)
    assert q.empty()


def test_an_item_put_just_before_exit_is_not_lost(rq):
    q = rq()
    p = ctx.Process(target=_workers.queue_put_then_exit_at_once, args=(q, "last words"))
    p.start()
    p.join(10)
    assert q.qsize() == 1  # exact, at once
    assert q.get(timeout=5) == "last words"


def test_qsize_and_empty_are_exact_right_after_put(rq):
    q = rq()
    q.put(1)
    assert not q.empty() and q.qsize() == 1
    q.get()
    assert q.empty() and q.qsize() == 0


def test_can_be_passed_as_a_pool_task_argument(rq):
    q = rq()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert sorted(pool.starmap(_workers.pool_put_to, [(q, i) for i in range(10)])) == list(range(10))
    assert sorted(q.get(timeout=10) for _ in range(10)) == list(range(10))


def test_many_producers_and_consumers_exactly_once_in_order(rq):
    spawn = multiprocessing.get_context("spawn")
    q = rq(maxsize=50, size=64 * 1024)
    results = spawn.Queue()
    stop = "stop"
    cons = [spawn.Process(target=_workers.queue_consume, args=(q, results, stop)) for _ in range(3)]
    prods = [spawn.Process(target=_workers.queue_produce, args=(q, p, 3000)) for p in range(3)]
    for p in cons + prods:
        p.start()
    for p in prods:
        p.join(120)
        assert p.exitcode == 0
    for _ in cons:
        q.put(stop)
    reports = [results.get(timeout=120) for _ in cons]
    for p in cons:
        p.join(30)
        assert p.exitcode == 0
    for got in reports:
        last = collections.defaultdict(lambda: -1)
        for producer, seq in got:
            assert seq > last[producer]
            last[producer] = seq
    everything = collections.Counter(m for got in reports for m in got)
    assert set(everything) == {(p, s) for p in range(3) for s in range(3000)}
    assert max(everything.values()) == 1


def test_closing_the_channel_wakes_a_blocked_get_in_another_process(rq):
    q = rq()
    results = ctx.Queue()
    p = ctx.Process(target=_workers.recv_one, args=(q.channel, None, results))
    p.start()
    wait_until(lambda: q.channel.stats().recvq == 1, what="get parking")
    q.channel.close()
    assert results.get(timeout=5)[0] == "Closed"
    p.join(5)


@pytest.mark.parametrize("call", ["get", "put", "join"])
def test_sigint_interrupts_blocking_calls(call):
    import pickle

    q = ringbuf.JoinableQueue(maxsize=1, size=1 << 16)
    if call != "get":
        q.put("fills the only slot, and is an unfinished task")
    # "ready" is printed inside the try: a SIGINT that comes after it is
    # caught there, whether or not the call had parked yet.
    code = textwrap.dedent(f"""
        import pickle, sys
        q = pickle.loads(bytes.fromhex(sys.argv[1]))
        try:
            print("ready", flush=True)
            q.{call}({'"x"' if call == "put" else ""})
            print("returned", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, pickle.dumps(q).hex()], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if call != "join":  # get and put show up as parked; wait for that too
            wait_until(lambda: q.channel.stats().recvq + q.channel.stats().sendq == 1, what="child parking")
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert out.strip() == "interrupted"
    finally:
        proc.kill()
        q.channel.unlink()


def test_a_producer_killed_while_blocked_in_put_leaves_no_unfinished_task():
    # Its item never went in, so it must not count: join() returns once the
    # items that did go in are done.
    q = ringbuf.JoinableQueue(maxsize=1, size=1 << 16)
    try:
        q.put("in")
        proc = ctx.Process(target=q.put, args=("never in",))
        proc.start()
        wait_until(lambda: q.channel.stats().sendq == 1, what="the producer blocking in put")
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
        assert q.get(timeout=5) == "in"
        q.task_done()
        q.channel.join(timeout=5)  # raises Timeout if the dead put still counted
        with pytest.raises(queue.Empty):
            q.get(timeout=0.1)
    finally:
        q.channel.unlink()


def test_channel_join_times_out_and_close_does_not_end_it(make_channel):
    ch = make_channel()
    ch.send_bytes(b"a task")
    with pytest.raises(ringbuf.Timeout):
        ch.join(timeout=0.05)
    ch.close()  # tasks are counted whether the channel is open or not
    with pytest.raises(ringbuf.Timeout):
        ch.join(timeout=0.05)
    assert ch.recv_bytes() == b"a task"
    ch.task_done()
    ch.join(timeout=5)
    with pytest.raises(ValueError, match="too many"):
        ch.task_done()


# -- shutdown, as Python 3.13's queue.Queue -------------------------------------------


def shutdown_worker(q: Any, op: str, results: Any) -> None:
    try:
        if op == "get":
            results.put(("got", q.get(timeout=30)))
        else:
            q.put("blocked", timeout=30)
            results.put(("put", None))
    except ringbuf.ShutDown as e:
        results.put(("ShutDown", isinstance(e, getattr(queue, "ShutDown", ringbuf.ShutDown))))


def test_shutdown_makes_puts_raise_and_gets_drain_then_raise_in_every_process():
    q = ringbuf.Queue(maxsize=2, size=1 << 16)
    try:
        q.put("a")
        q.put("b")
        results = ctx.Queue()
        blocked_put = ctx.Process(target=shutdown_worker, args=(q, "put", results))
        blocked_put.start()
        wait_until(lambda: q.channel.stats().sendq == 1, what="a put blocking on the full queue")
        q.shutdown()
        assert results.get(timeout=5) == ("ShutDown", True)  # the blocked put was woken
        blocked_put.join(5)
        assert q.is_shutdown
        with pytest.raises(ringbuf.ShutDown):
            q.put("c")
        assert [q.get(), q.get()] == ["a", "b"]  # gets drain ...
        with pytest.raises(ringbuf.ShutDown):  # ... then raise
            q.get(timeout=5)
        # Another process sees it too, and a get blocked there is woken.
        getter = ctx.Process(target=shutdown_worker, args=(q, "get", results))
        getter.start()
        assert results.get(timeout=5) == ("ShutDown", True)
        getter.join(5)
        q.shutdown()  # twice is harmless
    finally:
        q.channel.unlink()


def test_immediate_shutdown_drops_the_items_counts_them_done_and_gets_raise_at_once():
    q = ringbuf.JoinableQueue(size=1 << 16)
    try:
        for i in range(5):
            q.put(i)
        assert q.get() == 0
        q.task_done()
        results = ctx.Queue()
        joiner = ctx.Process(target=_workers.join_queue, args=(q, results))
        joiner.start()
        wait_until(lambda: q.channel.observe().qcount == 4, what="the joiner starting")
        q.shutdown(immediate=True)
        assert results.get(timeout=5) == "joined"  # the 4 dropped items count as done
        joiner.join(5)
        with pytest.raises(ringbuf.ShutDown):
            q.get(block=False)
        st = q.channel.stats()
        assert (st.qcount, st.sent, st.received, st.closed) == (0, 5, 5, True)
        q.channel.check()
    finally:
        q.channel.unlink()
