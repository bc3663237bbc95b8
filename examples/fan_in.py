"""Fan-in: several producer processes, one consumer, and a timeout.

Each producer sends on a channel of its own and closes it when it is done.
The consumer selects over all of them at once; a closed, drained channel
drops out of the select; and if no message comes for a while, the consumer
stops waiting for the producers that are left, as Go's

    select {
    case v := <-a: ...
    case v := <-b: ...
    case <-time.After(timeout):
    }

    python examples/fan_in.py
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Dict

import ringbuf


def producer(out: ringbuf.Channel, name: str, count: int, pause: float) -> None:
    for i in range(count):
        out.send((name, i))
        time.sleep(pause)
    out.close()


def main() -> None:
    ctx = multiprocessing.get_context("fork")
    specs = {"fast": (50, 0.001), "steady": (20, 0.01), "stalled": (1_000_000, 60.0)}
    chans = {name: ringbuf.Channel(capacity=16) for name in specs}
    procs = [ctx.Process(target=producer, args=(chans[n], n, c, p), daemon=True) for n, (c, p) in specs.items()]
    got: Dict[str, int] = {name: 0 for name in specs}
    try:
        for p in procs:
            p.start()
        open_chans = list(chans.values())
        while open_chans:
            try:
                ch, value = ringbuf.select(*open_chans, timeout=2.0)
            except ringbuf.Timeout:
                left = sorted(n for n, c in chans.items() if c in open_chans)
                print("timed out waiting for:", ", ".join(left))
                break
            if value is ringbuf.CLOSED:
                open_chans.remove(ch)
                continue
            name, seq = value
            assert seq == got[name], "in order per producer"
            got[name] += 1
        print("received:", ", ".join(f"{n} {k}" for n, k in got.items()))
    finally:
        for p in procs:
            p.kill()
            p.join()
        for ch in chans.values():
            ch.unlink()


if __name__ == "__main__":
    main()
