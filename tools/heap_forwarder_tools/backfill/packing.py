"""Events into ``{"batch": [...]}`` message bodies: as full as SQS's message size allows, never
over the consumer's per-record cap (a record over it is dead-lettered whole as ``too_large``),
and never so dense that one consumer invocation gets more events than it can deliver in time.

That last bound comes from how the stack drains. Lambda hands the consumer up to ``BatchSize``
(1,000) records or 6 MB at a time, and the consumer paces itself at ``RateLimitEventsPerMinute``
within its 60-second timeout: about 6,700 events with the defaults. What it cannot deliver in
time it does not take on: it sends those records back to the queue (an SQS request per 10, and
more time in the queue), which packing to the pace avoids. A full invocation of records of ``n`` events
and ``b`` bytes each holds ``min(BatchSize x n, 6 MB x n / b)`` events: for events of 1 KB or
more, the 6 MB bound keeps it under the pace whatever ``n``, and messages are packed full; for
smaller events, ``n`` is held to what 1,000 records of them allow (``InvocationFit``).
"""

from __future__ import annotations

from dataclasses import dataclass

from heap_forwarder.edge.consumer import MAX_EVENTS_PER_RECORD

# SQS's message size, and the total of one SendMessageBatch request, when the queue says nothing
# larger (the template leaves MaximumMessageSize at SQS's default).
SQS_MAX_MESSAGE_BYTES = 262_144
SQS_MAX_BATCH_ENTRIES = 10
# The consumer's event source and function, as template.yaml sets them (a test holds them to it).
LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024
CONSUMER_BATCH_SIZE = 1000  # ConsumerFunction's SQS event: BatchSize
CONSUMER_TIMEOUT_SECONDS = 60  # ConsumerFunction: Timeout
# Of what the pace allows in the time, the share an invocation is given: the rest is for its HTTP
# round trips, identify requests and a slow answer now and then.
INVOCATION_MARGIN = 0.75
_OPEN = '{"batch":['
_CLOSE = "]}"
_FRAME_BYTES = len(_OPEN) + len(_CLOSE)


def utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Body:
    text: str
    size: int  # bytes, UTF-8
    events: int


@dataclass(frozen=True)
class InvocationFit:
    """How many events one consumer invocation may be handed: what its pace delivers within its
    timeout, with a margin."""

    max_events: int

    @classmethod
    def of(cls, events_per_minute_per_instance: float) -> InvocationFit:
        from heap_forwarder import defaults

        seconds = CONSUMER_TIMEOUT_SECONDS - defaults.DEADLINE_MARGIN_SECONDS
        deliverable = events_per_minute_per_instance / 60.0 * seconds + defaults.RATE_LIMIT_BURST
        return cls(max(1, int(deliverable * INVOCATION_MARGIN)))

    def allows(self, events: int, size: int) -> bool:
        """Would a full invocation of messages like this one (``events`` in ``size`` bytes) stay
        within ``max_events``? A message of one event always does: nothing is denser."""
        records = min(CONSUMER_BATCH_SIZE, LAMBDA_PAYLOAD_BYTES // max(1, size))
        return events <= 1 or events * records <= self.max_events


class Packer:
    """Collects event texts; hands back a body when the next event would not fit in it."""

    def __init__(
        self,
        max_bytes: int = SQS_MAX_MESSAGE_BYTES,
        max_events: int = MAX_EVENTS_PER_RECORD,
        fit: InvocationFit | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_events = max_events
        self.fit = fit
        self._texts: list[str] = []
        self._size = _FRAME_BYTES

    def fits_alone(self, size: int) -> bool:
        """Can an event of ``size`` bytes travel at all (alone in its message)?"""
        return _FRAME_BYTES + size <= self.max_bytes

    def add(self, text: str, size: int) -> Body | None:
        """Add one event (``fits_alone`` first); the body it closed, if it did not fit."""
        closed = None
        separator = 1 if self._texts else 0
        if self._texts and (
            self._size + separator + size > self.max_bytes
            or len(self._texts) >= self.max_events
            or (
                self.fit is not None
                and not self.fit.allows(len(self._texts) + 1, self._size + separator + size)
            )
        ):
            closed = self.flush()
            separator = 0
        self._texts.append(text)
        self._size += separator + size
        return closed

    def flush(self) -> Body | None:
        """The body of what was collected (None when nothing was)."""
        if not self._texts:
            return None
        body = Body(_OPEN + ",".join(self._texts) + _CLOSE, self._size, len(self._texts))
        self._texts = []
        self._size = _FRAME_BYTES
        return body

    @property
    def empty(self) -> bool:
        return not self._texts
