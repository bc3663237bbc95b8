"""The channel against a reference model, driven by hypothesis."""

from __future__ import annotations

import collections

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import ringbuf
from tests._helpers import record_bytes


class ChannelModel(RuleBasedStateMachine):
    """A deque bounded by a message count and a byte budget, as the docs describe."""

    def __init__(self) -> None:
        super().__init__()
        self.ch: ringbuf.Channel | None = None

    @rule(capacity=st.integers(1, 6), size=st.integers(64, 400))
    @precondition(lambda self: self.ch is None)
    def create(self, capacity: int, size: int) -> None:
        self.ch = ringbuf.Channel(capacity=capacity, size=size)
        self.capacity = capacity
        self.size = (size + 7) // 8 * 8
        self.queue: collections.deque = collections.deque()
        self.used = 0
        self.closed = False
        self.counter = 0

    def teardown(self) -> None:
        if self.ch is not None:
            self.ch.unlink()

    @rule(n=st.integers(0, 400))
    @precondition(lambda self: self.ch is not None)
    def try_send(self, n: int) -> None:
        self.counter += 1
        msg = (self.counter.to_bytes(4, "little") * (n // 4 + 1))[:n]
        need = record_bytes(n)
        try:
            self.ch.try_send_bytes(msg)
        except ringbuf.MessageTooLarge:
            assert n > self.size - 8
        except ringbuf.Closed:
            assert self.closed
        except ringbuf.Full:
            assert not self.closed and n <= self.size - 8
            assert len(self.queue) == self.capacity or self.used + need > self.size
        else:
            assert not self.closed and len(self.queue) < self.capacity and self.used + need <= self.size
            self.queue.append(msg)
            self.used += need

    @rule()
    @precondition(lambda self: self.ch is not None)
    def try_recv(self) -> None:
        try:
            got = self.ch.try_recv_bytes()
        except ringbuf.Empty:
            assert not self.queue and not self.closed
        except ringbuf.Closed:
            assert not self.queue and self.closed
        else:
            want = self.queue.popleft()
            assert got == want
            self.used -= record_bytes(len(want))

    @rule()
    @precondition(lambda self: self.ch is not None and not self.closed)
    def close(self) -> None:
        self.ch.close()
        self.closed = True

    @invariant()
    def header_matches_model(self) -> None:
        if self.ch is None:
            return
        self.ch.check()
        s = self.ch.stats()
        assert (s.qcount, s.used, s.closed) == (len(self.queue), self.used, self.closed)
        assert s.sendx == (s.recvx + s.used) % self.size


TestChannelModel = ChannelModel.TestCase
TestChannelModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
