"""A worker pool that shuts down, with processes.

The pool of "A Worker Pool That Actually Shuts Down" (shared/context), in
ringbuf: a channel of capacity N is the semaphore that bounds the jobs in
flight, and ``submit`` selects between taking a slot and a ``done`` channel,
as the Go version selects between ``sem <- struct{}{}`` and ``ctx.Done()``:

    select {
    case p.sem <- struct{}{}:
    case <-ctx.Done():
        return ctx.Err()
    }

The workers are processes.  A job is handed to a free worker over an
unbuffered channel; the worker gives its slot back when the job is done.
Closing ``done`` cancels every submit that waits for a slot, in every process.

    python examples/worker_pool.py
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any, List, Tuple

import ringbuf


class Cancelled(Exception):
    """submit() gave up: the done channel was closed while it waited for a slot."""


def _worker(sem: ringbuf.Channel, jobs: ringbuf.Channel, results: ringbuf.Channel) -> None:
    for job in jobs:  # until the pool closes the jobs channel
        try:
            time.sleep(0.01)  # the work
            results.send((job, job * job))
        finally:
            sem.recv()  # give the slot back


class Pool:
    def __init__(self, workers: int, done: ringbuf.Channel) -> None:
        self.sem = ringbuf.Channel(capacity=workers)  # one token per job in flight
        self.jobs = ringbuf.Channel(capacity=0)  # unbuffered: a job goes straight to a worker
        self.results = ringbuf.Channel(capacity=1024)
        self.done = done
        ctx = multiprocessing.get_context("fork")
        self.procs = [ctx.Process(target=_worker, args=(self.sem, self.jobs, self.results)) for _ in range(workers)]
        for p in self.procs:
            p.start()

    def submit(self, job: Any) -> None:
        """Wait for a free slot, or raise Cancelled once done is closed."""
        ch, _ = ringbuf.select((self.sem, None), self.done)
        if ch is self.done:
            raise Cancelled
        self.jobs.send(job)

    def close(self) -> None:
        """No more jobs: the workers finish theirs and exit."""
        self.jobs.close()
        for p in self.procs:
            p.join()

    def unlink(self) -> None:
        for ch in (self.sem, self.jobs, self.results):
            ch.unlink()


def main() -> None:
    done = ringbuf.Channel(capacity=1)
    pool = Pool(workers=3, done=done)
    try:
        for job in range(20):
            pool.submit(job)
        pool.close()
        results: List[Tuple[int, int]] = sorted(pool.results.recv() for _ in range(20))
        print("results:", results == [(j, j * j) for j in range(20)], f"({len(results)} jobs, 3 workers)")
    finally:
        pool.unlink()

    # Cancellation: every slot is taken by jobs that never finish, so a
    # submit waits; closing done ends that wait from another thread (it
    # could as well be another process).
    stuck = Pool(workers=2, done=done)
    try:
        for _ in range(2):
            stuck.sem.send(None)  # two jobs "in flight" forever
        closer = multiprocessing.get_context("fork").Process(target=_close_later, args=(done,))
        closer.start()
        try:
            stuck.submit("never runs")
            print("cancelled: no")
        except Cancelled:
            print("cancelled: yes, submit gave up when done was closed")
        closer.join()
        stuck.sem.recv()
        stuck.sem.recv()
        stuck.close()
    finally:
        stuck.unlink()
        done.unlink()


def _close_later(done: ringbuf.Channel) -> None:
    time.sleep(0.2)
    done.close()


if __name__ == "__main__":
    main()
