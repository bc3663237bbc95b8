"""Benchmark workloads shared by ``benchmarks/`` (pytest-benchmark).

Each workload runs the same traffic through any *peer*: ringbuf's channel or
another cross-process transport.  A peer is a small adapter that makes an
endpoint and moves bytes, objects and (if it can) batches through it; worker
processes look the adapter up by name.

Every end of every workload is a worker process; the process that runs the
bench only starts them, releases them and waits for their results, each wait
bounded by the workload's ``timeout``.  A worker that fails or is still
running when time is up is killed and the round raises :class:`PeerFailed`,
which :class:`Comparison` records against that peer alone.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import multiprocessing.queues
import os
import pickle
import queue
import shutil
import statistics
import struct
import tempfile
import time
import uuid
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

import numpy as np

import ringbuf

#: Messages per batch in the batched workloads.
BATCH = 64

#: Seconds a round may take, by default, before its peer is reported as failed.
ROUND_TIMEOUT = 120.0


class PeerFailed(RuntimeError):
    """A peer's round did not finish: a worker failed, or did not finish in time."""


class Role(NamedTuple):
    """Which end of an endpoint a worker opens, for peers whose endpoints
    are opened in each process (``Peer.open``)."""

    side: str  # "send" or "recv"
    number: int = 0  # this worker's number among the workers on its side
    others: int = 1  # how many workers are on the other side


class Peer(NamedTuple):
    """How one transport makes an endpoint and moves messages through it.

    ``make`` runs in the bench's process.  For most peers what it returns is
    the endpoint itself, inherited by the forked workers.  A peer whose
    endpoints cannot be shared that way (a socket, a node of a middleware)
    returns an address instead and gives ``open``, which each worker calls
    to make its own end, and ``close``, which a worker calls on its end once
    every receiver of the round has reported (see ``_close``).
    """

    make: Callable[[int], Any]  # largest message in bytes -> endpoint, or address
    send: Callable[[Any, Any], None]  # objects
    recv: Callable[[Any], Any]
    send_raw: Callable[[Any, bytes], None]  # bytes
    recv_raw: Callable[[Any], bytes]
    send_batch: Optional[Callable[[Any, List[bytes]], None]]  # None: one at a time
    recv_batch: Optional[Callable[[Any, int], List[bytes]]]
    dispose: Callable[[Any], None]  # undoes make, in the bench's process
    open: Optional[Callable[[Any, Role], Any]] = None  # None: workers use what make returned
    close: Optional[Callable[[Any], None]] = None
    fresh: bool = False  # make a new address for every round
    many_to_many: bool = True  # several senders and several receivers at once (ManyToMany)
    parks: bool = True  # a receiver with nothing to take sleeps rather than polls
    # The "pages" workloads (numpy arrays whose every page the consumer
    # reads): how the peer sends such an array and how it receives one and
    # reads it (returning what read_pages returns).  None: ``send``, and
    # ``recv`` followed by read_pages on what it returned.
    send_array: Optional[Callable[[Any, Any], None]] = None
    recv_pages: Optional[Callable[[Any], float]] = None


