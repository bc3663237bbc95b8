"""An asyncio front end handing requests to worker processes through a bounded channel.

The front end (think of a web or message-queue consumer) accepts requests
in its event loop, sends each to a pool of CPU-bound worker processes over a
bounded channel, and gets results back on another.  ``await send_async``
waits while the workers are saturated: that is the backpressure an
unbounded ``asyncio.Queue()`` would not give.  The loop keeps serving other
tasks meanwhile; nothing blocks it and nothing polls.

    python examples/asyncio_front_end.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Dict

import ringbuf


def worker(requests: ringbuf.Channel, results: ringbuf.Channel) -> None:
    for req_id, n in requests:  # until the front end closes requests
        results.send((req_id, sum(i * i for i in range(n))))  # the CPU-bound work


async def front_end(requests: ringbuf.Channel, results: ringbuf.Channel, count: int) -> Dict[int, int]:
    answers: Dict[int, int] = {}
    pending: Dict[int, "asyncio.Future[int]"] = {}
    loop = asyncio.get_running_loop()

    async def collect() -> None:
        async for req_id, value in results:  # until results is closed
            pending.pop(req_id).set_result(value)

    async def handle(req_id: int) -> None:
        pending[req_id] = loop.create_future()
        await requests.send_async((req_id, 10_000 + req_id))  # waits while the workers are busy
        answers[req_id] = await pending[req_id]

    collector = asyncio.create_task(collect())
    await asyncio.gather(*(handle(i) for i in range(count)))
    results.close()
    await collector
    return answers


def main() -> None:
    requests = ringbuf.Channel(capacity=8)  # at most 8 requests wait for a worker
    results = ringbuf.Channel(capacity=64)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=worker, args=(requests, results)) for _ in range(2)]
    try:
        for w in workers:
            w.start()
        answers = asyncio.run(front_end(requests, results, 50))
        requests.close()
        for w in workers:
            w.join()
        expected = {i: sum(k * k for k in range(10_000 + i)) for i in range(50)}
        print("answers:", answers == expected, f"({len(answers)} requests, 2 worker processes)")
        peak = requests.stats().peak_qcount
        print("requests waiting for a worker never exceeded the bound of 8:", 1 <= peak <= 8)
    finally:
        requests.unlink()
        results.unlink()


if __name__ == "__main__":
    main()
