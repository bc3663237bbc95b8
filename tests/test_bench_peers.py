"""The bench's peers, in real worker processes: every workload delivers every
message exactly once on every installed peer, and a peer that hangs or dies
in a round is reported as failed for that row while the bench goes on.

The broken peers below are adapters registered for one test only; their
workers are real processes that really hang or exit."""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

from ringbuf import _bench

#: Every peer the bench knows of; those from the peers extra may be missing.
ALL_PEERS = ["ringbuf", "mp.Queue", "mp.Pipe", "faster-fifo", "pyzmq", "iceoryx2"]


def installed(peer: str) -> str:
    if peer not in _bench.PEERS:
        pytest.skip(f"{peer} is not installed here (it comes with: pip install -e '.[peers]')")
    return peer


@pytest.fixture(params=ALL_PEERS)
def peer(request: pytest.FixtureRequest) -> str:
    return installed(request.param)


@pytest.fixture
def register() -> Iterator[Callable[[str, _bench.Peer], None]]:
    """Add a peer to the bench for one test; forked workers inherit it."""
    added: List[str] = []

    def add(name: str, adapter: _bench.Peer) -> None:
        _bench.PEERS[name] = adapter
        added.append(name)

    yield add
    for name in added:
        del _bench.PEERS[name]


def rounds(workload: Any, n: int = 2) -> List[Any]:
    """Run n rounds (fresh endpoints each round for a peer that asks for them)."""
    out = []
    try:
        for _ in range(n):
            workload.prepare()
            out.append(workload.run())
            workload.finish()
            assert workload.procs == []
    finally:
        workload.dispose()
    return out


@pytest.mark.parametrize("kind,payload,count", [("bytes", 8, 2000), ("bytes", 256, 2000), ("object", 0, 500),
                                                ("array", 4096, 50), ("batch", 64, 8 * _bench.BATCH)])
def test_one_way_delivers_every_message_once(peer: str, kind: str, payload: int, count: int) -> None:
    # check=True numbers the messages; the round fails unless each came once.
    rates = rounds(_bench.OneWay(peer, payload, count, kind=kind, timeout=60, check=True))
    assert len(rates) == 2 and all(r > 0 for r in rates)


def test_ping_pong_replies_carry_each_request(peer: str) -> None:
    for trips in rounds(_bench.PingPong(peer, 64, 300, timeout=60, check=True)):
        assert len(trips) == 300 and min(trips) > 0


def test_wake_up_delivers_every_stamp(peer: str) -> None:
    for delays in rounds(_bench.WakeUp(peer, count=20, pause=0.001, timeout=60)):
        assert len(delays) == 20 and min(delays) > 0


@pytest.mark.parametrize("producers,consumers", [(2, 2), (3, 2), (1, 3)])
def test_many_to_many_delivers_every_message_once(peer: str, producers: int, consumers: int) -> None:
    if not _bench.PEERS[peer].many_to_many:
        with pytest.raises(ValueError, match="several readers or writers"):
            _bench.ManyToMany(peer, 256, 100, producers, consumers)
        return
    for rate in rounds(_bench.ManyToMany(peer, 256, 3000, producers, consumers, timeout=60, check=True)):
        assert rate > 0


# -- peers that fail -----------------------------------------------------------

def _hang(*args: Any) -> Any:
    time.sleep(3600)


def _crash(*args: Any) -> Any:
    raise RuntimeError("this adapter always fails")


def broken(**changes: Any) -> _bench.Peer:
    """ringbuf's adapter with some of its steps replaced."""
    return _bench.PEERS["ringbuf"]._replace(**changes)


def suite(peers: List[str], only: List[str], timeout: float) -> List[Dict[str, Any]]:
    return _bench.run_suite(scale=0.01, rounds=2, peers=peers, timeout=timeout, only=only)


def by_peer(results: List[Dict[str, Any]], workload: str) -> Dict[str, Dict[str, Any]]:
    return {r["peer"]: r for r in results if r["workload"] == workload}


def test_a_hanging_receiver_is_reported_failed_and_the_bench_returns(register) -> None:
    register("hangs", broken(recv_raw=_hang, recv=_hang))
    t0 = time.monotonic()
    results = suite(["ringbuf", "hangs"], ["one-way 8 B", "2x2 256 B", "ping-pong 64 B, median"], timeout=3)
    assert time.monotonic() - t0 < 120  # liveness: three rows, each given up on after 3 s
    for workload in ("one-way 8 B", "2x2 256 B", "ping-pong 64 B, median", "ping-pong 64 B, p99"):
        rows = by_peer(results, workload)
        assert rows["ringbuf"]["status"] == "ok" and rows["ringbuf"]["figure"] > 0, workload
        assert rows["hangs"]["status"] == "failed", workload
        assert "took more than 3 s" in rows["hangs"]["reason"], workload
        assert "figure" not in rows["hangs"] and "ringbuf_vs" not in rows["hangs"]
    # The hung workers were killed and reaped.
    assert multiprocessing.active_children() == []
    table = _bench.format_table(results)
    assert "failed" in table and "took more than 3 s" in table


