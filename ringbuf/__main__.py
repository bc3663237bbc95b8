"""Command line: ``python -m ringbuf demo | bench | ls | inspect NAME | top NAME | gc``."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, List, Optional, TypeVar

N = TypeVar("N", int, float)


def _positive(kind: Callable[[str], N]) -> Callable[[str], N]:
    """An argparse type: a number of that kind above 0 (and finite)."""
    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringbuf", description="ringbuf command line")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the out-of-memory incident: a thread per message against one producer")
    d.add_argument("--seconds", type=_positive(int), default=6, help="how long to run each of the three variants (default 6)")
    d.add_argument("--plot", metavar="FILE.png", help="draw memory and parked senders over time (matplotlib)")
    b = sub.add_parser("bench", help="ringbuf against multiprocessing.Queue, Pipe and (if installed) faster-fifo, "
                       "pyzmq and iceoryx2, same workloads, same run")
    b.add_argument("--full", action="store_true", help="the whole matrix: a payload sweep from 8 B to 16 MiB, "
                   "arrays, 2x2 and 4x4, the wake-up of a parked receiver (a few minutes)")
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="draw throughput against payload size (needs --full, matplotlib)")
    b.add_argument("--rounds", type=_positive(int), default=3, help="alternating rounds per workload (default 3)")
    b.add_argument("--scale", type=_positive(float), default=1.0, help="multiply every message count by this (default 1)")
    b.add_argument("--timeout", type=_positive(float), default=None, metavar="SECONDS",
                   help="a peer whose round takes longer is reported as failed on that row "
                   "(default 120, times --scale when above 1)")
    b.add_argument("--only", action="append", metavar="WORKLOAD",
                   help="run only this workload, by its label (repeatable), e.g. --only 'one-way 8 B'")
    b.add_argument("--peer", action="append", dest="peers", metavar="NAME",
                   help="run only this peer (repeatable; default every installed peer)")
    sub.add_parser("ls", help="the ringbuf channels of this user in /dev/shm")
    i = sub.add_parser("inspect", help="a live channel's header, drawn as the struct it is")
    i.add_argument("name")
    t = sub.add_parser("top", help="inspect, refreshed, with send and receive rates")
    t.add_argument("name")
    t.add_argument("--interval", type=_positive(float), default=1.0, help="seconds between refreshes (default 1)")
    t.add_argument("--count", type=_positive(int), default=None, help="stop after this many refreshes")
    g = sub.add_parser("gc", help="remove this user's channels whose creator is gone and that no process uses")
    g.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    g.add_argument("--prefix", default="", help="only channels whose names start with PREFIX")
    args = parser.parse_args(argv)

    from ringbuf import errors

    try:
        if args.command == "demo":
            from ringbuf._demo import demo

            return demo(args.seconds, plot_path=args.plot)
        if args.command == "bench":
            import json

            from ringbuf import _bench

            def progress(msg: str) -> None:
                print(msg, file=sys.stderr, flush=True)

            if args.peers:
                unknown = sorted(set(args.peers) - set(_bench.PEERS))
                if unknown:
                    raise ValueError(f"--peer: not installed or unknown: {unknown}; have {sorted(_bench.PEERS)}")
            timeout = args.timeout or _bench.ROUND_TIMEOUT * max(1.0, args.scale)
            results = _bench.run_suite(args.full, args.scale, args.rounds, peers=args.peers, progress=progress,
                                       timeout=timeout, only=args.only)
            print(json.dumps(results, indent=1) if args.json else _bench.format_table(results))
            if args.plot:
                _bench.plot(results, args.plot)
                print(f"plot written to {args.plot}", file=sys.stderr)
            return 0
        if args.command == "gc":
            from ringbuf import _gc

            return _gc.gc(args.dry_run, args.prefix)
        from ringbuf import _inspect

        if args.command == "ls":
            return _inspect.ls()
        if args.command == "inspect":
            return _inspect.inspect(args.name)
        return _inspect.top(args.name, args.interval, args.count)
    except (errors.ChannelNotFound, errors.SegmentError, ValueError, RuntimeError) as e:
        print(f"python -m ringbuf {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
