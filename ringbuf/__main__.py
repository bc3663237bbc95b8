"""Command line: ``python -m ringbuf demo``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringbuf", description="ringbuf command line")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="a fast producer held back by a slow consumer through a bounded channel")
    d.add_argument("--seconds", type=float, default=5.0, help="how long to run (default 5)")
    d.add_argument("--capacity", type=int, default=64, help="channel capacity in messages (default 64)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ringbuf._demo import demo

        return demo(args.seconds, args.capacity)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
