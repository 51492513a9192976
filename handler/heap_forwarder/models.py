"""Inbound events: the MetaRouter/Segment spec as pydantic v2 models. Knows nothing of Heap or AWS.

The models are usable as Powertools parser models (``parse(event=..., model=InboundEvent)``).
Unknown fields are kept (``extra="allow"``); untyped blobs (``properties``, ``traits``,
``integrations``) stay plain dicts, which keeps validation cheap on the hot path.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import from_json

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
            raise ValueError(f"not an ISO 8601 timestamp: {value[:40]!r}") from None
    raise ValueError("timestamp must be an ISO 8601 string or epoch milliseconds")


# Parsed by pydantic's Rust core (ISO 8601 with any offset, or epoch seconds/milliseconds told
# apart by size), written back as ISO 8601 UTC: a Python validator here would cost more than
# the rest of the event's validation.
def _within_utc_range(moment: datetime) -> datetime:
    # Only the first and last days of years 1 and 9999 can leave datetime's range in UTC.
    if moment.year in (1, 9999) and moment.utcoffset():
        format_timestamp(moment)  # raises ValueError: the field is reported, not a crash later
    return moment


Timestamp = Annotated[
    datetime, AfterValidator(_within_utc_range), PlainSerializer(format_timestamp, return_type=str)
]
Blob = dict[str, Any]

# defer_build: a model's validator is built when first used, not at import. The SQS hot path
# takes most events through quick_validate, so a warm consumer may never need them at all.
_MODEL_CONFIG = ConfigDict(extra="allow", coerce_numbers_to_str=True, allow_inf_nan=False, defer_build=True)


class Context(BaseModel):
    model_config = _MODEL_CONFIG

    userAgent: str | None = None
    ip: str | None = None
    page: Blob | None = None
    traits: Blob | None = None


class CommonFields(BaseModel):
    """Fields every MetaRouter/Segment event may carry."""

    model_config = _MODEL_CONFIG

    messageId: str | None = None
    anonymousId: str | None = None
    userId: str | None = None
    timestamp: Timestamp | None = None
    originalTimestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    receivedAt: Timestamp | None = None
    context: Context | None = None
    integrations: Blob | None = None


class TrackEvent(CommonFields):
    type: Literal["track"]
    event: str = Field(min_length=1)
    properties: Blob = Field(default_factory=dict)


class PageEvent(CommonFields):
    type: Literal["page"]
    name: str | None = None
    category: str | None = None
    properties: Blob = Field(default_factory=dict)


class ScreenEvent(CommonFields):
    type: Literal["screen"]
    name: str | None = None
    category: str | None = None
    properties: Blob = Field(default_factory=dict)


class IdentifyEvent(CommonFields):
    type: Literal["identify"]
    traits: Blob = Field(default_factory=dict)


class GroupEvent(CommonFields):
    type: Literal["group"]
    groupId: str = Field(min_length=1)
    traits: Blob = Field(default_factory=dict)


class AliasEvent(CommonFields):
    type: Literal["alias"]
    previousId: str = Field(min_length=1)


InboundEvent = Annotated[
    TrackEvent | PageEvent | ScreenEvent | IdentifyEvent | GroupEvent | AliasEvent,
    Field(discriminator="type"),
]
AnyEvent = TrackEvent | PageEvent | ScreenEvent | IdentifyEvent | GroupEvent | AliasEvent
EVENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")


@functools.cache
def _event_adapter() -> TypeAdapter[AnyEvent]:
    return TypeAdapter(InboundEvent)


class Batch(BaseModel):
    """The Segment/MetaRouter batch body ``{"batch": [...]}``."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    batch: list[InboundEvent]


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation failure: which event, which field, why."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"event {self.index}: {self.field or '(event)'}: {self.message}"


class InvalidEvent(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def _field_path(loc: tuple[int | str, ...], event_type: object) -> str:
    # A discriminated union puts the tag first in the location ("track", "event"): drop it.
    parts = list(loc)
    if parts and parts[0] == event_type:
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


def problems_from(error: ValidationError, index: int, raw: object) -> list[Problem]:
    event_type = raw.get("type") if isinstance(raw, dict) else None
    problems = []
    for detail in error.errors(include_url=False):
        if detail["type"] == "union_tag_invalid":
            message = f"unsupported type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}"
            problems.append(Problem(index, "type", message))
        elif detail["type"] == "union_tag_not_found":
            problems.append(Problem(index, "type", "missing; every event needs a type"))
        else:
            problems.append(Problem(index, _field_path(detail["loc"], event_type), detail["msg"]))
    return problems


def validate_event(raw: object, index: int = 0) -> AnyEvent:
    """Validate one decoded event; raise InvalidEvent naming the index, field and reason."""
    if not isinstance(raw, dict):
        raise InvalidEvent([Problem(index, "", f"an event must be a JSON object, not {type(raw).__name__}")])
    try:
        return _event_adapter().validate_python(raw)
    except ValidationError as error:
        raise InvalidEvent(problems_from(error, index, raw)) from None


# ---------------------------------------------------------------------------------------------
# The hot path's shortcut: most events are plainly valid, and proving that on the decoded dict
# costs a fraction of building a model. Anything unusual (a number where a string goes, a
# timestamp in another shape, a bad type) is left to the models above, which decide and word
# the error. tests/models/test_quick.py holds the shortcut to the models' verdict and values.

# The one timestamp shape taken here: what Segment's and MetaRouter's libraries send.
_ISO_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})\Z"
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

    None means "not plainly valid": validate it with the models (``validate_event``), which
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
