"""The cost of one ``send_bytes`` and one ``recv_bytes`` in a single process:
fill a channel, then drain it, and divide by the number of messages.

No other process takes part, so nothing waits, spins or parks: this is the
floor of the per-message path (Python frames, the cffi call and its release
of the GIL, the lock, the copy, and on the receiving side the new ``bytes``).

    pytest benchmarks/test_per_message.py --benchmark-only
"""

from __future__ import annotations

import time

import pytest

import ringbuf
from benchmarks.conftest import record
from ringbuf import _bench

FILL = 1024  # messages per fill: the channel's capacity
ROUNDS = 200


@pytest.mark.parametrize("size", [8, 256])
def test_send_and_recv_bytes_in_one_process(benchmark, size):
    ch = ringbuf.Channel(capacity=FILL, size=max(1 << 22, 4 * FILL * (size + 64)))
    data = b"x" * size
    send, recv, clock = ch.send_bytes, ch.recv_bytes, time.perf_counter_ns
    sends, recvs = [], []

    def fill_then_drain():
        t0 = clock()
        for _ in range(FILL):
            send(data)
        t1 = clock()
        for _ in range(FILL):
            recv()
        sends.append((t1 - t0) / FILL)
        recvs.append((clock() - t1) / FILL)

    benchmark.group = f"one process, {size} B"
    try:
        benchmark.pedantic(fill_then_drain, rounds=ROUNDS, iterations=1)
    finally:
        ch.close()
        ch.unlink()
    record(f"send_bytes {size} B, one process", "ringbuf", _bench.median(sends), "ns", False)
    record(f"recv_bytes {size} B, one process", "ringbuf", _bench.median(recvs), "ns", False)
