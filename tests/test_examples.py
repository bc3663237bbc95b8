"""Each example in examples/ runs and prints what it promises."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run(name: str) -> list:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120,
                         env=env, cwd=EXAMPLES.parent.parent)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


@pytest.fixture(autouse=True)
def examples_exist() -> None:
    assert EXAMPLES.is_dir(), f"{EXAMPLES} is missing"


def test_worker_pool_runs_every_job_and_cancels_a_waiting_submit():
    assert run("worker_pool.py") == [
        "results: True (20 jobs, 3 workers)",
        "cancelled: yes, submit gave up when done was closed",
    ]


def test_pipeline_shuts_down_in_order_when_its_first_channel_closes():
    assert run("pipeline.py") == [
        "total: 338350 expected: 338350",
        "square stage done",
        "total stage done",
        "every stage closed its output: True",
    ]


def test_fan_in_takes_every_message_in_order_and_times_out_on_the_stalled_producer():
    assert run("fan_in.py") == [
        "timed out waiting for: stalled",
        "received: fast 50, steady 20, stalled 1",
    ]


def test_the_asyncio_front_end_gets_every_answer_and_is_held_back_by_the_bound():
    assert run("asyncio_front_end.py") == [
        "answers: True (50 requests, 2 worker processes)",
        "requests waiting for a worker never exceeded the bound of 8: True",
    ]


def test_frames_go_through_loans_and_views_in_order():
    lines = run("frames.py")
    assert lines[0] == "frames: 200 in order: True"
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    assert lines[1] == f"dark pixels counted: {int((scene[1:] < 16).sum()) * 200}"
    assert lines[2] == "loans 200, views 200, still held: 0"
    peak = int(re.fullmatch(r"most frames in the ring at once: (\d) \(capacity 4\)", lines[3]).group(1))
    assert 1 <= peak <= 4
