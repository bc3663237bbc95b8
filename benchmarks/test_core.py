"""One producer and one consumer process passing 64-byte messages, and a
ping-pong round trip, on ringbuf and multiprocessing.Queue.

    pytest benchmarks/ --benchmark-only
"""

from __future__ import annotations

from benchmarks.conftest import compare, record
from ringbuf import _bench

ONE_WAY_COUNT = 100_000
PING_PONG_COUNT = 5_000


def test_one_way_64_bytes(benchmark):
    results = compare(benchmark, "one-way 64 B",
                      lambda peer: _bench.OneWay(peer, payload=64, count=ONE_WAY_COUNT), rounds=5)
    for peer, rates in results.items():
        record("one-way 64 B", peer, _bench.median(rates), "msg/s", True, rates)


def test_ping_pong_64_bytes(benchmark):
    results = compare(benchmark, "ping-pong 64 B",
                      lambda peer: _bench.PingPong(peer, payload=64, count=PING_PONG_COUNT), rounds=5)
    for peer, rounds in results.items():
        trips = [t for r in rounds for t in r]
        record("ping-pong 64 B, median", peer, _bench.median(trips) * 1e6, "us", False,
               [_bench.median(r) * 1e6 for r in rounds])
        record("ping-pong 64 B, p99", peer, _bench.percentile(trips, 99) * 1e6, "us", False)
