"""Objects, arrays and batches, one producer to one consumer, on ringbuf and
multiprocessing.Queue; and the machine's memcpy bandwidth, which the array
rows are compared against.

    pytest benchmarks/ --benchmark-only
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import compare, record
from ringbuf import _bench


def one_way(benchmark, workload, kind, payload, count, rounds=5):
    """Median messages per second of each peer."""
    results = compare(benchmark, workload,
                      lambda peer: _bench.OneWay(peer, payload=payload, count=count, kind=kind), rounds)
    return {peer: _bench.median(rates) for peer, rates in results.items()}


def test_small_dict(benchmark):
    for peer, rate in one_way(benchmark, "small dict", "object", 0, 50_000).items():
        record("small dict", peer, rate, "msg/s", True)


def test_batched_64_bytes(benchmark):
    for peer, rate in one_way(benchmark, "batched 64 B", "batch", 64, 512 * _bench.BATCH).items():
        record("batched 64 B", peer, rate, "msg/s", True)


@pytest.mark.parametrize("mib,count", [(1, 400), (16, 50)])
def test_float32_array(benchmark, mib, count):
    workload = f"float32 array {mib} MiB"
    for peer, rate in one_way(benchmark, workload, "array", mib << 20, count, rounds=3).items():
        record(workload, peer, rate * (mib << 20), "B/s", True)


def test_memcpy_bandwidth(benchmark):
    # The array rows are held against memory bandwidth: 16 MiB copies into a
    # 256 MiB region, as messages move through a ring larger than the cache.
    benchmark.group = "memcpy"
    bandwidth = benchmark.pedantic(_bench.memcpy_bandwidth, rounds=3, iterations=1)
    record("memcpy 16 MiB", "numpy", bandwidth, "B/s", True)
    # For reference only: the same two buffers again and again, which on a
    # machine with a 32 MiB cache measures the cache.
    record("memcpy 16 MiB, in cache", "numpy", _bench.memcpy_bandwidth(region=16 << 20), "B/s", True)
