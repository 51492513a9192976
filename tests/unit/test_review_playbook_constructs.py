"""Hostile review of the playbook's operations: constructs an override can hold that pass
``mapping check`` yet change nothing (or change what was not written), and operations that do
something other than docs/mapping.md says."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import PlaybookError
from heap_forwarder.pipeline import Pipeline
from playbook_support import track

KEY = b"review-hash-key"


def bodies(override: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
    playbook = build_playbook(parameter_text=override)
    mapper = Mapper(playbook, {"MY_APP_ID": "app"}, hash_key=KEY if playbook.uses_hash else None)
    prepared = Pipeline(mapper, deliverer=None).prepare(list(events))  # type: ignore[arg-type]
    assert all(d is None for d in prepared.decided), prepared.problems
    return [item.body for item in prepared.items]


def refusal(override: str) -> PlaybookError:
    with pytest.raises(PlaybookError) as caught:
        build_playbook(parameter_text=override)
    return caught.value


def identify(**traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": "m1",
        "anonymousId": "anon-1",
        "timestamp": "2024-06-10T14:00:00Z",
        "traits": traits,
    }


# ---------------------------------------------------------------------------------------------
# A key written twice: YAML and JSON keep the last silently, so the first entry (here a hash
# of e-mails) would be gone without a word, and e-mails sent as they are.


@pytest.mark.parametrize(
    ("override", "key", "line"),
    [
        pytest.param(
            "global:\n  edit:\n    properties: {hash: [email]}\n    properties: {set: {source: server}}\n",
            "properties",
            4,
            id="yaml-global-edit",
        ),
        pytest.param(
            "events:\n  Video Played: {rows: [{key: event, value: a}]}\n"
            "  Video Played: {rows: [{key: event, value: b}]}\n",
            "Video Played",
            3,
            id="yaml-event-mapping",
        ),
        pytest.param(
            '{"global": {"edit": {\n  "properties": {"hash": ["email"]},\n'
            '  "properties": {"set": {"source": "server"}}}}}\n',
            "properties",
            3,
            id="json-global-edit",
        ),
    ],
)
def test_a_key_written_twice_is_refused_at_its_second_place(override: str, key: str, line: int) -> None:
    error = refusal(override)
    [problem] = error.details
    assert f"duplicate key {key!r}" in str(problem)
    assert problem.location is not None and problem.location.line == line


def test_the_same_key_in_different_mappings_is_not_a_duplicate() -> None:
    override = "events:\n  A: {rows: [{key: event, value: a}]}\n  B: {rows: [{key: event, value: b}]}\n"
    assert [b["event"] for b in bodies(override, track("A"), track("B"))] == ["a", "b"]


# ---------------------------------------------------------------------------------------------
# An edit of a field Heap takes as text (identity, event, timestamp...) can never find an
# object to edit: it passed the check and did nothing.


@pytest.mark.parametrize(
    "override",
    [
        pytest.param("global:\n  edit:\n    identity: {drop: [x]}\n", id="global-identity"),
        pytest.param("global:\n  edit:\n    session_id: {set: {x: 1}}\n", id="global-session-id"),
        pytest.param(
            "events:\n  Video Played:\n    edit:\n      event: {set: {x: 1}}\n", id="event-own-event"
        ),
        pytest.param(
            "events:\n  Video Played:\n    edit:\n      timestamp: {hash: [x]}\n", id="event-own-timestamp"
        ),
    ],
)
def test_an_edit_of_a_text_field_is_refused(override: str) -> None:
    [problem] = refusal(override).problems
    assert "not an object" in problem and "properties" in problem


# ---------------------------------------------------------------------------------------------
# `endpoints: []` reads as "no endpoint", but applied to every endpoint.


@pytest.mark.parametrize(
    "override",
    [
        pytest.param("global:\n  item:\n    - {key: properties.x, value: 1, endpoints: []}\n", id="row"),
        pytest.param("global:\n  edit:\n    properties: {set: {x: 1}, endpoints: []}\n", id="edit"),
    ],
)
def test_an_empty_endpoints_list_is_refused(override: str) -> None:
    [problem] = refusal(override).details
    assert problem.where.endswith("endpoints")
    assert problem.location is not None


# ---------------------------------------------------------------------------------------------
# rename "moves each key to its new name": a swap or a chain lost a value silently, depending
# on the order the keys were written in.


def test_rename_swaps_two_keys() -> None:
    override = "global:\n  edit:\n    properties: {rename: {a: b, b: a}}\n"
    [body] = bodies(override, track(properties={"a": 1, "b": 2}))
    assert body["properties"] == {"a": 2, "b": 1}


def test_a_rename_chain_moves_each_key_once() -> None:
    override = "global:\n  edit:\n    properties: {rename: {a: b, b: c}}\n"
    [body] = bodies(override, track(properties={"a": 1, "b": 2}))
    assert body["properties"] == {"b": 1, "c": 2}


def test_two_keys_renamed_to_one_name_are_refused() -> None:
    [problem] = refusal("global:\n  edit:\n    properties: {rename: {a: x, b: x}}\n").problems
    assert "'x'" in problem and "a, b" in problem


# ---------------------------------------------------------------------------------------------
# `default: {x: null}` puts a missing value where one is missing: nothing.


def test_a_null_default_is_refused() -> None:
    [problem] = refusal("global:\n  edit:\n    properties: {default: {currency: null}}\n").problems
    assert "currency" in problem and "null" in problem


# ---------------------------------------------------------------------------------------------
# An event mapping written as an empty list: a track event's silently fell back to `default`
# (no change at all), while `page: []` made page events unsupported.


@pytest.mark.parametrize(
    "override", ["events:\n  Video Played: []\n", "events:\n  page: []\n", "default: []\n"]
)
def test_an_empty_list_of_requests_is_refused(override: str) -> None:
    [problem] = refusal(override).problems
    assert "no request" in problem and "null" in problem


# ---------------------------------------------------------------------------------------------
# `when` is a dotted path like `from`: an empty one was ignored, a malformed one never matched.


@pytest.mark.parametrize("when", ["''", "context..id", "'.'"])
def test_a_when_that_is_not_a_dotted_path_is_refused(when: str) -> None:
    override = f"events:\n  Video Played:\n    when: {when}\n    rows: [{{key: event, value: x}}]\n"
    [problem] = refusal(override).problems
    assert "when" in problem and "dotted path" in problem


# ---------------------------------------------------------------------------------------------
# Heap's rules take `Email` and `EMAIL` for the e-mail (lowercased into Heap's Email user
# property), but `hash: [email]` left them as they were: the address reached Heap in clear.


@pytest.mark.xfail(
    strict=True,
    reason="hash matches names case-sensitively while heap/rules.py treats any casing of "
    "'email' as the e-mail; fix: match hash names (and patterns) ignoring case, or refuse/warn",
)
def test_hashing_email_covers_the_casings_heap_takes_as_the_email() -> None:
    [body] = bodies("global:\n  edit:\n    properties: {hash: [email]}\n", identify(Email="Ada@Example.com"))
    expected = hmac.new(KEY, b"Ada@Example.com", hashlib.sha256).hexdigest()
    assert body["properties"] == {"Email": expected}
