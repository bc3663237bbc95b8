"""The demo: a fast producer held back by a slow consumer through a bounded channel."""

from __future__ import annotations

import multiprocessing
import sys
import time
from typing import TextIO

from ringbuf import Channel, Closed


def _slow_consumer(ch: Channel, delay: float) -> None:
    for _ in ch.iter_bytes():
        time.sleep(delay)


def _fast_producer(ch: Channel, payload: int) -> None:
    msg = b"x" * payload
    try:
        while True:
            ch.send_bytes(msg)
    except Closed:
        pass


def demo(seconds: float, capacity: int, out: TextIO = sys.stdout) -> int:
    """A fast producer and a slow consumer on one bounded channel.

    The producer would send millions of messages a second; the consumer takes
    one every millisecond.  The channel fills to its capacity, the producer
    parks on the channel's futex, and from then on it sends exactly as fast as
    the consumer receives: that is backpressure.  Every figure printed is read
    from the channel's shared header.
    """
    ctx = multiprocessing.get_context("spawn")
    with Channel(capacity=capacity, size=1 << 20) as ch:
        procs = [
            ctx.Process(target=_slow_consumer, args=(ch, 0.001)),
            ctx.Process(target=_fast_producer, args=(ch, 1024)),
        ]
        for p in procs:
            p.start()
        print(f"channel {ch.name}: capacity {ch.capacity} messages, ring {ch.size} bytes", file=out)
        print(f"{'time':>6} {'queued':>8} {'bytes':>9} {'sent':>8} {'received':>9} "
              f"{'parked senders':>15} {'sender parks':>13}", file=out)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)
            dead = [p for p in procs if not p.is_alive()]
            if dead:
                ch.close()
                print(f"a worker exited early (exit code {dead[0].exitcode}); stopping", file=out)
                break
            s = ch.stats()
            print(f"{time.monotonic() - t0:5.1f}s {s.qcount:>4}/{s.capacity:<3} {s.used:>9} {s.sent:>8} "
                  f"{s.received:>9} {s.sendq:>15} {s.send_parks:>13}", file=out)
        ch.close()
        for p in procs:
            p.join(10)
        s = ch.stats()
    print(file=out)
    print(f"The queue never held more than {capacity} messages: the producer sent {s.sent} "
          f"and the consumer received {s.received}.  The sender parked {s.send_parks} times "
          f"instead of growing a queue.", file=out)
    return 0 if all(p.exitcode == 0 for p in procs) else 1
