"""ringbuf against its own variants, in alternating rounds: a receiver that
selects over 2 or 8 channels (one of them carrying 64-byte messages from
another process) through a Selector and through the free select_bytes(),
the wake-up of a Selector parked on 8 channels, and a ping-pong through
unbuffered channels beside the buffered one.

    pytest benchmarks/test_variants.py --benchmark-only
"""

from __future__ import annotations

from benchmarks.conftest import compare, record
from ringbuf import _bench


def test_one_way_64_bytes_through_a_select(benchmark):
    workload = "one-way 64 B, select"
    results = compare(benchmark, workload, lambda peer: _bench.OneWay(peer, payload=64, count=100_000), rounds=5,
                      peers=["ringbuf", "selector/2", "selector/8", "select/2", "select/8"])
    for peer, rates in results.items():
        record(workload, peer, _bench.median(rates), "msg/s", True, rates)


def test_wake_up_of_a_select_parked_on_eight_channels(benchmark):
    workload = "wake-up, parked select"
    results = compare(benchmark, workload, lambda peer: _bench.WakeUp(peer, count=300), rounds=5,
                      peers=["ringbuf", "selector/8"])
    for peer, rounds in results.items():
        record(workload, peer, _bench.median([t for r in rounds for t in r]) * 1e6, "us", False,
               [_bench.median(r) * 1e6 for r in rounds])


def test_ping_pong_through_unbuffered_channels(benchmark):
    workload = "ping-pong 64 B, unbuffered"
    results = compare(benchmark, workload, lambda peer: _bench.PingPong(peer, payload=64, count=5_000), rounds=5,
                      peers=["ringbuf", "unbuffered"])
    for peer, rounds in results.items():
        record(workload, peer, _bench.median([t for r in rounds for t in r]) * 1e6, "us", False,
               [_bench.median(r) * 1e6 for r in rounds])
