"""Heap's rules (heap/rules.py): what is made valid, what is rejected, and with which field named."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.rules import (
    HeapRuleError,
    RuleSettings,
    apply_rules,
    check_identity,
    clean_properties,
)
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.outcome import ErrorClass
from heap_forwarder.pipeline import Pipeline

FLATTEN = RuleSettings()
DEFAULTS = RuleSettings(nested="flatten", arrays="join")


def track_item(**fields: Any) -> HeapItem:
    body: dict[str, Any] = {"identity": "anon-1", "event": "Video Played", "properties": {}}
    body.update(fields)
    return HeapItem(Endpoint.TRACK, body, 3)


def deep(levels: int, kind: type = dict) -> Any:
    node: Any = "leaf"
    for _ in range(levels):
        node = {"a": node} if kind is dict else [node]
    return node


def test_the_default_settings_flatten_and_join() -> None:
    assert RuleSettings() == DEFAULTS


# ---------------------------------------------------------------------------------------------
# Nested objects


NESTED = {"order": {"id": "o1", "total": 9.5, "address": {"city": "Springfield"}}, "plan": "pro"}


def test_nested_flatten_makes_dot_keys() -> None:
    assert clean_properties(NESTED, RuleSettings(nested="flatten")) == {
        "order.id": "o1",
        "order.total": 9.5,
        "order.address.city": "Springfield",
        "plan": "pro",
    }


def test_nested_stringify_makes_compact_sorted_json() -> None:
    assert clean_properties(NESTED, RuleSettings(nested="stringify")) == {
        "order": '{"address":{"city":"Springfield"},"id":"o1","total":9.5}',
        "plan": "pro",
    }


def test_nested_drop_leaves_objects_out() -> None:
    properties = {**NESTED, "items": [{"sku": "a"}], "tags": ["x", "y"]}
    assert clean_properties(properties, RuleSettings(nested="drop")) == {"plan": "pro", "tags": "x||y"}


def test_an_empty_nested_object_adds_nothing() -> None:
    assert clean_properties({"a": {}, "b": 1}, FLATTEN) == {"b": 1}


def test_flattened_values_obey_the_value_rules() -> None:
    properties = {"flags": {"on": True, "gone": None, "text": "x" * 2000}}
    assert clean_properties(properties, FLATTEN) == {"flags.on": "true", "flags.text": "x" * 1023}


# ---------------------------------------------------------------------------------------------
# A key that flattening gives twice


COLLISIONS = [
    # (id, properties, the key, where its two values come from, in the order they are met)
    ("dotted key, then nested", {"a.b": "x", "a": {"b": "y"}}, "a.b", ('["a.b"]', '["a"]["b"]')),
    ("nested, then dotted key", {"a": {"b": "y"}, "a.b": "x"}, "a.b", ('["a"]["b"]', '["a.b"]')),
    ("one level down", {"x": {"a.b": 1, "a": {"b": 2}}}, "x.a.b", ('["x"]["a.b"]', '["x"]["a"]["b"]')),
    ("two nested spellings", {"a": {"b.c": 1}, "a.b": {"c": 2}}, "a.b.c", ('["a"]["b.c"]', '["a.b"]["c"]')),
    (
        "array of objects and a dotted key",
        {"items": [{"sku": "a"}], "items.0.sku": "b"},
        "items.0.sku",
        ('["items"][0]["sku"]', '["items.0.sku"]'),
    ),
    (
        "array index and an object key '0'",
        {"x": [{"b": 1}], "x.0": {"b": 2}},
        "x.0.b",
        ('["x"][0]["b"]', '["x.0"]["b"]'),
    ),
    (
        "mixed array and a dotted key",
        {"x": ["a", {"b": 1}], "x.0": "z"},
        "x.0",
        ('["x"][0]', '["x.0"]'),
    ),
    (
        "joined array and a text",
        {"a": {"b": ["x", "y"]}, "a.b": "x||z"},
        "a.b",
        ('["a"]["b"]', '["a.b"]'),
    ),
    ("boolean and a text", {"a": {"b": True}, "a.b": "yes"}, "a.b", ('["a"]["b"]', '["a.b"]')),
    ("number and its text", {"a": {"b": 1}, "a.b": "1"}, "a.b", ('["a"]["b"]', '["a.b"]')),
    (
        "deep",
        {"a": {"b": {"c": {"d": 1}}}, "a.b.c": {"d": 2}},
        "a.b.c.d",
        ('["a"]["b"]["c"]["d"]', '["a.b.c"]["d"]'),
    ),
]
PROPERTY_ENDPOINTS = {
    Endpoint.TRACK: {"identity": "anon-1", "event": "x"},
    Endpoint.ADD_USER_PROPERTIES: {"identity": "anon-1"},
    Endpoint.ADD_ACCOUNT_PROPERTIES: {"account_id": "acme"},
}


@pytest.mark.parametrize("endpoint", list(PROPERTY_ENDPOINTS), ids=lambda e: e.name)
@pytest.mark.parametrize(
    ("properties", "key", "paths"), [case[1:] for case in COLLISIONS], ids=[c[0] for c in COLLISIONS]
)
def test_a_key_given_twice_with_different_values_is_refused(
    properties: dict[str, Any], key: str, paths: tuple[str, str], endpoint: Endpoint
) -> None:
    """Events, user traits and group traits alike: keeping either value would lose the other."""
    item = HeapItem(endpoint, {**PROPERTY_ENDPOINTS[endpoint], "properties": properties})
    with pytest.raises(HeapRuleError) as caught:
        apply_rules(item, DEFAULTS)
    first, second = paths
    assert str(caught.value) == (
        f"properties.{key}: the key is given twice (as properties{first} and properties{second}) "
        "with different values; rename one"
    )
    assert caught.value.field == f"properties.{key}"


@pytest.mark.parametrize(
    ("given", "kept", "differing"),
    [
        ({"a.b": "x", "a": {"b": "x"}}, {"a.b": "x"}, {"a.b": "y", "a": {"b": "x"}}),
        # Compared as Heap gets them: true is "true" once the rules are applied.
        ({"a": {"b": True}, "a.b": "true"}, {"a.b": "true"}, {"a": {"b": True}, "a.b": "True"}),
        # A null sets nothing, so it takes no key.
        ({"a.b": None, "a": {"b": 1}}, {"a.b": 1}, {"a.b": 0, "a": {"b": 1}}),
    ],
    ids=["same text", "same after the rules", "null"],
)
def test_a_key_given_twice_is_kept_only_when_both_values_are_the_same(
    given: dict[str, Any], kept: dict[str, Any], differing: dict[str, Any]
) -> None:
    assert clean_properties(given, FLATTEN) == kept
    with pytest.raises(HeapRuleError, match=r"^properties\.a\.b: the key is given twice"):
        clean_properties(differing, FLATTEN)


def test_keys_only_collide_when_nested_objects_are_flattened() -> None:
    properties = {"a.b": "x", "a": {"b": "y"}}
    with pytest.raises(HeapRuleError, match="given twice"):
        clean_properties(properties, FLATTEN)
    assert clean_properties(properties, RuleSettings(nested="stringify")) == {"a.b": "x", "a": '{"b":"y"}'}
    assert clean_properties(properties, RuleSettings(nested="drop")) == {"a.b": "x"}


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "track", "event": "x", "properties": {"a.b": 1, "a": {"b": 2}}}, "properties.a.b"),
        ({"type": "identify", "traits": {"plan": {"id": "p"}, "plan.id": "q"}}, "properties.plan.id"),
        (
            {"type": "group", "groupId": "g", "traits": {"hq.city": "A", "hq": {"city": "B"}}},
            "properties.hq.city",
        ),
    ],
    ids=["track", "identify", "group"],
)
def test_the_pipeline_refuses_a_key_given_twice_as_a_heap_rule(event: dict[str, Any], field: str) -> None:
    pipeline = Pipeline(Mapper(build_playbook(), {"MY_APP_ID": "test-app"}), deliverer=None)  # type: ignore[arg-type]
    event = {**event, "anonymousId": "a", "timestamp": "2024-06-10T14:00:00Z", "messageId": "m"}
    prepared = pipeline.prepare([event])
    outcome = prepared.decided[0]
    assert outcome is not None
    assert outcome.error_class is ErrorClass.HEAP_RULE
    assert [(problem.index, problem.field) for problem in prepared.problems] == [(0, field)]
    assert "given twice" in prepared.problems[0].message
    assert prepared.items == []


# ---------------------------------------------------------------------------------------------
# Arrays


def test_arrays_of_scalars_are_joined_with_double_bars() -> None:
    properties = {"tags": ["a", "b", "c"], "sizes": [1, 2.5], "mixed": ["a", 1, True, None]}
    assert clean_properties(properties, RuleSettings(arrays="join")) == {
        "tags": "a||b||c",
        "sizes": "1||2.5",
        "mixed": "a||1||true",
    }


def test_arrays_can_be_stringified_as_json() -> None:
    assert clean_properties({"tags": ["a", "b"], "n": [1, None]}, RuleSettings(arrays="stringify")) == {
        "tags": '["a","b"]',
        "n": "[1,null]",
    }


def test_an_empty_array_becomes_an_empty_string() -> None:
    assert clean_properties({"tags": []}, FLATTEN) == {"tags": ""}


def test_a_joined_array_is_cut_to_1023_characters() -> None:
    joined = clean_properties({"tags": ["x" * 600, "y" * 600]}, FLATTEN)["tags"]
    assert joined == "x" * 600 + "||" + "y" * 421
    assert len(joined) == 1023


def test_arrays_of_objects_are_flattened_with_indexes() -> None:
    properties = {"products": [{"sku": "a", "price": 1}, {"sku": "b", "tags": ["new", "sale"]}]}
    assert clean_properties(properties, FLATTEN) == {
        "products.0.sku": "a",
        "products.0.price": 1,
        "products.1.sku": "b",
        "products.1.tags": "new||sale",
    }


def test_mixed_arrays_with_objects_are_flattened_by_index() -> None:
    assert clean_properties({"x": ["a", {"b": 1}]}, FLATTEN) == {"x.0": "a", "x.1.b": 1}


def test_arrays_of_objects_are_flattened_even_when_arrays_are_stringified() -> None:
    settings = RuleSettings(nested="flatten", arrays="stringify")
    assert clean_properties({"p": [{"sku": "a"}], "t": ["x"]}, settings) == {"p.0.sku": "a", "t": '["x"]'}


def test_arrays_of_objects_are_json_when_nested_objects_are_stringified() -> None:
    settings = RuleSettings(nested="stringify", arrays="join")
    assert clean_properties({"p": [{"sku": "a"}, {"sku": "b"}]}, settings) == {
        "p": '[{"sku":"a"},{"sku":"b"}]'
    }


# ---------------------------------------------------------------------------------------------
# Scalars


@pytest.mark.parametrize(("value", "expected"), [(True, "true"), (False, "false")])
def test_booleans_are_spelled_out(value: bool, expected: str) -> None:
    assert clean_properties({"flag": value}, FLATTEN) == {"flag": expected}


def test_numbers_stay_numbers() -> None:
    assert clean_properties({"i": 7, "f": 2.5, "z": 0, "neg": -1}, FLATTEN) == {
        "i": 7,
        "f": 2.5,
        "z": 0,
        "neg": -1,
    }


def test_none_values_are_dropped() -> None:
    assert clean_properties({"a": None, "b": "kept", "c": {"d": None}}, FLATTEN) == {"b": "kept"}


def test_no_properties_is_an_empty_object() -> None:
    assert clean_properties(None, FLATTEN) == {}


@pytest.mark.parametrize("properties", [[], ["a"], "text", 3])
def test_properties_must_be_an_object(properties: Any) -> None:
    with pytest.raises(HeapRuleError, match=r"^properties: must be an object"):
        clean_properties(properties, FLATTEN)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    ("shape", "settings"),
    [
        ("top", FLATTEN),
        ("nested", FLATTEN),
        ("array", FLATTEN),
        ("array_of_objects", FLATTEN),
        ("nested_dropped_mode_top", RuleSettings(nested="drop")),
    ],
)
def test_non_finite_numbers_are_rejected(bad: float, shape: str, settings: RuleSettings) -> None:
    properties = {
        "top": {"x": bad},
        "nested": {"x": {"y": bad}},
        "array": {"x": [1, bad]},
        "array_of_objects": {"x": [{"y": bad}]},
        "nested_dropped_mode_top": {"x": bad},
    }[shape]
    with pytest.raises(HeapRuleError, match=r"^properties\.x(\.\w+)*: .* not a finite number"):
        clean_properties(properties, settings)


def test_strings_are_cut_to_1023_characters() -> None:
    cleaned = clean_properties({"short": "x" * 1023, "long": "y" * 5000}, FLATTEN)
    assert cleaned == {"short": "x" * 1023, "long": "y" * 1023}


def test_a_key_of_1023_characters_is_kept() -> None:
    key = "k" * 1023
    assert clean_properties({key: 1}, FLATTEN) == {key: 1}


@pytest.mark.parametrize("length", [1024, 5000])
def test_a_key_of_1024_or_more_characters_is_rejected(length: int) -> None:
    with pytest.raises(HeapRuleError, match=rf"^properties: key .* has {length} characters"):
        clean_properties({"k" * length: 1}, FLATTEN)


def test_a_flattened_key_that_grows_too_long_is_rejected() -> None:
    with pytest.raises(HeapRuleError, match="has 1025 characters"):
        clean_properties({"a" * 512: {"b" * 512: 1}}, FLATTEN)


# ---------------------------------------------------------------------------------------------
# User properties: id and email


@pytest.mark.parametrize("key", ["id", "ID", "Id", "iD"])
def test_id_is_removed_from_user_properties_in_any_casing(key: str) -> None:
    assert clean_properties({key: "u1", "plan": "pro"}, FLATTEN, user=True) == {"plan": "pro"}


def test_id_is_kept_in_event_properties_and_nested_ids_in_user_properties() -> None:
    assert clean_properties({"id": "p1"}, FLATTEN) == {"id": "p1"}
    assert clean_properties({"company": {"id": 7}}, FLATTEN, user=True) == {"company.id": 7}


@pytest.mark.parametrize("key", ["email", "Email", "EMAIL"])
def test_email_is_lowercased_in_user_properties(key: str) -> None:
    assert clean_properties({key: "Jane.Doe@Example.COM"}, FLATTEN, user=True) == {
        key: "jane.doe@example.com"
    }


def test_email_keeps_its_case_in_event_properties() -> None:
    assert clean_properties({"email": "Jane@Example.com"}, FLATTEN) == {"email": "Jane@Example.com"}


def test_user_properties_through_apply_rules() -> None:
    item = HeapItem(
        Endpoint.ADD_USER_PROPERTIES,
        {"identity": "anon-1", "properties": {"id": "u1", "Email": "A@B.C", "vip": True, "x": None}},
    )
    assert apply_rules(item, DEFAULTS).body == {
        "identity": "anon-1",
        "properties": {"Email": "a@b.c", "vip": "true"},
    }


# ---------------------------------------------------------------------------------------------
# Identity


def test_an_identity_of_255_characters_is_accepted() -> None:
    assert check_identity("i" * 255) == "i" * 255


def test_an_identity_over_255_characters_is_rejected() -> None:
    with pytest.raises(HeapRuleError, match=r"^identity: 256 characters, Heap allows at most 255"):
        apply_rules(track_item(identity="i" * 256), DEFAULTS)


def test_a_numeric_identity_becomes_a_string() -> None:
    assert apply_rules(track_item(identity=12345), DEFAULTS).body["identity"] == "12345"


def test_identity_is_case_sensitive_and_kept_as_is() -> None:
    assert apply_rules(track_item(identity="AbC-1"), DEFAULTS).body["identity"] == "AbC-1"


@pytest.mark.parametrize("placeholder", ["", "null", "NULL", "undefined", "  ", "None", "nil", " null "])
@pytest.mark.parametrize(
    "endpoint", [Endpoint.TRACK, Endpoint.ADD_USER_PROPERTIES, Endpoint.IDENTIFY], ids=lambda e: e.name
)
def test_placeholder_identities_are_rejected(placeholder: str, endpoint: Endpoint) -> None:
    body: dict[str, Any] = {"identity": placeholder, "event": "x", "properties": {}, "user_id": "123"}
    with pytest.raises(HeapRuleError, match=r"^identity: .* is a placeholder") as caught:
        apply_rules(HeapItem(endpoint, body), DEFAULTS)
    assert caught.value.field == "identity"


@pytest.mark.parametrize("value", [["a"], {"a": 1}, True])
def test_an_identity_must_be_a_string(value: Any) -> None:
    with pytest.raises(HeapRuleError, match=r"^identity: must be a string"):
        apply_rules(track_item(identity=value), DEFAULTS)


def test_track_keeps_identity_and_drops_user_id_when_both_are_set() -> None:
    body = apply_rules(track_item(identity="anon-1", user_id="u-1"), DEFAULTS).body
    assert body["identity"] == "anon-1"
    assert "user_id" not in body


def test_track_with_only_a_user_id_keeps_it_and_checks_it() -> None:
    item = HeapItem(Endpoint.TRACK, {"user_id": "u-1", "event": "x"})
    body = apply_rules(item, DEFAULTS).body
    assert body == {"user_id": "u-1", "event": "x", "properties": {}}
    with pytest.raises(HeapRuleError, match=r"^user_id: .* is a placeholder"):
        apply_rules(HeapItem(Endpoint.TRACK, {"user_id": "undefined", "event": "x"}), DEFAULTS)


def test_track_without_identity_or_user_id_is_rejected() -> None:
    with pytest.raises(HeapRuleError, match=r"^identity: required") as caught:
        apply_rules(HeapItem(Endpoint.TRACK, {"event": "x"}), DEFAULTS)
    assert caught.value.field == "identity"


@pytest.mark.parametrize("endpoint", [Endpoint.ADD_USER_PROPERTIES, Endpoint.IDENTIFY])
def test_user_endpoints_need_an_identity(endpoint: Endpoint) -> None:
    with pytest.raises(HeapRuleError, match=r"^identity: required"):
        apply_rules(HeapItem(endpoint, {"user_id": "123", "properties": {}}), DEFAULTS)


# ---------------------------------------------------------------------------------------------
# Event names and optional strings


@pytest.mark.parametrize("name", ["", "   ", None, 7])
def test_an_empty_or_missing_event_name_is_rejected(name: Any) -> None:
    body: dict[str, Any] = {"identity": "a", "properties": {}}
    if name is not None:
        body["event"] = name
    with pytest.raises(HeapRuleError, match=r"^event: a non-empty event name is required"):
        apply_rules(HeapItem(Endpoint.TRACK, body), DEFAULTS)


def test_an_event_name_of_1024_characters_is_accepted() -> None:
    assert apply_rules(track_item(event="e" * 1024), DEFAULTS).body["event"] == "e" * 1024


def test_an_event_name_over_1024_characters_is_rejected() -> None:
    with pytest.raises(HeapRuleError, match=r"^event: 1025 characters, Heap allows at most 1024"):
        apply_rules(track_item(event="e" * 1025), DEFAULTS)


def test_optional_strings_numbers_become_strings_and_none_is_removed() -> None:
    item = track_item(timestamp=None, session_id=12345, idempotency_key=9)
    body = apply_rules(item, DEFAULTS).body
    assert "timestamp" not in body
    assert body["session_id"] == "12345"
    assert body["idempotency_key"] == "9"


@pytest.mark.parametrize("field", ["session_id", "idempotency_key"])
def test_optional_strings_must_not_be_empty(field: str) -> None:
    with pytest.raises(HeapRuleError, match=rf"^{field}: must be a non-empty string"):
        apply_rules(track_item(**{field: ""}), DEFAULTS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-06-10T14:00:00.000Z", "2024-06-10T14:00:00.000Z"),
        ("2024-06-10T16:00:00+02:00", "2024-06-10T14:00:00.000Z"),
        (1718028195123, "2024-06-10T14:03:15.123Z"),
    ],
)
@pytest.mark.parametrize("endpoint", [Endpoint.TRACK, Endpoint.IDENTIFY], ids=lambda e: e.name)
def test_timestamps_are_sent_as_utc_iso_8601(value: Any, expected: str, endpoint: Endpoint) -> None:
    body = {"identity": "a", "event": "x", "user_id": "1", "timestamp": value}
    assert apply_rules(HeapItem(endpoint, body), DEFAULTS).body["timestamp"] == expected


@pytest.mark.parametrize("value", ["", "soon", True, [1]])
def test_a_timestamp_that_is_not_a_time_is_rejected(value: Any) -> None:
    with pytest.raises(HeapRuleError, match=r"^timestamp: ") as caught:
        apply_rules(track_item(timestamp=value), DEFAULTS)
    assert caught.value.field == "timestamp"


@pytest.mark.parametrize(("field", "limit"), [("session_id", 1023), ("idempotency_key", 1024)])
def test_optional_strings_have_a_length_limit(field: str, limit: int) -> None:
    assert apply_rules(track_item(**{field: "s" * limit}), DEFAULTS).body[field] == "s" * limit
    with pytest.raises(HeapRuleError, match=rf"^{field}: {limit + 1} characters"):
        apply_rules(track_item(**{field: "s" * (limit + 1)}), DEFAULTS)


# ---------------------------------------------------------------------------------------------
# identify and account properties


@pytest.mark.parametrize("user_id", ["8267308474930012", "1"])
def test_identify_accepts_a_numeric_string_user_id(user_id: str) -> None:
    item = HeapItem(Endpoint.IDENTIFY, {"user_id": user_id, "identity": "anon-1", "timestamp": None})
    assert apply_rules(item, DEFAULTS).body == {"user_id": user_id, "identity": "anon-1"}


@pytest.mark.parametrize("user_id", ["", "abc", "12a", "-12", "1.5", None, 12.5, ["1"]])
def test_identify_rejects_a_user_id_that_is_not_a_numeric_string(user_id: Any) -> None:
    item = HeapItem(Endpoint.IDENTIFY, {"user_id": user_id, "identity": "anon-1"})
    with pytest.raises(HeapRuleError, match=r"^user_id: Heap's SDK user id is a numeric string") as caught:
        apply_rules(item, DEFAULTS)
    assert caught.value.field == "user_id"


def test_identify_keeps_identity_and_user_id_together() -> None:
    item = HeapItem(
        Endpoint.IDENTIFY, {"user_id": "42", "identity": "anon-1", "timestamp": "2024-06-10T14:00:00.000Z"}
    )
    assert apply_rules(item, DEFAULTS).body == {
        "user_id": "42",
        "identity": "anon-1",
        "timestamp": "2024-06-10T14:00:00.000Z",
    }


def test_account_properties_need_an_account_id() -> None:
    with pytest.raises(HeapRuleError, match=r"^account_id: required") as caught:
        apply_rules(HeapItem(Endpoint.ADD_ACCOUNT_PROPERTIES, {"properties": {"a": 1}}), DEFAULTS)
    assert caught.value.field == "account_id"


@pytest.mark.parametrize("account_id", ["", "null", "undefined"])
def test_placeholder_account_ids_are_rejected(account_id: str) -> None:
    item = HeapItem(Endpoint.ADD_ACCOUNT_PROPERTIES, {"account_id": account_id, "properties": {}})
    with pytest.raises(HeapRuleError, match=r"^account_id: .* is a placeholder"):
        apply_rules(item, DEFAULTS)


def test_account_properties_are_cleaned_like_event_properties() -> None:
    item = HeapItem(
        Endpoint.ADD_ACCOUNT_PROPERTIES,
        {"account_id": 7731, "properties": {"id": "kept", "hq": {"city": "X"}, "active": False}},
    )
    assert apply_rules(item, DEFAULTS).body == {
        "account_id": "7731",
        "properties": {"id": "kept", "hq.city": "X", "active": "false"},
    }


# ---------------------------------------------------------------------------------------------
# The item as a whole


def test_apply_rules_returns_a_new_item_and_leaves_the_input_alone() -> None:
    item = track_item(properties={"a": {"b": True}}, timestamp=None)
    before = copy.deepcopy(item.body)
    cleaned = apply_rules(item, DEFAULTS)
    assert item.body == before
    assert cleaned.endpoint is Endpoint.TRACK
    assert cleaned.source == 3
    assert cleaned.body == {"identity": "anon-1", "event": "Video Played", "properties": {"a.b": "true"}}


def test_the_field_of_a_rule_error_is_its_first_word() -> None:
    assert HeapRuleError("properties.x: not a finite number").field == "properties.x"


# ---------------------------------------------------------------------------------------------
# Deep nesting never exhausts the interpreter's stack


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        pytest.param(RuleSettings(nested="flatten", arrays="join"), dict, id="flatten-dict"),
        pytest.param(RuleSettings(nested="flatten", arrays="join"), list, id="flatten-list"),
        pytest.param(RuleSettings(nested="flatten", arrays="stringify"), list, id="flatten-stringify-list"),
        pytest.param(RuleSettings(nested="drop", arrays="join"), dict, id="drop-dict"),
        pytest.param(RuleSettings(nested="stringify"), dict, id="stringify-dict"),
        pytest.param(RuleSettings(nested="stringify"), list, id="stringify-list"),
        pytest.param(RuleSettings(nested="drop", arrays="join"), list, id="drop-list"),
        pytest.param(
            RuleSettings(nested="drop", arrays="stringify"),
            list,
            id="drop-stringify-list",
        ),
    ],
)
def test_deep_nesting_does_not_raise_recursion_error(settings: RuleSettings, kind: type) -> None:
    try:
        cleaned = clean_properties({"x": deep(5000, kind)}, settings)
    except HeapRuleError:
        return  # rejected with a rule: fine
    assert all(isinstance(v, str | int | float) for v in cleaned.values())


def test_deep_nesting_is_rejected_by_the_pipeline_as_a_rule() -> None:
    pipeline = Pipeline(Mapper(build_playbook(), {"MY_APP_ID": "test-app"}), deliverer=None)  # type: ignore[arg-type]
    event = {
        "type": "track",
        "event": "x",
        "anonymousId": "a",
        "timestamp": "2024-06-10T14:00:00Z",
        "messageId": "m",
        "properties": {"x": deep(5000)},
    }
    prepared = pipeline.prepare([event])
    assert prepared.decided[0] is not None
    assert prepared.decided[0].error_class in (ErrorClass.INVALID_EVENT, ErrorClass.HEAP_RULE)
    assert prepared.decided[0].error_class is ErrorClass.HEAP_RULE


def test_deep_nesting_without_message_id_does_not_raise_recursion_error() -> None:
    pipeline = Pipeline(Mapper(build_playbook(), {"MY_APP_ID": "test-app"}), deliverer=None)  # type: ignore[arg-type]
    event = {
        "type": "track",
        "event": "x",
        "anonymousId": "a",
        "timestamp": "2024-06-10T14:00:00Z",
        "properties": {"x": deep(5000)},
    }
    prepared = pipeline.prepare([event])
    assert prepared.decided[0] is not None
    assert prepared.decided[0].error_class in (ErrorClass.INVALID_EVENT, ErrorClass.HEAP_RULE)
