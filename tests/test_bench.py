"""The benchmark workloads and python -m ringbuf bench run in a tiny mode, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ringbuf import _bench

# The transports bench compares by default: every peer but ringbuf's own variants.
TRANSPORTS = [p for p in _bench.PEERS if p not in _bench.VARIANTS]


@pytest.mark.parametrize("peer", sorted(_bench.PEERS))
@pytest.mark.parametrize("kind,payload,count", [("bytes", 64, 500), ("object", 0, 300), ("array", 4096, 50),
                                                ("batch", 64, 4 * _bench.BATCH)])
def test_one_way_workload(peer, kind, payload, count):
    wl = _bench.OneWay(peer, payload=payload, count=count, kind=kind)
    try:
        for _ in range(2):
            wl.prepare()
            assert wl.run() > 0
            wl.finish()
            assert wl.procs == []
    finally:
        wl.dispose()


def test_workload_arguments_are_checked():
    with pytest.raises(ValueError, match="multiple of"):
        _bench.OneWay("ringbuf", payload=64, count=_bench.BATCH + 1, kind="batch")
    with pytest.raises(ValueError, match="at least 2"):
        _bench.OneWay("ringbuf", payload=64, count=1)


@pytest.mark.parametrize("peer", ["ringbuf", "mp.Queue"])
def test_many_to_many_workload_counts_every_message(peer):
    wl = _bench.ManyToMany(peer, 64, 400, producers=3, consumers=2)
    try:
        for _ in range(2):
            wl.prepare()
            assert wl.run() > 0  # raises if any message went missing
            wl.finish()
    finally:
        wl.dispose()
    with pytest.raises(ValueError, match="Pipe"):
        _bench.ManyToMany("mp.Pipe", 64, 10, 2, 2)


def test_comparison_alternates_the_peers():
    cmp = _bench.Comparison({p: _bench.OneWay(p, payload=64, count=200) for p in sorted(_bench.PEERS)})
    try:
        for _ in range(3):
            cmp.prepare()
            cmp.run()
    finally:
        cmp.dispose()
    assert cmp.failed == {}
    assert {p: len(r) for p, r in cmp.results.items()} == {p: 3 for p in _bench.PEERS}
    assert all(t > 0 for r in cmp.results.values() for t in r)


@pytest.mark.parametrize("kind,payload", [("bytes", 4096), ("array", 65536)])
def test_zero_copy_variant_delivers_every_message_once(kind, payload):
    # Bytes through loan() and recv_bytes_view(), arrays through loan_array().
    wl = _bench.OneWay("ringbuf/zero-copy", payload=payload, count=300, kind=kind, check=True)
    try:
        for _ in range(2):
            wl.prepare()
            assert wl.run() > 0  # raises if a message went missing or came twice
            wl.finish()
    finally:
        wl.dispose()


def test_read_pages_reads_one_element_per_page_and_the_last():
    import numpy as np

    a = np.arange(3000, dtype=np.float32)  # 12000 bytes: pages at elements 0, 1024, 2048
    assert _bench.read_pages(a) == 0 + 1024 + 2048 + 2999
    assert _bench.read_pages(np.zeros(0, dtype=np.float32)) == 0.0
    assert _bench.read_pages(np.ones((64, 64), dtype=np.uint8)) == 2.0


def test_pages_workload_on_each_of_its_peers():
    # Fewer messages than PAGES_WARMUP: the clock still has one to time.
    cmp = _bench.Comparison({p: _bench.pages(1 << 20, 6)(p) for p in _bench.PAGES_PEERS
                             if p in _bench.PEERS or p == _bench.MEMCPY})
    try:
        for _ in range(2):
            cmp.prepare()
            cmp.run()
    finally:
        cmp.dispose()
    assert cmp.failed == {}
    assert {"ringbuf", "ringbuf/zero-copy", "memcpy"} <= set(cmp.results)
    assert all(len(r) == 2 and min(r) > 0 for r in cmp.results.values())
    with pytest.raises(ValueError, match="cannot be checked"):
        _bench.OneWay("ringbuf", payload=4096, count=10, kind="pages", check=True)


def test_memcpy_bandwidth_is_measured():
    assert _bench.memcpy_bandwidth(nbytes=1 << 16, region=1 << 20, copies=8) > 0


@pytest.mark.parametrize("peer", sorted(_bench.PEERS))
def test_ping_pong_workload(peer):
    wl = _bench.PingPong(peer, payload=64, count=200)
    try:
        wl.prepare()
        trips = wl.run()
    finally:
        wl.dispose()
    assert len(trips) == 200 and min(trips) > 0
    assert _bench.percentile(trips, 50) <= _bench.percentile(trips, 99) <= max(trips)


@pytest.mark.parametrize("peer", sorted(_bench.PEERS))
def test_wake_up_workload(peer):
    wl = _bench.WakeUp(peer, count=20, pause=0.001)
    try:
        for _ in range(2):
            wl.prepare()
            delays = wl.run()
            wl.finish()
            assert len(delays) == 20 and min(delays) > 0
    finally:
        wl.dispose()


def test_percentile():
    xs = [float(i) for i in range(1, 101)]
    assert _bench.percentile(xs, 50) == 50.0
    assert _bench.percentile(xs, 99) == 99.0
    assert _bench.percentile(xs, 100) == 100.0
    assert _bench.percentile([3.0], 99) == 3.0


def test_bench_command_line_quick():
    out = subprocess.run([sys.executable, "-m", "ringbuf", "bench", "--scale", "0.01", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for workload in ("one-way 64 B", "small dict", "batched 64 B", "float32 array 1 MiB",
                     "ping-pong 64 B, median", "ping-pong 64 B, p99"):
        rows = [line for line in out.stdout.splitlines() if line.startswith(workload + " ")]
        assert sorted(line.split()[len(workload.split())] for line in rows) == sorted(TRANSPORTS), workload
    assert "[1/" in out.stderr  # progress


def test_bench_table_says_which_rows_are_pinned():
    rows = [{"workload": "float32 array 1 MiB, pages read", "peer": p, "status": "ok", "figure": 1e10, "unit": "B/s",
             "pinned": [0, 1]} for p in ("ringbuf", "iceoryx2")]
    rows.append({"workload": "one-way 8 B", "peer": "ringbuf", "status": "ok", "figure": 1e6, "unit": "msg/s"})
    table = _bench.format_table(rows)
    assert table.splitlines()[-1] == (
        "float32 array 1 MiB, pages read: every transport's consumer pinned to CPU 0, producer to CPU 1 (memcpy: not pinned)")
    assert "one-way 8 B:" not in table
    assert "pinned" not in _bench.format_table(rows[2:])


def test_bench_json_and_full_matrix():
    import json

    out = subprocess.run([sys.executable, "-m", "ringbuf", "bench", "--full", "--json", "--scale", "0.002",
                          "--rounds", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    workloads = {r["workload"] for r in results}
    assert {"one-way 8 B", "one-way 16777216 B", "float32 array 16 MiB", "wake-up of a parked receiver, median",
            "2x2 64 B", "4x4 64 B", "memcpy 16 MiB"} <= workloads
    # A Pipe end takes one reader and one writer, iceoryx2 publishes to every
    # subscriber: neither can run many-to-many, and their rows say so.
    fans = {p for p in TRANSPORTS if _bench.PEERS[p].many_to_many}
    assert "mp.Pipe" not in fans
    rows = {r["peer"]: r["status"] for r in results if r["workload"] == "4x4 64 B"}
    assert rows == {p: "ok" if p in fans else "n/a" for p in TRANSPORTS}
    # ringbuf's variants have rows of their own, against plain ringbuf.
    rows = {r["peer"]: r["status"] for r in results if r["workload"] == "one-way 64 B, a receiver's select"}
    expected = {p: "n/a" for p in TRANSPORTS}
    expected.update({"ringbuf": "ok", "selector/2": "ok", "selector/8": "ok", "select/2": "ok", "select/8": "ok"})
    assert rows == expected
    # The zero-copy rows: ringbuf copying and in place, iceoryx2, and memcpy beside them.
    for label, _, _ in _bench.PAGES:
        rows = {r["peer"]: r["status"] for r in results if r["workload"] == label}
        expected = {p: "n/a" for p in TRANSPORTS}
        expected.update({p: "ok" for p in _bench.PAGES_PEERS if p in _bench.PEERS or p == _bench.MEMCPY})
        assert {p: s for p, s in rows.items() if p in expected} == expected, label
    assert [r for r in results if r["status"] not in ("ok", "n/a")] == []
    # Only they are pinned, and their rows say where (two_cores: the same for every transport; memcpy runs in
    # the bench's own process).
    cores = _bench.two_cores()
    pinned = {(r["workload"], r["peer"]): r["pinned"] for r in results if "pinned" in r}
    ran = {(r["workload"], r["peer"]) for r in results if r["status"] == "ok" and r["peer"] in _bench.PEERS}
    pages_rows = {label for label, _, _ in _bench.PAGES}
    assert pinned == ({k: list(cores) for k in ran if k[0] in pages_rows} if cores else {})
    queue_rows = {r["workload"] for r in results if r["peer"] == "mp.Queue" and r["status"] == "ok"}
    for r in results:
        if r["status"] == "ok":
            assert r["figure"] > 0
            # Variant rows have no mp.Queue to compare with, only ringbuf.
            if r["peer"] not in ("mp.Queue", "numpy") and r["workload"] in queue_rows:
                assert r["vs_mp_queue"] > 0
            if r["peer"] not in ("ringbuf", "numpy"):
                assert r["ringbuf_vs"] > 0


SWEEP_RESULTS = [{"workload": label, "peer": peer, "figure": 1e5 * (k + 1), "unit": "msg/s"}
                 for k, (label, _, _, _) in enumerate(_bench.SWEEP) for peer in ("ringbuf", "mp.Queue")]


def test_bench_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "sweep.png"
    _bench.plot(SWEEP_RESULTS, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RuntimeError, match="run with --full"):
        _bench.plot([{"workload": "small dict", "peer": "ringbuf", "figure": 1.0, "unit": "msg/s"}],
                    str(tmp_path / "x.png"))


def test_bench_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    with pytest.raises(RuntimeError, match="needs matplotlib"):
        _bench.plot(SWEEP_RESULTS, str(tmp_path / "x.png"))
