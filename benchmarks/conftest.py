"""Collects each benchmark's headline figure and prints them as ratios against
multiprocessing.Queue, measured in the same run."""

from __future__ import annotations

from typing import Dict, Tuple

import pytest

# (workload, peer) -> (figure, unit, higher_is_better)
_FIGURES: Dict[Tuple[str, str], Tuple[float, str, bool]] = {}
# workload -> the target, as a ratio against mp.Queue
TARGETS = {
    "one-way 64 B": 5.0,
    "ping-pong 64 B, median": 5.0,
}
BASELINE = "mp.Queue"


@pytest.fixture
def record():
    def put(workload: str, peer: str, figure: float, unit: str, higher_is_better: bool) -> None:
        _FIGURES[(workload, peer)] = (figure, unit, higher_is_better)

    return put


def pytest_terminal_summary(terminalreporter) -> None:
    if not _FIGURES:
        return
    tr = terminalreporter
    tr.section("ringbuf against multiprocessing.Queue (same run)")
    for workload in dict.fromkeys(w for w, _ in _FIGURES):
        base = _FIGURES.get((workload, BASELINE))
        for (w, peer), (fig, unit, higher) in _FIGURES.items():
            if w != workload:
                continue
            line = f"{workload:<28} {peer:<10} {fig:>14,.1f} {unit}"
            if base and peer != BASELINE:
                ratio = fig / base[0] if higher else base[0] / fig
                target = TARGETS.get(workload)
                verdict = "" if target is None else f" (target {target:g}x: {'met' if ratio >= target else 'NOT met'})"
                line += f"   {ratio:5.1f}x {BASELINE}{verdict}"
            tr.write_line(line)
