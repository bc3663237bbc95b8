"""The demo (python -m ringbuf demo) runs in a tiny mode and says what it shows, so it cannot rot."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from ringbuf import _demo


def test_demo_shows_the_fan_out_growing_and_the_single_producer_flat():
    out = io.StringIO()
    assert _demo.demo(seconds=2, out=out) == 0
    text = out.getvalue()
    rows = {}
    for variant in _demo.VARIANTS:
        section = text.split(_demo.TITLES[variant])[1].split("\n\n")[0]
        rows[variant] = [line.split() for line in section.splitlines() if re.match(r"\s*\d+\.\ds ", line)]
        assert len(rows[variant]) == 2, text
    # Columns: time, taken, received, queued, parked, threads, RSS MiB.
    bug, fix, que = rows["bug"], rows["fix"], rows["queue"]
    cap = _demo.CAPACITY
    # bug: the channel stays bounded while parked senders and threads climb.
    assert all(int(r[3]) <= cap for r in bug)
    assert int(bug[-1][4]) > int(bug[0][4]) > cap
    assert int(bug[-1][5]) > int(bug[0][5]) > cap
    # fix: one sender parked at most, no threads piling up, nothing taken that
    # the channel does not hold or the consumer has not received.
    for _, taken, received, queued, parked, threads, _ in fix:
        assert int(parked) <= 1 and int(threads) <= 3 and int(queued) <= cap
        assert int(taken) - int(received) <= cap + 1
    # queue: the backlog grows inside the unbounded queue.
    assert int(que[-1][3]) > int(que[0][3]) > cap
    # Memory: the fan-out's resident set grows, by more than the fix's.
    grew = {v: float(r[-1][6]) - float(r[0][6]) for v, r in rows.items()}
    assert grew["bug"] > 2 and grew["bug"] > grew["fix"] + 2, grew
    assert "verdict" in text


def test_demo_command_line_draws_a_plot(tmp_path):
    png = tmp_path / "demo.png"
    out = subprocess.run([sys.executable, "-m", "ringbuf", "demo", "--seconds", "1", "--plot", str(png)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "verdict" in out.stdout and png.stat().st_size > 0


def test_demo_caps_the_thread_per_message_producer():
    out = io.StringIO()
    rows = _demo.run_variant("bug", 2, out, max_threads=60)
    assert "capped: the producer stopped taking messages" in out.getvalue()
    # It stops at the cap (the main thread counts too) and takes nothing more.
    assert all(r.threads <= 60 for r in rows)
    assert rows[-1].taken == rows[0].taken


def test_demo_rejects_less_than_a_second():
    with pytest.raises(ValueError, match="at least 1"):
        _demo.demo(seconds=0.5, out=io.StringIO())
