"""How fast a backfill enqueues and how much it lets wait (tools/heap_forwarder_tools/backfill/pacing.py)."""

from __future__ import annotations

from heap_forwarder.heap.limiter import HEAP_EVENTS_PER_MINUTE_PER_APP
from heap_forwarder_tools.backfill.pacing import DrainRate, Pacer


def test_the_drain_rate_is_the_rate_setting_times_the_concurrency_within_heaps_cap() -> None:
    assert DrainRate(6000, 2).events_per_minute == 12_000
    assert not DrainRate(6000, 2).capped_by_heap
    assert DrainRate(6000, 10).events_per_minute == HEAP_EVENTS_PER_MINUTE_PER_APP
    assert DrainRate(6000, 10).capped_by_heap
    assert DrainRate(6000, 2).default_backlog() == 120_000  # ten minutes of draining


class Queue:
    """A main queue drained at ``rate`` events a second, counted in messages of ``size`` events."""

    def __init__(self, rate: float, size: int) -> None:
        self.now = 0.0
        self.rate = rate
        self.size = size
        self.events = 0.0
        self.peak = 0.0
        self.reads = 0

    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.events = max(0.0, self.events - self.rate * seconds)

    def depth(self) -> int:
        self.reads += 1
        return -(-int(self.events) // self.size)  # messages, partly drained ones included

    def put(self, events: int) -> None:
        self.events += events
        self.peak = max(self.peak, self.events)


def test_enqueuing_follows_the_pace_of_the_drain() -> None:
    queue = Queue(rate=10**9, size=1000)  # a consumer that keeps up: only the pace holds it
    pacer = Pacer(200.0, 10**9, queue.depth, clock=lambda: queue.now, wait=queue.wait, stopped=lambda: False)
    for _ in range(10):
        assert pacer.admit(1000, 1)
        queue.put(1000)
        pacer.sent(1000)
    # 10,000 events at 200 a second: the last request may go after 9,000 of them drained.
    assert queue.now == 45.0


def test_the_backlog_never_exceeds_its_bound_when_the_consumer_is_slow() -> None:
    queue = Queue(rate=50.0, size=500)  # drains a quarter of the pace
    pacer = Pacer(200.0, 3000, queue.depth, clock=lambda: queue.now, wait=queue.wait, stopped=lambda: False)
    for _ in range(60):
        assert pacer.admit(500, 1)
        queue.put(500)
        pacer.sent(500)
        assert pacer.backlog >= queue.events  # the estimate is never below the truth
    assert queue.peak <= 3000
    assert queue.peak > 2000  # the bound is what held it


def test_a_stop_while_waiting_for_room_is_answered_at_once() -> None:
    queue = Queue(rate=0.0, size=100)  # a consumer that never drains
    stop = {"asked": False}
    pacer = Pacer(
        1000.0, 300, queue.depth, clock=lambda: queue.now, wait=queue.wait, stopped=lambda: stop["asked"]
    )
    for _ in range(3):
        assert pacer.admit(100, 1)
        queue.put(100)
        pacer.sent(100)

    def wait(seconds: float) -> None:
        queue.wait(seconds)
        stop["asked"] = True

    pacer.wait = wait
    assert not pacer.admit(100, 1)
