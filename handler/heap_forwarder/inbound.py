"""What arrives, without the models: events decoded, completed, and quick-validated.

Everything both entry points need to read an event, make it whole and decide whether it is
plainly valid: JSON decoding and the events a body carries, timestamps, problems, Segment
completion (``fill``, the one rule both entry points apply; the API's own ``complete_event``),
and the hot path's ``quick_validate``. The pydantic models (``heap_forwarder.models``, which
build on this module and never the other way round) are imported by their callers on first
use: only for an event ``quick_validate`` declines, so a warm consumer may never build them.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import from_json

EVENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")

# Epoch milliseconds beyond this are surely not milliseconds (year 5138): refuse them.
_MAX_EPOCH_MS = 1e14


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``; a time without an offset is taken as UTC."""
    if moment.tzinfo is None:  # Segment's libraries always send an offset; a bare time is UTC
        moment = moment.replace(tzinfo=UTC)
    elif moment.utcoffset():
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            raise ValueError("timestamp out of range once converted to UTC") from None
    # isoformat, not strftime: %Y does not zero-pad years before 1000 on glibc. Milliseconds
    # are truncated, never rounded; the offset (+00:00, or none) is replaced by Z.
    return moment.isoformat(timespec="milliseconds")[:23] + "Z"


# What normalise_timestamp reads (datetime.fromisoformat, else digits as epoch milliseconds).
ISO8601_ACCEPTS = "accepted: ISO 8601 (any offset; none = UTC) or epoch milliseconds (a number or its digits)"


def normalise_timestamp(value: Any) -> str:
    """ISO 8601 (any offset), a datetime, or epoch milliseconds -> ISO 8601 UTC (``...Z``)."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, bool):
        raise ValueError("timestamp must be an ISO 8601 string or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > _MAX_EPOCH_MS:
            raise ValueError("epoch milliseconds out of range")
        return format_timestamp(datetime.fromtimestamp(value / 1000, tz=UTC))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return normalise_timestamp(int(text))
        try:
            return format_timestamp(datetime.fromisoformat(text))
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp: {value[:40]!r}; {ISO8601_ACCEPTS}") from None
    raise ValueError("timestamp must be an ISO 8601 string or epoch milliseconds")


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation failure: which event, which field, why.

    ``message`` is safe to log (our words, no event data); ``detail``, when set, is the message
    with the event's own offending value, for where the event itself goes (its dead letter, the
    sender's answer), never a log line."""

    index: int
    field: str
    message: str
    detail: str = ""

    @property
    def full_message(self) -> str:
        return self.detail or self.message

    def __str__(self) -> str:
        return f"event {self.index}: {self.field or '(event)'}: {self.message}"


class InvalidEvent(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------
# The hot path's shortcut: most events are plainly valid, and proving that on the decoded dict
# costs a fraction of building a model. Anything unusual (a number where a string goes, a
# timestamp in another shape, a bad type) is left to the models (``models.validate_event``),
# which decide and word the error. tests/unit/test_inbound.py and
# tests/property/test_inbound_properties.py hold the shortcut to the models' verdict and values.

# The one timestamp shape taken here: what Segment's and MetaRouter's libraries send.
# Every field bounded: datetime.fromisoformat takes offset minutes of 60 or more (and, in newer
# Pythons, 24:00:00), which the models refuse.
PLAIN_ISO_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
PLAIN_IDS = ("messageId", "anonymousId", "userId")
# pydantic reads a number above 2e10 as milliseconds (below, as seconds: left to the models).
_MIN_EPOCH_MS = 20_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PLAIN_TIMES = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")
# type -> (text fields that must be non-empty, optional text fields, object fields defaulting to {})
PLAIN_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "track": (("event",), (), "properties"),
    "page": ((), ("name", "category"), "properties"),
    "screen": ((), ("name", "category"), "properties"),
    "identify": ((), (), "traits"),
    "group": (("groupId",), (), "traits"),
    "alias": (("previousId",), (), None),
}
# context's fields the models type: text, and objects.
PLAIN_CONTEXT_TEXT = ("userAgent", "ip")
PLAIN_CONTEXT_OBJECTS = ("page", "traits")


