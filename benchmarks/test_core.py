"""One producer and one consumer process, and a ping-pong round trip, each run
beside multiprocessing.Queue on the same workload.

    pytest benchmarks/ --benchmark-only

Figures are medians over the rounds; the ratio table at the end compares the
peers measured in this same run.
"""

from __future__ import annotations

import pytest

from ringbuf import _bench

PEERS = ["ringbuf", "mp.Queue"]
ONE_WAY_COUNT = 100_000
PING_PONG_COUNT = 5_000


@pytest.mark.parametrize("peer", PEERS)
def test_one_way_64_bytes(benchmark, record, peer):
    wl = _bench.OneWay(peer, payload=64, count=ONE_WAY_COUNT)
    benchmark.group = "one-way 64 B"
    try:
        benchmark.pedantic(wl.run, setup=wl.prepare, rounds=5, iterations=1)
    finally:
        wl.dispose()
    rate = ONE_WAY_COUNT / benchmark.stats.stats.median
    benchmark.extra_info["messages_per_second"] = rate
    record("one-way 64 B", peer, rate, "msg/s", True)


@pytest.mark.parametrize("peer", PEERS)
def test_ping_pong_64_bytes(benchmark, record, peer):
    wl = _bench.PingPong(peer, payload=64, count=PING_PONG_COUNT)
    trips = []
    benchmark.group = "ping-pong 64 B"

    def run():
        trips.extend(wl.run())

    try:
        benchmark.pedantic(run, setup=wl.prepare, rounds=5, iterations=1)
    finally:
        wl.dispose()
    med, p99 = _bench.median(trips) * 1e6, _bench.percentile(trips, 99) * 1e6
    benchmark.extra_info.update(median_us=med, p99_us=p99)
    record("ping-pong 64 B, median", peer, med, "us", False)
    record("ping-pong 64 B, p99", peer, p99, "us", False)
