"""python -m ringbuf ls / inspect / top on live channels."""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import signal
import subprocess
import sys

import pytest

from ringbuf import _inspect, _lowlevel
from tests import _workers
from tests._helpers import wait_until

ctx = multiprocessing.get_context("fork")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ringbuf", *args], capture_output=True, text=True, timeout=60)


def test_inspect_shows_the_struct_and_the_parked_pids(make_channel):
    ch = make_channel(capacity=16)
    ch.send_bytes(b"abc")
    ch.recv_bytes()
    receiver = ctx.Process(target=_workers.recv_one, args=(ch, None, ctx.Queue()))
    receiver.start()
    wait_until(lambda: ch.stats().recvq == 1, what="receiver parking")
    out = cli("inspect", ch.name)
    assert out.returncode == 0, out.stderr
    assert "struct hchan {" in out.stdout
    assert re.search(r"dataqsiz\s+16\b", out.stdout)
    assert re.search(r"qcount\s+0\b", out.stdout)
    assert re.search(rf"recvq\s+1\s.*pids {receiver.pid}\b", out.stdout)
    assert re.search(r"sendx\s+16\b", out.stdout) and re.search(r"recvx\s+16\b", out.stdout)
    assert "peak: 1 messages, 16 bytes   sent 1   received 1" in out.stdout
    ch.close()
    receiver.join(5)


def test_inspect_shows_loans_and_views_with_their_pids(make_channel):
    ch = make_channel(capacity=16)
    ch.send_bytes(b"viewed")
    ready = ctx.Event()
    holder = ctx.Process(target=_workers.hold_loan_and_wait, args=(ch, 100, ready))
    holder.start()
    assert ready.wait(10)
    with ch.recv_bytes_view():
        out = cli("inspect", ch.name)
    holder.kill()
    holder.join(5)
    assert out.returncode == 0, out.stderr
    assert "loans and views out: 2, holding 128 bytes beyond `used`" in out.stdout
    assert re.search(rf"loan\s+pid {holder.pid}\s+112 bytes", out.stdout)
    assert re.search(rf"view\s+pid {os.getpid()}\s+16 bytes", out.stdout)


def test_inspect_does_not_take_the_lock(make_channel):
    ch = make_channel()
    ready = ctx.Event()
    holder = ctx.Process(target=_workers.hold_lock_and_wait, args=(ch, ready))
    holder.start()
    try:
        assert ready.wait(10)
        out = cli("inspect", ch.name)  # would hang here if it locked
        assert out.returncode == 0, out.stderr
        assert f"held by pid {holder.pid}" in out.stdout
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(5)
    ch.send_bytes(b"the lock is recovered")  # the next user takes the lock over
    assert ch.recv_bytes() == b"the lock is recovered"


def test_ls_lists_this_users_channels(make_channel):
    ch = make_channel(capacity=7)
    ch.send_bytes(b"x")
    out = cli("ls")
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith(ch.name))
    assert "1/7" in line and "open" in line
    assert ch.name in [name for name, _ in _inspect.list_channels()]


def test_ls_marks_channels_whose_creator_was_killed():
    # A child creates a channel and is killed before it can unlink it.
    proc = subprocess.run(
        [sys.executable, "-c", "import os, signal, ringbuf; ch = ringbuf.Channel(capacity=3); "
         "print(ch.name, flush=True); os.kill(os.getpid(), signal.SIGKILL)"],
        capture_output=True, text=True, timeout=60)
    name = proc.stdout.strip()
    assert proc.returncode == -signal.SIGKILL and name
    try:
        out = cli("ls")
        assert out.returncode == 0, out.stderr
        line = next(line for line in out.stdout.splitlines() if line.startswith(name))
        assert line.endswith("(gone)")
        assert "outlived the process that created them" in out.stdout
        assert "python -m ringbuf gc" in out.stdout
    finally:
        os.unlink(os.path.join(_lowlevel.SHM, name))


def test_top_shows_rates(make_channel):
    ch = make_channel()
    producer = ctx.Process(target=_workers.send_forever, args=(ch,))
    producer.start()
    try:
        out = io.StringIO()
        consumer = ctx.Process(target=_workers.consume, args=(ch, ctx.Queue()))
        consumer.start()
        assert _inspect.top(ch.name, interval=0.2, count=3, out=out) == 0
        rates = re.findall(r"rates over [\d.]+ s: ([\d,]+) sent/s", out.getvalue())
        assert len(rates) == 3
        assert any(int(r.replace(",", "")) > 0 for r in rates)
        assert out.getvalue().count("struct hchan {") == 3
        assert out.getvalue().count("peak: ") == 3
    finally:
        ch.close()
        producer.join(10)
        consumer.join(10)


def test_inspecting_a_missing_or_foreign_segment_is_a_clear_error(tmp_path):
    out = cli("inspect", "ringbuf-no-such-channel")
    assert out.returncode == 1 and "no channel named 'ringbuf-no-such-channel'" in out.stderr
    name = f"ringbuf-{os.getpid()}-notachannel"
    with open(f"/dev/shm/{name}", "wb") as f:
        f.write(os.urandom(8192))
    try:
        out = cli("inspect", name)
        assert out.returncode == 1 and "not a ringbuf channel" in out.stderr
        assert name not in cli("ls").stdout
    finally:
        os.unlink(f"/dev/shm/{name}")


@pytest.mark.parametrize("args", [["top", "x", "--interval", "0"], ["top", "x", "--interval", "-1"],
                                  ["top", "x", "--interval", "nan"], ["top", "x", "--count", "0"],
                                  ["bench", "--rounds", "0"], ["bench", "--scale", "-2"], ["demo", "--seconds", "0"]])
def test_the_command_line_refuses_counts_and_times_that_are_not_above_zero(args):
    # top --interval 0 used to redraw without pause, --count 0 to print nothing.
    proc = cli(*args)
    assert proc.returncode == 2
    assert "must be above 0" in proc.stderr
