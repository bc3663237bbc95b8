"""An asyncio consumer against a blocking one, in alternating rounds: the
rate at which it receives 64-byte messages from a producer process, and the
wake-up of a receiver parked in recv_async against one parked in recv_bytes;
beside them, the way people do it today, run_in_executor(None, ch.recv_bytes).

    pytest benchmarks/test_async.py --benchmark-only
"""

from __future__ import annotations

import asyncio
import multiprocessing
import struct
import time
from typing import Any, Callable, Dict, List

import ringbuf
from benchmarks.conftest import record
from ringbuf import _bench

COUNT = 50_000
WAKES = 200
_ctx = multiprocessing.get_context("fork")
_STAMP = struct.Struct("<d")


def _produce(ch: ringbuf.Channel, count: int, go: Any) -> None:
    msg = b"x" * 64
    go.wait()
    for _ in range(count):
        ch.send_bytes(msg)


def _stamps(ch: ringbuf.Channel, count: int, go: Any) -> None:
    go.wait()
    for _ in range(count):
        time.sleep(0.002)  # the receiver parks before each one
        ch.send_bytes(_STAMP.pack(time.perf_counter()))


def _blocking(ch: ringbuf.Channel, count: int) -> None:
    for _ in range(count):
        ch.recv_bytes()


async def _awaiting(ch: ringbuf.Channel, count: int) -> None:
    for _ in range(count):
        await ch.recv_bytes_async()


async def _executor(ch: ringbuf.Channel, count: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(count):
        await loop.run_in_executor(None, ch.recv_bytes)


CONSUMERS: Dict[str, Callable[[ringbuf.Channel, int], None]] = {
    "ringbuf": _blocking,
    "asyncio": lambda ch, n: asyncio.run(_awaiting(ch, n)),
    "run_in_executor": lambda ch, n: asyncio.run(_executor(ch, n)),
}


def _rate(consumer: str) -> float:
    ch = ringbuf.Channel(capacity=1024, size=1 << 22)
    go = _ctx.Event()
    proc = _ctx.Process(target=_produce, args=(ch, COUNT, go))
    proc.start()
    try:
        t0 = time.perf_counter()
        go.set()
        CONSUMERS[consumer](ch, COUNT)
        return COUNT / (time.perf_counter() - t0)
    finally:
        proc.join(60)
        ch.close()
        ch.unlink()


def _wake(consumer: str) -> List[float]:
    ch = ringbuf.Channel(capacity=16, size=1 << 16)
    go = _ctx.Event()
    proc = _ctx.Process(target=_stamps, args=(ch, WAKES, go))
    proc.start()
    delays: List[float] = []

    async def awaiting() -> None:
        for _ in range(WAKES):
            msg = await ch.recv_bytes_async()
            delays.append(time.perf_counter() - _STAMP.unpack(msg)[0])

    try:
        go.set()
        if consumer == "asyncio":
            asyncio.run(awaiting())
        else:
            for _ in range(WAKES):
                msg = ch.recv_bytes()
                delays.append(time.perf_counter() - _STAMP.unpack(msg)[0])
        return delays
    finally:
        proc.join(60)
        ch.close()
        ch.unlink()


def _alternate(benchmark: Any, group: str, peers: List[str], one: Callable[[str], Any], rounds: int) -> Dict[str, List[Any]]:
    results: Dict[str, List[Any]] = {p: [] for p in peers}
    state = {"round": 0}

    def run() -> None:
        k = state["round"] % len(peers)
        for peer in peers[k:] + peers[:k]:
            results[peer].append(one(peer))
        state["round"] += 1

    benchmark.group = group
    benchmark.pedantic(run, rounds=rounds, iterations=1)
    return results


def test_an_asyncio_consumer_of_64_byte_messages(benchmark):
    workload = "one-way 64 B, asyncio"
    results = _alternate(benchmark, workload, ["ringbuf", "asyncio", "run_in_executor"], _rate, rounds=5)
    for peer, rates in results.items():
        record(workload, peer, _bench.median(rates), "msg/s", True, rates)


def test_the_wake_up_of_a_parked_recv_async(benchmark):
    workload = "wake-up, parked recv_async"
    results = _alternate(benchmark, workload, ["ringbuf", "asyncio"], _wake, rounds=5)
    for peer, rounds in results.items():
        record(workload, peer, _bench.median([d for r in rounds for d in r]) * 1e6, "us", False,
               [_bench.median(r) * 1e6 for r in rounds])
