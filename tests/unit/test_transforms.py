"""The transforms a playbook row may apply: each one, its bad arguments, and values it cannot convert."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from heap_forwarder.mapping.engine import Mapper, MappingError
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import PlaybookError
from heap_forwarder.mapping.transforms import (
    TRANSFORM_NAMES,
    TransformError,
    build_transform,
    flatten_object,
    snake_case,
)
from heap_forwarder.models import as_plain, validate_event
from heap_forwarder.outcome import ErrorClass
from heap_forwarder.pipeline import Pipeline


def run(spec: str | dict[str, Any], value: Any) -> Any:
    return build_transform(spec)(value)


def test_the_transform_names() -> None:
    assert set(TRANSFORM_NAMES) == {
        "to_string",
        "to_number",
        "lowercase",
        "snake_case",
        "truncate",
        "iso8601",
        "flatten",
        "join",
        "default",
    }


@pytest.mark.parametrize(
    "name", ["to_string", "to_number", "lowercase", "snake_case", "iso8601", "flatten", "join"]
)
def test_a_missing_value_stays_missing(name: str) -> None:
    assert run(name, None) is None


# ---------------------------------------------------------------------------------------------
# to_string


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (42, "42"),
        (2.0, "2"),
        (2.5, "2.5"),
        (-0.25, "-0.25"),
        (True, "true"),
        (False, "false"),
        ({"b": 1, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'),
        (["a", 1], '["a",1]'),
        ("caf\u00e9", "caf\u00e9"),
        ({"k": "caf\u00e9"}, '{"k":"caf\u00e9"}'),
    ],
)
def test_to_string(value: Any, expected: str) -> None:
    assert run("to_string", value) == expected


# ---------------------------------------------------------------------------------------------
# to_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7),
        (2.5, 2.5),
        ("42", 42),
        (" 42 ", 42),
        ("-3", -3),
        ("4.5", 4.5),
        ("1e3", 1000.0),
        (True, 1),
        (False, 0),
    ],
)
def test_to_number(value: Any, expected: float) -> None:
    result = run("to_number", value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "'abc' is not a number"),
        ("12abc", "is not a number"),
        ("", "is not a number"),
        ("nan", "is not a finite number"),
        ("inf", "is not a finite number"),
        ("1e400", "is not a finite number"),
        ([1], "cannot convert a list"),
        ({"a": 1}, "cannot convert a dict"),
    ],
)
def test_to_number_refuses_what_is_not_a_number(value: Any, message: str) -> None:
    with pytest.raises(TransformError, match=r"^to_number: ") as caught:
        run("to_number", value)
    assert message in caught.value.detail
    if isinstance(value, str) and value:
        assert repr(value) not in str(caught.value)  # the logged message never holds the value


def test_a_transform_error_is_a_value_error() -> None:
    assert issubclass(TransformError, ValueError)


# ---------------------------------------------------------------------------------------------
# lowercase, snake_case


@pytest.mark.parametrize(("value", "expected"), [("Jane@Example.COM", "jane@example.com"), (5, 5), ([], [])])
def test_lowercase(value: Any, expected: Any) -> None:
    assert run("lowercase", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Cart Viewed", "cart_viewed"),
        ("cart-viewed", "cart_viewed"),
        ("cartViewed", "cart_viewed"),
        ("CART VIEWED", "cart_viewed"),
        ("  Order   Completed!  ", "order_completed"),
        ("step2Done", "step2_done"),
        ("already_snake", "already_snake"),
    ],
)
def test_snake_case(value: str, expected: str) -> None:
    assert snake_case(value) == expected
    assert run("snake_case", value) == expected


def test_snake_case_leaves_non_strings_alone() -> None:
    assert run("snake_case", 12) == 12


# ---------------------------------------------------------------------------------------------
# truncate


def test_truncate() -> None:
    assert run({"truncate": 3}, "abcdef") == "abc"
    assert run({"truncate": 10}, "abc") == "abc"
    assert run({"truncate": 3}, 123456) == 123456


@pytest.mark.parametrize("argument", [0, -1, 2.5, "5", True, None])
def test_truncate_needs_a_positive_whole_number(argument: Any) -> None:
    with pytest.raises(ValueError, match="truncate needs a positive whole number"):
        build_transform({"truncate": argument})


def test_truncate_without_argument_is_unknown() -> None:
    with pytest.raises(ValueError, match="unknown transform 'truncate'"):
        build_transform("truncate")


# ---------------------------------------------------------------------------------------------
# iso8601


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-06-10T14:04:30.711Z", "2024-06-10T14:04:30.711Z"),
        ("2024-06-10T16:04:30+02:00", "2024-06-10T14:04:30.000Z"),
        ("2024-06-10T14:04:30", "2024-06-10T14:04:30.000Z"),
        (1718028195123, "2024-06-10T14:03:15.123Z"),
        ("1718028195123", "2024-06-10T14:03:15.123Z"),
    ],
)
def test_iso8601(value: Any, expected: str) -> None:
    assert run("iso8601", value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", True, [2024], float("nan"), 1e20])
def test_iso8601_refuses_what_is_not_a_time(value: Any) -> None:
    with pytest.raises(TransformError, match=r"^iso8601: "):
        run("iso8601", value)


# ---------------------------------------------------------------------------------------------
# flatten, join, default


def test_flatten() -> None:
    value = {"a": {"b": 1, "c": [{"d": 2}]}, "e": [1, 2], "f": {}}
    assert run("flatten", value) == {"a.b": 1, "a.c.0.d": 2, "e": [1, 2]}
    assert run("flatten", [1, 2]) == [1, 2]
    assert run("flatten", "x") == "x"


def test_flatten_object_keeps_key_order_and_takes_a_separator() -> None:
    value = {"z": 1, "a": {"y": 2, "b": 3}, "c": 4}
    assert list(flatten_object(value)) == ["z", "a.y", "a.b", "c"]
    assert flatten_object({"a": {"b": 1}}, separator="_") == {"a_b": 1}


def test_flatten_object_survives_deep_nesting() -> None:
    node: Any = 1
    for _ in range(5000):
        node = {"k": node}
    assert flatten_object(node) == {".".join(["k"] * 5000): 1}


def test_join() -> None:
    assert run("join", ["a", "b"]) == "a||b"
    assert run({"join": ", "}, ["a", 1, True, None, 2.0]) == "a, 1, true, 2"
    assert run({"join": "|"}, [{"a": 1}]) == '{"a":1}'
    assert run("join", "not a list") == "not a list"
    assert run("join", []) == ""


@pytest.mark.parametrize("argument", [1, None, ["|"], True])
def test_join_needs_a_separator_string(argument: Any) -> None:
    with pytest.raises(ValueError, match="join needs a separator string"):
        build_transform({"join": argument})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "unknown"), ("", "unknown"), ("set", "set"), (0, 0), (False, False), ([], [])],
)
def test_default(value: Any, expected: Any) -> None:
    assert run({"default": "unknown"}, value) == expected


def test_default_takes_any_value() -> None:
    assert run({"default": 0}, None) == 0
    assert run({"default": {"a": 1}}, None) == {"a": 1}


# ---------------------------------------------------------------------------------------------
# Bad specifications, at build time


@pytest.mark.parametrize("spec", ["shout", ""])
def test_unknown_transform_names_list_the_known_ones(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown transform") as caught:
        build_transform(spec)
    assert str(caught.value) == (
        f"unknown transform {spec!r}; known: to_string, to_number, lowercase, snake_case, iso8601,"
        " flatten, truncate, join, default"
    )


@pytest.mark.parametrize(
    ("spec", "meant"), [("Lowercase", "lowercase"), ("to-string", "to_string"), ("trunc", "truncate")]
)
def test_a_misspelt_transform_gets_a_did_you_mean(spec: str, meant: str) -> None:
    with pytest.raises(ValueError) as caught:
        build_transform(spec)
    assert str(caught.value) == f"unknown transform {spec!r}; did you mean {meant!r}?"


def test_unknown_transform_with_an_argument() -> None:
    with pytest.raises(ValueError, match="unknown transform 'shout'"):
        build_transform({"shout": 1})


@pytest.mark.parametrize("name", ["lowercase", "to_string", "flatten", "iso8601"])
def test_simple_transforms_take_no_argument(name: str) -> None:
    with pytest.raises(ValueError, match=f"transform '{name}' takes no argument"):
        build_transform({name: 1})


@pytest.mark.parametrize("spec", [{}, {"truncate": 3, "join": "|"}, 5, ["lowercase"]])
def test_a_transform_is_a_name_or_a_one_key_mapping(spec: Any) -> None:
    with pytest.raises(ValueError, match="a transform is a name or a one-key mapping"):
        build_transform(spec)


def test_bad_transforms_in_a_playbook_name_the_row() -> None:
    override = {
        "events": {
            "Video Played": {
                "endpoint": "track",
                "rows": [
                    {"key": "event", "from": "event", "transforms": [{"truncate": 0}]},
                    {"key": "properties", "from": "properties", "transforms": ["shout"]},
                ],
            }
        }
    }
    with pytest.raises(PlaybookError) as caught:
        build_playbook(parameter_text=yaml.safe_dump(override))
    assert caught.value.problems == [
        "events.Video Played.rows[0] (event): truncate needs a positive whole number, got 0",
        "events.Video Played.rows[1] (properties): unknown transform 'shout'; known: "
        "to_string, to_number, lowercase, snake_case, iso8601, flatten, truncate, join, default",
    ]


# ---------------------------------------------------------------------------------------------
# Transforms in a running playbook

_OVERRIDE = {
    "events": {
        "Video Played": {
            "endpoint": "track",
            "rows": [
                {"key": "event", "from": "event", "transforms": ["snake_case"]},
                {"key": "timestamp", "from": "properties.played_at", "transforms": ["iso8601"]},
                {"key": "properties", "from": "properties", "required": True},
                {"key": "properties.position", "from": "properties.position", "transforms": ["to_number"]},
                {
                    "key": "properties.quality",
                    "from": "properties.quality",
                    "transforms": [{"default": "auto"}],
                },
                {
                    "key": "properties.title",
                    "from": "properties.title",
                    "transforms": ["lowercase", {"truncate": 5}],
                },
                {"key": "properties.chapters", "from": "properties.chapters", "transforms": [{"join": ","}]},
                {"key": "properties.muted", "from": "properties.muted", "transforms": ["to_string"]},
            ],
        }
    }
}


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    mapper = Mapper(build_playbook(parameter_text=yaml.safe_dump(_OVERRIDE)), {"MY_APP_ID": "test-app"})
    return Pipeline(mapper, deliverer=None)  # type: ignore[arg-type]


def _event(**properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Video Played",
        "anonymousId": "a",
        "messageId": "m",
        "properties": properties,
    }


def test_transforms_run_in_order_in_a_row(pipeline: Pipeline) -> None:
    event = _event(
        played_at=1718028195123,
        position="12",
        title="Five SMOOTHIES",
        chapters=["intro", "outro"],
        muted=False,
    )
    prepared = pipeline.prepare([event])
    assert prepared.decided == [None]
    assert [i.body for i in prepared.items] == [
        {
            "event": "video_played",
            "timestamp": "2024-06-10T14:03:15.123Z",
            "properties": {
                "played_at": 1718028195123,
                "position": 12,
                "quality": "auto",
                "title": "five ",
                "chapters": "intro,outro",
                "muted": "false",
            },
            "identity": "a",
            "idempotency_key": "m",
        }
    ]


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ({"position": "twelve"}, "properties.position"),
        ({"position": [1]}, "properties.position"),
        ({"played_at": "last tuesday"}, "timestamp"),
    ],
)
def test_an_unconvertible_value_rejects_the_event_as_invalid(
    pipeline: Pipeline, properties: dict[str, Any], field: str
) -> None:
    prepared = pipeline.prepare([_event(**properties)])
    outcome = prepared.decided[0]
    assert outcome is not None
    assert outcome.error_class is ErrorClass.INVALID_EVENT
    assert f"{field}: " in outcome.reason
    assert [(p.index, p.field) for p in prepared.problems] == [(0, field)]
    assert prepared.items == []


def test_the_engine_turns_a_transform_error_into_a_mapping_error(pipeline: Pipeline) -> None:
    event = as_plain(validate_event(_event(position="twelve")))
    with pytest.raises(MappingError) as caught:
        pipeline.mapper.map(event)
    assert caught.value.error_class is ErrorClass.INVALID_EVENT
    assert caught.value.field == "properties.position"
    # The value reaches the event's letter and its sender, never the logged message.
    assert str(caught.value) == "properties.position: to_number: the text is not a number"
    assert caught.value.detail == "properties.position: to_number: 'twelve' is not a number"
