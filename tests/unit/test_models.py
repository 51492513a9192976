"""The inbound models (MetaRouter/Segment spec): types, extras, timestamps, problems, JSON, batches."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser import parse
from pydantic import BaseModel, ValidationError

from heap_forwarder.models import (
    AliasEvent,
    Batch,
    GroupEvent,
    IdentifyEvent,
    InvalidEvent,
    InvalidJson,
    PageEvent,
    Problem,
    ScreenEvent,
    TrackEvent,
    as_plain,
    decode_json,
    events_of,
    normalise_timestamp,
    validate_event,
)

RawEvent = Callable[[str], dict[str, Any]]
RAW_DIR = Path(__file__).resolve().parents[2] / "events" / "raw"
NORMALISED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def dumped(event: BaseModel) -> dict[str, Any]:
    """The event as JSON data: times written as ISO 8601 UTC."""
    return event.model_dump(mode="json", exclude_none=True)


def problems(raw: object, index: int = 0) -> list[Problem]:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(raw, index)
    return caught.value.problems


# ---------------------------------------------------------------------------------------------
# Each type


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("cart_viewed", TrackEvent),
        ("checkout_started", TrackEvent),
        ("order_completed", TrackEvent),
        ("payment_info_entered", TrackEvent),
        ("product_added", TrackEvent),
        ("product_clicked", TrackEvent),
        ("product_list_viewed", TrackEvent),
        ("product_viewed", TrackEvent),
        ("products_searched", TrackEvent),
        ("custom_track", TrackEvent),
        ("page", PageEvent),
        ("screen", ScreenEvent),
        ("identify", IdentifyEvent),
        ("group", GroupEvent),
        ("alias", AliasEvent),
    ],
)
def test_each_sample_validates_as_its_type(raw_event: RawEvent, name: str, model: type) -> None:
    event = validate_event(raw_event(name))
    assert type(event) is model
    assert event.timestamp is not None
    assert NORMALISED.match(dumped(event)["timestamp"])


def test_every_raw_sample_is_covered() -> None:
    assert len(list(RAW_DIR.glob("*.json"))) == 15


def test_track_fields(raw_event: RawEvent) -> None:
    event = validate_event(raw_event("order_completed"))
    assert isinstance(event, TrackEvent)
    assert event.event == "Order Completed"
    assert event.messageId == "c7b602b0-8bd5-40d3-888a-bc46bb3443e4"
    assert event.anonymousId == "130161d0-8fee-4167-aa4d-d151eed27c6b"
    assert event.userId == "usr_4f9c2a71e3"
    assert event.properties["order_id"] == "ord_50314"
    assert event.properties["products"][1]["quantity"] == 2
    assert event.context is not None
    assert event.context.ip == "203.0.113.42"
    assert event.context.userAgent is not None
    assert event.context.page == {
        "path": "/checkout/confirmation",
        "referrer": "https://shop.example.com/checkout/payment",
        "search": "",
        "title": "Thank you for your order | Kitchenly",
        "url": "https://shop.example.com/checkout/confirmation",
    }
    assert event.integrations == {"All": True}


def test_page_screen_identify_group_alias_fields() -> None:
    page = validate_event({"type": "page", "name": "Home", "category": "Landing"})
    assert isinstance(page, PageEvent)
    assert (page.name, page.category, page.properties) == ("Home", "Landing", {})
    screen = validate_event({"type": "screen", "name": "Cart"})
    assert isinstance(screen, ScreenEvent)
    assert screen.name == "Cart"
    identify = validate_event({"type": "identify", "userId": "u1"})
    assert isinstance(identify, IdentifyEvent)
    assert identify.traits == {}
    group = validate_event({"type": "group", "groupId": "g1", "traits": {"plan": "pro"}})
    assert isinstance(group, GroupEvent)
    assert (group.groupId, group.traits) == ("g1", {"plan": "pro"})
    alias = validate_event({"type": "alias", "previousId": "old", "userId": "new"})
    assert isinstance(alias, AliasEvent)
    assert alias.previousId == "old"


def test_properties_default_to_an_empty_object() -> None:
    event = validate_event({"type": "track", "event": "x"})
    assert isinstance(event, TrackEvent)
    assert event.properties == {}
    assert event.timestamp is None
    assert event.context is None


def test_numeric_ids_become_strings() -> None:
    event = validate_event(
        {"type": "group", "groupId": 7731, "userId": 42, "anonymousId": 1.5, "messageId": 9}
    )
    assert isinstance(event, GroupEvent)
    assert (event.groupId, event.userId, event.anonymousId, event.messageId) == ("7731", "42", "1.5", "9")


# ---------------------------------------------------------------------------------------------
# Unknown fields are kept


def test_unknown_top_level_fields_are_kept(raw_event: RawEvent) -> None:
    event = validate_event({**raw_event("page"), "experiment": {"arm": "B"}})
    assert event.model_extra == {"channel": "client", "experiment": {"arm": "B"}}
    assert event.channel == "client"  # type: ignore[attr-defined]


def test_unknown_context_fields_are_kept(raw_event: RawEvent) -> None:
    event = validate_event(raw_event("identify"))
    assert event.context is not None
    extra = event.context.model_extra
    assert extra is not None
    assert extra["sessionId"] == "f47ac10b-58cc-4372-a567-0e02b2c3d479"
    assert extra["heap"] == {"user_id": "8267308474930012"}
    assert extra["library"] == {"name": "analytics.js", "version": "next-1.70.0"}


def test_as_plain_gives_the_engine_the_shortcuts_shape() -> None:
    """What the mapping engine reads of an event the shortcut declined: the fields given (the
    models' values), the extras as they came, the object defaulting to {}, context as plain data."""
    custom = {"nested": None}
    raw = {
        "type": "track",
        "event": "x",
        "userId": 42,
        "anonymousId": None,
        "timestamp": 1_718_028_195,
        "context": {"userAgent": None, "ip": "1.2.3.4", "page": {"a": None}, "sessionId": "s", "z": None},
        "custom": custom,
    }
    plain = as_plain(validate_event(raw))
    assert plain == {
        "type": "track",
        "event": "x",
        "userId": "42",
        "anonymousId": None,
        "timestamp": datetime(2024, 6, 10, 14, 3, 15, tzinfo=UTC),
        "context": {"ip": "1.2.3.4", "page": {"a": None}, "sessionId": "s"},
        "properties": {},
        "custom": custom,
    }
    assert plain["custom"] is custom  # extras as they came, as the shortcut's shallow copy has them
    assert not any(isinstance(v, BaseModel) for v in plain.values())


@pytest.mark.parametrize(
    ("raw", "absent"),
    [
        ({"type": "identify", "userId": "u1"}, {"traits": {}}),
        ({"type": "group", "groupId": "g1"}, {"traits": {}}),
        ({"type": "page", "name": "Home"}, {"properties": {}}),
        ({"type": "alias", "previousId": "old", "properties": 3}, {}),  # no such field: an extra
        ({"type": "track", "event": "x", "context": None}, {"properties": {}}),
    ],
)
def test_as_plain_keeps_what_was_given_and_the_default_objects(
    raw: dict[str, Any], absent: dict[str, Any]
) -> None:
    assert as_plain(validate_event(raw)) == {**raw, **absent}


def test_the_dump_round_trips_the_extras() -> None:
    raw = {"type": "track", "event": "x", "custom": [1, 2], "context": {"weird": True}}
    dumped = validate_event(raw).model_dump(exclude_none=True)
    assert dumped == {
        "type": "track",
        "event": "x",
        "properties": {},
        "custom": [1, 2],
        "context": {"weird": True},
    }


# ---------------------------------------------------------------------------------------------
# Timestamps


TIMESTAMPS = [
    ("2024-06-10T14:04:30.711Z", "2024-06-10T14:04:30.711Z"),
    ("2024-06-10T14:04:30Z", "2024-06-10T14:04:30.000Z"),
    ("2024-06-10T16:05:01.239+02:00", "2024-06-10T14:05:01.239Z"),
    ("2024-06-10T09:05:01.239-05:00", "2024-06-10T14:05:01.239Z"),
    ("2024-06-11T01:30:00+02:00", "2024-06-10T23:30:00.000Z"),
    ("2024-06-10T14:04:30.711", "2024-06-10T14:04:30.711Z"),  # naive: taken as UTC
    ("2024-06-10T14:04:30.711999Z", "2024-06-10T14:04:30.711Z"),  # microseconds cut, not rounded
    (1718028195123, "2024-06-10T14:03:15.123Z"),  # epoch milliseconds
    (1718028195123.9, "2024-06-10T14:03:15.123Z"),
    ("1718028195123", "2024-06-10T14:03:15.123Z"),  # numeric string
]


@pytest.mark.parametrize(("value", "expected"), TIMESTAMPS)
def test_timestamps_are_normalised(value: Any, expected: str) -> None:
    event = validate_event({"type": "track", "event": "x", "timestamp": value, "sentAt": value})
    assert dumped(event)["timestamp"] == expected
    assert dumped(event)["sentAt"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *TIMESTAMPS,
        ("  2024-06-10T14:04:30.711Z ", "2024-06-10T14:04:30.711Z"),
        (0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_normalise_timestamp(value: Any, expected: str) -> None:
    assert normalise_timestamp(value) == expected


def test_the_model_keeps_the_offset_and_writes_utc() -> None:
    event = validate_event({"type": "page", "timestamp": "2024-06-10T16:05:01.239+02:00"})
    assert event.timestamp == datetime(2024, 6, 10, 14, 5, 1, 239000, tzinfo=UTC)
    assert event.model_dump_json(include={"timestamp"}) == '{"timestamp":"2024-06-10T14:05:01.239Z"}'


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt", "receivedAt"])
def test_every_time_field_is_normalised(field: str) -> None:
    event = validate_event({"type": "page", field: "2024-06-10T16:05:01.239+02:00"})
    assert dumped(event)[field] == "2024-06-10T14:05:01.239Z"


@pytest.mark.parametrize(
    "value",
    ["not a date", "2024-13-45T00:00:00Z", "", "yesterday", True, [1], {"t": 1}, 1e20, -1e20],
)
def test_an_invalid_timestamp_is_a_problem_naming_the_field(value: Any) -> None:
    [problem] = problems({"type": "track", "event": "x", "timestamp": value}, index=4)
    assert problem.index == 4
    assert problem.field == "timestamp"
    assert problem.message


def test_the_sample_with_a_bad_timestamp_names_both_fields() -> None:
    raw = {"type": "track", "event": "Product Clicked", "timestamp": "not a date", "properties": ["a"]}
    assert [(p.index, p.field) for p in problems(raw)] == [(0, "timestamp"), (0, "properties")]


@pytest.mark.parametrize("value", ["0999-01-01T00:00:00Z", -50_000_000_000_000])
def test_an_early_year_is_still_iso_8601(value: Any) -> None:
    # Either four digits or a problem: never a malformed timestamp.
    try:
        normalised = normalise_timestamp(value)
    except ValueError:
        return
    assert NORMALISED.match(normalised), normalised


# ---------------------------------------------------------------------------------------------
# Problems


def test_missing_event_on_track() -> None:
    [problem] = problems({"type": "track", "anonymousId": "a"}, index=2)
    assert problem == Problem(2, "event", "Field required")
    assert str(problem) == "event 2: event: Field required"


def test_empty_event_name_on_track() -> None:
    [problem] = problems({"type": "track", "event": ""})
    assert problem.field == "event"
    assert "at least 1 character" in problem.message


def test_missing_group_id_and_previous_id() -> None:
    assert [p.field for p in problems({"type": "group"})] == ["groupId"]
    assert [p.field for p in problems({"type": "alias"})] == ["previousId"]


@pytest.mark.parametrize("event_type", ["purchase", "Track", "", 5])
def test_unsupported_type(event_type: Any) -> None:
    [problem] = problems({"type": event_type, "event": "x"}, index=1)
    assert problem.index == 1
    assert problem.field == "type"
    assert problem.message.startswith(f"unsupported type {event_type!r}; expected one of ")
    assert "track, page, screen, identify, group, alias" in problem.message


def test_missing_type() -> None:
    assert problems({"event": "x"}) == [Problem(0, "type", "missing; every event needs a type")]


@pytest.mark.parametrize(("raw", "kind"), [([1, 2], "list"), ("text", "str"), (None, "NoneType"), (3, "int")])
def test_non_object_event(raw: Any, kind: str) -> None:
    assert problems(raw, index=7) == [Problem(7, "", f"an event must be a JSON object, not {kind}")]
    assert str(Problem(7, "", "x")) == "event 7: (event): x"


def test_wrong_types_name_nested_fields() -> None:
    raw = {"type": "track", "event": "x", "properties": "nope", "context": {"userAgent": ["a"]}, "traits": 1}
    fields = sorted(p.field for p in problems(raw))
    assert fields == ["context.userAgent", "properties"]


def test_non_finite_numbers_are_refused_in_typed_fields() -> None:
    [problem] = problems({"type": "track", "event": "x", "timestamp": float("nan")})
    assert problem.field == "timestamp"


def test_an_invalid_event_is_a_value_error_listing_its_problems() -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_event({"type": "track", "timestamp": "bad"}, 3)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith("event 3: ")
    assert {p.field for p in caught.value.problems} == {"event", "timestamp"}


# ---------------------------------------------------------------------------------------------
# JSON and batches


def test_decode_json() -> None:
    assert decode_json('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert decode_json(b'{"caf\\u00e9": "\xc3\xa9"}') == {"caf\u00e9": "\u00e9"}


@pytest.mark.parametrize("body", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', "[NaN]"])
def test_decode_json_refuses_nan_and_infinity(body: str) -> None:
    with pytest.raises(InvalidJson, match="body is not valid JSON"):
        decode_json(body)


@pytest.mark.parametrize("body", ["", "{", '{"a": 1,}', "{'a': 1}", b"\xff\xfe"])
def test_decode_json_refuses_what_is_not_json(body: str | bytes) -> None:
    with pytest.raises(InvalidJson):
        decode_json(body)


def test_an_invalid_json_error_is_a_value_error() -> None:
    assert issubclass(InvalidJson, ValueError)


def test_events_of_a_batch() -> None:
    document = {
        "batch": [{"type": "track", "event": "a"}, {"type": "page"}],
        "sentAt": "2024-06-10T14:00:00Z",
    }
    assert events_of(document) == ([{"type": "track", "event": "a"}, {"type": "page"}], True)


def test_events_of_a_single_event() -> None:
    event = {"type": "track", "event": "a"}
    assert events_of(event) == ([event], False)


def test_an_event_with_a_batch_field_is_still_one_event() -> None:
    event = {"type": "track", "event": "a", "batch": [1]}
    assert events_of(event) == ([event], False)


@pytest.mark.parametrize("document", [[1, 2], "text", None])
def test_events_of_anything_else_is_one_event_for_validation_to_refuse(document: Any) -> None:
    assert events_of(document) == ([document], False)


@pytest.mark.parametrize("batch", [{"type": "track"}, "x", None])
def test_a_batch_must_be_an_array(batch: Any) -> None:
    with pytest.raises(InvalidEvent) as caught:
        events_of({"batch": batch})
    assert caught.value.problems == [Problem(0, "batch", "must be an array of events")]


def test_events_of_decoded_json_then_validated() -> None:
    body = json.dumps({"batch": [{"type": "track", "event": "a"}, {"type": "nope"}, "bad"]})
    events, was_batch = events_of(decode_json(body))
    assert was_batch
    assert isinstance(validate_event(events[0], 0), TrackEvent)
    assert [(p.index, p.field) for p in problems(events[1], 1)] == [(1, "type")]
    assert [(p.index, p.field) for p in problems(events[2], 2)] == [(2, "")]


def test_the_batch_model() -> None:
    batch = Batch.model_validate({"batch": [{"type": "page"}, {"type": "identify"}], "context": {"x": 1}})
    assert [type(e) for e in batch.batch] == [PageEvent, IdentifyEvent]
    assert batch.model_extra == {"context": {"x": 1}}


# ---------------------------------------------------------------------------------------------
# Powertools parser compatibility


def test_powertools_parse_with_track_event(raw_event: RawEvent) -> None:
    event = parse(event=raw_event("product_clicked"), model=TrackEvent)
    assert isinstance(event, TrackEvent)
    assert event.event == "Product Clicked"
    assert dumped(event)["timestamp"] == "2024-06-10T14:03:15.123Z"
    assert event.model_extra == {"channel": "client"}


def test_powertools_parse_from_json_text(raw_event: RawEvent) -> None:
    event = parse(event=json.dumps(raw_event("cart_viewed")), model=TrackEvent)
    assert isinstance(event, TrackEvent)
    assert event.properties["cart_id"] == "cart_8d2e6a51"


@pytest.mark.parametrize(
    ("name", "model"), [("page", PageEvent), ("identify", IdentifyEvent), ("group", GroupEvent)]
)
def test_powertools_parse_with_other_models(raw_event: RawEvent, name: str, model: type) -> None:
    assert isinstance(parse(event=raw_event(name), model=model), model)


def test_powertools_parse_reports_validation_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        parse(event={"type": "track", "timestamp": "bad"}, model=TrackEvent)
    assert {e["loc"][0] for e in caught.value.errors()} == {"event", "timestamp"}
