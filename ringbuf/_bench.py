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


def _queue_dispose(q: multiprocessing.queues.Queue[Any]) -> None:
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


def _producer(peer: str, ep: Any, payload: bytes, count: int, go: Any, ready: Any) -> None:
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


class _Workload:
    """A helper process per round: ``prepare()`` starts it and waits until it
    is ready, so process start-up is never measured; ``run()`` is timed."""

    def __init__(self, peer: str, payload: int, count: int) -> None:
        self.peer = PEERS[peer]
        self.name = peer
        self.payload = b"x" * payload
        self.count = count
        self.proc: Any = None

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        self.finish()
        ready = _ctx.Event()
        self.proc = _ctx.Process(target=target, args=(self.name, *args, ready))
        self.proc.start()
        if not ready.wait(60):
            raise RuntimeError(f"{self.name} helper process did not start")

    def finish(self) -> None:
        if self.proc is not None:
            self.proc.join(60)
            self.proc = None


class OneWay(_Workload):
    """One producer process sends ``count`` messages; this process receives
    them.  ``run()`` releases the producer and returns the seconds taken."""

    def __init__(self, peer: str, payload: int, count: int) -> None:
        super().__init__(peer, payload, count)
        self.ep = self.peer.make()

    def prepare(self) -> None:
        self.go = _ctx.Event()
        self._start(_producer, self.ep, self.payload, self.count, self.go)

    def run(self) -> float:
        recv, ep = self.peer.recv, self.ep
        t0 = time.perf_counter()
        self.go.set()
        for _ in range(self.count):
            recv(ep)
        return time.perf_counter() - t0

    def dispose(self) -> None:
        self.finish()
        self.peer.dispose(self.ep)


class PingPong(_Workload):
    """Round trips to an echo process; ``run()`` returns each trip's seconds."""

    def __init__(self, peer: str, payload: int, count: int) -> None:
        super().__init__(peer, payload, count)
        self.requests, self.replies = self.peer.make(), self.peer.make()

    def prepare(self) -> None:
        self._start(_echo, self.requests, self.replies, self.count)

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
