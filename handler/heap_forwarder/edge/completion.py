"""Segment completion: an event made whole the way Segment's tracking API does it, before the
first attempt, so that a first attempt, a parked retry and a redelivery are the same event.

One rule for both entry points, ``fill``: what Segment's spec lets a receiver fill in, a missing
``messageId``, ``receivedAt``, and ``timestamp`` (from ``originalTimestamp``, corrected for the
producer's clock, else ``receivedAt``). Each entry point says where its values come from: the API
from the request (its time, a new UUID), the consumer from the SQS record (its ``SentTimestamp``,
``<record messageId>:<position>``), so a redelivered record is filled the same way every time.

The API's own part, ``complete_event``: the route's ``type``, batch-level
``context``/``integrations``/``sentAt``, RudderStack's identify traits from ``context.traits``,
a ``writeKey`` in the body dropped; then ``fill``. docs/api.md has the table.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from heap_forwarder.inbound import normalise_timestamp


def now_iso() -> str:
    """The time the API received a request, as ``receivedAt`` takes it."""
    return _iso(datetime.now(UTC))


def received_at_of(sent_timestamp: Any) -> str | None:
    """``receivedAt`` of an SQS record: its ``SentTimestamp`` attribute (epoch milliseconds, when
    the producer sent the message; the same on every receive), in ``now_iso``'s format; None when
    the record has no usable one."""
    try:
        return normalise_timestamp(int(str(sent_timestamp)))
    except (TypeError, ValueError, OverflowError):
        return None


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(normalise_timestamp(value))
    except ValueError:
        return None


def _iso(moment: datetime) -> str:
    return normalise_timestamp(moment.astimezone(UTC).isoformat())


def implied_timestamp(event: Mapping[str, Any]) -> str | None:
    """``timestamp`` of an event that has none, as the Segment tracking API derives it.

    With ``originalTimestamp`` and ``sentAt`` (the producer's clock), the producer's clock skew is
    corrected: ``receivedAt - (sentAt - originalTimestamp)``; with ``originalTimestamp`` alone,
    that; otherwise ``receivedAt``.
    """
    received = _moment(event.get("receivedAt"))
    original = _moment(event.get("originalTimestamp"))
    sent = _moment(event.get("sentAt"))
    if original is not None and sent is not None and received is not None:
        try:
            return _iso(received - (sent - original))
        except (OverflowError, ValueError):
            pass  # absurd clocks (year 1 or 9999): take the producer's word below
    if original is not None:
        return _iso(original)
    return _iso(received) if received is not None else None


def missing(event: Mapping[str, Any], key: str) -> bool:
    """Absent, null or empty: what completion fills in."""
    value = event.get(key)
    return value is None or value == ""


def fill(event: dict[str, Any], received_at: str | None, message_id: Callable[[], str] | None) -> None:
    """Segment's receiver rule, in place, for both entry points: a missing ``messageId`` from
    ``message_id()``, a missing ``receivedAt`` from ``received_at``, then a missing ``timestamp``
    from ``implied_timestamp``. ``None`` fills nothing of its own (a timestamp may still come from
    ``originalTimestamp``). A value that is there, valid or not, is left for validation."""
    if message_id is not None and missing(event, "messageId"):
        # The idempotency key derives from it: assigned before the first attempt, so that a
        # parked retry or a redelivery of this event is deduplicated by Heap.
        event["messageId"] = message_id()
    if received_at is not None and missing(event, "receivedAt"):
        event["receivedAt"] = received_at
    if missing(event, "timestamp"):
        timestamp = implied_timestamp(event)
        if timestamp is not None:
            event["timestamp"] = timestamp


def new_message_id() -> str:
    """The API's ``messageId`` for an event that has none: a UUID, kept once assigned."""
    return str(uuid.uuid4())


def complete_event(
    event: dict[str, Any], event_type: str | None, batch_fields: Mapping[str, Any], received_at: str
) -> dict[str, Any]:
    """The event of an API request as the pipeline (and a parked retry) sees it; deterministic
    once ``open`` ran. The API's own completion, then ``fill``."""
    completed = dict(event)
    if event_type and missing(completed, "type"):
        completed.pop("type", None)
        completed = {"type": event_type, **completed}  # first, as a producer would write it
    completed.pop("writeKey", None)  # a credential: never forwarded, parked or dead-lettered
    for key in ("context", "integrations"):
        shared = batch_fields.get(key)
        if isinstance(shared, dict) and shared:
            own = completed.get(key)
            if own is None:
                completed[key] = dict(shared)
            elif isinstance(own, dict):
                completed[key] = {**shared, **own}
    context = completed.get("context")
    if completed.get("type") == "identify" and completed.get("traits") is None and isinstance(context, dict):
        # RudderStack's SDKs send identify traits in context.traits only; Segment's spec has them here.
        traits = context.get("traits")
        if isinstance(traits, dict):
            completed["traits"] = dict(traits)
    if missing(completed, "sentAt") and batch_fields.get("sentAt") is not None:
        completed["sentAt"] = batch_fields["sentAt"]
    fill(completed, received_at, new_message_id)
    return completed
