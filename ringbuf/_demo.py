"""The demo: an out-of-memory incident caused by parked senders, replayed with processes.

The incident: a Kafka consumer started one goroutine per inbound message, each
blocked sending into a channel, until the pod was OOM-killed (Harrison Guo,
"Channels Aren't Message Passing", May 2026).

A source offers 10 KiB messages faster than a consumer process can handle
them.  Three producers take from that source:

bug
    One new thread per message, and each thread blocks sending its message
    into a bounded ringbuf channel.  The channel stays at its capacity and
    does its job; the blocked threads pile up behind it, parked on its futex,
    each keeping its message alive.  Threads and resident memory climb.
fix
    The story's fix, literally: one long-lived producer that ``select``s
    between sending into the same kind of channel and a ``done`` channel,
    which the demo closes to stop it (Go's ``ctx.Done()``).  When the channel
    is full, that one producer parks, and it stops taking from the source:
    the backlog stays where it came from.  Memory stays flat.
queue
    One producer puts into an unbounded ``multiprocessing.Queue``.  ``put``
    never blocks, so the backlog grows inside the queue.

Every figure printed is read from the producer's /proc entry, from the
channel's own header (``stats()``), or from counters the processes keep; none
is computed from the rates.  The bug variant stops taking messages once its
producer has MAX_THREADS threads or MAX_RSS bytes resident, so the demo never
exhausts the machine.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, TextIO, Tuple

from ringbuf import Channel, Closed, select_bytes

PAYLOAD = 10 * 1024     # bytes per inbound message, as in the story
INBOUND_RATE = 500      # messages per second the source offers
CONSUME_DELAY = 0.01    # seconds of "work" per message: the consumer takes 100 a second
CAPACITY = 16           # the channel's bound, in messages
MAX_THREADS = 3000      # the bug variant stops spawning here ...
MAX_RSS = 1 << 30       # ... or at this much resident memory

VARIANTS = ("bug", "fix", "queue")
TITLES = {
    "bug": "bug: a new thread per message, each blocking on a bounded ringbuf channel",
    "fix": "fix: one long-lived producer selecting between a bounded ringbuf channel and a done channel",
    "queue": "for comparison: one producer putting into an unbounded multiprocessing.Queue",
}


# ---- measuring a process --------------------------------------------------

def proc_status(pid: int) -> Dict[str, int]:
    """Threads and VmRSS (bytes) of a live process, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Threads":
                out["threads"] = int(value)
            elif key == "VmRSS":
                out["rss"] = int(value.split()[0]) * 1024
    return out


# ---- the processes ----------------------------------------------------------

def _source(rate: float, stop: Any) -> Iterator[bytes]:
    """Fresh PAYLOAD-byte messages, at most `rate` a second, until stop is set.

    Like a topic being replayed: a message is available whenever its time
    has come, and a taker that falls behind gets the next one at once.
    """
    t0 = time.monotonic()
    i = 0
    while not stop.is_set():
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i += 1
        yield os.urandom(PAYLOAD)


def _send_one(ch: Channel, msg: bytes) -> None:
    try:
        ch.send_bytes(msg)
    except Closed:
        pass


def _produce_thread_per_message(ch: Channel, taken: Any, capped: Any, stop: Any, rate: float,
                                max_threads: int = MAX_THREADS) -> None:
    for msg in _source(rate, stop):
        st = proc_status(os.getpid())
        if st["threads"] >= max_threads or st["rss"] >= MAX_RSS:
            capped.value = 1
            stop.wait()
            break
        threading.Thread(target=_send_one, args=(ch, msg), daemon=True).start()
        taken.value += 1


def _produce_until_done(ch: Channel, done: Channel, taken: Any, capped: Any, stop: Any, rate: float) -> None:
    """The fix: one producer for the life of the run.  Each message either goes
    into the channel, at the consumer's pace, or the done channel is closed
    and the producer returns:

        select {
        case events <- msg:
        case <-done:
            return
        }
    """
    for msg in _source(rate, stop):
        if select_bytes((ch, msg), done)[0] is done:
            return
        taken.value += 1


