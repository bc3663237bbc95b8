"""Benchmark workloads shared by ``benchmarks/`` (pytest-benchmark).

Each workload runs the same traffic through any *peer*: ringbuf's channel or
another cross-process transport.  A peer is a small adapter that makes an
endpoint and moves bytes, objects and (if it can) batches through it; worker
processes look the adapter up by name.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import statistics
import struct
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

import ringbuf

#: Messages per batch in the batched workloads.
BATCH = 64


class Peer(NamedTuple):
    """How one transport makes an endpoint and moves messages through it."""

    make: Callable[[int], Any]  # largest message in bytes -> endpoint
    send: Callable[[Any, Any], None]  # objects
    recv: Callable[[Any], Any]
    send_raw: Callable[[Any, bytes], None]  # bytes
    recv_raw: Callable[[Any], bytes]
    send_batch: Optional[Callable[[Any, List[bytes]], None]]  # None: one at a time
    recv_batch: Optional[Callable[[Any, int], List[bytes]]]
    dispose: Callable[[Any], None]


def _ringbuf_make(largest: int) -> ringbuf.Channel:
    return ringbuf.Channel(capacity=1024, size=max(1 << 22, 4 * (largest + 4096)))


def _ringbuf_dispose(ch: ringbuf.Channel) -> None:
    ch.close()
    ch.unlink()


def _queue_dispose(q: multiprocessing.queues.Queue[Any]) -> None:
    q.close()
    q.join_thread()


def _pipe_make(largest: int) -> Any:
    return multiprocessing.get_context("fork").Pipe(duplex=False)  # (reader, writer)


def _pipe_dispose(ends: Any) -> None:
    for end in ends:
        end.close()


PEERS: Dict[str, Peer] = {
    "ringbuf": Peer(
        make=_ringbuf_make,
        send=ringbuf.Channel.send,
        recv=ringbuf.Channel.recv,
        send_raw=ringbuf.Channel.send_bytes,
        recv_raw=ringbuf.Channel.recv_bytes,
        send_batch=ringbuf.Channel.send_bytes_many,
        recv_batch=ringbuf.Channel.recv_bytes_many,
        dispose=_ringbuf_dispose,
    ),
    "mp.Queue": Peer(
        make=lambda largest: multiprocessing.get_context("fork").Queue(),
        send=multiprocessing.queues.Queue.put,
        recv=multiprocessing.queues.Queue.get,
        send_raw=multiprocessing.queues.Queue.put,
        recv_raw=multiprocessing.queues.Queue.get,
        send_batch=None,
        recv_batch=None,
        dispose=_queue_dispose,
    ),
    "mp.Pipe": Peer(
        make=_pipe_make,
        send=lambda ends, obj: ends[1].send(obj),
        recv=lambda ends: ends[0].recv(),
        send_raw=lambda ends, data: ends[1].send_bytes(data),
        recv_raw=lambda ends: ends[0].recv_bytes(),
        send_batch=None,
        recv_batch=None,
        dispose=_pipe_dispose,
    ),
}


def _add_optional_peers() -> None:
    """Peers from the ``peers`` extra, when they are installed."""
    try:
        import faster_fifo
    except ImportError:
        return
    # faster-fifo pickles every message (it has no separate bytes API); a
    # get() without a timeout would give up after its default of 10 s.
    forever = 3600.0

    def ff_make(largest: int) -> Any:
        return faster_fifo.Queue(max_size_bytes=max(1 << 22, 4 * (largest + 4096)))

    def ff_put(q: Any, obj: Any) -> None:
        q.put(obj, timeout=forever)

    def ff_get(q: Any) -> Any:
        return q.get(timeout=forever)

    def ff_dispose(q: Any) -> None:
        q.close()

    PEERS["faster-fifo"] = Peer(
        make=ff_make,
        send=ff_put,
        recv=ff_get,
        send_raw=ff_put,
        recv_raw=ff_get,
        send_batch=lambda q, msgs: q.put_many(msgs, timeout=forever),
        recv_batch=lambda q, n: q.get_many(timeout=forever, max_messages_to_get=n),
        dispose=ff_dispose,
    )


_add_optional_peers()

#: Payload kinds: what one message is, given its size in bytes.
KINDS: Dict[str, Callable[[int], Any]] = {
    "bytes": lambda n: b"x" * n,
    "batch": lambda n: b"x" * n,
    "object": lambda n: {"id": 12345, "name": "sensor-7", "ok": True, "values": [0.5, 1.5, 2.5]},
    "array": lambda n: np.ones(n // 4, dtype=np.float32),
}

_ctx = multiprocessing.get_context("fork")


def _producer(peer_name: str, ep: Any, kind: str, payload: Any, count: int, go: Any, ready: Any) -> None:
    peer = PEERS[peer_name]
    ready.set()
    go.wait()
    if kind == "batch" and peer.send_batch is not None:
        batch = [payload] * BATCH
        for _ in range(count // BATCH):
            peer.send_batch(ep, batch)
        return
    send = peer.send if kind in ("object", "array") else peer.send_raw
    for _ in range(count):
        send(ep, payload)


def _consumer(peer_name: str, ep: Any, kind: str, count: int, results: Any, ready: Any) -> None:
    """Receive count messages; report the rate from the first in hand to the last."""
    peer = PEERS[peer_name]
    ready.set()
    if kind == "batch" and peer.recv_batch is not None:
        recv_batch = peer.recv_batch
        first = got = len(recv_batch(ep, BATCH))
        t0 = time.perf_counter()
        while got < count:
            got += len(recv_batch(ep, BATCH))
    else:
        recv = peer.recv if kind in ("object", "array") else peer.recv_raw
        recv(ep)
        first = 1
        t0 = time.perf_counter()
        for _ in range(count - 1):
            recv(ep)
    elapsed = time.perf_counter() - t0
    # With everything in the first batch there is nothing left to time.
    results.put((count - first) / elapsed if count > first else float("nan"))


def _wake_receiver(peer_name: str, ep: Any, count: int, results: Any, ready: Any) -> None:
    """Receive count timestamps; report how long after each was taken it arrived."""
    recv, clock, unpack = PEERS[peer_name].recv_raw, time.perf_counter, _STAMP.unpack
    ready.set()
    delays = []
    for _ in range(count):
        msg = recv(ep)
        delays.append(clock() - unpack(msg)[0])
    results.put(delays)


def _echo(peer_name: str, requests: Any, replies: Any, count: int, ready: Any) -> None:
    p = PEERS[peer_name]
    ready.set()
    for _ in range(count):
        p.send_raw(replies, p.recv_raw(requests))


class _Workload:
    """Helper processes per round: ``prepare()`` starts them and waits until
    they are ready, so process start-up is never measured; ``run()`` is timed;
    ``finish()`` joins them."""

    def __init__(self, peer: str, payload: int, count: int) -> None:
        self.peer = PEERS[peer]
        self.name = peer
        self.size = payload
        self.count = count
        self.procs: List[Any] = []

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        ready = _ctx.Event()
        proc = _ctx.Process(target=target, args=(self.name, *args, ready))
        proc.start()
        self.procs.append(proc)
        if not ready.wait(60):
            raise RuntimeError(f"{self.name} helper process did not start")

    def finish(self) -> None:
        for proc in self.procs:
            proc.join(60)
        self.procs = []


class OneWay(_Workload):
    """One producer process sends ``count`` messages of one kind to one
    consumer process.  ``run()`` releases the producer and returns the rate in
    messages per second the consumer measured, from the first message in hand
    to the last, so that start-up and the time to fill the pipeline are not
    counted (for any peer).

    Both ends are fresh processes each round, forked from a parent that moves
    no messages itself, so that no peer inherits the state another peer's
    traffic left in the allocator.  (It matters: after a round of
    mp.Queue, glibc trimmed and regrew the heap around every 32 KiB bytes
    object a receiving process made, and ringbuf's rate for that row fell from
    about 180k to 60k messages a second.)"""

    def __init__(self, peer: str, payload: int, count: int, kind: str = "bytes") -> None:
        super().__init__(peer, payload, count)
        if kind == "batch" and count % BATCH:
            raise ValueError(f"a batched count must be a multiple of {BATCH}")
        if count < 2:
            raise ValueError("count must be at least 2: the first message starts the clock")
        self.kind = kind
        self.payload = KINDS[kind](payload)
        self.ep = self.peer.make(payload)

    def prepare(self) -> None:
        self.finish()
        self.go, self.results = _ctx.Event(), _ctx.Queue()
        self._start(_consumer, self.ep, self.kind, self.count, self.results)
        self._start(_producer, self.ep, self.kind, self.payload, self.count, self.go)

    def run(self) -> float:
        self.go.set()
        rate: float = self.results.get(timeout=600)
        return rate

    def dispose(self) -> None:
        self.finish()
        self.peer.dispose(self.ep)


class PingPong(_Workload):
    """Round trips to an echo process; ``run()`` returns each trip's seconds."""

    def __init__(self, peer: str, payload: int, count: int) -> None:
        super().__init__(peer, payload, count)
        self.payload = b"x" * payload
        self.requests, self.replies = self.peer.make(payload), self.peer.make(payload)

    def prepare(self) -> None:
        self.finish()
        self._start(_echo, self.requests, self.replies, self.count)

    def run(self) -> List[float]:
        send, recv, payload = self.peer.send_raw, self.peer.recv_raw, self.payload
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


