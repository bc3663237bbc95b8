"""Shared machinery: each benchmark runs ringbuf, multiprocessing.Queue and
(when the peers extra is installed) pyzmq and iceoryx2 in alternating rounds
of one workload (see ringbuf._bench.Comparison), and the summary at the end
prints every figure with its ratio against the Queue, then ringbuf's ratio
against each peer.  A peer that fails or hangs in a round is listed as
failed; the others' figures stand.

The ratio held against a target is the median of the per-round ratios: the
two peers of one round run back to back, so each round's ratio compares them
under the same conditions, while the speed of this shared machine can double
from one round to the next.  The ratio of the two medians is printed beside
it."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from ringbuf import _bench

PEERS = ["ringbuf", "mp.Queue"] + [p for p in ("pyzmq", "iceoryx2") if p in _bench.PEERS]
BASELINE = "mp.Queue"

# workload -> target, as a ratio against mp.Queue
TARGETS = {
    "one-way 64 B": 5.0,
    "ping-pong 64 B, median": 5.0,
    "small dict": 3.0,
    "batched 64 B": 10.0,
    "float32 array 1 MiB": 4.0,
    "float32 array 16 MiB": 4.0,
}
# workload -> {peer: target}, as ringbuf's ratio against that peer (issue 16)
PEER_TARGETS = {
    "one-way 8 B": {"pyzmq": 1.0},
    "one-way 256 B": {"pyzmq": 1.0},
    "2x2 256 B": {"pyzmq": 1.0},
    "small dict": {"pyzmq": 1.0, "iceoryx2": 1.0, "mp.Queue": 1.0},
}
# workload -> {variant: target}, as the variant's share of plain ringbuf's
# figure (a rate's share, or plain ringbuf's time over the variant's; issue 13)
VARIANT_TARGETS = {
    "one-way 64 B, select": {"selector/2": 0.7, "selector/8": 0.7, "select/2": 0.7, "select/8": 0.7},
    "wake-up, parked select": {"selector/8": 1 / 1.5},
    "one-way 64 B, asyncio": {"asyncio": 0.6},  # issue 14
    "wake-up, parked recv_async": {"asyncio": 1 / 2},
}
# workload -> {other: target}, as ringbuf/zero-copy's figure over the other's
# in the same rounds (issue 15): "memcpy" is the memcpy bandwidth of the same
# payload, measured between the peers' rounds; "ringbuf" today's send/recv;
# iceoryx2's is its own zero-copy (loaned slices, samples read in place).
# Reaching a target means at least it, and for a peer (ahead of it) above it.
ZEROCOPY = "ringbuf/zero-copy"
ZEROCOPY_TARGETS = {
    "float32 array 16 MiB, pages read": {"memcpy": 0.9, "iceoryx2": 1.0},
    "float32 array 1 MiB, pages read": {"ringbuf": 1.5, "iceoryx2": 1.0},
}
# Array rows must also reach this share of the memcpy bandwidth measured in the run.
MEMCPY = ("memcpy 16 MiB", "numpy")
MEMCPY_SHARE = 1 / 3

# (workload, peer) -> (figure, unit, higher_is_better, per-round figures)
_FIGURES: Dict[Tuple[str, str], Tuple[float, str, bool, List[float]]] = {}
# (workload, peer) -> why the peer failed
_FAILED: Dict[Tuple[str, str], str] = {}


def record(workload: str, peer: str, figure: float, unit: str, higher_is_better: bool,
           per_round: Optional[List[float]] = None) -> None:
    """Keep one peer's figure for the summary; ``per_round`` (the same
    measure taken in each round) lets the summary pair rounds."""
    _FIGURES[(workload, peer)] = (figure, unit, higher_is_better, list(per_round or []))


def _paired_ratio(mine: List[float], base: List[float], higher: bool) -> Optional[Tuple[float, float, float]]:
    """(median, lowest, highest) of the per-round ratios, or None without rounds."""
    if not mine or len(mine) != len(base):
        return None
    ratios = sorted(m / b if higher else b / m for m, b in zip(mine, base))
    return _bench.median(ratios), ratios[0], ratios[-1]


def compare(benchmark: Any, workload: str, make: Callable[[str], Any], rounds: int,
            peers: Optional[List[str]] = None) -> Dict[str, List[Any]]:
    """Run ``make(peer)`` for every peer (or those given) in alternating
    rounds under pytest-benchmark (whose table then times a round of all
    peers); return the per-round results of each peer that did not fail."""
    cmp = _bench.Comparison({peer: make(peer) for peer in (peers or PEERS)})
    benchmark.group = workload
    try:
        benchmark.pedantic(cmp.run, setup=cmp.prepare, rounds=rounds, iterations=1)
    finally:
        cmp.dispose()
    for peer, reason in cmp.failed.items():
        _FAILED[(workload, peer)] = reason
    return {peer: r for peer, r in cmp.results.items() if peer not in cmp.failed}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    tr = terminalreporter
    tr.section("each row's figures (alternating rounds, same run); ringbuf's against multiprocessing.Queue where both ran")
    for workload in dict.fromkeys(w for w, _ in _FIGURES):
        base = _FIGURES.get((workload, BASELINE))
        for (w, peer), (fig, unit, higher, rounds) in _FIGURES.items():
            if w != workload:
                continue
            line = f"{workload:<28} {peer:<10} {fig:>16,.1f} {unit:<5}"
            if base and peer == "ringbuf":
                ratio = fig / base[0] if higher else base[0] / fig
                paired = _paired_ratio(rounds, base[3], higher)
                if paired:
                    line += f"   {paired[0]:5.1f}x {BASELINE} (rounds {paired[1]:.1f}-{paired[2]:.1f}x;"
                    line += f" medians {ratio:.1f}x)"
                    ratio = paired[0]
                else:
                    line += f"   {ratio:5.1f}x {BASELINE}"
                target = TARGETS.get(workload)
                if target is not None:
                    line += f" (target {target:g}x: {'met' if ratio >= target else 'NOT met'})"
                if unit == "B/s" and MEMCPY in _FIGURES:
                    share = fig / _FIGURES[MEMCPY][0]
                    met = "met" if share >= MEMCPY_SHARE else "NOT met"
                    line += f", {share:.2f} of memcpy (target {MEMCPY_SHARE:.2f}: {met})"
            elif base and peer != BASELINE:
                line += f"   {fig / base[0] if higher else base[0] / fig:5.1f}x {BASELINE} (medians)"
            tr.write_line(line)
        for (w, peer), reason in _FAILED.items():
            if w == workload:
                tr.write_line(f"{workload:<28} {peer:<10} failed: {reason}")
    _zerocopy_summary(tr)
    mine = {w: f for (w, peer), f in _FIGURES.items() if peer == "ringbuf"}
    others = [(w, peer, f) for (w, peer), f in _FIGURES.items() if peer != "ringbuf" and w in mine]
    if not others:
        return
    tr.section("ringbuf against each peer: ringbuf's figure over the peer's, above 1 when ringbuf is ahead")
    for w, peer, (fig, unit, higher, rounds) in others:
        rb = mine[w]
        paired = _paired_ratio(rb[3], rounds, higher)
        ratio = paired[0] if paired else (rb[0] / fig if higher else fig / rb[0])
        line = f"{w:<28} vs {peer:<10} {ratio:5.2f}x"
        if paired:
            line += f" (rounds {paired[1]:.2f}-{paired[2]:.2f}x)"
        target = PEER_TARGETS.get(w, {}).get(peer)
        if target is not None:
            line += f" (target ahead, above {target:g}x: {'met' if ratio > target else 'NOT met'})"
        share = VARIANT_TARGETS.get(w, {}).get(peer)
        if share is not None:
            line += f"; the variant at {1 / ratio:.2f} of ringbuf (target {share:.2f}: "
            line += f"{'met' if 1 / ratio >= share else 'NOT met'})"
        tr.write_line(line)


def _zerocopy_summary(tr: Any) -> None:
    """ringbuf/zero-copy against every other figure of its rows, paired by round."""
    rows = [w for w in dict.fromkeys(w for w, _ in _FIGURES) if (w, ZEROCOPY) in _FIGURES]
    if not rows:
        return
    tr.section(f"{ZEROCOPY} over each other figure of its rows (alternating rounds): above 1 when it is ahead")
    for w in rows:
        zc = _FIGURES[(w, ZEROCOPY)]
        targets = ZEROCOPY_TARGETS.get(w, {})
        for (w2, other), (fig, unit, higher, rounds) in _FIGURES.items():
            if w2 != w or other == ZEROCOPY:
                continue
            paired = _paired_ratio(zc[3], rounds, higher)
            ratio = paired[0] if paired else (zc[0] / fig if higher else fig / zc[0])
            line = f"{w:<34} vs {other:<10} {ratio:5.2f}x"
            if paired:
                line += f" (rounds {paired[1]:.2f}-{paired[2]:.2f}x)"
            target = targets.get(other)
            if target is not None:
                met = ratio > target if other not in ("memcpy", "ringbuf") else ratio >= target
                line += f" (target {'above ' if other not in ('memcpy', 'ringbuf') else ''}{target:g}x: "
                line += f"{'met' if met else 'NOT met'})"
            tr.write_line(line)
        for other in targets:
            if (w, other) not in _FIGURES:
                why = _FAILED.get((w, other), "no figure" if other in _bench.PEERS or other == _bench.MEMCPY
                                 else "not installed")
                tr.write_line(f"{w:<34} vs {other:<10} no figure ({why}): target NOT checked")
