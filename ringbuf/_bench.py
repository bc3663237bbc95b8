"""Benchmark workloads shared by ``benchmarks/`` (pytest-benchmark).

Each workload runs the same traffic through any *peer*: ringbuf's channel or
another cross-process transport.  A peer is a small adapter that makes an
endpoint and sends and receives bytes through it; its worker processes look
the adapter up by name, so they run under any start method.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import statistics
import time
from typing import Any, Callable, Dict, List, NamedTuple

import ringbuf


class Peer(NamedTuple):
    """How one transport makes an endpoint, sends and receives bytes."""

    make: Callable[[], Any]
    send: Callable[[Any, bytes], None]
    recv: Callable[[Any], bytes]
    dispose: Callable[[Any], None]


def _ringbuf_dispose(ch: ringbuf.Channel) -> None:
    ch.close()
    ch.unlink()


def _queue_dispose(q: multiprocessing.queues.Queue) -> None:
    q.close()
    q.join_thread()


PEERS: Dict[str, Peer] = {
    "ringbuf": Peer(
        make=lambda: ringbuf.Channel(capacity=1024, size=1 << 22),
        send=ringbuf.Channel.send_bytes,
        recv=ringbuf.Channel.recv_bytes,
        dispose=_ringbuf_dispose,
    ),
    "mp.Queue": Peer(
        make=lambda: multiprocessing.get_context("fork").Queue(),
        send=multiprocessing.queues.Queue.put,
        recv=multiprocessing.queues.Queue.get,
        dispose=_queue_dispose,
    ),
}

_ctx = multiprocessing.get_context("fork")


def _producer(peer: str, ep: Any, payload: bytes, count: int, ready: Any, go: Any) -> None:
    send = PEERS[peer].send
    ready.set()
    go.wait()
    for _ in range(count):
        send(ep, payload)


def _echo(peer: str, requests: Any, replies: Any, count: int, ready: Any) -> None:
    p = PEERS[peer]
    ready.set()
    for _ in range(count):
        p.send(replies, p.recv(requests))


class OneWay:
    """One producer process sends ``count`` messages; this process receives them.

    ``prepare()`` starts the producer and waits until it is ready, so process
    start-up is not measured; ``run()`` releases it and returns the seconds
    taken to receive everything.
    """

    def __init__(self, peer: str, payload: int, count: int) -> None:
        self.peer = PEERS[peer]
        self.name = peer
        self.payload = b"x" * payload
        self.count = count
        self.ep = self.peer.make()
        self.proc: Any = None

    def prepare(self) -> None:
        self.finish()
        ready, self.go = _ctx.Event(), _ctx.Event()
        self.proc = _ctx.Process(
            target=_producer, args=(self.name, self.ep, self.payload, self.count, ready, self.go)
        )
        self.proc.start()
        if not ready.wait(60):
            raise RuntimeError(f"{self.name} producer did not start")

    def run(self) -> float:
        recv, ep = self.peer.recv, self.ep
        t0 = time.perf_counter()
        self.go.set()
        for _ in range(self.count):
            recv(ep)
        return time.perf_counter() - t0

    def finish(self) -> None:
        if self.proc is not None:
            self.proc.join(60)
            self.proc = None

    def dispose(self) -> None:
        self.finish()
        self.peer.dispose(self.ep)


class PingPong:
    """Round trips to an echo process; ``run()`` returns each trip's seconds."""

    def __init__(self, peer: str, payload: int, count: int) -> None:
        self.peer = PEERS[peer]
        self.name = peer
        self.payload = b"x" * payload
        self.count = count
        self.requests, self.replies = self.peer.make(), self.peer.make()
        self.proc: Any = None

    def prepare(self) -> None:
        self.finish()
        ready = _ctx.Event()
        self.proc = _ctx.Process(
            target=_echo, args=(self.name, self.requests, self.replies, self.count, ready)
        )
        self.proc.start()
        if not ready.wait(60):
            raise RuntimeError(f"{self.name} echo process did not start")

    def run(self) -> List[float]:
        send, recv, payload = self.peer.send, self.peer.recv, self.payload
        a, b = self.requests, self.replies
        clock = time.perf_counter
        trips = []
        for _ in range(self.count):
            t0 = clock()
            send(a, payload)
            recv(b)
            trips.append(clock() - t0)
        return trips

    def finish(self) -> None:
        if self.proc is not None:
            self.proc.join(60)
            self.proc = None

    def dispose(self) -> None:
        self.finish()
        self.peer.dispose(self.requests)
        self.peer.dispose(self.replies)


def percentile(xs: List[float], q: float) -> float:
    """The q-th percentile (0..100) of xs, by nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def median(xs: List[float]) -> float:
    return statistics.median(xs)