_STAMP = struct.Struct("<d")


class WakeUp(_Workload):
    """The wake path: a receiver process parked on an empty endpoint, and the
    time from just before a send to the moment its receive returns.

    This process sleeps ``pause`` before each send, long enough for the
    receiver to give up spinning and park.  Each message carries the
    sender's ``time.perf_counter()`` (CLOCK_MONOTONIC, the same clock in
    every process); ``run()`` returns each delay in seconds.
    """

    def __init__(self, peer: str, count: int, pause: float = 0.002) -> None:
        super().__init__(peer, _STAMP.size, count)
        self.pause = pause
        self.ep = self.peer.make(_STAMP.size)

    def prepare(self) -> None:
        self.finish()
        self.results = _ctx.Queue()
        self._start(_wake_receiver, self.ep, self.count, self.results)

    def run(self) -> List[float]:
        send, ep, clock, sleep, pack = self.peer.send_raw, self.ep, time.perf_counter, time.sleep, _STAMP.pack
        for _ in range(self.count):
            sleep(self.pause)
            send(ep, pack(clock()))
        delays: List[float] = self.results.get(timeout=60)
        return delays

    def dispose(self) -> None:
        self.finish()
        self.peer.dispose(self.ep)


class Comparison:
    """The same workload on several peers, measured in alternating rounds.

    Measuring one peer's rounds and then the other's lets the machine change
    in between (the load of a shared machine moves by tens of percent within
    a minute); interleaving them gives both the same conditions, so their
    ratio means something.  Each round runs every peer once, starting with a
    different one each time.
    """

    def __init__(self, workloads: Dict[str, Any]) -> None:
        self.workloads = workloads
        self.results: Dict[str, List[Any]] = {peer: [] for peer in workloads}
        self._rounds = 0

    def prepare(self) -> None:
        for wl in self.workloads.values():
            wl.prepare()

    def run(self) -> None:
        peers = list(self.workloads)
        k = self._rounds % len(peers)
        for peer in peers[k:] + peers[:k]:
            self.results[peer].append(self.workloads[peer].run())
            self.workloads[peer].finish()
        self._rounds += 1

    def dispose(self) -> None:
        for wl in self.workloads.values():
            wl.dispose()


