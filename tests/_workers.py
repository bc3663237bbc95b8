"""Process targets for the multi-process tests.

They live in an importable module (not in test files) so that children
started with spawn or forkserver can import them by name.
"""

from __future__ import annotations

import random
import struct
import zlib
from typing import Any, List, Tuple

import ringbuf

# A test message: producer id, sequence number, payload length, CRC-32 of the
# payload, then the payload.
HEADER = struct.Struct("<IIII")


def make_message(producer: int, seq: int, rng: random.Random, max_payload: int) -> bytes:
    payload = rng.randbytes(rng.randint(0, max_payload))
    return HEADER.pack(producer, seq, len(payload), zlib.crc32(payload)) + payload


def parse_message(msg: bytes) -> Tuple[int, int]:
    """(producer, seq) of an intact message; raises AssertionError if torn."""
    producer, seq, length, crc = HEADER.unpack_from(msg)
    payload = msg[HEADER.size:]
    assert len(payload) == length, f"message {producer}/{seq}: length {len(payload)} != {length}"
    assert zlib.crc32(payload) == crc, f"message {producer}/{seq}: checksum mismatch"
    return producer, seq


def produce(ch: ringbuf.Channel, producer: int, count: int, max_payload: int) -> None:
    rng = random.Random(producer)
    for seq in range(count):
        ch.send_bytes(make_message(producer, seq, rng, max_payload))


def consume(ch: ringbuf.Channel, results: Any) -> None:
    """Receive until the channel is closed and drained; report what arrived."""
    got: List[Tuple[int, int]] = []
    error = None
    try:
        for msg in ch.iter_bytes():
            got.append(parse_message(msg))
    except AssertionError as e:
        error = str(e)
    results.put((got, error))


def recv_one(ch: ringbuf.Channel, timeout: Any, results: Any) -> None:
    """Block in one receive; report its outcome as (kind, value)."""
    try:
        results.put(("message", ch.recv_bytes(timeout=timeout)))
    except ringbuf.RingbufError as e:
        results.put((type(e).__name__, str(e)))


def send_one(ch: ringbuf.Channel, data: bytes, timeout: Any, results: Any) -> None:
    """Block in one send; report its outcome as (kind, value)."""
    try:
        ch.send_bytes(data, timeout=timeout)
        results.put(("sent", len(data)))
    except ringbuf.RingbufError as e:
        results.put((type(e).__name__, str(e)))


def echo(requests: ringbuf.Channel, replies: ringbuf.Channel) -> None:
    """Send back every message until requests is closed."""
    for msg in requests.iter_bytes():
        replies.send_bytes(msg)


def pool_task(ch: ringbuf.Channel, n: int) -> int:
    ch.send_bytes(n.to_bytes(8, "little"))
    return n


