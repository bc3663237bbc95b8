"""One producer and one consumer process passing 8-, 64- and 256-byte
messages, two producers and two consumers passing 256-byte messages, and a
ping-pong round trip, on ringbuf and its peers (see conftest.PEERS).

    pytest benchmarks/ --benchmark-only
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import PEERS, compare, record
from ringbuf import _bench

ONE_WAY_COUNT = 100_000
PING_PONG_COUNT = 5_000


@pytest.mark.parametrize("size", [8, 64, 256])
def test_one_way_bytes(benchmark, size):
    workload = f"one-way {size} B"
    results = compare(benchmark, workload,
                      lambda peer: _bench.OneWay(peer, payload=size, count=ONE_WAY_COUNT), rounds=5)
    for peer, rates in results.items():
        record(workload, peer, _bench.median(rates), "msg/s", True, rates)


def test_two_producers_two_consumers_256_bytes(benchmark):
    # Not for mp.Pipe (one reader, one writer) nor iceoryx2 (every subscriber gets every message).
    peers = [p for p in PEERS if _bench.PEERS[p].many_to_many]
    results = compare(benchmark, "2x2 256 B",
                      lambda peer: _bench.ManyToMany(peer, 256, ONE_WAY_COUNT, producers=2, consumers=2),
                      rounds=5, peers=peers)
    for peer, rates in results.items():
        record("2x2 256 B", peer, _bench.median(rates), "msg/s", True, rates)


def test_ping_pong_64_bytes(benchmark):
    results = compare(benchmark, "ping-pong 64 B",
                      lambda peer: _bench.PingPong(peer, payload=64, count=PING_PONG_COUNT), rounds=5)
    for peer, rounds in results.items():
        trips = [t for r in rounds for t in r]
        record("ping-pong 64 B, median", peer, _bench.median(trips) * 1e6, "us", False,
               [_bench.median(r) * 1e6 for r in rounds])
        record("ping-pong 64 B, p99", peer, _bench.percentile(trips, 99) * 1e6, "us", False)
