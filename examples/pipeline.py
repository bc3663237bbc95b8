"""A pipeline of three stages in processes, shut down by closing its first channel.

    numbers --> [square] --> squares --> [total] --> totals --> main

Each stage is a process that ranges over its input channel until that channel
is closed and drained, then closes its output channel and returns.  So
closing the first channel shuts the pipeline down in order, stage by stage,
and nothing sent before the close is lost: Go's pipeline pattern, with
``for x := range in`` and ``close(out)``.

    python examples/pipeline.py
"""

from __future__ import annotations

import multiprocessing

import ringbuf


def square(numbers: ringbuf.Channel, squares: ringbuf.Channel, log: ringbuf.Channel) -> None:
    for n in numbers:
        squares.send(n * n)
    squares.close()
    log.send("square stage done")


def total(squares: ringbuf.Channel, totals: ringbuf.Channel, log: ringbuf.Channel) -> None:
    running = 0
    for sq in squares:
        running += sq
    totals.send(running)
    totals.close()
    log.send("total stage done")


def main() -> None:
    numbers, squares, totals = (ringbuf.Channel(capacity=8) for _ in range(3))
    log = ringbuf.Channel(capacity=8)
    ctx = multiprocessing.get_context("fork")
    stages = [ctx.Process(target=square, args=(numbers, squares, log)),
              ctx.Process(target=total, args=(squares, totals, log))]
    try:
        for p in stages:
            p.start()
        for n in range(1, 101):
            numbers.send(n)  # blocks when the pipeline is busy: backpressure
        numbers.close()  # the only shutdown signal
        print("total:", totals.recv(), "expected:", sum(n * n for n in range(1, 101)))
        for p in stages:
            p.join()
        log.close()
        for line in log:
            print(line)
        print("every stage closed its output:", squares.closed and totals.closed and not list(totals))
    finally:
        for ch in (numbers, squares, totals, log):
            ch.unlink()


if __name__ == "__main__":
    main()