def _mn_producer(peer_name: str, ep: Any, payload: bytes, count: int, go: Any, ready: Any) -> None:
    send = PEERS[peer_name].send_raw
    ready.set()
    go.wait()
    for _ in range(count):
        send(ep, payload)


def _mn_consumer(peer_name: str, ep: Any, results: Any, ready: Any) -> None:
    recv = PEERS[peer_name].recv_raw
    ready.set()
    n = 0
    while recv(ep):  # an empty message is the stop signal
        n += 1
    results.put(n)


class ManyToMany:
    """``producers`` processes send ``count`` messages in all to ``consumers``
    processes through one endpoint.  ``run()`` returns messages per second,
    timed from the start signal until every consumer has had its stop signal
    (sent after the last producer finished).  For peers that allow several
    readers and writers on one endpoint (not mp.Pipe)."""

    def __init__(self, peer: str, payload: int, count: int, producers: int, consumers: int) -> None:
        if peer == "mp.Pipe":
            raise ValueError("a Pipe end is not safe for several readers or writers")
        self.peer, self.name = PEERS[peer], peer
        self.payload = b"x" * max(1, payload)  # never empty: empty means stop
        self.count, self.nprod, self.ncons = count, producers, consumers
        self.ep = self.peer.make(payload)
        self.procs: List[Any] = []

    def prepare(self) -> None:
        self.finish()
        self.go, self.results = _ctx.Event(), _ctx.Queue()
        share = [self.count // self.nprod + (i < self.count % self.nprod) for i in range(self.nprod)]
        starts: List[Tuple[Callable[..., None], Tuple[Any, ...]]] = [
            (_mn_consumer, (self.name, self.ep, self.results)) for _ in range(self.ncons)
        ]
        starts += [(_mn_producer, (self.name, self.ep, self.payload, n, self.go)) for n in share]
        for target, args in starts:
            ready = _ctx.Event()
            proc = _ctx.Process(target=target, args=(*args, ready))
            proc.start()
            if not ready.wait(60):
                raise RuntimeError(f"{self.name} helper process did not start")
            self.procs.append(proc)

    def run(self) -> float:
        t0 = time.perf_counter()
        self.go.set()
        for proc in self.procs[self.ncons:]:
            proc.join()
        for _ in range(self.ncons):
            self.peer.send_raw(self.ep, b"")
        got = sum(self.results.get(timeout=600) for _ in range(self.ncons))
        elapsed = time.perf_counter() - t0
        if got != self.count:
            raise RuntimeError(f"{self.name}: {got} of {self.count} messages arrived")
        return self.count / elapsed

    def finish(self) -> None:
        for proc in self.procs:
            proc.join(60)
        self.procs = []

    def dispose(self) -> None:
        self.finish()
        self.peer.dispose(self.ep)


def memcpy_bandwidth(nbytes: int = 16 << 20, region: int = 256 << 20, copies: int = 48) -> float:
    """Memory copy bandwidth, in bytes per second, for copies that do not stay
    in cache, as a message passing through a ring does not.

    Copies ``nbytes`` from one source into successive slots of a destination
    ``region`` bytes long (several times any last-level cache), cycling, and
    divides by the median time per copy.  With ``region == nbytes`` the same
    two buffers are copied between again and again, which measures the cache
    rather than memory when they fit in it.
    """
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.zeros(max(region, nbytes), dtype=np.uint8)  # zeros: pages already touched below
    dst[::4096] = 1
    slots = len(dst) // nbytes
    times = []
    for i in range(copies):
        off = (i % slots) * nbytes
        t0 = time.perf_counter()
        np.copyto(dst[off:off + nbytes], src)
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times)


