"""Inbound events without the models: JSON decoding, timestamps, problems, quick validation.

Everything the SQS hot path needs to read an event and decide whether it is plainly valid. The
pydantic models (``heap_forwarder.models``, which build on this module and never the other way
round) are imported by their callers on first use: only for an event ``quick_validate``
declines, so a warm consumer may never build them.
"""

from __future__ import annotations

import math
import re
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
    # Formatted by hand: strftime's %Y does not zero-pad years before 1000 on glibc.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
        f"{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


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
_ISO_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])\Z"
)
_IDS = ("messageId", "anonymousId", "userId")
# pydantic reads a number above 2e10 as milliseconds (below, as seconds: left to the models).
_MIN_EPOCH_MS = 20_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIMES = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")
# type -> (text fields that must be non-empty, optional text fields, object fields defaulting to {})
_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "track": (("event",), (), "properties"),
    "page": ((), ("name", "category"), "properties"),
    "screen": ((), ("name", "category"), "properties"),
    "identify": ((), (), "traits"),
    "group": (("groupId",), (), "traits"),
    "alias": (("previousId",), (), None),
}


def quick_validate(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The event as its model would hold it, as a plain dict, when it is plainly valid.

    None means "not plainly valid": validate it with the models (``models.validate_event``), which
    accept or refuse it and name the field. The dict is a shallow copy of ``raw`` with the
    timestamps parsed to datetimes and absent ``properties``/``traits`` set to ``{}``: the
    values a model's fields would have, readable by the same playbook rows.
    """
    kind = raw.get("type")
    shape = _SHAPES.get(kind) if kind.__class__ is str else None
    if shape is None:
        return None
    required, optional, blob = shape
    event = dict(raw)
    get = event.get
    for name in _IDS:
        value = get(name)
        if value is not None and value.__class__ is not str:
            return None  # a number: the model turns it into a string
    for name in _TIMES:
        value = get(name)
        if value is not None:
            if value.__class__ is int and _MIN_EPOCH_MS < value < _MAX_EPOCH_MS:
                # Epoch milliseconds, as the models read a number this large (exact, no float).
                event[name] = _EPOCH + timedelta(milliseconds=value)
                continue
            if value.__class__ is not str or _ISO_TIMESTAMP.match(value) is None:
                return None
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return None
            if moment.year in (1, 9999):
                return None  # may leave datetime's range in UTC: the model's check words it
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
        for name in ("userAgent", "ip"):
            value = context.get(name)
            if value is not None and value.__class__ is not str:
                return None
        for name in ("page", "traits"):
            value = context.get(name)
            if value is not None and value.__class__ is not dict:
                return None
    return event


_MISSING: Any = object()


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