def quick_validate(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The event as its model would hold it, as a plain dict, when it is plainly valid.

    None means "not plainly valid": validate it with the models (``models.validate_event``), which
    accept or refuse it and name the field. The dict is a shallow copy of ``raw`` with the
    timestamps parsed to datetimes and absent ``properties``/``traits`` set to ``{}``: the
    values a model's fields would have, readable by the same playbook rows.
    """
    kind = raw.get("type")
    shape = PLAIN_SHAPES.get(kind) if kind.__class__ is str else None
    if shape is None:
        return None
    required, optional, blob = shape
    event = dict(raw)
    get = event.get
    for name in PLAIN_IDS:
        value = get(name)
        if value is not None and value.__class__ is not str:
            return None  # a number: the model turns it into a string
    for name in PLAIN_TIMES:
        value = get(name)
        if value is not None:
            moment = plain_time(value)
            if moment is None:
                return None
            event[name] = moment
    for name in required:
        value = get(name)
        if value.__class__ is not str or not value:
            return None
    for name in optional:
        value = get(name)
        if value is not None and value.__class__ is not str:
            return None
    if blob is not None:
        value = get(blob, _MISSING)
        if value is _MISSING:
            event[blob] = {}
        elif value.__class__ is not dict:
            return None
    integrations = get("integrations")
    if integrations is not None and integrations.__class__ is not dict:
        return None
    context = get("context")
    if context is not None:
        if context.__class__ is not dict:
            return None
        for name in PLAIN_CONTEXT_TEXT:
            value = context.get(name)
            if value is not None and value.__class__ is not str:
                return None
        for name in PLAIN_CONTEXT_OBJECTS:
            value = context.get(name)
            if value is not None and value.__class__ is not dict:
                return None
    return event


_MISSING: Any = object()


def plain_time(value: Any) -> datetime | None:
    """A time field's value (not None) as its model holds it, when it is in a plain shape; None
    means "not plainly valid" (the models decide)."""
    if value.__class__ is int and _MIN_EPOCH_MS < value < _MAX_EPOCH_MS:
        # Epoch milliseconds, as the models read a number this large (exact, no float).
        return _EPOCH + timedelta(milliseconds=value)
    if value.__class__ is not str or PLAIN_ISO_TIMESTAMP.match(value) is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.year in (1, 9999):
        return None  # may leave datetime's range in UTC: the model's check words it
    return moment


class InvalidJson(ValueError):
    pass


def decode_json(body: str | bytes, *, finite_numbers: bool = True) -> Any:
    """Decode JSON with a Rust-backed parser; NaN and Infinity are refused.

    A number too large for a float (``1e400``) still decodes to infinity: with
    ``finite_numbers`` (the default) the document is then refused too, at the cost of a walk
    over it. The SQS consumer skips the walk on its hot path: it keeps each record's text as
    it came, and the Heap rules refuse a non-finite value in anything sent to Heap.
    """
    try:
        document = from_json(body, allow_inf_nan=False)
    except ValueError as error:
        raise InvalidJson(f"body is not valid JSON: {error}") from None
    if finite_numbers and _has_non_finite(document):
        raise InvalidJson("body is not valid JSON for Heap: a number is too large for a float (e.g. 1e400)")
    return document


def _has_non_finite(document: Any) -> bool:
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def events_of(document: Any) -> tuple[list[Any], bool]:
    """The events a decoded body carries: ``{"batch": [...]}`` or one event. Second item: was a batch."""
    if isinstance(document, dict) and "batch" in document and "type" not in document:
        batch = document["batch"]
        if not isinstance(batch, list):
            raise InvalidEvent([Problem(0, "batch", "must be an array of events")])
        return batch, True
    return [document], False


# ---------------------------------------------------------------------------------------------
# Segment completion: an event made whole the way Segment's tracking API does it, before the
# first attempt, so that a first attempt, a parked retry and a redelivery are the same event.
#
# One rule for both entry points, ``fill``: what Segment's spec lets a receiver fill in, a
# missing ``messageId``, ``receivedAt``, and ``timestamp`` (from ``originalTimestamp``, corrected
# for the producer's clock, else ``receivedAt``). Each entry point says where its values come
# from: the API from the request (its time, a new UUID), the consumer from the SQS record (its
# ``SentTimestamp``, ``<record messageId>:<position>``), so a redelivered record is filled the
# same way every time.
#
# The API's own part, ``complete_event``: the route's ``type``, batch-level
# ``context``/``integrations``/``sentAt``, RudderStack's identify traits from ``context.traits``,
# a ``writeKey`` in the body dropped; then ``fill``. docs/api.md has the table.


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
