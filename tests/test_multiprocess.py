"""Many processes on one channel: every message once, in order per producer, intact."""

from __future__ import annotations

import collections
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

import ringbuf
from tests import _workers


def exchange(ctx, producers: int, consumers: int, per_producer: int, max_payload: int, **chan) -> ringbuf.ChannelStats:
    results = ctx.Queue()
    with ringbuf.Channel(**chan) as ch:
        cons = [ctx.Process(target=_workers.consume, args=(ch, results)) for _ in range(consumers)]
        prods = [
            ctx.Process(target=_workers.produce, args=(ch, p, per_producer, max_payload))
            for p in range(producers)
        ]
        for proc in cons + prods:
            proc.start()
        for proc in prods:
            proc.join(120)
            assert proc.exitcode == 0, "a producer failed"
        ch.close()
        reports = [results.get(timeout=120) for _ in cons]
        for proc in cons:
            proc.join(30)
            assert proc.exitcode == 0, "a consumer failed"
        ch.check()
        stats = ch.stats()

    errors = [e for _, e in reports if e]
    assert not errors, errors
    # In order per producer, as each consumer saw them.
    for got, _ in reports:
        last = collections.defaultdict(lambda: -1)
        for producer, seq in got:
            assert seq > last[producer], f"producer {producer}: {seq} after {last[producer]}"
            last[producer] = seq
    # Exactly once overall.
    everything = collections.Counter(m for got, _ in reports for m in got)
    expected = {(p, s) for p in range(producers) for s in range(per_producer)}
    assert set(everything) == expected, "messages lost"
    assert max(everything.values()) == 1, "messages duplicated"
    assert stats.sent == stats.received == producers * per_producer
    assert (stats.qcount, stats.used, stats.sendq, stats.recvq) == (0, 0, 0, 0)
    return stats


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_four_producers_four_consumers_100k_messages(method):
    ctx = multiprocessing.get_context(method)
    stats = exchange(ctx, producers=4, consumers=4, per_producer=25_000, max_payload=600,
                     capacity=64, size=16 * 1024)
    # With a small ring and 8 processes on the machine, both sides must have
    # found the channel full or empty at some point and parked.
    assert stats.send_parks + stats.recv_parks > 0


def test_many_parked_senders_of_mixed_sizes_all_get_through():
    # Records of 16 B to 1.5 KiB into a 4 KiB ring: most of the time several
    # senders are parked, and the room a receive frees suits some of them and
    # not others.  Senders are woken one at a time and hand the wake-up on;
    # every message must still arrive, once, in order.
    ctx = multiprocessing.get_context("fork")
    stats = exchange(ctx, producers=12, consumers=2, per_producer=1_500, max_payload=1_500,
                     capacity=1024, size=4096)
    assert stats.send_parks > 0


def test_every_start_method_can_use_a_channel(mp_context):
    exchange(mp_context, producers=2, consumers=2, per_producer=2_000, max_payload=3000,
             capacity=16, size=8192)


def test_channel_passed_to_pool_workers():
    ctx = multiprocessing.get_context("spawn")
    with ringbuf.Channel(capacity=64) as ch, ctx.Pool(2) as pool:
        done = pool.starmap(_workers.pool_task, [(ch, i) for i in range(40)])
        got = sorted(int.from_bytes(ch.recv_bytes(timeout=30), "little") for _ in range(40))
    assert done == list(range(40))
    assert got == list(range(40))


def test_attach_by_name_from_an_unrelated_process():
    with ringbuf.Channel(capacity=8) as ch:
        code = textwrap.dedent(f"""
            import ringbuf
            ch = ringbuf.Channel.attach({ch.name!r})
            msg = ch.recv_bytes(timeout=30)
            ch.send_bytes(msg[::-1])
        """)
        proc = subprocess.Popen([sys.executable, "-c", code])
        ch.send_bytes(b"hello")
        assert proc.wait(timeout=30) == 0
        assert ch.recv_bytes(timeout=5) == b"olleh"


def test_fork_child_does_not_unlink_the_creators_segment():
    ctx = multiprocessing.get_context("fork")
    with ringbuf.Channel() as ch:
        # The child inherits the creator's handle and drops it on exit.
        proc = ctx.Process(target=_workers.send_one, args=(ch, b"from child", None, ctx.Queue()))
        proc.start()
        proc.join(30)
        assert ringbuf.Channel.attach(ch.name).recv_bytes(timeout=5) == b"from child"


def test_os_fork_child_exiting_normally_leaves_the_segment():
    code = textwrap.dedent("""
        import gc, os, sys
        import ringbuf
        ch = ringbuf.Channel()
        print(ch.name, flush=True)
        pid = os.fork()
        if pid == 0:
            # The child inherits the creator's handle, drops it and exits the
            # normal way, running atexit hooks (and so the finalizer).
            del ch
            gc.collect()
            sys.exit(0)
        os.waitpid(pid, 0)
        print(os.path.exists("/dev/shm/" + ch.name))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    name, survived = out.stdout.split()
    assert survived == "True"
    assert not os.path.exists(f"/dev/shm/{name}")  # the creator's own exit removed it


def test_normal_exit_of_the_creator_unlinks():
    code = textwrap.dedent("""
        import ringbuf
        ch = ringbuf.Channel()
        ch.send_bytes(b"left behind")
        print(ch.name)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    name = out.stdout.strip()
    assert name.startswith("ringbuf-")
    with pytest.raises(ringbuf.ChannelNotFound):
        ringbuf.Channel.attach(name)
