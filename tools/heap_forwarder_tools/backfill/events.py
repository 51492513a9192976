"""One historical event made ready for the stack, or the reason it cannot go, and the filters.

An event is held to the runtime's own rules (``inbound.quick_validate``, and
``models.validate_event`` for what the shortcut declines, which words the problem), so that what
is called invalid here is what the consumer would dead-letter as ``invalid_event``.

It is completed as the consumer would, with two differences that make a backfill right:

- ``messageId``, when missing, is a stable id from the file and position (``stable_message_id``),
  never the SQS message's id the consumer would use: that one is new on every run, and Heap's
  idempotency key derives from ``messageId``, so a re-run would duplicate the event;
- ``timestamp``, when missing, comes from ``originalTimestamp`` or ``receivedAt`` (Segment's
  rule, ``inbound.fill``). An event with none of them is invalid: the consumer would take the
  time the backfill sent it, and the event would land in Heap today instead of in its past.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from heap_forwarder.inbound import InvalidEvent, fill, missing, normalise_timestamp, quick_validate
from heap_forwarder.mapping.playbook import event_key
from heap_forwarder_tools.backfill.reader import Item

# uuid5's namespace for the stable messageIds of backfilled events (any fixed UUID will do; this
# one must never change, or a re-run would give old events new ids).
_ID_NAMESPACE = uuid.UUID("6d1b0c1e-4f0e-5a43-9d0b-2b4e0b6a3f10")
TOO_LARGE_NUMBER = "a number is too large for a float (e.g. 1e400)"
NO_TIME = "no timestamp, originalTimestamp or receivedAt: the stack would give it the time of the backfill"


def stable_message_id(label: str, item: Item) -> str:
    """The same id for the same file and position on every run (a UUID, as Segment's are)."""
    position = item.position
    return str(uuid.uuid5(_ID_NAMESPACE, f"{label}\n{position.line}\n{position.item}"))


def parse_moment(text: str) -> datetime:
    """A ``--since`` / ``--until`` value: ISO 8601 (a date alone is its midnight; no offset = UTC)
    or epoch milliseconds."""
    return datetime.fromisoformat(normalise_timestamp(text))


@dataclass(frozen=True, slots=True)
class Ready:
    """An event the stack can take: its type, its name (track: ``event``; page and screen:
    ``name``; else ""), its time, and its JSON as it will be sent."""

    kind: str
    name: str
    moment: datetime
    text: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Why an event cannot be sent. ``reason`` is safe to print (our words); ``detail`` may show
    the event's own values (for the report file, which is the user's)."""

    reason: str
    detail: str


def prepare(item: Item, label: str) -> Ready | Refused:
    """The item's event validated and completed (in place), or why not."""
    if item.problem is not None:
        return Refused(item.problem, item.problem)
    event = item.event
    if not isinstance(event, dict):
        judged = _by_models(event)
        return judged if isinstance(judged, Refused) else Refused("not an event", "not an event")
    complete = not missing(event, "messageId") and not missing(event, "timestamp")
    fill(event, None, lambda: stable_message_id(label, item))
    plain = quick_validate(event)
    if plain is None:
        judged = _by_models(event)
        if isinstance(judged, Refused):
            return judged
        plain = judged
    moment = plain.get("timestamp")
    if not isinstance(moment, datetime):
        return Refused(NO_TIME, NO_TIME)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    kind = str(plain["type"])
    name = plain.get("event") if kind == "track" else plain.get("name")
    if complete and item.line_text is not None:
        text = item.line_text.decode("utf-8", errors="replace").strip()
    else:
        try:
            text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError:
            return Refused(TOO_LARGE_NUMBER, TOO_LARGE_NUMBER)
        if not text.isascii() and not _utf8(text):
            # A lone surrogate ("\ud800" in the file) cannot be UTF-8, which SQS takes: escaped.
            text = json.dumps(event, ensure_ascii=True, separators=(",", ":"))
    return Ready(kind, str(name or ""), moment, text)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _by_models(event: Any) -> dict[str, Any] | Refused:
    """The models' verdict on what the shortcut declined: the event as plain data, or why not."""
    from heap_forwarder.models import as_plain, validate_event

    try:
        return as_plain(validate_event(event))
    except InvalidEvent as error:
        return Refused(
            "; ".join(f"{p.field or 'event'}: {p.message}" for p in error.problems),
            "; ".join(f"{p.field or 'event'}: {p.full_message}" for p in error.problems),
        )


@dataclass(frozen=True)
class Selection:
    """``--since`` (inclusive) / ``--until`` (exclusive) on the event's time, ``--type``, and
    ``--event`` (track events by name, matched as the playbook matches names: ignoring case and
    separators). Empty filters let everything through."""

    since: datetime | None = None
    until: datetime | None = None
    types: frozenset[str] = frozenset()
    event_keys: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Collection[str] = (),
        events: Collection[str] = (),
    ) -> Selection:
        return cls(since, until, frozenset(types), frozenset(event_key(name) for name in events))

    def admits(self, event: Ready) -> bool:
        if self.since is not None and event.moment < self.since:
            return False
        if self.until is not None and event.moment >= self.until:
            return False
        if self.types and event.kind not in self.types:
            return False
        return not self.event_keys or (event.kind == "track" and event_key(event.name) in self.event_keys)

    def describe(self) -> dict[str, Any]:
        """The filters as the checkpoint records them (a resumed run must use the same)."""
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "types": sorted(self.types),
            "events": sorted(self.event_keys),
        }
