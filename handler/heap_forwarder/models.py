"""Inbound events: the MetaRouter/Segment spec as pydantic v2 models. Knows nothing of Heap or AWS.

The models are usable as Powertools parser models (``parse(event=..., model=InboundEvent)``).
Unknown fields are kept (``extra="allow"``); untyped blobs (``properties``, ``traits``,
``integrations``) stay plain dicts, which keeps validation cheap on the hot path.

What does not need the models (JSON decoding, timestamps, the problems, the hot path's
``quick_validate``) lives in ``heap_forwarder.inbound`` and is re-exported here: the SQS
function imports this module only for an event ``quick_validate`` declines.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from heap_forwarder.inbound import (
    EVENT_TYPES,
    InvalidEvent,
    InvalidJson,
    Problem,
    decode_json,
    events_of,
    format_timestamp,
    normalise_timestamp,
    quick_validate,
)

__all__ = [
    "EVENT_TYPES",
    "AliasEvent",
    "AnyEvent",
    "Batch",
    "CommonFields",
    "Context",
    "GroupEvent",
    "IdentifyEvent",
    "InboundEvent",
    "InvalidEvent",
    "InvalidJson",
    "PageEvent",
    "Problem",
    "ScreenEvent",
    "SpecModel",
    "TrackEvent",
    "ViewFields",
    "as_plain",
    "decode_json",
    "events_of",
    "format_timestamp",
    "normalise_timestamp",
    "problems_from",
    "quick_validate",
    "validate_event",
]


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


class SpecModel(BaseModel):
    """What every part of an event allows: unknown fields kept, numbers made text where text goes,
    no NaN or infinity."""

    # defer_build: a model's validator is built when first used, not at import. The SQS hot path
    # takes most events through quick_validate, so a warm consumer may never need them at all.
    model_config = ConfigDict(
        extra="allow", coerce_numbers_to_str=True, allow_inf_nan=False, defer_build=True
    )


class Context(SpecModel):
    userAgent: str | None = None
    ip: str | None = None
    page: Blob | None = None
    traits: Blob | None = None


class CommonFields(SpecModel):
    """Fields every MetaRouter/Segment event may carry."""

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


class ViewFields(CommonFields):
    """What a page and a screen view both carry: the spec gives the two calls the same fields."""

    name: str | None = None
    category: str | None = None
    properties: Blob = Field(default_factory=dict)


class PageEvent(ViewFields):
    type: Literal["page"]


class ScreenEvent(ViewFields):
    type: Literal["screen"]


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


class Batch(BaseModel):
    """The Segment/MetaRouter batch body ``{"batch": [...]}``."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    batch: list[InboundEvent]


def _field_path(loc: tuple[int | str, ...], event_type: object) -> str:
    # A discriminated union puts the tag first in the location ("track", "event"): drop it.
    parts = list(loc)
    if parts and parts[0] == event_type:
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


# What pydantic's datetime parsing takes (and _within_utc_range lets through), said exactly.
TIMESTAMPS_ACCEPTED = (
    "accepted: ISO 8601 date and time like 2024-05-01T12:30:00Z or 2024-05-01T14:30:00.123+02:00"
    " (seconds and fraction optional; no offset = UTC), a date like 2024-05-01, or Unix time in"
    " seconds or milliseconds (a number or its digits)"
)
_TIME_FIELDS = frozenset({"timestamp", "originalTimestamp", "sentAt", "receivedAt"})
_TIME_ERRORS = frozenset(
    {
        "datetime_type",
        "datetime_parsing",
        "datetime_from_date_parsing",
        "datetime_object_invalid",
        "value_error",
    }
)
_SHOWN_CHARS = 60


def _timestamp_problem(index: int, field: str, detail: Any) -> Problem:
    """A bad timestamp: the log-safe message says why and what is accepted; the detail shows the
    value too (event data: it goes where the event goes, not to logs)."""
    why = str(detail["msg"])
    for prefix in (
        "Input should be a valid datetime or date, ",
        "Input should be a valid datetime, ",
        "Value error, ",
    ):
        why = why.removeprefix(prefix)
    why = "" if why == "Input should be a valid datetime" else f" ({why})"
    shown = json.dumps(detail.get("input"), ensure_ascii=False, default=str)
    if len(shown) > _SHOWN_CHARS:
        shown = shown[: _SHOWN_CHARS - 3] + "..."
    return Problem(
        index,
        field,
        f"not a valid timestamp{why}; {TIMESTAMPS_ACCEPTED}",
        f"{shown} is not a valid timestamp{why}; {TIMESTAMPS_ACCEPTED}",
    )


def problems_from(error: ValidationError, index: int, raw: object) -> list[Problem]:
    event_type = raw.get("type") if isinstance(raw, dict) else None
    problems = []
    for detail in error.errors(include_url=False):
        field = _field_path(detail["loc"], event_type)
        if field in _TIME_FIELDS and detail["type"] in _TIME_ERRORS:
            problems.append(_timestamp_problem(index, field, detail))
        elif detail["type"] == "union_tag_invalid":
            message = f"unsupported type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}"
            problems.append(Problem(index, "type", message))
        elif detail["type"] == "union_tag_not_found":
            problems.append(Problem(index, "type", "missing; every event needs a type"))
        else:
            problems.append(Problem(index, field, detail["msg"]))
    return problems


def validate_event(raw: object, index: int = 0) -> AnyEvent:
    """Validate one decoded event; raise InvalidEvent naming the index, field and reason.

    Powertools' parser is the validator of record: ``parse`` with the discriminated union, one
    event at a time (an SQS envelope would sink the whole batch for one bad record). It is
    imported here, on first use (about 65 ms): only events the hot path's shortcut declines
    come this way, and it holds the shortcut to this verdict (tests/unit/test_inbound.py,
    tests/property/test_inbound_properties.py)."""
    if not isinstance(raw, dict):
        raise InvalidEvent([Problem(index, "", f"an event must be a JSON object, not {type(raw).__name__}")])
    from aws_lambda_powertools.utilities.parser import parse

    try:
        event: AnyEvent = parse(event=raw, model=InboundEvent)  # type: ignore[call-overload]  # a union, not a class
    except ValidationError as error:
        raise InvalidEvent(problems_from(error, index, raw)) from None
    return event


# The event's own objects that a model holds as {} when absent (quick_validate sets them too).
_BLOBS = frozenset({"properties", "traits"})


def as_plain(event: BaseModel) -> dict[str, Any]:
    """The validated event as the plain dict the mapping engine reads: what ``quick_validate``
    makes of a plainly valid event. The fields the input gave (with the models' values: numbers
    made text, timestamps as datetimes), its unknown fields as they came, ``properties`` /
    ``traits`` defaulting to ``{}``, and a typed part (``context``) as plain data without its
    absent fields (``model_dump(exclude_none=True)``). tests/support/inbound_check.py holds it
    to the shortcut's dict."""
    given = event.model_fields_set
    plain: dict[str, Any] = {}
    for name, value in event.__dict__.items():
        if name in given or name in _BLOBS:
            plain[name] = value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value
    if event.__pydantic_extra__:
        plain.update(event.__pydantic_extra__)
    return plain