def _depth(largest: int) -> int:
    """How many of its largest messages a workload's queue holds: up to
    1024, as many as fit 4 MiB for large ones, and at least two, so that a
    producer fills one while its consumer reads another.  Both ringbuf's
    ring and iceoryx2's subscriber buffer are sized by it."""
    return max(2, min(1024, (4 << 20) // (largest + 4096)))  # room for a pickle's framing


def _ring_size(largest: int) -> int:
    """Ring bytes for a workload whose largest message is ``largest``: 4 MiB,
    or more where that holds fewer than _depth(largest) such messages (the
    16 MiB rows: two), rounded up to whole pages (which loans and views
    need).  A ring larger than that is walked through all the same: for
    16 MiB messages, four would make every copy go to memory out of cache
    (docs/performance.md)."""
    return -(-max(1 << 22, _depth(largest) * (largest + 4096)) // 4096) * 4096


def _ringbuf_make(largest: int) -> ringbuf.Channel:
    return ringbuf.Channel(capacity=1024, size=_ring_size(largest))


def read_pages(a: Any) -> float:
    """Read one element of every 4096-byte page of array ``a`` (contiguous)
    where it lies, and its last element: what a consumer that uses a large
    array at least does.  Returns their sum."""
    flat = a.reshape(-1)
    if not flat.size:
        return 0.0
    step = max(1, 4096 // flat.itemsize)
    return float(flat[::step].sum()) + float(flat[-1])


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
        many_to_many=False,
    ),
}


# ringbuf's own variants, measured against plain ringbuf in rows of their own
# (bench --full): a receiver that selects over 2 or 8 channels of which the
# first carries the messages, through a Selector ("selector/N", the form for
# a loop) or the free function ("select/N"), unbuffered channels, and loans
# and views ("ringbuf/zero-copy").
def _select_make(n: int) -> Callable[[int], Any]:
    return lambda largest: ringbuf.Selector(*(_ringbuf_make(largest) for _ in range(n)))


def _select_dispose(sel: ringbuf.Selector) -> None:
    for ch in sel.channels:
        _ringbuf_dispose(ch)


def _select_peer(n: int, free: bool) -> Peer:
    if free:
        recv: Callable[[Any], Any] = lambda sel: ringbuf.select(*sel.channels)[1]
        recv_raw: Callable[[Any], bytes] = lambda sel: ringbuf.select_bytes(*sel.channels)[1]
    else:
        recv = lambda sel: sel.select()[1]
        recv_raw = lambda sel: sel.select_bytes()[1]
    return Peer(
        make=_select_make(n),
        send=lambda sel, obj: sel.channels[0].send(obj),
        recv=recv,
        send_raw=lambda sel, data: sel.channels[0].send_bytes(data),
        recv_raw=recv_raw,
        send_batch=None,
        recv_batch=None,
        dispose=_select_dispose,
    )


def _zc_send_raw(ch: ringbuf.Channel, data: bytes) -> None:
    if not data:  # a loan has at least one byte
        ch.send_bytes(data)
        return
    with ch.loan(len(data)) as buf:
        buf[:] = data


def _zc_recv_raw(ch: ringbuf.Channel) -> bytes:
    with ch.recv_bytes_view() as view:
        return bytes(view)


def _zc_send(ch: ringbuf.Channel, obj: Any) -> None:
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        _zc_send_array(ch, obj)
    else:
        ch.send(obj)


def _zc_send_array(ch: ringbuf.Channel, src: Any) -> None:
    """Fill a loaned array from ``src``: its one copy, outside the lock."""
    order = "F" if src.flags.f_contiguous and not src.flags.c_contiguous else "C"
    with ch.loan_array(src.shape, src.dtype, order) as arr:
        np.copyto(arr, src)


def _zc_recv_pages(ch: ringbuf.Channel) -> float:
    """Read the next array where it lies in the ring, through a view."""
    with ch.recv_view() as arr:
        seen = read_pages(arr)
        del arr  # nothing made from the view outlives the block: its room is freed at once
    return seen


VARIANTS: Dict[str, Peer] = {
    "selector/2": _select_peer(2, free=False),
    "selector/8": _select_peer(8, free=False),
    "select/2": _select_peer(2, free=True),
    "select/8": _select_peer(8, free=True),
    "unbuffered": Peer(
        make=lambda largest: ringbuf.Channel(capacity=0, size=max(1 << 22, 4 * (largest + 4096))),
        send=ringbuf.Channel.send,
        recv=ringbuf.Channel.recv,
        send_raw=ringbuf.Channel.send_bytes,
        recv_raw=ringbuf.Channel.recv_bytes,
        send_batch=None,
        recv_batch=None,
        dispose=_ringbuf_dispose,
    ),
    # Bytes through loan() and recv_bytes_view() (one copy in, one out, both
    # outside the lock), arrays through loan_array() (recv() copies them
    # out), and the "pages" workloads through loan_array() and recv_view():
    # the producer's copy into the ring is the only one.
    "ringbuf/zero-copy": Peer(
        make=_ringbuf_make,
        send=_zc_send,
        recv=ringbuf.Channel.recv,
        send_raw=_zc_send_raw,
        recv_raw=_zc_recv_raw,
        send_batch=None,
        recv_batch=None,
        dispose=_ringbuf_dispose,
        send_array=_zc_send_array,
        recv_pages=_zc_recv_pages,
    ),
}
PEERS.update(VARIANTS)


def _add_faster_fifo() -> None:
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


class _ZmqSender:
    """A PUSH socket per receiver, taken in turn: the sending end of pyzmq's
    many-to-many.  Turns are strict (not zmq's load balancing, which skips a
    receiver whose queue is full) so that ``others`` empty messages in a row
    give each receiver exactly one, behind everything this sender sent it."""

    __slots__ = ("sockets", "turn")

    def __init__(self, sockets: List[Any]) -> None:
        self.sockets = sockets
        self.turn = 0

    def send(self, data: bytes) -> None:
        turn = self.turn
        self.turn = (turn + 1) % len(self.sockets)
        self.sockets[turn].send(data)


def _add_pyzmq() -> None:
    try:
        import zmq
    except ImportError:
        return

    # Receivers bind ipc://DIR/<index>; senders connect to every receiver.
    # A sender may connect before its receiver has bound; zmq queues and
    # retries, here every 10 ms instead of its default 100 ms.
    def zmq_make(largest: int) -> str:
        return tempfile.mkdtemp(prefix="ringbuf-bench-zmq-")

    def zmq_open(where: str, role: Role) -> Any:
        ctx = zmq.Context()
        if role.side == "recv":
            sock = ctx.socket(zmq.PULL)
            sock.bind(f"ipc://{where}/{role.number}")
            return sock
        socks = []
        for k in range(role.others):
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.RECONNECT_IVL, 10)
            sock.connect(f"ipc://{where}/{k}")
            socks.append(sock)
        return socks[0] if role.others == 1 else _ZmqSender(socks)

    def zmq_close(ep: Any) -> None:
        socks = ep.sockets if isinstance(ep, _ZmqSender) else [ep]
        ctx = socks[0].context
        for sock in socks:
            sock.close(linger=-1)  # wait until everything queued is handed over
        ctx.term()

    PEERS["pyzmq"] = Peer(
        make=zmq_make,
        send=lambda sock, obj: sock.send_pyobj(obj),
        recv=lambda sock: sock.recv_pyobj(),
        send_raw=lambda sock, data: sock.send(data),
        recv_raw=lambda sock: sock.recv(),
        send_batch=None,
        recv_batch=None,
        dispose=lambda where: shutil.rmtree(where, ignore_errors=True),
        open=zmq_open,
        close=zmq_close,
        fresh=True,
    )


class _IoxEnd:
    """One process's end of an iceoryx2 publish/subscribe service: the node,
    the service and one port (a publisher or a subscriber)."""

    __slots__ = ("node", "service", "port")

    def __init__(self, node: Any, service: Any, port: Any) -> None:
        self.node, self.service, self.port = node, service, port


def _add_iceoryx2() -> None:
    try:
        # Typed as Any: the package's own type information differs between
        # its builds for different Pythons.
        iox: Any = importlib.import_module("iceoryx2")
    except ImportError:
        return
    iox.set_log_level(iox.LogLevel.Error)
    byte_slice = iox.Slice[ctypes.c_uint8]
    memmove, string_at = ctypes.memmove, ctypes.string_at

    # What make returns: a fresh service name, the largest message (with
    # room for a pickle's framing) and the depth of the queue, which is
    # ringbuf's ring's (_depth).  Every message is delivered: the
    # subscriber's buffer does not overwrite its oldest sample when full
    # (safe overflow off), and a publisher that finds it full retries until
    # there is room rather than dropping the sample.  No history: a
    # publisher waits for its subscribers before it starts.
    def iox_make(largest: int) -> Tuple[str, int, int]:
        return f"ringbuf-bench/{uuid.uuid4().hex}", largest + 4096, _depth(largest)

    def iox_open(made: Tuple[str, int, int], role: Role) -> _IoxEnd:
        name, largest, depth = made
        node = iox.NodeBuilder.new().create(iox.ServiceType.Ipc)
        service = (node.service_builder(iox.ServiceName.new(name))
                   .publish_subscribe(byte_slice)
                   .enable_safe_overflow(False)
                   .history_size(0)
                   .subscriber_max_buffer_size(depth)
                   .max_publishers(1)
                   .max_subscribers(1)
                   .open_or_create())
        if role.side == "recv":
            return _IoxEnd(node, service, service.subscriber_builder().buffer_size(depth).create())
        pub = (service.publisher_builder()
               .initial_max_slice_len(largest)
               .backpressure_strategy(iox.BackpressureStrategy.RetryUntilDelivered)
               .create())
        # A sample sent before the subscriber is there would be lost.
        deadline = time.monotonic() + 60
        while service.dynamic_config.number_of_subscribers < role.others:
            if time.monotonic() > deadline:
                raise PeerFailed("iceoryx2: no subscriber after 60 s")
            time.sleep(0.001)
        pub.update_connections()
        return _IoxEnd(node, service, pub)

    def iox_close(end: _IoxEnd) -> None:
        end.port.delete()
        end.node = end.service = end.port = None

    def iox_send_raw(end: _IoxEnd, data: bytes) -> None:
        n = len(data)
        port = end.port
        while True:
            sample = port.loan_slice_uninit(n)
            memmove(sample.payload_ptr, data, n)
            if sample.assume_init().send():  # how many subscribers it reached
                return
            # None, though the subscriber is there (0.10 does this now and
            # then after a publisher sat idle): that sample is lost, so
            # reconnect and send again.
            port.update_connections()

    def iox_recv_raw(end: _IoxEnd) -> bytes:
        receive = end.port.receive
        while True:  # iceoryx2's subscriber polls; its event service would wake it, at a cost per message
            sample = receive()
            if sample is not None:
                return string_at(sample.payload_ptr, sample.header.number_of_elements)

    # The "pages" workloads: a loaned slice filled from the array (the one
    # copy), and the subscriber reading the sample where it lies.  The
    # subscriber reads it as bytes: a slice of uint8 carries no dtype, and
    # one byte per page is what read_pages reads of it.
    def iox_send_array(end: _IoxEnd, src: Any) -> None:
        n = src.nbytes
        port = end.port
        while True:
            sample = port.loan_slice_uninit(n)
            dst = np.frombuffer((ctypes.c_char * n).from_address(sample.payload_ptr), dtype=src.dtype)
            np.copyto(dst.reshape(src.shape), src)
            del dst
            if sample.assume_init().send():
                return
            port.update_connections()  # as in iox_send_raw

    def iox_recv_pages(end: _IoxEnd) -> float:
        receive = end.port.receive
        while True:
            sample = receive()
            if sample is not None:
                break
        n = sample.header.number_of_elements
        seen = read_pages(np.frombuffer((ctypes.c_char * n).from_address(sample.payload_ptr), dtype=np.uint8))
        sample.delete()  # back to the publisher now, not when the next receive rebinds the name
        return seen

    def iox_send(end: _IoxEnd, obj: Any) -> None:
        iox_send_raw(end, pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))

    def iox_recv(end: _IoxEnd) -> Any:
        return pickle.loads(iox_recv_raw(end))

    PEERS["iceoryx2"] = Peer(
        make=iox_make,
        send=iox_send,
        recv=iox_recv,
        send_raw=iox_send_raw,
        recv_raw=iox_recv_raw,
        send_batch=None,
        recv_batch=None,
        dispose=lambda made: None,  # the service goes with its last node
        open=iox_open,
        close=iox_close,
        fresh=True,
        many_to_many=False,  # publish/subscribe: every subscriber gets every message
        parks=False,
        send_array=iox_send_array,
        recv_pages=iox_recv_pages,
    )


