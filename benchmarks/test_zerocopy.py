"""Zero-copy (issue 15): one producer and one consumer process pass float32
arrays of 1 MiB and 16 MiB, and the consumer reads every page of each (one
element per 4096 bytes, where the array lies).  The two processes of each
round are pinned to CPUs of two different cores, for every peer (see
_bench.OneWay).  In alternating rounds:

* ringbuf: ``send(src)`` and ``recv()``, a copy in and a copy out;
* ringbuf/zero-copy: ``with ch.loan_array(shape, np.float32) as a:
  np.copyto(a, src)`` and ``with ch.recv_view() as a:``, the producer's copy
  into the ring the only one;
* iceoryx2 (if installed): loaned slices filled from the array, samples read
  where they lie, its own zero-copy;
* memcpy: the copy bandwidth of the same payload into memory out of cache
  (``_bench.memcpy_bandwidth``), measured between the peers' rounds.

The summary holds ringbuf/zero-copy's figure against each of the others
(conftest.ZEROCOPY_TARGETS).

    pytest benchmarks/test_zerocopy.py --benchmark-only
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import compare, record
from ringbuf import _bench

PEERS = [p for p in _bench.PAGES_PEERS if p in _bench.PEERS or p == _bench.MEMCPY]


@pytest.mark.parametrize("label,payload,count", _bench.PAGES, ids=["1MiB", "16MiB"])
def test_float32_array_pages_read(benchmark, label, payload, count):
    results = compare(benchmark, label, _bench.pages(payload, count), rounds=7, peers=PEERS)
    for peer, rates in results.items():
        rates = [r * payload for r in rates]
        record(label, peer, _bench.median(rates), "B/s", True, rates)
