from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Iterator, List

import pytest

import ringbuf

SHM = "/dev/shm"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# .ci/test sets this: the suite must then test the installed package, not the
# checkout it was run from.
if os.environ.get("RINGBUF_TEST_INSTALLED") == "1" and os.path.dirname(os.path.abspath(ringbuf.__file__)) == \
        os.path.join(ROOT, "ringbuf"):
    raise pytest.UsageError(f"RINGBUF_TEST_INSTALLED=1, but ringbuf was imported from the checkout: {ringbuf.__file__}")


def pytest_report_header() -> str:
    return f"ringbuf {ringbuf.__version__} from {os.path.dirname(os.path.abspath(ringbuf.__file__))}"


def _ours() -> set:
    return {n for n in os.listdir(SHM) if n.startswith(f"ringbuf-{os.getpid()}-")}


#: The re-check period no_recheck sets, in seconds: longer than any test.
NO_RECHECK = 600.0


@pytest.fixture
def no_recheck() -> Iterator[None]:
    """W8's re-check (a parked waiter looks again every second) lengthened to
    NO_RECHECK in this process, the children it forks and its asyncio helper
    thread: a wake-up that should be made and is not then leaves its waiter
    asleep past any liveness check, instead of a second late.  A child
    started otherwise (a subprocess) calls Handle.debug_recheck itself."""
    from ringbuf import _async
    from ringbuf._lowlevel import Handle

    saved = _async._RECHECK_NS, _async.OFFER_NS
    Handle.debug_recheck(NO_RECHECK)
    _async._RECHECK_NS = _async.OFFER_NS = int(NO_RECHECK * 1e9)
    try:
        yield
    finally:
        Handle.debug_recheck(0)
        _async._RECHECK_NS, _async.OFFER_NS = saved


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Every test must leave /dev/shm as it found it."""
    before = _ours()
    yield
    leaked = _ours() - before
    assert not leaked, f"segments left in /dev/shm: {sorted(leaked)}"


@pytest.fixture
def make_channel() -> Iterator[Callable[..., ringbuf.Channel]]:
    """Create channels that are closed and unlinked when the test ends."""
    made: List[ringbuf.Channel] = []

    def make(*args: object, **kwargs: object) -> ringbuf.Channel:
        ch = ringbuf.Channel(*args, **kwargs)  # type: ignore[arg-type]
        made.append(ch)
        return ch

    yield make
    for ch in made:
        ch.close()
        ch.unlink()


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def mp_context(request: pytest.FixtureRequest) -> multiprocessing.context.BaseContext:
    """Each start method: fork, spawn, and forkserver (the default on Linux from Python 3.14)."""
    return multiprocessing.get_context(request.param)