class Point:
    """A user-defined class, importable by spawned children."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def echo_objects(requests: ringbuf.Channel, replies: ringbuf.Channel) -> None:
    """Receive objects and send each back, until requests is closed."""
    for obj in requests:
        replies.send(obj)


def json_dumps(obj: Any) -> bytes:
    import json

    return json.dumps(obj).encode()


def json_loads(data: bytes) -> Any:
    import json

    return json.loads(data)


def send_bytes_many(ch: ringbuf.Channel, msgs: List[bytes], timeout: Any, results: Any) -> None:
    """Send a batch; report ("sent", n) or (exception name, how many went through)."""
    try:
        ch.send_bytes_many(msgs, timeout=timeout)
        results.put(("sent", len(msgs)))
    except ringbuf.RingbufError as e:
        results.put((type(e).__name__, getattr(e, "sent", None)))


def queue_put_all(q: Any, items: List[Any]) -> None:
    for item in items:
        q.put(item)


def queue_put_then_exit_at_once(q: Any, item: Any) -> None:
    """Put, then leave without any interpreter clean-up (no atexit, no flush)."""
    import os

    q.put(item)
    os._exit(0)


def queue_produce(q: Any, producer: int, count: int) -> None:
    for seq in range(count):
        q.put((producer, seq, b"x" * (seq % 97)))


def queue_consume(q: Any, results: Any, stop: Any) -> None:
    """Get (producer, seq, payload) items until the `stop` sentinel."""
    got = []
    while True:
        item = q.get()
        if item == stop:
            break
        producer, seq, payload = item
        assert payload == b"x" * (seq % 97)
        got.append((producer, seq))
    results.put(got)


def joinable_worker(q: Any, results: Any) -> None:
    while True:
        item = q.get()
        if item is None:
            q.task_done()
            return
        results.put(item * 2)
        q.task_done()


_initialised_queue: Any = None


def pool_init(q: Any) -> None:
    global _initialised_queue
    _initialised_queue = q


def pool_put(n: int) -> int:
    _initialised_queue.put(n)
    return n


def pool_put_to(q: Any, n: int) -> int:
    q.put(n)
    return n


def die_at(ch: ringbuf.Channel, point: str, op: str, payload: bytes) -> None:
    """SIGKILL this process at `point` inside the next send or receive."""
    import os

    ch._h.debug_crash_at(point)
    if op == "send":
        ch.send_bytes(payload)
    else:
        ch.recv_bytes()
    os._exit(3)  # not reached: the crash point kills the process first


LOG_RECORD = struct.Struct("<IIB")  # producer, seq, 1 = intact / 0 = torn


def torture_producer(ch: ringbuf.Channel, producer: int, log_path: str, crash_after: int, point: str) -> None:
    """Send numbered, checksummed messages forever, logging each one whose
    send returned.  With crash_after >= 0, die at `point` inside send number
    crash_after."""
    import os

    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    rng = random.Random(producer)
    seq = 0
    while True:
        if seq == crash_after:
            ch._h.debug_crash_at(point)
        ch.send_bytes(make_message(producer, seq, rng, 3000))
        os.write(fd, LOG_RECORD.pack(producer, seq, 1))
        seq += 1


def torture_consumer(ch: ringbuf.Channel, log_path: str) -> None:
    """Receive until the channel is closed and drained, logging every message."""
    import os

    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for msg in ch.iter_bytes():
        try:
            producer, seq = parse_message(msg)
            os.write(fd, LOG_RECORD.pack(producer, seq, 1))
        except (AssertionError, struct.error):
            os.write(fd, LOG_RECORD.pack(0, 0, 0))


def hold_lock_and_wait(ch: ringbuf.Channel, ready: Any) -> None:
    """Take the channel's lock and keep it until killed."""
    import time

    ch._h.debug_hold_lock()
    ready.set()
    time.sleep(60)


def send_forever(ch: ringbuf.Channel) -> None:
    import time

    try:
        while True:
            ch.send_bytes(b"x" * 64)
            time.sleep(0.0005)
    except ringbuf.Closed:
        pass


def park_many(full: ringbuf.Channel, empty: ringbuf.Channel, n: int, ready: Any) -> None:
    """Park n threads sending on `full` and n receiving on `empty`, then wait
    to be killed."""
    import threading
    import time

    for _ in range(n):
        threading.Thread(target=full.send_bytes, args=(b"never",), daemon=True).start()
        threading.Thread(target=empty.recv_bytes, daemon=True).start()
    ready.set()
    time.sleep(120)


def recv_with_failing_alloc(ch: ringbuf.Channel, results: Any) -> None:
    """Receive a long message, but fail to allocate the memory for it."""
    from ringbuf._lowlevel import FOREVER

    def no_memory(n: int) -> Any:
        raise MemoryError(n)

    try:
        ch._h.recv(FOREVER, no_memory)
        results.put("received")
    except MemoryError:
        results.put("MemoryError")


def produce_and_close(ch: ringbuf.Channel, n: int) -> None:
    """Send 0..n-1, then close: the last sender closes its channel."""
    for i in range(n):
        ch.send(i)
    ch.close()


def select_producer(chans: List[ringbuf.Channel], producer: int, count: int) -> None:
    """Send (producer, seq) numbered messages, each through a select over
    sends on two of the channels."""
    mine = [chans[producer % len(chans)], chans[(producer + 1) % len(chans)]]
    for seq in range(count):
        ringbuf.select(*[(ch, (producer, seq)) for ch in mine], timeout=60)


def select_consumer(chans: List[ringbuf.Channel], results: Any) -> None:
    """Receive through selects over every channel until all are closed and
    drained; report (channel index, producer, seq) in the order received."""
    got: List[Tuple[int, int, int]] = []
    open_chans = list(chans)
    while open_chans:
        ch, value = ringbuf.select(*open_chans, timeout=60)
        if value is ringbuf.CLOSED:
            open_chans.remove(ch)
            continue
        got.append((chans.index(ch), value[0], value[1]))
    results.put(got)


def send_then_report_received(ch: ringbuf.Channel, obj: Any, results: Any) -> None:
    """Send obj, then report how many messages the channel had received
    by the moment the send returned."""
    ch.send(obj)
    results.put(("sent", ch.stats().received))