def _produce_into_queue(q: Any, taken: Any, capped: Any, stop: Any, rate: float) -> None:
    for msg in _source(rate, stop):
        q.put(msg)
        taken.value += 1
    # The consumer is gone by now: exit without flushing the backlog.
    q.cancel_join_thread()


def _consume_channel(ch: Channel, delay: float) -> None:
    for _ in ch.iter_bytes():
        time.sleep(delay)


def _consume_queue(q: Any, received: Any, stop: Any, delay: float) -> None:
    while not stop.is_set():
        try:
            q.get(timeout=0.1)
        except queue.Empty:
            continue
        received.value += 1
        time.sleep(delay)


# ---- running a variant ----------------------------------------------------

@dataclasses.dataclass
class Sample:
    elapsed: float
    taken: int          # messages the producer took from the source
    received: int       # messages the consumer got
    queued: int         # in the channel (qcount) or the queue (qsize)
    parked: Optional[int]  # senders parked on the channel (sendq); None for the queue
    threads: int        # the producer's threads
    rss: int            # the producer's resident memory, bytes


def _row(s: Sample) -> str:
    parked = "-" if s.parked is None else str(s.parked)
    return (f"{s.elapsed:5.1f}s {s.taken:>7} {s.received:>9} {s.queued:>7} {parked:>7} {s.threads:>8} "
            f"{s.rss / 2**20:>8.1f}")


HEADER = f"{'time':>6} {'taken':>7} {'received':>9} {'queued':>7} {'parked':>7} {'threads':>8} {'RSS MiB':>8}"


def run_variant(variant: str, seconds: float, out: TextIO, rate: float = INBOUND_RATE,
                delay: float = CONSUME_DELAY, max_threads: int = MAX_THREADS) -> List[Sample]:
    """Run one variant for `seconds`, printing a row a second; return the rows.
    The bug variant stops taking messages at `max_threads` threads."""
    ctx = multiprocessing.get_context("spawn")
    taken = ctx.Value("q", 0, lock=False)
    capped = ctx.Value("i", 0, lock=False)
    stop = ctx.Event()
    samples: List[Sample] = []
    print(f"\n{TITLES[variant]}", file=out)
    print(HEADER, file=out, flush=True)

    if variant == "queue":
        q: Any = ctx.Queue()
        received = ctx.Value("q", 0, lock=False)
        producer = ctx.Process(target=_produce_into_queue, args=(q, taken, capped, stop, rate))
        consumer = ctx.Process(target=_consume_queue, args=(q, received, stop, delay))

        def measure() -> Dict[str, Any]:
            return {"received": received.value, "queued": q.qsize(), "parked": None}

        def finish() -> None:
            stop.set()
    else:
        ch = Channel(capacity=CAPACITY, size=1 << 20)
        done = Channel(capacity=1, size=64)
        if variant == "bug":
            producer = ctx.Process(target=_produce_thread_per_message,
                                   args=(ch, taken, capped, stop, rate, max_threads))
        else:
            producer = ctx.Process(target=_produce_until_done, args=(ch, done, taken, capped, stop, rate))
        consumer = ctx.Process(target=_consume_channel, args=(ch, delay))

        def measure() -> Dict[str, Any]:
            st = ch.stats()
            return {"received": st.received, "queued": st.qcount, "parked": st.sendq}

        def finish() -> None:
            done.close()  # the fix's producer selects on it and returns
            ch.close()  # the bug's parked senders fail with Closed; the consumer drains and ends
            stop.set()

    try:
        consumer.start()
        producer.start()
        # Start the clock when the producer takes its first message, not
        # when it was started: a spawned interpreter takes a while to boot.
        boot = time.monotonic()
        while taken.value == 0:
            if producer.exitcode is not None or time.monotonic() - boot > 60:
                raise RuntimeError(f"demo: the {variant} producer did not start")
            time.sleep(0.01)
        t0 = time.monotonic()
        was_capped = False
        for tick in range(1, int(seconds) + 1):
            time.sleep(max(0.0, t0 + tick - time.monotonic()))
            if producer.exitcode is not None or consumer.exitcode is not None:
                raise RuntimeError(f"demo: a {variant} worker exited early")
            # Read the taken count first: a message is taken before it is
            # queued or parked, so the row never shows more inside than taken.
            s = Sample(elapsed=time.monotonic() - t0, taken=taken.value, threads=0, rss=0, **measure())
            st = proc_status(producer.pid)  # type: ignore[arg-type]
            s.threads, s.rss = st["threads"], st["rss"]
            samples.append(s)
            print(_row(s), file=out, flush=True)
            if capped.value and not was_capped:
                was_capped = True
                print(f"       (capped: the producer stopped taking messages at {s.threads} threads, "
                      f"{s.rss / 2**20:.0f} MiB)", file=out, flush=True)
    finally:
        finish()
        for p in (producer, consumer):
            if p.pid is None:  # never started
                continue
            p.join(30)
            if p.exitcode is None:
                p.kill()
                p.join(5)
        if variant != "queue":
            ch.unlink()
            done.unlink()
    return samples