def _add_optional_peers() -> None:
    """Peers from the ``peers`` extra, when they are installed."""
    _add_faster_fifo()
    _add_pyzmq()
    _add_iceoryx2()


_add_optional_peers()

#: Payload kinds: what one message is, given its size in bytes.
KINDS: Dict[str, Callable[[int], Any]] = {
    "bytes": lambda n: b"x" * n,
    "batch": lambda n: b"x" * n,
    "object": lambda n: {"id": 12345, "name": "sensor-7", "ok": True, "values": [0.5, 1.5, 2.5]},
    "array": lambda n: np.ones(n // 4, dtype=np.float32),
    # A float32 array of which the consumer reads every page (Peer.send_array, Peer.recv_pages).
    "pages": lambda n: np.ones(n // 4, dtype=np.float32),
}


def _stamped(kind: str, payload: Any, i: int) -> Any:
    """The payload carrying message number i (for ``check`` runs)."""
    if kind == "object":
        return dict(payload, id=i)
    if kind == "array":
        a = payload.copy()
        a[0] = i
        return a
    return i.to_bytes(8, "little") + payload[8:]


def _stamp_of(kind: str, msg: Any) -> int:
    if kind == "object":
        return int(msg["id"])
    if kind == "array":
        return int(msg[0])
    return int.from_bytes(msg[:8], "little")


_ctx = multiprocessing.get_context("fork")


class _Signals(NamedTuple):
    """What the bench tells a round's workers."""

    go: Any  # event: start moving messages
    done: Any  # event: the bench has every result; ends may be closed
    timeout: float  # how long a worker waits for done before closing anyway


def _open(peer: Peer, made: Any, role: Role) -> Any:
    return peer.open(made, role) if peer.open is not None else made


def _close(peer: Peer, ep: Any, sig: _Signals) -> None:
    """Close a worker's end once every receiver has reported.

    Closing earlier loses messages on two peers: a PUSH socket closed with
    an unlimited linger, its context terminated and its process gone, left
    the PULL end short of a few hundred of 2000 messages in about one round
    in twelve (pyzmq 27.3, libzmq 4.3.5); an iceoryx2 subscriber drops what
    it has not yet taken from a publisher that is gone (0.10)."""
    if peer.close is not None:
        sig.done.wait(sig.timeout)
        peer.close(ep)


def _producer(peer_name: str, made: Any, kind: str, payload: Any, count: int, check: bool, sig: _Signals,
              cpu: Optional[int], ready: Any) -> None:
    _pin(cpu)
    peer = PEERS[peer_name]
    ep = _open(peer, made, Role("send"))
    ready.set()
    sig.go.wait()
    if kind == "batch" and peer.send_batch is not None:
        batch = [payload] * BATCH
        for b in range(count // BATCH):
            if check:
                batch = [_stamped(kind, payload, b * BATCH + j) for j in range(BATCH)]
            peer.send_batch(ep, batch)
    else:
        if kind == "pages":
            send = peer.send_array or peer.send
        else:
            send = peer.send if kind in ("object", "array") else peer.send_raw
        if check:
            for i in range(count):
                send(ep, _stamped(kind, payload, i))
        else:
            for _ in range(count):
                send(ep, payload)
    _close(peer, ep, sig)


def _consumer(peer_name: str, made: Any, kind: str, count: int, check: bool, sig: _Signals, results: Any,
              cpu: Optional[int], ready: Any) -> None:
    """Receive count messages; report the rate from the first in hand (the
    PAGES_WARMUP-th, for "pages") to the last and, in a check run, how many
    times each message number arrived."""
    _pin(cpu)
    peer = PEERS[peer_name]
    ep = _open(peer, made, Role("recv"))
    ready.set()
    sig.go.wait()
    seen = bytearray(count) if check else None
    if kind == "batch" and peer.recv_batch is not None:
        recv_batch = peer.recv_batch
        msgs = recv_batch(ep, BATCH)
        first = got = len(msgs)
        t0 = time.perf_counter()
        if seen is not None:
            while True:
                for m in msgs:
                    seen[_stamp_of(kind, m)] += 1
                if got >= count:
                    break
                msgs = recv_batch(ep, BATCH)
                got += len(msgs)
        else:
            while got < count:
                got += len(recv_batch(ep, BATCH))
    else:
        recv: Callable[[Any], Any]
        if kind == "pages":
            recv = peer.recv_pages or _then_read_pages(peer.recv)
        else:
            recv = peer.recv if kind in ("object", "array") else peer.recv_raw
        msg = recv(ep)
        # The "pages" rows start the clock later (see PAGES_WARMUP).
        first = max(1, min(PAGES_WARMUP, count - 1)) if kind == "pages" else 1
        for _ in range(first - 1):
            recv(ep)
        t0 = time.perf_counter()
        if seen is not None:
            seen[_stamp_of(kind, msg)] += 1
            for _ in range(count - 1):
                seen[_stamp_of(kind, recv(ep))] += 1
        else:
            for _ in range(count - first):
                recv(ep)
    elapsed = time.perf_counter() - t0
    # With everything in the first batch there is nothing left to time.
    results.put(((count - first) / elapsed if count > first else float("nan"), seen))
    _close(peer, ep, sig)


#: Messages of a "pages" round that the consumer takes before it starts the
#: clock: two laps of a ring of four messages.  The ends are fresh processes
#: every round, and the first lap of a ring or pool faults in every page of
#: it in each of them (for a 64 MiB ring, about 8 ms per 16 MiB message, a
#: fifth of a 100-message round); the memcpy these rows are compared with
#: writes to pages touched beforehand, and a long-lived process pays this once.
PAGES_WARMUP = 8


def _pin(cpu: Optional[int]) -> None:
    """Keep this worker process on that CPU (None: wherever the scheduler puts it)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def two_cores(sysfs: str = "/sys/devices/system/cpu") -> Optional[Tuple[int, int]]:
    """Two CPUs of this process's set on different cores (not threads of
    one core, where the topology under ``sysfs`` says so): where a pinned
    round puts its consumer and its producer.  None if there are no two
    such CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    for first in cpus:
        try:
            with open(f"{sysfs}/cpu{first}/topology/thread_siblings_list") as f:
                siblings = _cpu_list(f.read())
        except (OSError, ValueError):
            siblings = {first}
        for other in cpus:
            if other not in siblings:
                return first, other
    return None


def _cpu_list(text: str) -> Set[int]:
    """The CPUs of a list such as "0-3,8"."""
    cpus: Set[int] = set()
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _then_read_pages(recv: Callable[[Any], Any]) -> Callable[[Any], float]:
    return lambda ep: read_pages(recv(ep))


def _check_seen(name: str, seen: Any, total: int) -> None:
    """Every message number below total arrived exactly once."""
    counts = np.frombuffer(bytes(seen), dtype=np.uint8) if not isinstance(seen, np.ndarray) else seen
    if len(counts) != total or not (counts == 1).all():
        missing = int((counts == 0).sum())
        extra = int(counts[counts > 1].sum() - (counts > 1).sum())
        raise PeerFailed(f"{name}: {missing} of {total} messages missing, {extra} arrived more than once")


class _Workload:
    """Worker processes per round: ``prepare()`` starts them and waits until
    they are ready, so process start-up is never measured; ``run()`` releases
    them and waits for their results, and is timed; ``finish()`` joins them.

    Every wait is bounded by ``timeout`` seconds; when one runs out, or a
    worker dies, the workers are killed and :class:`PeerFailed` is raised.
    ``finish()`` kills whatever has not exited after a short grace."""

    def __init__(self, peer: str, payload: int, count: int, timeout: float = ROUND_TIMEOUT,
                 check: bool = False) -> None:
        self.peer = PEERS[peer]
        self.name = peer
        self.size = payload
        self.count = count
        self.timeout = timeout
        self.check = check
        self.procs: List[Any] = []
        self._made: List[Any] = []

    def _endpoints(self, n: int, largest: int) -> List[Any]:
        """This round's n endpoints (addresses, for a peer with ``open``):
        made once, or anew every round for a ``fresh`` peer."""
        if self._made and self.peer.fresh:
            self._dispose_endpoints()
        while len(self._made) < n:
            self._made.append(self.peer.make(largest))
        return self._made

    def _dispose_endpoints(self) -> None:
        made, self._made = self._made, []
        for ep in made:
            self.peer.dispose(ep)

    def _new_round(self) -> None:
        """Reap the last round's workers; new signals and results queue."""
        self.finish()
        self.sig = _Signals(_ctx.Event(), _ctx.Event(), self.timeout)
        self.go, self.results = self.sig.go, _ctx.Queue()

    def _start(self, *workers: Tuple[Callable[..., None], Tuple[Any, ...]]) -> None:
        """Start every worker, then wait until all of them are ready (they
        may need each other to open their ends)."""
        readies = []
        for target, args in workers:
            ready = _ctx.Event()
            proc = _ctx.Process(target=target, args=(self.name, *args, ready), daemon=True,
                                name=f"{self.name} {target.__name__.lstrip('_')}")
            proc.start()
            self.procs.append(proc)
            readies.append(ready)
        deadline = time.monotonic() + self.timeout
        for ready in readies:
            while not ready.wait(0.05):
                self._watch(deadline, "starting its workers")

    def _watch(self, deadline: float, what: str) -> None:
        """Raise PeerFailed (after killing the workers) if one of them died
        or time is up."""
        for proc in self.procs:
            if proc.exitcode not in (None, 0):
                code = proc.exitcode
                self.abort()
                raise PeerFailed(f"{self.name}: a worker exited with code {code} while {what}")
        if time.monotonic() > deadline:
            running = ", ".join(p.name.split(" ", 1)[1] for p in self.procs if p.exitcode is None)
            self.abort()
            raise PeerFailed(f"{self.name}: {what} took more than {self.timeout:g} s (still running: {running})")

    def _collect(self, n: int, what: str = "running") -> List[Any]:
        """n results from the workers, within the timeout."""
        deadline = time.monotonic() + self.timeout
        got: List[Any] = []
        while len(got) < n:
            try:
                got.append(self.results.get(timeout=0.05))
            except queue.Empty:
                self._watch(deadline, what)
        return got

    def abort(self) -> None:
        """Kill every worker of this round and reap it."""
        for proc in self.procs:
            if proc.exitcode is None:
                proc.kill()
        for proc in self.procs:
            proc.join(10)
        self.procs = []

    def finish(self, grace: float = 10.0) -> None:
        """Let the workers close their ends and join them; kill those still
        running after ``grace`` seconds."""
        if self.procs:
            self.sig.done.set()
        deadline = time.monotonic() + grace
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        self.abort()

    def dispose(self) -> None:
        self.finish()
        self._dispose_endpoints()


class OneWay(_Workload):
    """One producer process sends ``count`` messages of one kind to one
    consumer process.  ``run()`` releases both and returns the rate in
    messages per second the consumer measured, from the first message in hand
    to the last, so that start-up and the time to fill the pipeline are not
    counted (for any peer).

    Both ends are fresh processes each round, forked from a parent that moves
    no messages itself, so that no peer inherits the state another peer's
    traffic left in the allocator.  (It matters: after a round of
    mp.Queue, glibc trimmed and regrew the heap around every 32 KiB bytes
    object a receiving process made, and ringbuf's rate for that row fell from
    about 180k to 60k messages a second.)  The consumer, too, waits for the
    start signal, so that a peer whose receiver polls burns no CPU while
    another peer's round runs.

    With ``check``, every message carries its number and the round fails
    unless each arrived exactly once (slower: for tests, not figures).

    Kind ``"pages"`` sends a float32 array of ``payload`` bytes through the
    peer's ``send_array`` and receives it through ``recv_pages``, which reads
    one element of every page of it (see Peer): the consumer of a large array
    uses it, and a view of the ring costs nothing until it is read.

    With ``cpus`` (consumer's, producer's: the "pages" rows pin to
    ``two_cores()``), the consumer and the producer are each kept on a CPU
    of their own, for every peer alike.  Unpinned, a receiver woken from a
    park may be put on its sender's CPU and share it with the sender until
    the scheduler moves one of them away, some milliseconds later: on the
    development machine's virtual CPUs this happened at the start of about
    half of the zero-copy rounds, whose 50 to 150 ms it then slowed by a
    fifth, and never to a peer whose receiver polls and so is never woken.
    Pinned, a round measures the two processes passing messages, not where
    they were put.  Only for peers that run one thread per process: pinning
    a process pins every thread of it, and a helper thread (pyzmq's,
    mp.Queue's feeder) would share the CPU of the thread it serves."""

    def __init__(self, peer: str, payload: int, count: int, kind: str = "bytes", timeout: float = ROUND_TIMEOUT,
                 check: bool = False, cpus: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(peer, payload, count, timeout, check)
        if kind == "batch" and count % BATCH:
            raise ValueError(f"a batched count must be a multiple of {BATCH}")
        if count < 2:
            raise ValueError("count must be at least 2: the first message starts the clock")
        if check and kind == "pages":
            raise ValueError("a pages workload cannot be checked: its consumer only reads a few bytes of each page")
        if check and kind in ("bytes", "batch") and payload < 8:
            raise ValueError("a checked bytes payload needs at least 8 bytes for the message number")
        self.kind = kind
        self.payload = KINDS[kind](payload)
        self.cpus: Tuple[Optional[int], Optional[int]] = cpus or (None, None)

    def prepare(self) -> None:
        self._new_round()
        ep, = self._endpoints(1, self.size)
        self._start((_consumer, (ep, self.kind, self.count, self.check, self.sig, self.results, self.cpus[0])),
                    (_producer, (ep, self.kind, self.payload, self.count, self.check, self.sig, self.cpus[1])))

    def run(self) -> float:
        self.go.set()
        (rate, seen), = self._collect(1)
        if self.check:
            _check_seen(self.name, seen, self.count)
        return float(rate)


def _echo(peer_name: str, requests: Any, replies: Any, count: int, sig: _Signals, ready: Any) -> None:
    p = PEERS[peer_name]
    rq, rp = _open(p, requests, Role("recv")), _open(p, replies, Role("send"))
    ready.set()
    sig.go.wait()
    for _ in range(count):
        p.send_raw(rp, p.recv_raw(rq))
    _close(p, rq, sig)
    _close(p, rp, sig)


def _pinger(peer_name: str, requests: Any, replies: Any, payload: bytes, count: int, check: bool, sig: _Signals,
            results: Any, ready: Any) -> None:
    """Time count round trips to the echo process; in a check run, also count
    the replies that differ from their request."""
    p = PEERS[peer_name]
    rp, rq = _open(p, replies, Role("recv")), _open(p, requests, Role("send"))
    send, recv, clock = p.send_raw, p.recv_raw, time.perf_counter
    ready.set()
    sig.go.wait()
    trips = []
    wrong = 0
    if check:
        for i in range(count):
            msg = _stamped("bytes", payload, i)
            t0 = clock()
            send(rq, msg)
            wrong += recv(rp) != msg
            trips.append(clock() - t0)
    else:
        for _ in range(count):
            t0 = clock()
            send(rq, payload)
            recv(rp)
            trips.append(clock() - t0)
    results.put((trips, wrong))
    _close(p, rp, sig)
    _close(p, rq, sig)


class PingPong(_Workload):
    """Round trips between two worker processes, one of them an echo;
    ``run()`` returns each trip's seconds."""

    def __init__(self, peer: str, payload: int, count: int, timeout: float = ROUND_TIMEOUT,
                 check: bool = False) -> None:
        super().__init__(peer, payload, count, timeout, check)
        self.payload = b"x" * payload

    def prepare(self) -> None:
        self._new_round()
        requests, replies = self._endpoints(2, self.size)
        self._start((_echo, (requests, replies, self.count, self.sig)),
                    (_pinger, (requests, replies, self.payload, self.count, self.check, self.sig, self.results)))

    def run(self) -> List[float]:
        self.go.set()
        (trips, wrong), = self._collect(1)
        if wrong:
            raise PeerFailed(f"{self.name}: {wrong} of {self.count} replies differ from their request")
        return list(trips)


_STAMP = struct.Struct("<d")


def _wake_sender(peer_name: str, made: Any, count: int, pause: float, sig: _Signals, ready: Any) -> None:
    p = PEERS[peer_name]
    ep = _open(p, made, Role("send"))
    send, clock, sleep, pack = p.send_raw, time.perf_counter, time.sleep, _STAMP.pack
    ready.set()
    sig.go.wait()
    for _ in range(count):
        sleep(pause)
        send(ep, pack(clock()))
    _close(p, ep, sig)


def _wake_receiver(peer_name: str, made: Any, count: int, sig: _Signals, results: Any, ready: Any) -> None:
    """Receive count timestamps; report how long after each was taken it arrived."""
    p = PEERS[peer_name]
    ep = _open(p, made, Role("recv"))
    recv, clock, unpack = p.recv_raw, time.perf_counter, _STAMP.unpack
    ready.set()
    sig.go.wait()
    delays = []
    for _ in range(count):
        msg = recv(ep)
        delays.append(clock() - unpack(msg)[0])
    results.put(delays)
    _close(p, ep, sig)


class WakeUp(_Workload):
    """The wake path: a receiver process parked on an empty endpoint, and the
    time from just before a send to the moment its receive returns.

    The sending process sleeps ``pause`` before each send, long enough for
    the receiver to give up spinning and park.  Each message carries the
    sender's ``time.perf_counter()`` (CLOCK_MONOTONIC, the same clock in
    every process); ``run()`` returns each delay in seconds.  (A peer whose
    receiver polls, ``Peer.parks`` false, never parks: its figure here is
    the delay of a poll.)
    """

    def __init__(self, peer: str, count: int, pause: float = 0.002, timeout: float = ROUND_TIMEOUT) -> None:
        super().__init__(peer, _STAMP.size, count, timeout)
        self.pause = pause

    def prepare(self) -> None:
        self._new_round()
        ep, = self._endpoints(1, self.size)
        self._start((_wake_receiver, (ep, self.count, self.sig, self.results)),
                    (_wake_sender, (ep, self.count, self.pause, self.sig)))

    def run(self) -> List[float]:
        self.go.set()
        delays: List[float] = self._collect(1)[0]
        return delays


class Comparison:
    """The same workload on several peers, measured in alternating rounds.

    Measuring one peer's rounds and then the other's lets the machine change
    in between (the load of a shared machine moves by tens of percent within
    a minute); interleaving them gives both the same conditions, so their
    ratio means something.  Each round runs every peer once, starting with a
    different one each time.

    A peer whose round fails (:class:`PeerFailed`, or any error of its
    adapter) is recorded in ``failed`` with the reason, its workers are
    killed, and it sits out the remaining rounds; the others go on.
    """

    def __init__(self, workloads: Dict[str, Any]) -> None:
        self.workloads = workloads
        self.results: Dict[str, List[Any]] = {peer: [] for peer in workloads}
        self.failed: Dict[str, str] = {}
        self._rounds = 0

    def _fail(self, peer: str, error: Exception) -> None:
        self.failed[peer] = str(error) or type(error).__name__
        try:
            self.workloads[peer].abort()
        except Exception:  # the reason recorded is the first one
            pass

    def prepare(self) -> None:
        for peer, wl in self.workloads.items():
            if peer not in self.failed:
                try:
                    wl.prepare()
                except Exception as e:
                    self._fail(peer, e)

    def run(self) -> None:
        peers = list(self.workloads)
        k = self._rounds % len(peers)
        for peer in peers[k:] + peers[:k]:
            if peer in self.failed:
                continue
            wl = self.workloads[peer]
            try:
                self.results[peer].append(wl.run())
                wl.finish()
            except Exception as e:
                self._fail(peer, e)
        self._rounds += 1

    def dispose(self) -> None:
        for peer, wl in self.workloads.items():
            try:
                wl.dispose()
            except Exception as e:
                self.failed.setdefault(peer, f"cleaning up: {e}")


def _mn_producer(peer_name: str, made: Any, index: int, consumers: int, payload: bytes, first: int, count: int,
                 check: bool, sig: _Signals, ready: Any) -> None:
    """Send count messages, then one empty message (a stop) per consumer."""
    p = PEERS[peer_name]
    ep = _open(p, made, Role("send", index, consumers))
    send = p.send_raw
    ready.set()
    sig.go.wait()
    if check:
        for i in range(first, first + count):
            send(ep, _stamped("bytes", payload, i))
    else:
        for _ in range(count):
            send(ep, payload)
    for _ in range(consumers):
        send(ep, b"")
    _close(p, ep, sig)


def _mn_consumer(peer_name: str, made: Any, index: int, producers: int, total: int, check: bool, sig: _Signals,
                 results: Any, ready: Any) -> None:
    """Receive until one stop per producer has come; report the count (and,
    in a check run, how many times each message number arrived)."""
    p = PEERS[peer_name]
    ep = _open(p, made, Role("recv", index, producers))
    recv = p.recv_raw
    ready.set()
    sig.go.wait()
    n = stops = 0
    seen = bytearray(total) if check else None
    while stops < producers:
        msg = recv(ep)
        if not msg:
            stops += 1
        else:
            n += 1
            if seen is not None:
                seen[_stamp_of("bytes", msg)] += 1
    results.put((n, seen))
    _close(p, ep, sig)


class ManyToMany(_Workload):
    """``producers`` processes send ``count`` messages in all to ``consumers``
    processes.  ``run()`` returns messages per second, timed from the start
    signal until every consumer is done.

    Each producer ends with one empty message per consumer, and each consumer
    stops after one per producer.  On a shared FIFO endpoint the last message
    taken is then a stop that came after all the data, whichever consumer
    took which stop.  pyzmq has no shared endpoint: each consumer binds its
    own, each producer deals its messages to them in turn, and a producer's
    stops reach each consumer once, behind its data (zmq keeps order per
    connection).  For peers whose endpoint takes several readers and writers
    (``Peer.many_to_many``): not mp.Pipe, not iceoryx2's publish/subscribe."""

    def __init__(self, peer: str, payload: int, count: int, producers: int, consumers: int,
                 timeout: float = ROUND_TIMEOUT, check: bool = False) -> None:
        if not PEERS[peer].many_to_many:
            raise ValueError(f"{peer} cannot take several readers or writers on one endpoint")
        if check and payload < 8:
            raise ValueError("a checked payload needs at least 8 bytes for the message number")
        super().__init__(peer, payload, count, timeout, check)
        self.payload = b"x" * max(1, payload)  # never empty: empty means stop
        self.nprod, self.ncons = producers, consumers

    def prepare(self) -> None:
        self._new_round()
        ep, = self._endpoints(1, self.size)
        share = [self.count // self.nprod + (i < self.count % self.nprod) for i in range(self.nprod)]
        firsts = [sum(share[:i]) for i in range(self.nprod)]
        self._start(*[(_mn_consumer, (ep, k, self.nprod, self.count, self.check, self.sig, self.results))
                      for k in range(self.ncons)],
                    *[(_mn_producer, (ep, i, self.ncons, self.payload, firsts[i], share[i], self.check, self.sig))
                      for i in range(self.nprod)])

    def run(self) -> float:
        t0 = time.perf_counter()
        self.go.set()
        got = self._collect(self.ncons)
        elapsed = time.perf_counter() - t0
        n = sum(g[0] for g in got)
        if self.check:
            _check_seen(self.name, sum(np.frombuffer(bytes(g[1]), dtype=np.uint8).astype(np.int64) for g in got),
                        self.count)
        if n != self.count:
            raise PeerFailed(f"{self.name}: {n} of {self.count} messages arrived")
        return self.count / elapsed


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


#: The name under which memcpy runs beside the peers of the "pages" rows.
MEMCPY = "memcpy"


class MemcpyRounds:
    """memcpy as if it were a peer of a Comparison: each round measures
    :func:`memcpy_bandwidth` for copies of ``payload`` bytes, in this
    process, between the rounds of the peers (so that a ratio against it
    pairs figures taken under the same conditions), and returns it in
    messages of ``payload`` bytes per second, as OneWay does."""

    def __init__(self, payload: int, copies: int = 48) -> None:
        self.payload, self.copies = payload, copies
        self.procs: List[Any] = []

    def prepare(self) -> None:
        pass

    def run(self) -> float:
        return memcpy_bandwidth(self.payload, copies=self.copies) / self.payload

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def dispose(self) -> None:
        pass


def pages(payload: int, count: int, timeout: float = ROUND_TIMEOUT,
          cpus: Optional[Tuple[int, int]] = None) -> Callable[[str], Any]:
    """The "pages" workload for a peer (OneWay, kind "pages"), or, for
    MEMCPY, memcpy of the same payload: what ``Comparison`` takes.  Its
    rounds are pinned to ``cpus`` (consumer's, producer's), by default
    ``two_cores()``; memcpy runs in this process as it is."""
    cpus = cpus or two_cores()

    def make(peer: str) -> Any:
        if peer == MEMCPY:
            return MemcpyRounds(payload)
        return OneWay(peer, payload, count, kind="pages", timeout=timeout, cpus=cpus)

    return make


#: Who runs the "pages" rows: ringbuf copying (send, recv) and in place (loan_array,
#: recv_view), iceoryx2 in place (loaned slices, samples read where they lie), memcpy.
PAGES_PEERS = ["ringbuf", "ringbuf/zero-copy", "iceoryx2", MEMCPY]


def percentile(xs: List[float], q: float) -> float:
    """The q-th percentile (0..100) of xs, by nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def median(xs: List[float]) -> float:
    return statistics.median(xs)


# -- the command line: python -m ringbuf bench ---------------------------------

#: (workload label, kind, payload bytes, messages per round at scale 1)
QUICK = [
    ("one-way 8 B", "bytes", 8, 100_000),
    ("one-way 64 B", "bytes", 64, 100_000),
    ("one-way 256 B", "bytes", 256, 100_000),
    ("small dict", "object", 0, 30_000),
    ("batched 64 B", "batch", 64, 256 * BATCH),
    ("float32 array 1 MiB", "array", 1 << 20, 200),
]
SWEEP = [(f"one-way {n} B", "bytes", n, c) for n, c in [
    (8, 100_000), (64, 100_000), (256, 100_000), (512, 100_000), (4096, 50_000), (32768, 10_000),
    (262144, 2_000), (1 << 20, 400), (16 << 20, 30),
]]
ARRAY_SWEEP = [
    ("float32 array 4 KiB", "array", 4096, 50_000),
    ("float32 array 64 KiB", "array", 65536, 10_000),
    ("float32 array 1 MiB", "array", 1 << 20, 400),
    ("float32 array 16 MiB", "array", 16 << 20, 40),
]
#: The zero-copy rows (issue 15): (label, payload bytes, messages per round at scale 1).
PAGES = [
    ("float32 array 1 MiB, pages read", 1 << 20, 2000),
    ("float32 array 16 MiB, pages read", 16 << 20, 200),
]
FULL = SWEEP + [
    ("small dict", "object", 0, 50_000),
    ("batched 64 B", "batch", 64, 512 * BATCH),
] + ARRAY_SWEEP


def _one_way(kind: str, payload: int, count: int, timeout: float) -> Callable[[str], OneWay]:
    def make(peer: str) -> OneWay:
        return OneWay(peer, payload, count, kind=kind, timeout=timeout)

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


def _many(m: int, payload: int, count: int, timeout: float) -> Callable[[str], ManyToMany]:
    def make(peer: str) -> ManyToMany:
        return ManyToMany(peer, payload, count, m, m, timeout=timeout)

    return make


def _compare(make: Callable[[str], Any], peers: List[str], rounds: int) -> Tuple[Dict[str, List[Any]], Dict[str, str]]:
    """Per-round results of every peer that finished its rounds, and the
    reason for every peer that failed."""
    workloads: Dict[str, Any] = {}
    failed: Dict[str, str] = {}
    for p in peers:
        try:
            workloads[p] = make(p)
        except Exception as e:
            failed[p] = str(e) or type(e).__name__
    cmp = Comparison(workloads)
    try:
        for _ in range(rounds):
            cmp.prepare()
            cmp.run()
    finally:
        cmp.dispose()
    failed.update(cmp.failed)
    return {p: r for p, r in cmp.results.items() if p not in failed}, failed


#: How a row's figure relates to ringbuf's, in the "ringbuf vs" column.
RINGBUF = "ringbuf"


def run_suite(full: bool = False, scale: float = 1.0, rounds: int = 3, peers: Optional[List[str]] = None,
              progress: Optional[Callable[[str], None]] = None, timeout: float = ROUND_TIMEOUT,
              only: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Every workload on every peer, in alternating rounds; one result dict
    per (workload, peer).

    Each has ``status``: "ok" with ``figure`` and ``unit``; "failed" with
    ``reason`` (the peer failed or hung in a round: its workers were killed
    after ``timeout`` seconds at most); or "n/a" (the peer cannot run that
    workload).  An "ok" row also has its ratio against mp.Queue
    (``vs_mp_queue``) and ringbuf's ratio against it (``ringbuf_vs``), both
    above 1 when the first named is ahead.  ``only`` keeps the workloads
    whose labels it lists.  The zero-copy rows (PAGES, with ``full``) also
    have a row for memcpy (peer MEMCPY), measured in the same rounds."""
    peers = peers or [p for p in PEERS if p not in VARIANTS]
    trips = max(10, int(5_000 * scale))
    # (label, how to make the workload for a peer, unit, figure from per-round results, higher is better,
    #  which peers can run it)
    plan: List[Tuple[str, Callable[[str], Any], str, Callable[[List[Any]], float], bool, Callable[[str], bool]]] = []
    pinned: Dict[str, Tuple[int, int]] = {}  # workload -> the CPUs its rounds are pinned to
    anyone: Callable[[str], bool] = lambda peer: peer in PEERS and peer not in VARIANTS
    for label, kind, payload, count in (FULL if full else QUICK):
        n = max(2, int(count * scale))
        if kind == "batch":
            n = max(2, n // BATCH) * BATCH
        in_bytes = kind == "array" or (kind == "bytes" and payload >= 1 << 20)
        plan.append((label, _one_way(kind, payload, n, timeout), "B/s" if in_bytes else "msg/s",
                     _median_times(payload if in_bytes else 1), True, anyone))

    def ping(count: int) -> Callable[[str], PingPong]:
        return lambda peer: PingPong(peer, 64, count, timeout=timeout)

    def wake(count: int) -> Callable[[str], WakeUp]:
        return lambda peer: WakeUp(peer, count, timeout=timeout)

    def fans(peer: str) -> bool:
        return peer in PEERS and PEERS[peer].many_to_many and peer not in VARIANTS

    def parks(peer: str) -> bool:
        return peer in PEERS and PEERS[peer].parks and peer not in VARIANTS

    def among(*names: str) -> Callable[[str], bool]:
        return lambda peer: peer in names

    plan.append(("ping-pong 64 B, median", ping(trips), "us", _trip_figure(None), False, anyone))
    plan.append(("2x2 256 B", _many(2, 256, max(4, int(100_000 * scale)), timeout), "msg/s", _median_times(1), True,
                 fans))
    if full:
        for m in (2, 4):
            plan.append((f"{m}x{m} 64 B", _many(m, 64, max(2 * m, int(100_000 * scale)), timeout), "msg/s",
                         _median_times(1), True, fans))
        plan.append(("wake-up of a parked receiver, median", wake(max(10, trips // 20)), "us",
                     _trip_figure(None), False, parks))
        # ringbuf against its own variants (the peer column names the variant).
        plan.append(("one-way 64 B, a receiver's select", _one_way("bytes", 64, max(2, int(100_000 * scale)), timeout),
                     "msg/s", _median_times(1), True, among(RINGBUF, "selector/2", "selector/8", "select/2", "select/8")))
        plan.append(("wake-up of a parked select, median", wake(max(10, trips // 20)), "us", _trip_figure(None),
                     False, among(RINGBUF, "selector/8")))
        plan.append(("ping-pong 64 B, unbuffered, median", ping(max(10, trips // 5)), "us", _trip_figure(None), False,
                     among(RINGBUF, "unbuffered")))
        # Arrays whose every page the consumer reads: ringbuf copying and in
        # place, iceoryx2 in place, and memcpy, in the same alternating rounds.
        cores = two_cores()
        for label, payload, count in PAGES:
            plan.append((label, pages(payload, max(2, int(count * scale)), timeout, cores), "B/s",
                         _median_times(payload), True, among(*PAGES_PEERS)))
            if cores:
                pinned[label] = cores
    if only is not None:
        unknown = set(only) - {p[0] for p in plan}
        if unknown:
            raise ValueError(f"only: no workload named {sorted(unknown)}; have {[p[0] for p in plan]}")
        plan = [p for p in plan if p[0] in only]

    results: List[Dict[str, Any]] = []
    for i, (label, make, unit, figure, higher, can) in enumerate(plan, 1):
        if progress:
            progress(f"[{i}/{len(plan)}] {label}")
        these = [p for p in peers + [v for v in VARIANTS if v not in peers] if can(p)]
        these += [MEMCPY] if can(MEMCPY) else []  # not a transport: in the rows that ask for it
        per_peer, failed = _compare(make, these, rounds)
        others = [p for p in these if p not in PEERS]  # memcpy
        for peer in peers + [v for v in VARIANTS if can(v) and v not in peers] + others:
            row: Dict[str, Any] = {"workload": label, "peer": peer, "unit": unit, "higher_is_better": higher}
            if peer not in these:
                results.append({**row, "status": "n/a"})
            elif peer in failed:
                results.append({**row, "status": "failed", "reason": failed[peer]})
            else:
                results.append({**row, "status": "ok", "figure": figure(per_peer[peer])})
                if label in pinned and peer in PEERS:  # memcpy runs in this process, unpinned
                    results[-1]["pinned"] = list(pinned[label])  # [consumer's CPU, producer's CPU]
            if label == "ping-pong 64 B, median":  # the same trips give the tail too
                tail = {**results[-1], "workload": "ping-pong 64 B, p99"}
                if tail["status"] == "ok":
                    tail["figure"] = _trip_figure(99)(per_peer[peer])
                results.append(tail)
    if full and (only is None or "memcpy 16 MiB" in only):
        results.append({"workload": "memcpy 16 MiB", "peer": "numpy", "status": "ok", "figure": memcpy_bandwidth(),
                        "unit": "B/s", "higher_is_better": True})
    for key, base_peer, mine_is_base in (("vs_mp_queue", "mp.Queue", False), ("ringbuf_vs", RINGBUF, True)):
        base = {r["workload"]: r["figure"] for r in results if r["peer"] == base_peer and r["status"] == "ok"}
        for r in results:
            b = base.get(r["workload"])
            if not b or r["peer"] == base_peer or r["status"] != "ok" or not r["figure"] > 0:
                continue
            ratio = r["figure"] / b if r["higher_is_better"] else b / r["figure"]
            r[key] = 1 / ratio if mine_is_base else ratio
    return results


def format_table(results: List[Dict[str, Any]]) -> str:
    pw = max([11] + [len(r["peer"]) for r in results])  # "ringbuf/zero-copy" is longer
    lines = [f"{'workload':<36} {'peer':<{pw}} {'figure':>22}  {'vs mp.Queue':>11}  {'ringbuf vs':>10}"]
    for r in results:
        if r["status"] == "ok":
            figure = f"{r['figure']:>16,.1f} {r['unit']:<5}"
        else:
            figure = f"{r['status']:>16} {'':<5}"
        vs_queue = f"{r['vs_mp_queue']:.2f}x" if "vs_mp_queue" in r else ""
        vs_ringbuf = f"{r['ringbuf_vs']:.2f}x" if "ringbuf_vs" in r else ""
        lines.append(f"{r['workload']:<36} {r['peer']:<{pw}} {figure} {vs_queue:>11}  {vs_ringbuf:>10}".rstrip())
    pinned = {r["workload"]: r["pinned"] for r in results if "pinned" in r}
    if pinned:
        lines.append("")
        lines += [f"{w}: every transport's consumer pinned to CPU {c}, producer to CPU {p} (memcpy: not pinned)"
                  for w, (c, p) in pinned.items()]
    reasons = [f"  {r['workload']}, {r['peer']}: {r['reason']}" for r in results if r["status"] == "failed"]
    if reasons:
        lines += ["", "failed:"] + reasons
    return "\n".join(lines)


def plot(results: List[Dict[str, Any]], path: str) -> None:
    """Throughput against payload size for every peer (the --full sweeps):
    raw bytes as solid lines, numpy arrays dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib (or this project's peers extra)") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    peers = list(dict.fromkeys(r["peer"] for r in results))
    colors = {peer: f"C{i}" for i, peer in enumerate(peers)}
    for sweep, style, what in ((SWEEP, "-", "bytes"), (ARRAY_SWEEP, "--", "arrays")):
        sizes = {label: n for label, _, n, _ in sweep}
        for peer in peers:
            pts = sorted((sizes[r["workload"]], r["figure"] * (1 if r["unit"] == "B/s" else sizes[r["workload"]]))
                         for r in results
                         if r["peer"] == peer and r["workload"] in sizes and r.get("status", "ok") == "ok")
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
