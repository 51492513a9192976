"""A clock for the Heap client and its rate limiter that moves only when told."""

from __future__ import annotations


class FakeClock:
    """A clock that only moves when slept on (or advanced): waits are recorded, not spent."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds
