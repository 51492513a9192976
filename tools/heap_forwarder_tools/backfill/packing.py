"""Events into ``{"batch": [...]}`` message bodies: as full as SQS's message size allows, and never
over the consumer's per-record cap (a record over it is dead-lettered whole as ``too_large``)."""

from __future__ import annotations

from dataclasses import dataclass

from heap_forwarder.edge.consumer import MAX_EVENTS_PER_RECORD

# SQS's message size, and the total of one SendMessageBatch request, when the queue says nothing
# larger (the template leaves MaximumMessageSize at SQS's default).
SQS_MAX_MESSAGE_BYTES = 262_144
SQS_MAX_BATCH_ENTRIES = 10
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


class Packer:
    """Collects event texts; hands back a body when the next event would not fit in it."""

    def __init__(
        self, max_bytes: int = SQS_MAX_MESSAGE_BYTES, max_events: int = MAX_EVENTS_PER_RECORD
    ) -> None:
        self.max_bytes = max_bytes
        self.max_events = max_events
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
            self._size + separator + size > self.max_bytes or len(self._texts) >= self.max_events
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