def percentile(xs: List[float], q: float) -> float:
    """The q-th percentile (0..100) of xs, by nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def median(xs: List[float]) -> float:
    return statistics.median(xs)


# -- the command line: python -m ringbuf bench ---------------------------------

#: (workload label, kind, payload bytes, messages per round at scale 1)
QUICK = [
    ("one-way 64 B", "bytes", 64, 100_000),
    ("small dict", "object", 0, 30_000),
    ("batched 64 B", "batch", 64, 256 * BATCH),
    ("float32 array 1 MiB", "array", 1 << 20, 200),
]
SWEEP = [(f"one-way {n} B", "bytes", n, c) for n, c in [
    (8, 100_000), (64, 100_000), (512, 100_000), (4096, 50_000), (32768, 10_000),
    (262144, 2_000), (1 << 20, 400), (16 << 20, 30),
]]
ARRAY_SWEEP = [
    ("float32 array 4 KiB", "array", 4096, 50_000),
    ("float32 array 64 KiB", "array", 65536, 10_000),
    ("float32 array 1 MiB", "array", 1 << 20, 400),
    ("float32 array 16 MiB", "array", 16 << 20, 40),
]
FULL = SWEEP + [
    ("small dict", "object", 0, 50_000),
    ("batched 64 B", "batch", 64, 512 * BATCH),
] + ARRAY_SWEEP


def _one_way(kind: str, payload: int, count: int) -> Callable[[str], OneWay]:
    def make(peer: str) -> OneWay:
        return OneWay(peer, payload, count, kind=kind)

    return make


def _median_times(factor: float) -> Callable[[List[Any]], float]:
    """Median of per-round rates, times factor (bytes per message, or 1)."""

    def figure(rates: List[Any]) -> float:
        return median(rates) * factor

    return figure


def _trip_figure(q: Optional[float]) -> Callable[[List[Any]], float]:
    """Median (q None) or q-th percentile of all round trips, in microseconds."""

    def figure(rounds: List[Any]) -> float:
        trips = [t for r in rounds for t in r]
        return (median(trips) if q is None else percentile(trips, q)) * 1e6

    return figure


def _many(m: int, count: int) -> Callable[[str], ManyToMany]:
    def make(peer: str) -> ManyToMany:
        return ManyToMany(peer, 64, count, m, m)

    return make


#: Peers that cannot run a workload: a Pipe end takes one reader and one writer.
SINGLE_ENDED = {"mp.Pipe"}


def _compare(make: Callable[[str], Any], peers: List[str], rounds: int) -> Dict[str, List[Any]]:
    cmp = Comparison({p: make(p) for p in peers})
    try:
        for _ in range(rounds):
            cmp.prepare()
            cmp.run()
    finally:
        cmp.dispose()
    return cmp.results


def run_suite(full: bool = False, scale: float = 1.0, rounds: int = 3, peers: Optional[List[str]] = None,
              progress: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Every workload on every peer, in alternating rounds; one result dict
    per (workload, peer): figure, unit, and ratio against mp.Queue."""
    peers = peers or list(PEERS)
    trips = max(10, int(5_000 * scale))
    # (label, how to make the workload for a peer, unit, figure from per-round results, higher is better)
    plan: List[Tuple[str, Callable[[str], Any], str, Callable[[List[Any]], float], bool]] = []
    for label, kind, payload, count in (FULL if full else QUICK):
        n = max(2, int(count * scale))
        if kind == "batch":
            n = max(2, n // BATCH) * BATCH
        in_bytes = kind == "array" or (kind == "bytes" and payload >= 1 << 20)
        plan.append((label, _one_way(kind, payload, n), "B/s" if in_bytes else "msg/s",
                     _median_times(payload if in_bytes else 1), True))

    def ping(count: int) -> Callable[[str], PingPong]:
        return lambda peer: PingPong(peer, 64, count)

    def wake(count: int) -> Callable[[str], WakeUp]:
        return lambda peer: WakeUp(peer, count)

    plan.append(("ping-pong 64 B, median", ping(trips), "us", _trip_figure(None), False))
    if full:
        for m in (2, 4):
            plan.append((f"{m}x{m} 64 B", _many(m, max(2 * m, int(100_000 * scale))), "msg/s",
                         _median_times(1), True))
    if full:
        plan.append(("wake-up of a parked receiver, median", wake(max(10, trips // 20)), "us",
                     _trip_figure(None), False))

    results: List[Dict[str, Any]] = []
    for i, (label, make, unit, figure, higher) in enumerate(plan, 1):
        if progress:
            progress(f"[{i}/{len(plan)}] {label}")
        these = [p for p in peers if not (label[0].isdigit() and p in SINGLE_ENDED)]  # "2x2 ...", "4x4 ..."
        per_peer = _compare(make, these, rounds)
        for peer in these:
            results.append({"workload": label, "peer": peer, "figure": figure(per_peer[peer]), "unit": unit,
                            "higher_is_better": higher})
            if label == "ping-pong 64 B, median":  # the same trips give the tail too
                results.append({"workload": "ping-pong 64 B, p99", "peer": peer,
                                "figure": _trip_figure(99)(per_peer[peer]), "unit": "us", "higher_is_better": False})
    if full:
        results.append({"workload": "memcpy 16 MiB", "peer": "numpy", "figure": memcpy_bandwidth(),
                        "unit": "B/s", "higher_is_better": True})
    base = {r["workload"]: r["figure"] for r in results if r["peer"] == "mp.Queue"}
    for r in results:
        b = base.get(r["workload"])
        if b and r["peer"] != "mp.Queue" and r["figure"] > 0:
            r["vs_mp_queue"] = r["figure"] / b if r["higher_is_better"] else b / r["figure"]
    return results


def format_table(results: List[Dict[str, Any]]) -> str:
    lines = [f"{'workload':<34} {'peer':<11} {'figure':>20}  {'vs mp.Queue':>11}"]
    for r in results:
        ratio = f"{r['vs_mp_queue']:.1f}x" if "vs_mp_queue" in r else ""
        lines.append(f"{r['workload']:<34} {r['peer']:<11} {r['figure']:>16,.1f} {r['unit']:<5} {ratio:>9}")
    return "\n".join(lines)


def plot(results: List[Dict[str, Any]], path: str) -> None:
    """Throughput against payload size for every peer (the --full sweeps):
    raw bytes as solid lines, numpy arrays dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'ringbuf[peers]'") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    peers = list(dict.fromkeys(r["peer"] for r in results))
    colors = {peer: f"C{i}" for i, peer in enumerate(peers)}
    for sweep, style, what in ((SWEEP, "-", "bytes"), (ARRAY_SWEEP, "--", "arrays")):
        sizes = {label: n for label, _, n, _ in sweep}
        for peer in peers:
            pts = sorted((sizes[r["workload"]], r["figure"] * (1 if r["unit"] == "B/s" else sizes[r["workload"]]))
                         for r in results if r["peer"] == peer and r["workload"] in sizes)
            if len(pts) > 1:
                ax.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], style, marker="o", color=colors[peer],
                        label=f"{peer}, {what}")
    if not ax.lines:
        raise RuntimeError("--plot draws the payload sweeps: run with --full")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("payload (bytes)")
    ax.set_ylabel("throughput (MB/s)")
    ax.set_title("one producer, one consumer")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