# ---- the whole demo ---------------------------------------------------------

def verdict(results: Dict[str, List[Sample]], out: TextIO) -> None:
    def grew(rows: List[Sample]) -> str:
        return f"{rows[0].rss / 2**20:.0f} -> {rows[-1].rss / 2**20:.0f} MiB"

    print("\nverdict", file=out)
    if "bug" in results:
        rows = results["bug"]
        print(f"  bug:   {max(r.parked or 0 for r in rows)} senders parked on a channel that never held more "
              f"than {max(r.queued for r in rows)} messages; {rows[-1].threads} threads; resident memory "
              f"{grew(rows)}.", file=out)
    if "fix" in results:
        rows = results["fix"]
        print(f"  fix:   at most {max(r.parked or 0 for r in rows)} sender parked, {rows[-1].threads} "
              f"thread(s), resident memory {grew(rows)}.  It took {rows[-1].taken} messages, as many as the "
              f"consumer could handle; the rest never left the source.", file=out)
    if "queue" in results:
        rows = results["queue"]
        print(f"  queue: {rows[-1].queued} items waiting in the queue; the producer's resident memory "
              f"{grew(rows)}.", file=out)
    print("The channel was the same in bug and fix.  The bug is the unbounded fan-out in front of it: a\n"
          "bounded channel pushes back only on a producer that waits for it.", file=out)


def plot(results: Dict[str, List[Sample]], path: str) -> None:
    """Resident memory and parked senders over time, one line per variant."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, (mem, parked) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, rows in results.items():
        xs = [r.elapsed for r in rows]
        mem.plot(xs, [r.rss / 2**20 for r in rows], marker="o", label=variant)
        if variant != "queue":
            parked.plot(xs, [r.parked for r in rows], marker="o", label=variant)
        else:
            parked.plot(xs, [r.queued for r in rows], marker="o", linestyle="--", label="queue (items queued)")
    mem.set_xlabel("seconds")
    mem.set_ylabel("producer resident memory (MiB)")
    mem.legend()
    parked.set_xlabel("seconds")
    parked.set_ylabel("parked senders (bug, fix) or queued items (queue)")
    parked.legend()
    fig.suptitle("thread per message vs one producer vs an unbounded queue")
    fig.tight_layout()
    fig.savefig(path)


def demo(seconds: float = 6.0, variants: Tuple[str, ...] = VARIANTS, out: TextIO = sys.stdout,
         plot_path: Optional[str] = None, rate: float = INBOUND_RATE, delay: float = CONSUME_DELAY) -> int:
    """Run each variant for `seconds` (a row a second), then print the verdict."""
    if seconds < 1:
        raise ValueError(f"seconds must be at least 1 (one row a second), got {seconds}")
    print(f"A source offers {rate:.0f} messages of {PAYLOAD // 1024} KiB a second; the consumer, another "
          f"process, handles about {1 / delay:.0f} a second.\n"
          f"The channels hold {CAPACITY} messages.  Columns: messages taken from the source, received by the "
          f"consumer,\nqueued in the channel or queue, senders parked on the channel; the producer's threads "
          f"and resident memory.", file=out)
    results = {v: run_variant(v, seconds, out, rate, delay) for v in variants}
    verdict(results, out)
    if plot_path:
        plot(results, plot_path)
        print(f"plot written to {plot_path}", file=out)
    return 0
