"""How fast a backfill may enqueue: no faster than the stack drains, and never past a backlog.

The stack drains at most ``RateLimitEventsPerMinute`` x ``MaxConcurrency`` events a minute (each
consumer instance paces itself at its share), and never faster than Heap's cap per app ID
(15,000 a minute): more concurrency only queues 429s. Enqueuing at that rate keeps the queue
short while the consumer keeps up; the backlog bound holds it when the consumer does not (Heap
slow or down, the consumer throttled): the queue's depth (read from SQS) plus what was sent since
that reading stays at most ``max_backlog`` events. SQS counts messages: they are turned into
events at the most events this run put in one message (other producers' messages, one event
each as a rule, are counted so too: on the safe side).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from heap_forwarder.heap.limiter import HEAP_EVENTS_PER_MINUTE_PER_APP

DEFAULT_BACKLOG_MINUTES = 10
# How often the queue's depth is read when nothing forces it (for the progress display): every
# 10 s of the stack's time, and at most once a real second whatever the time scale.
DEPTH_REFRESH_SECONDS = 10.0
MIN_DEPTH_REFRESH_SECONDS = 1.0
# The shortest pause between two readings while the backlog is full (time-scaled, but no less).
MIN_DEPTH_POLL_SECONDS = 0.05
_DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True)
class DrainRate:
    """The stack's pace: each consumer instance's rate setting, and how many instances run."""

    events_per_minute_per_instance: float  # RateLimitEventsPerMinute
    max_concurrency: int  # MaxConcurrency

    @property
    def events_per_minute(self) -> float:
        return min(self.events_per_minute_per_instance * self.max_concurrency, HEAP_EVENTS_PER_MINUTE_PER_APP)

    @property
    def capped_by_heap(self) -> bool:
        return self.events_per_minute_per_instance * self.max_concurrency > HEAP_EVENTS_PER_MINUTE_PER_APP

    def default_backlog(self) -> int:
        """``--max-backlog``'s default: ten minutes of draining, in events."""
        return math.ceil(self.events_per_minute * DEFAULT_BACKLOG_MINUTES)


def queue_depth(sqs: Any, queue_url: str) -> int:
    """Messages in the queue: waiting, in flight (received, or backing off) and delayed."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(_DEPTH_ATTRIBUTES))[
        "Attributes"
    ]
    return sum(int(attributes.get(name, 0)) for name in _DEPTH_ATTRIBUTES)


class Pacer:
    """``admit(n)`` returns once ``n`` more events may be enqueued (or when ``stopped()``)."""

    def __init__(
        self,
        events_per_second: float,
        max_backlog: int,
        depth: Callable[[], int],
        *,
        clock: Callable[[], float],
        wait: Callable[[float], object],
        stopped: Callable[[], bool],
        time_scale: float = 1.0,
    ) -> None:
        self.events_per_second = events_per_second
        self.max_backlog = max_backlog
        self.depth = depth
        self.clock = clock
        self.wait = wait
        self.stopped = stopped
        self.refresh_seconds = max(DEPTH_REFRESH_SECONDS / time_scale, MIN_DEPTH_REFRESH_SECONDS)
        self.poll_seconds = max(MIN_DEPTH_POLL_SECONDS, 1.0 / time_scale)
        self.depth_reads = 0
        self._next_send = 0.0  # when the pace allows the next request
        self._measured_messages = 0
        self._measured_at: float | None = None
        self._sent_since = 0  # events sent since the last reading
        self.events_per_message = 1  # the most in one message of this run (1 before any)

    @property
    def backlog(self) -> int:
        """The backlog as last estimated, in events: the reading plus what was sent since."""
        return self._measured_messages * self.events_per_message + self._sent_since

    def admit(self, events: int, messages: int) -> bool:
        """Wait for the pace, then for room in the backlog for ``events`` in ``messages``; False
        when stopped while waiting."""
        self.events_per_message = max(self.events_per_message, math.ceil(events / messages))
        now = self.clock()
        if self._next_send > now:
            self.wait(self._next_send - now)
        if self._measured_at is None or self.clock() - self._measured_at >= self.refresh_seconds:
            self._measure()
        while self.backlog + events > self.max_backlog and self._sent_since + self._measured_messages:
            if self.stopped():
                return False
            self.wait(self.poll_seconds)
            self._measure()
        return not self.stopped()

    def sent(self, events: int) -> None:
        """``events`` were acknowledged by SQS."""
        now = self.clock()
        self._next_send = max(now, self._next_send) + events / self.events_per_second
        self._sent_since += events

    def _measure(self) -> None:
        self._measured_messages = self.depth()
        self._measured_at = self.clock()
        self._sent_since = 0
        self.depth_reads += 1