def join_queue(q: Any, results: Any) -> None:
    q.join()
    results.put("joined")


def feed_channels(chans: List[ringbuf.Channel], producer: int, per: int) -> None:
    """Send (producer, channel index, seq) on every channel, per messages each."""
    for seq in range(per):
        for c, ch in enumerate(chans):
            ch.send((producer, c, seq))


def close_later(ch: ringbuf.Channel, delay: float) -> None:
    import time

    time.sleep(delay)
    ch.close()


def async_echo(ch: ringbuf.Channel, reply: ringbuf.Channel) -> None:
    """In a fork child: await one message, reply with it and the number of
    helper threads this process runs."""
    import asyncio

    from ringbuf import _async

    async def main() -> None:
        obj = await ch.recv_async(timeout=10)
        reply.send((obj, _async.helper_threads()))

    asyncio.run(main())


def async_wait_forever(ch: ringbuf.Channel, n: int) -> None:
    import asyncio

    async def main() -> None:
        await asyncio.gather(*(ch.recv_async() for _ in range(n)))

    asyncio.run(main())


# -- loans and views -------------------------------------------------------


def loan_produce(ch: ringbuf.Channel, producer: int, count: int, max_payload: int) -> None:
    """produce(), writing each message through a loan."""
    rng = random.Random(producer)
    for seq in range(count):
        msg = make_message(producer, seq, rng, max_payload)
        with ch.loan(len(msg)) as buf:
            buf[:] = msg


def view_consume(ch: ringbuf.Channel, results: Any) -> None:
    """Read messages through views until the channel is closed and drained;
    put the (producer, seq) of each, in order, on results."""
    got = []
    while True:
        try:
            with ch.recv_bytes_view() as view:
                got.append(parse_message(bytes(view)))
        except ringbuf.Closed:
            break
    results.put(got)


def hold_loan_and_wait(ch: ringbuf.Channel, nbytes: int, ready: Any, child: Any = None) -> None:
    """Take a loan, write half of it, and keep it until killed.  With a
    queue `child`, first fork a child that sleeps and put its pid there."""
    import os
    import time

    with ch.loan(nbytes) as buf:
        buf[:nbytes // 2] = b"x" * (nbytes // 2)
        if child is not None:
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            child.put(pid)
        ready.set()
        time.sleep(60)


def hold_view_and_wait(ch: ringbuf.Channel, ready: Any, results: Any) -> None:
    """Take a view, report its bytes, and keep it until killed."""
    import time

    with ch.recv_bytes_view() as view:
        results.put(bytes(view))
        ready.set()
        time.sleep(60)


def torture_loan_producer(ch: ringbuf.Channel, producer: int, log_path: str) -> None:
    """torture_producer through loans: a message is logged once its block ended."""
    import os

    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    rng = random.Random(producer)
    seq = 0
    while True:
        msg = make_message(producer, seq, rng, 3000)
        with ch.loan(len(msg)) as buf:
            half = len(msg) // 2
            buf[:half] = msg[:half]
            buf[half:] = msg[half:]
        os.write(fd, LOG_RECORD.pack(producer, seq, 1))
        seq += 1


def torture_view_consumer(ch: ringbuf.Channel, log_path: str) -> None:
    """torture_consumer through views.  A message is logged after its view
    ended: one killed inside the view is delivered again to another."""
    import os

    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    while True:
        try:
            with ch.recv_bytes_view() as view:
                try:
                    record = LOG_RECORD.pack(*parse_message(bytes(view)), 1)
                except (AssertionError, struct.error):
                    record = LOG_RECORD.pack(0, 0, 0)
        except ringbuf.Closed:
            return
        os.write(fd, record)


def crash_in_recv(ch: ringbuf.Channel, point: str) -> None:
    """Receive one message, dying at `point` inside it."""
    ch._h.debug_crash_at(point)
    ch.recv_bytes(timeout=10)


#: How many times counted_frombuffer ran in this process.
frombuffer_calls = [0]


def counted_frombuffer(buf: Any) -> Any:
    """An array over buf, counting the calls: a pickled rebuilder that is
    not numpy's, which a receive must run for every message."""
    import numpy as np

    frombuffer_calls[0] += 1
    return np.frombuffer(buf, dtype=np.uint8)


class CountedArray:
    """Pickles as counted_frombuffer over its bytes, out of band."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)

    def __reduce_ex__(self, protocol: Any) -> Any:
        import pickle

        return counted_frombuffer, (pickle.PickleBuffer(self.data),)
