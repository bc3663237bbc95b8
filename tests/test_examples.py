"""Each example in examples/ runs and prints what it promises."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

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
