"""Segment completion: each event of an API request made whole the way Segment's tracking API
does it, before the first attempt, so that a first attempt and a parked retry are the same event.

The route's ``type``, batch-level ``context``/``integrations``/``sentAt``, ``messageId``,
``receivedAt``, ``timestamp`` (corrected for the producer's clock), and RudderStack's identify
traits from ``context.traits``; a ``writeKey`` in the body goes. docs/api.md has the table.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from heap_forwarder.models import normalise_timestamp


def now_iso() -> str:
    """The time the API received a request, as ``receivedAt`` takes it."""
    return _iso(datetime.now(UTC))


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


def complete_event(
    event: dict[str, Any], event_type: str | None, batch_fields: Mapping[str, Any], received_at: str
) -> dict[str, Any]:
    """The event as the pipeline (and a parked retry) sees it; deterministic once ``open`` ran."""
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
    if missing(completed, "messageId"):
        # The idempotency key derives from it: assigned before the first attempt, so that a
        # parked retry of this event is deduplicated by Heap like any redelivery.
        completed["messageId"] = str(uuid.uuid4())
    if missing(completed, "receivedAt"):
        completed["receivedAt"] = received_at
    if missing(completed, "timestamp"):
        timestamp = implied_timestamp(completed)
        if timestamp is not None:
            completed["timestamp"] = timestamp
    return completed
