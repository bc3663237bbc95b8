"""Objects, arrays and batches, one producer to one consumer, on ringbuf and
multiprocessing.Queue; and the machine's memcpy bandwidth, which the array
rows are compared against.

    pytest benchmarks/ --benchmark-only
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import compare, record
from ringbuf import _bench


def one_way(benchmark, workload, kind, payload, count, rounds=5, scale=1):
    """Record each peer's median rate (messages per second, times scale)."""
    results = compare(benchmark, workload,
                      lambda peer: _bench.OneWay(peer, payload=payload, count=count, kind=kind), rounds)
    for peer, rates in results.items():
        rates = [r * scale for r in rates]
        record(workload, peer, _bench.median(rates), "B/s" if scale > 1 else "msg/s", True, rates)


def test_small_dict(benchmark):
    # More rounds than the others: this is the row closest to its target.
    one_way(benchmark, "small dict", "object", 0, 50_000, rounds=9)


def test_batched_64_bytes(benchmark):
    one_way(benchmark, "batched 64 B", "batch", 64, 512 * _bench.BATCH)


@pytest.mark.parametrize("mib,count", [(1, 400), (16, 50)])
def test_float32_array(benchmark, mib, count):
    one_way(benchmark, f"float32 array {mib} MiB", "array", mib << 20, count, rounds=3, scale=mib << 20)


def test_memcpy_bandwidth(benchmark):
    # The array rows are held against memory bandwidth: 16 MiB copies into a
    # 256 MiB region, as messages move through a ring larger than the cache.
    benchmark.group = "memcpy"
    bandwidth = benchmark.pedantic(_bench.memcpy_bandwidth, rounds=3, iterations=1)
    record("memcpy 16 MiB", "numpy", bandwidth, "B/s", True)
    # For reference only: the same two buffers again and again, which on a
    # machine with a 32 MiB cache measures the cache.
    record("memcpy 16 MiB, in cache", "numpy", _bench.memcpy_bandwidth(region=16 << 20), "B/s", True)