def test_a_peer_that_hangs_while_opening_is_reported_failed(register) -> None:
    register("stuck", broken(open=_hang, close=lambda ep: None))
    rows = by_peer(suite(["stuck", "ringbuf"], ["one-way 256 B"], timeout=3), "one-way 256 B")
    assert rows["stuck"]["status"] == "failed"
    assert "starting its workers took more than 3 s" in rows["stuck"]["reason"]
    assert rows["ringbuf"]["status"] == "ok"
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_fails_its_peer_without_waiting_out_the_timeout(register) -> None:
    register("crashes", broken(send_raw=_crash))
    t0 = time.monotonic()
    rows = by_peer(suite(["crashes", "ringbuf"], ["one-way 8 B"], timeout=600), "one-way 8 B")
    assert time.monotonic() - t0 < 300  # liveness: the exit is noticed, the 600 s are not waited out
    assert rows["crashes"]["status"] == "failed"
    assert "exited with code 1" in rows["crashes"]["reason"]
    assert rows["ringbuf"]["status"] == "ok"
    assert multiprocessing.active_children() == []


def test_a_peer_that_duplicates_a_message_fails_the_check(register) -> None:
    first = (0).to_bytes(8, "little")

    def send_twice_first(ch: Any, data: bytes) -> None:
        ch.send_bytes(data)
        if data[:8] == first:
            ch.send_bytes(data)

    register("dup", broken(send_raw=send_twice_first))
    wl = _bench.OneWay("dup", 64, 100, timeout=60, check=True)
    try:
        wl.prepare()
        with pytest.raises(_bench.PeerFailed, match="1 of 100 messages missing, 1 arrived more than once"):
            wl.run()
    finally:
        wl.dispose()


def test_peers_that_cannot_run_a_row_are_marked_not_applicable() -> None:
    peers = [p for p in ("ringbuf", "mp.Pipe", "iceoryx2") if p in _bench.PEERS]
    rows = by_peer(suite(peers, ["2x2 256 B"], timeout=60), "2x2 256 B")
    assert rows["ringbuf"]["status"] == "ok"
    assert rows["mp.Pipe"]["status"] == "n/a"
    if "iceoryx2" in rows:
        assert rows["iceoryx2"]["status"] == "n/a"


def test_only_names_known_workloads() -> None:
    with pytest.raises(ValueError, match="no workload named"):
        _bench.run_suite(peers=["ringbuf"], only=["one-way 7 B"])


def _noting_cpus(path: Any, role: str, step: Callable[..., Any]) -> Callable[..., Any]:
    """step, which first notes in file path the CPUs its process may run on."""
    def noted(*args: Any) -> Any:
        with open(path, "a") as f:
            f.write(f"{role} {sorted(os.sched_getaffinity(0))}\n")
        return step(*args)
    return noted


def test_the_pages_rows_pin_their_two_workers_to_different_cores(register, tmp_path) -> None:
    cores = _bench.two_cores()
    if cores is None:
        pytest.skip("this machine has no two CPUs on different cores to pin to")
    zc = _bench.PEERS["ringbuf/zero-copy"]
    noted = tmp_path / "cpus"
    register("noted", zc._replace(send_array=_noting_cpus(noted, "send", zc.send_array),
                                  recv_pages=_noting_cpus(noted, "recv", zc.recv_pages),
                                  send=_noting_cpus(noted, "send", zc.send),
                                  recv=_noting_cpus(noted, "recv", zc.recv)))
    assert min(rounds(_bench.pages(1 << 16, 20)("noted"))) > 0
    consumer, producer = cores
    assert set(noted.read_text().splitlines()) == {f"recv [{consumer}]", f"send [{producer}]"}
    siblings = f"/sys/devices/system/cpu/cpu{consumer}/topology/thread_siblings_list"
    if os.path.exists(siblings):  # where the kernel tells the topology, two cores, not two threads of one
        with open(siblings) as f:
            assert producer not in _bench._cpu_list(f.read())
    # The other rows leave the scheduler free to place their workers.
    noted.unlink()
    everywhere = sorted(os.sched_getaffinity(0))
    assert min(rounds(_bench.OneWay("noted", 4096, 20, kind="array"))) > 0
    assert set(noted.read_text().splitlines()) == {f"recv {everywhere}", f"send {everywhere}"}


def test_cpu_lists_are_read_as_the_kernel_writes_them() -> None:
    assert _bench._cpu_list("0-3,8\n") == {0, 1, 2, 3, 8}
    assert _bench._cpu_list("5") == {5}


def test_two_cores_never_picks_two_threads_of_one_core(tmp_path, monkeypatch) -> None:
    def machine(siblings: Dict[int, str]) -> str:
        root = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        for cpu, listed in siblings.items():
            (root / f"cpu{cpu}" / "topology").mkdir(parents=True)
            (root / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(listed + "\n")
        return str(root)

    def pick(sysfs: str, allowed: List[int]) -> Any:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(allowed))
        return _bench.two_cores(sysfs)

    smt_apart = machine({c: f"{c % 4},{c % 4 + 4}" for c in range(8)})  # cpu0 and cpu4 are one core
    assert pick(smt_apart, list(range(8))) == (0, 1)
    assert pick(smt_apart, [0, 4]) is None
    assert pick(smt_apart, [0, 4, 5]) == (0, 5)
    smt_together = machine({c: f"{c // 2 * 2}-{c // 2 * 2 + 1}" for c in range(4)})  # cpu0 and cpu1 are one core
    assert pick(smt_together, [0, 1, 2, 3]) == (0, 2)
    assert pick(smt_together, [0, 1]) is None
    # Without a topology every CPU counts as a core of its own; one CPU is no pair.
    assert pick(str(tmp_path / "none"), [3, 9, 17]) == (3, 9)
    assert pick(str(tmp_path / "none"), [2]) is None
