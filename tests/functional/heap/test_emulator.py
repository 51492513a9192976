"""The Heap emulator, over real HTTP: Heap's rules, storage, faults, rate limits, control API, CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import urllib3
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from heap_forwarder_tools.emulator import HeapEmulator, format_seconds

APP = "app-1"
OTHER_APP = "app-2"
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def server() -> Iterator[HeapEmulator]:
    with HeapEmulator([APP, OTHER_APP]) as emulator:
        yield emulator


@pytest.fixture
def emulator(server: HeapEmulator) -> HeapEmulator:
    server.reset()
    return server


@pytest.fixture(scope="module")
def http() -> urllib3.PoolManager:
    return urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=5))


def post(
    http: urllib3.PoolManager, emulator: HeapEmulator, path: str, body: Any, **kwargs: Any
) -> urllib3.BaseHTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.request(
        "POST", emulator.url + path, body=data, headers={"Content-Type": "application/json"}, **kwargs
    )


def track(identity: Any = "user-1", event: Any = "Signed up", **fields: Any) -> dict[str, Any]:
    """A track event; ``Any`` because the rule tests send wrong types on purpose."""
    return {"identity": identity, "event": event, **fields}


def bulk(*events: Any, app_id: str = APP) -> dict[str, Any]:
    return {"app_id": app_id, "events": list(events)}


# --- accepted requests -----------------------------------------------------------------------


def test_single_track_is_stored_with_every_given_field(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    body = {
        "app_id": APP,
        **track(properties={"plan": "pro", "seats": 3, "price": 9.5}),
        "timestamp": "2017-03-10T22:21:56Z",
        "session_id": "s-1",
        "idempotency_key": "m-1",
    }
    response = post(http, emulator, "/api/track", body)
    assert (response.status, response.data) == (200, b"")
    assert emulator.tracked_events() == [
        {
            "app_id": APP,
            "identity": "user-1",
            "event": "Signed up",
            "timestamp": "2017-03-10T22:21:56Z",
            "properties": {"plan": "pro", "seats": 3, "price": 9.5},
            "session_id": "s-1",
            "idempotency_key": "m-1",
        }
    ]


def test_bulk_track_accepts_identity_and_user_id_events_and_defaults_timestamp(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    events = [track(), {"user_id": "8472019", "event": "Viewed"}, {"user_id": 12, "event": "Viewed"}]
    assert post(http, emulator, "/api/track", bulk(*events)).status == 200
    stored = emulator.tracked_events()
    assert [event.get("identity", event.get("user_id")) for event in stored] == ["user-1", "8472019", 12]
    assert all(event["properties"] == {} and event["timestamp"] for event in stored)
    assert emulator.stats()["events_accepted"] == 3


def test_boundary_values_are_accepted(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    event = track(
        identity="i" * 255,
        event="e" * 1024,
        timestamp="2024-05-01T10:00:00.123+02:00",
        idempotency_key="k" * 1024,
        properties={"k" * 1023: "v" * 1023, "int": -(2**60), "float": 1e300},
    )
    assert post(http, emulator, "/api/track", bulk(*[event] * 1)).status == 200
    body = bulk(*[track(identity=f"u{index}") for index in range(1000)])
    assert post(http, emulator, "/api/track", body).status == 200
    assert len(emulator.tracked_events()) == 1001


def test_user_properties_merge_per_identity_single_and_bulk(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    single = {"app_id": APP, "identity": "alice", "properties": {"plan": "free", "email": "a@x.io"}}
    assert post(http, emulator, "/api/add_user_properties", single).status == 200
    users = [
        {"identity": "alice", "properties": {"plan": "pro"}},
        {"identity": "bob", "properties": {"age": 41}},
    ]
    assert post(http, emulator, "/api/add_user_properties", {"app_id": APP, "users": users}).status == 200
    # Repeat-safe: sending the same properties again changes nothing.
    assert post(http, emulator, "/api/add_user_properties", {"app_id": APP, "users": users}).status == 200
    assert emulator.user_properties() == {
        "alice": {"plan": "pro", "email": "a@x.io"},
        "bob": {"age": 41},
    }
    assert emulator.user_properties(OTHER_APP) == {}
    assert emulator.stats()["users_updated"] == 5


def test_account_properties_merge_single_and_bulk(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    accounts = [
        {"account_id": "acme", "properties": {"tier": "gold"}},
        {"account_id": 7, "properties": {"n": 1}},
    ]
    assert (
        post(http, emulator, "/api/add_account_properties", {"app_id": APP, "accounts": accounts}).status
        == 200
    )
    single = {"app_id": APP, "account_id": "acme", "properties": {"seats": 40}}
    assert post(http, emulator, "/api/add_account_properties", single).status == 200
    assert emulator.account_properties() == {"acme": {"tier": "gold", "seats": 40}, "7": {"n": 1}}


def test_identify_is_stored(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    body = {"app_id": APP, "user_id": "8472019", "identity": "alice", "timestamp": "2024-01-01T00:00:00Z"}
    assert post(http, emulator, "/api/v1/identify", body).status == 200
    assert emulator.identifies() == [
        {"app_id": APP, "user_id": "8472019", "identity": "alice", "timestamp": "2024-01-01T00:00:00Z"}
    ]


def test_chunked_request_body_is_accepted(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    data = json.dumps({"app_id": APP, **track()}).encode()
    response = http.request(
        "POST", emulator.url + "/api/track", body=iter([data[:10], data[10:]]), chunked=True
    )
    assert response.status == 200
    assert len(emulator.tracked_events()) == 1


# --- Heap's rules: one bad item fails the whole request --------------------------------------

LONG = "x" * 1024

INVALID_REQUESTS: list[tuple[str, str, Any, str]] = [
    # (test id, path, body, expected text)
    ("unknown app_id", "/api/track", {"app_id": "nope", **track()}, "Invalid app_id"),
    ("missing app_id", "/api/track", track(), "Invalid app_id"),
    ("empty bulk", "/api/track", bulk(), "postBody.events: must be a non-empty array of at most 1000"),
    ("bulk over 1000", "/api/track", bulk(*[track()] * 1001), "postBody.events: must be a non-empty array"),
    ("bulk not array", "/api/track", {"app_id": APP, "events": {}}, "postBody.events: must be a non-empty"),
    ("users over 1000", "/api/add_user_properties", {"app_id": APP, "users": []}, "postBody.users: must be"),
    ("accounts empty", "/api/add_account_properties", {"app_id": APP, "accounts": []}, "postBody.accounts:"),
    ("item not object", "/api/track", bulk(track(), "x"), "postBody.events[1] should be object"),
    (
        "identity too long",
        "/api/track",
        bulk(track(identity="i" * 256)),
        "postBody.events[0].identity: must be",
    ),
    ("identity empty", "/api/track", bulk(track(identity="")), "postBody.events[0].identity: must be"),
    ("identity not string", "/api/track", bulk(track(identity=42)), "postBody.events[0].identity: must be"),
    ("identity null", "/api/track", bulk(track(identity=None)), "postBody.events[0].identity: must be"),
    ("identity 'null'", "/api/track", bulk(track(identity="null")), "placeholder identity"),
    ("identity 'Undefined'", "/api/track", bulk(track(identity=" Undefined ")), "placeholder identity"),
    ("identity blank", "/api/track", bulk(track(identity="   ")), "placeholder identity"),
    (
        "identity and user_id",
        "/api/track",
        bulk(track(user_id="1")),
        "postBody.events[0]: identity and user_id",
    ),
    ("no identity", "/api/track", bulk({"event": "e"}), "postBody.events[0]: one of identity or user_id"),
    (
        "single no identity",
        "/api/track",
        {"app_id": APP, "event": "e"},
        "postBody: one of identity or user_id",
    ),
    ("event missing", "/api/track", bulk({"identity": "u"}), "postBody.events[0].event: must be a non-empty"),
    ("event empty", "/api/track", bulk(track(event="")), "postBody.events[0].event: must be a non-empty"),
    ("event too long", "/api/track", bulk(track(event=LONG + "x")), "of at most 1024 characters"),
    ("event not string", "/api/track", {"app_id": APP, **track(event=3)}, "postBody.event: must be"),
    (
        "timestamp garbage",
        "/api/track",
        bulk(track(timestamp="yesterday")),
        "events[0].timestamp: must be an ISO",
    ),
    (
        "timestamp number",
        "/api/track",
        bulk(track(timestamp=1700000000000)),
        "events[0].timestamp: must be an ISO",
    ),
    (
        "properties array",
        "/api/track",
        bulk(track(properties=[])),
        "postBody.events[0].properties should be object",
    ),
    (
        "properties string",
        "/api/track",
        {"app_id": APP, **track(properties="a")},
        "postBody.properties should be",
    ),
    (
        "nested object",
        "/api/track",
        bulk(track(), track(), track(), track(properties={"color": {"r": 1}})),
        "postBody.events[3].properties.color: value must be a string or number",
    ),
    (
        "array value",
        "/api/track",
        bulk(track(properties={"a": [1]})),
        "properties.a: value must be a string or",
    ),
    (
        "null value",
        "/api/track",
        bulk(track(properties={"a": None})),
        "properties.a: value must be a string or",
    ),
    (
        "bool value",
        "/api/track",
        bulk(track(properties={"a": True})),
        "properties.a: value must be a string or",
    ),
    (
        "value too long",
        "/api/track",
        bulk(track(properties={"a": LONG})),
        "properties.a: value must be shorter",
    ),
    ("key too long", "/api/track", bulk(track(properties={LONG: 1})), "property name"),
    (
        "user property id",
        "/api/add_user_properties",
        {"app_id": APP, "users": [{"identity": "u", "properties": {"Id": "7"}}]},
        "postBody.users[0].properties.Id: property name 'id' is reserved",
    ),
    (
        "user properties not object",
        "/api/add_user_properties",
        {"app_id": APP, "identity": "u", "properties": [1]},
        "postBody.properties should be object",
    ),
    (
        "user placeholder identity",
        "/api/add_user_properties",
        {"app_id": APP, "identity": "undefined", "properties": {"a": 1}},
        "postBody.identity: placeholder identity",
    ),
    (
        "account value nested",
        "/api/add_account_properties",
        {"app_id": APP, "accounts": [{"account_id": "a", "properties": {"x": {}}}]},
        "postBody.accounts[0].properties.x: value must be a string or number",
    ),
    (
        "idempotency too long",
        "/api/track",
        bulk(track(idempotency_key=LONG + "k")),
        "idempotency_key: must be",
    ),
    ("idempotency number", "/api/track", bulk(track(idempotency_key=5)), "idempotency_key: must be"),
    (
        "identify no user_id",
        "/api/v1/identify",
        {"app_id": APP, "identity": "u"},
        "postBody.user_id: is required",
    ),
    (
        "identify bad identity",
        "/api/v1/identify",
        {"app_id": APP, "user_id": "1", "identity": "null"},
        "postBody.identity: placeholder",
    ),
    ("body not object", "/api/track", [1, 2], "postBody should be object"),
]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [case[1:] for case in INVALID_REQUESTS],
    ids=[case[0] for case in INVALID_REQUESTS],
)
def test_rule_breaking_request_is_rejected_whole(
    emulator: HeapEmulator, http: urllib3.PoolManager, path: str, body: Any, expected: str
) -> None:
    response = post(http, emulator, path, body)
    assert response.status == 400
    assert expected in response.data.decode()
    assert response.headers["Content-Type"].startswith("text/plain")
    assert emulator.tracked_events() == []
    assert emulator.user_properties() == emulator.account_properties() == {}
    assert emulator.stats()["rejected"] == 1


def test_one_bad_event_in_a_bulk_stores_nothing(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    events = [track(idempotency_key=f"k{index}") for index in range(5)]
    events[3]["properties"] = {"color": ["red"]}
    response = post(http, emulator, "/api/track", bulk(*events))
    assert response.status == 400
    assert response.data == b"postBody.events[3].properties.color: value must be a string or number"
    assert emulator.tracked_events() == []
    # Nothing was remembered either: the good events go through once the bad one is gone.
    del events[3]
    assert post(http, emulator, "/api/track", bulk(*events)).status == 200
    assert len(emulator.tracked_events()) == 4


@pytest.mark.parametrize("data", [b"{not json", b"", b'{"app_id": "app-1", "n": NaN}', b"\xff"])
def test_body_that_is_not_json_is_400(emulator: HeapEmulator, http: urllib3.PoolManager, data: bytes) -> None:
    response = post(http, emulator, "/api/track", data)
    assert response.status == 400
    assert "valid JSON" in response.data.decode()


def test_unknown_path_is_404_and_other_methods_405(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    assert post(http, emulator, "/api/nope", {"app_id": APP}).status == 404
    response = http.request("GET", emulator.url + "/api/track")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert emulator.stats()["requests"] == {"/api/nope": {"404": 1}, "/api/track": {"405": 1}}


def test_body_over_the_limit_is_413_and_connection_stays_usable(http: urllib3.PoolManager) -> None:
    with HeapEmulator([APP], max_body_bytes=1000) as small:
        big = bulk(*[track(identity=f"user-{index}") for index in range(100)])
        response = post(http, small, "/api/track", big)
        assert response.status == 413
        assert post(http, small, "/api/track", {"app_id": APP, **track()}).status == 200
        assert len(small.tracked_events()) == 1


# --- storage -----------------------------------------------------------------------------------


def test_idempotency_key_deduplicates_across_and_within_requests(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    first = bulk(track(idempotency_key="m-1"), track(idempotency_key="m-2"), track(idempotency_key="m-1"))
    assert post(http, emulator, "/api/track", first).status == 200
    assert post(http, emulator, "/api/track", {"app_id": APP, **track(idempotency_key="m-2")}).status == 200
    # Keys are per app; events without a key are always kept.
    assert (
        post(http, emulator, "/api/track", bulk(track(idempotency_key="m-1"), app_id=OTHER_APP)).status == 200
    )
    assert post(http, emulator, "/api/track", bulk(track(), track())).status == 200
    keys = [(event["app_id"], event.get("idempotency_key")) for event in emulator.tracked_events()]
    assert keys == [(APP, "m-1"), (APP, "m-2"), (OTHER_APP, "m-1"), (APP, None), (APP, None)]
    stats = emulator.stats()
    assert (stats["duplicates"], stats["events_accepted"]) == (2, 5)


def test_returned_data_is_a_copy(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    post(http, emulator, "/api/track", {"app_id": APP, **track(properties={"a": 1})})
    emulator.tracked_events()[0]["properties"]["a"] = 2
    assert emulator.tracked_events()[0]["properties"] == {"a": 1}


def test_wait_for_events(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    post(http, emulator, "/api/track", bulk(track(), track()))
    assert len(emulator.wait_for_events(2, timeout=1)) == 2
    with pytest.raises(TimeoutError):
        emulator.wait_for_events(3, timeout=0.05)


# --- faults ------------------------------------------------------------------------------------


def test_fail_next_answers_status_with_retry_after_then_recovers(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    emulator.fail_next(2, 503, retry_after=0.25, body="try later")
    body = {"app_id": APP, **track()}
    for _ in range(2):
        response = post(http, emulator, "/api/track", body)
        assert (response.status, response.headers["Retry-After"], response.data) == (
            503,
            "0.25",
            b"try later",
        )
    response = post(http, emulator, "/api/track", body)
    assert response.status == 200
    assert "Retry-After" not in response.headers
    assert len(emulator.tracked_events()) == 1
    stats = emulator.stats()
    assert stats["requests"]["/api/track"] == {"503": 2, "200": 1}
    assert stats["faults_injected"] == 2


def test_outage_answers_every_request_until_it_ends_and_keeps_the_store(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    post(http, emulator, "/api/track", bulk(track(idempotency_key="before")))
    control(http, emulator, "faults", {"outage": {"status": 503, "retry_after": 1}})
    answers = [post(http, emulator, "/api/track", bulk(track(idempotency_key="during"))) for _ in range(5)]
    assert {(a.status, a.headers["Retry-After"]) for a in answers} == {(503, "1")}

    control(http, emulator, "faults", {"outage": False})
    assert post(http, emulator, "/api/track", bulk(track(idempotency_key="after"))).status == 200
    assert [e["idempotency_key"] for e in emulator.tracked_events()] == ["before", "after"]
    assert emulator.stats()["requests"]["/api/track"] == {"200": 2, "503": 5}


def test_fail_next_plans_are_used_before_an_outage(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    emulator.set_outage(503)
    emulator.fail_next(1, 429)
    statuses = [post(http, emulator, "/api/track", bulk(track())).status for _ in range(2)]
    assert statuses == [429, 503]


def test_fail_next_plans_run_in_order_and_429_counts_as_rate_limited(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    emulator.fail_next(1, 429)
    emulator.fail_next(1, 401)
    statuses = [post(http, emulator, "/api/track", {"app_id": APP, **track()}).status for _ in range(3)]
    assert statuses == [429, 401, 200]
    assert emulator.stats()["rate_limited"] == 1


def test_latency_makes_the_client_time_out_while_heap_still_stores(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    emulator.set_latency(0.3)
    with pytest.raises(ReadTimeoutError):
        post(http, emulator, "/api/track", {"app_id": APP, **track()}, timeout=urllib3.Timeout(read=0.05))
    emulator.set_latency(0)
    # Like real Heap behind a slow network: the request the client gave up on is still kept.
    assert len(emulator.wait_for_events(1, timeout=2)) == 1
    deadline = time.monotonic() + 2
    while emulator.stats()["requests_total"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert post(http, emulator, "/api/track", {"app_id": APP, **track()}).status == 200


@pytest.mark.parametrize("after_store", [False, True])
def test_dropped_connection_gives_no_response_and_keeps_data_only_after_store(
    emulator: HeapEmulator, http: urllib3.PoolManager, after_store: bool
) -> None:
    emulator.drop_connections(1, after_store=after_store)
    body = bulk(track(idempotency_key="m-1"))
    with pytest.raises(ProtocolError):
        post(http, emulator, "/api/track", body)
    assert len(emulator.tracked_events()) == (1 if after_store else 0)
    # The retry goes through; idempotency keeps the after-store case at one event.
    assert post(http, emulator, "/api/track", body).status == 200
    assert len(emulator.tracked_events()) == 1
    stats = emulator.stats()
    assert stats["connections_dropped"] == 1
    assert stats["duplicates"] == (1 if after_store else 0)


def test_fail_next_takes_precedence_over_drop(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    emulator.drop_connections(1)
    emulator.fail_next(1, 500)
    body = {"app_id": APP, **track()}
    assert post(http, emulator, "/api/track", body).status == 500
    with pytest.raises(ProtocolError):
        post(http, emulator, "/api/track", body)
    assert post(http, emulator, "/api/track", body).status == 200


def test_rejected_event_name_fails_the_request_naming_it(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    emulator.reject_event_names(["Bad Event"])
    response = post(http, emulator, "/api/track", bulk(track(), track(event="Bad Event")))
    assert response.status == 400
    assert "postBody.events[1].event" in response.data.decode()
    assert "Bad Event" in response.data.decode()
    assert emulator.tracked_events() == []
    assert post(http, emulator, "/api/track", bulk(track())).status == 200


def test_refusal_texts_replace_heaps_by_event_name(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    emulator.reject_event_names({"Signup": "Signup app_id mismatch 401", "Other": "nope"})
    response = post(http, emulator, "/api/track", bulk(track(), track(), track(), track(event="Signup")))
    assert (response.status, response.data) == (400, b"postBody.events[3].event: Signup app_id mismatch 401")
    response = post(http, emulator, "/api/track", {"app_id": APP, **track(event="Other")})
    assert (response.status, response.data) == (400, b"postBody.event: nope")
    assert emulator.tracked_events() == []


def test_refusal_texts_through_the_control_api(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    control(http, emulator, "faults", {"reject_event_names": {"Signup": "Signup app_id mismatch 401"}})
    response = post(http, emulator, "/api/track", bulk(track(), track(event="Signup")))
    assert (response.status, response.data) == (400, b"postBody.events[1].event: Signup app_id mismatch 401")
    # The list form still answers Heap's own text, and replaces the mapping.
    control(http, emulator, "faults", {"reject_event_names": ["Listed"]})
    assert post(http, emulator, "/api/track", bulk(track(event="Signup"))).status == 200
    response = post(http, emulator, "/api/track", bulk(track(event="Listed")))
    assert response.data == b"postBody.events[0].event: event name 'Listed' is not accepted"


def test_anonymous_refusals_leave_out_the_field_path(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    emulator.set_anonymous_refusals(True)
    emulator.reject_event_names(["Bad Event"])
    response = post(http, emulator, "/api/track", bulk(track(), track(event="Bad Event")))
    assert (response.status, response.data) == (400, b"event name 'Bad Event' is not accepted")
    emulator.reject_event_names({"Signup": "Signup app_id mismatch 401"})
    response = post(http, emulator, "/api/track", bulk(track(), track(event="Signup")))
    assert (response.status, response.data) == (400, b"Signup app_id mismatch 401")
    # Every rule, not only refused names.
    response = post(http, emulator, "/api/track", bulk(track(), track(properties={"color": ["red"]})))
    assert (response.status, response.data) == (400, b"value must be a string or number")
    assert emulator.tracked_events() == []
    emulator.set_anonymous_refusals(False)
    response = post(http, emulator, "/api/track", bulk(track(), track(event="Signup")))
    assert response.data == b"postBody.events[1].event: Signup app_id mismatch 401"


def test_anonymous_refusals_through_the_control_api(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    faults = {"reject_event_names": {"Signup": "refused"}, "anonymous_refusals": True}
    control(http, emulator, "faults", faults)
    response = post(http, emulator, "/api/track", bulk(track(), track(event="Signup")))
    assert (response.status, response.data) == (400, b"refused")
    control(http, emulator, "faults", {"anonymous_refusals": False})
    assert post(http, emulator, "/api/track", bulk(track(event="Signup"))).data == (
        b"postBody.events[0].event: refused"
    )


def read_head(connection: socket.socket) -> tuple[bytes, bytes]:
    """The response head (up to the blank line) and whatever body bytes came with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        assert chunk, f"connection closed before the head was complete: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def raw_track(emulator: HeapEmulator, connection: socket.socket, body: Any) -> None:
    data = json.dumps(body).encode()
    connection.sendall(
        b"POST /api/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )


def connect(emulator: HeapEmulator, timeout: float) -> socket.socket:
    host, port = emulator.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def test_trickle_sends_the_head_at_once_then_the_body_a_byte_at_a_time(emulator: HeapEmulator) -> None:
    emulator.trickle_next(1, bytes_per_second=5, body="slow!!")
    # Each read may wait 1 s; the whole body takes 1.2 s: a per-read timeout never trips.
    with connect(emulator, timeout=1.0) as connection:
        raw_track(emulator, connection, bulk(track(idempotency_key="m-1")))
        head, body = read_head(connection)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: 6" in head.split(b"\r\n")
        assert len(body) < 6
        pieces = [body] if body else []
        while sum(map(len, pieces)) < 6:
            piece = connection.recv(4096)
            assert piece, "the connection closed before the whole body arrived"
            pieces.append(piece)
    assert b"".join(pieces) == b"slow!!"
    assert len(pieces) > 1
    # Heap got the request: it is stored and counted, only the answer was slow.
    assert [event["idempotency_key"] for event in emulator.tracked_events()] == ["m-1"]
    stats = emulator.stats()
    assert (stats["requests"]["/api/track"], stats["faults_injected"]) == ({"200": 1}, 1)


def test_a_trickled_answer_reaches_a_client_whose_read_timeout_is_per_read(
    emulator: HeapEmulator,
) -> None:
    emulator.trickle_next(1, bytes_per_second=5, status=503, body="later!")
    connection = HTTPConnection(emulator.url.removeprefix("http://"), timeout=1.0)
    try:
        connection.request("POST", "/api/track", json.dumps(bulk(track())).encode())
        response = connection.getresponse()
        assert (response.status, response.getheader("Content-Length")) == (503, "6")
        assert response.read() == b"later!"
        # Finished trickles leave the connection usable.
        connection.request("POST", "/api/track", json.dumps(bulk(track())).encode())
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    # The status replaced Heap's answer; the request was still handled and stored.
    assert len(emulator.tracked_events()) == 2
    assert emulator.stats()["requests"]["/api/track"] == {"503": 1, "200": 1}


def test_trickle_through_the_control_api_answers_heaps_own_status(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    control(http, emulator, "faults", {"trickle": {"count": 2, "bytes_per_second": 1000}})
    assert post(http, emulator, "/api/track", bulk(track())).data == b"OK"
    response = post(http, emulator, "/api/track", bulk(track(identity="null")))
    assert response.status == 400
    assert response.data == b"postBody.events[0].identity: placeholder identity 'null' is not allowed"
    # Two requests used the plan up.
    response = post(http, emulator, "/api/track", bulk(track()))
    assert (response.status, response.data) == (200, b"")
    assert emulator.stats()["faults_injected"] == 2


def test_stop_returns_promptly_while_a_trickle_is_in_flight() -> None:
    emulator = HeapEmulator([APP]).start()
    emulator.trickle_next(1, bytes_per_second=0.1, body="x" * 100)  # 1,000 s of body
    with connect(emulator, timeout=10) as connection:
        raw_track(emulator, connection, bulk(track()))
        read_head(connection)
        stopper = threading.Thread(target=emulator.stop)
        stopper.start()
        stopper.join(timeout=5)
        assert not stopper.is_alive(), "stop() waited for the trickle"
        # The trickle gave up: the client sees the answer cut off, not more bytes.
        assert connection.recv(4096) == b""
    # And its thread ended rather than sleep through the next 10 s interval.
    wait_until_no_connections(emulator)
    with pytest.raises(RuntimeError):
        _ = emulator.url


def wait_until_no_connections(emulator: HeapEmulator) -> None:
    """Every handler thread of the emulator finished (each forgets its connection last)."""
    deadline = time.monotonic() + 5
    while emulator._connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not emulator._connections, "a handler thread is still trickling"


def test_a_trickle_ends_when_the_client_hangs_up() -> None:
    with HeapEmulator([APP]) as emulator:
        emulator.trickle_next(1, bytes_per_second=20, body="x" * 10_000)  # 500 s of body
        with connect(emulator, timeout=10) as connection:
            raw_track(emulator, connection, bulk(track()))
            read_head(connection)
        wait_until_no_connections(emulator)
        assert len(emulator.tracked_events()) == 1


def test_reset_clears_store_stats_and_faults(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    post(http, emulator, "/api/track", bulk(track(idempotency_key="m-1")))
    emulator.fail_next(5, 500)
    emulator.trickle_next(5, bytes_per_second=0.1)
    emulator.reject_event_names(["Signed up"])
    emulator.set_anonymous_refusals(True)
    emulator.reset()
    assert emulator.tracked_events() == []
    assert emulator.stats()["requests_total"] == 0
    assert post(http, emulator, "/api/track", bulk(track(idempotency_key="m-1"))).status == 200
    assert len(emulator.tracked_events()) == 1


# --- rate limits (time_scale 60: a Heap minute lasts one real second) -------------------------


def retry_after(response: urllib3.BaseHTTPResponse) -> float:
    assert response.status == 429
    return float(response.headers["Retry-After"])


def test_app_wide_event_cap_then_recovery_after_the_window(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    emulator.set_enforce_rate_limits(True, time_scale=60)
    # 15 x 1000 events, spread over identities so only the app-wide cap can bite.
    bodies = [
        json.dumps(bulk(*[track(identity=f"u{batch}-{index % 10}") for index in range(1000)])).encode()
        for batch in range(15)
    ]
    assert [post(http, emulator, "/api/track", body).status for body in bodies] == [200] * 15
    over = post(http, emulator, "/api/track", bulk(track(identity="fresh")))
    wait = retry_after(over)
    assert 0 < wait <= 1.0
    assert post(http, emulator, "/api/track", bulk(track(), app_id=OTHER_APP)).status == 200
    time.sleep(wait + 0.02)
    assert post(http, emulator, "/api/track", bulk(track(identity="fresh"))).status == 200
    stats = emulator.stats()
    assert (stats["events_accepted"], stats["rate_limited"]) == (15_002, 1)


def test_per_identity_event_cap(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    emulator.set_enforce_rate_limits(True, time_scale=60)
    assert post(http, emulator, "/api/track", bulk(*[track("solo")] * 1000)).status == 200
    over = post(http, emulator, "/api/track", bulk(track("other"), track("solo")))
    assert retry_after(over) > 0
    assert emulator.tracked_events()[-1]["identity"] == "solo"
    assert len(emulator.tracked_events()) == 1000
    assert post(http, emulator, "/api/track", bulk(track("other"))).status == 200


@pytest.mark.parametrize(
    ("path", "single"),
    [
        ("/api/track", {"app_id": APP, **track("solo")}),
        ("/api/add_user_properties", {"app_id": APP, "identity": "solo", "properties": {"a": 1}}),
    ],
)
def test_single_requests_capped_at_30_per_30_seconds_per_identity(
    emulator: HeapEmulator, http: urllib3.PoolManager, path: str, single: dict[str, Any]
) -> None:
    emulator.set_enforce_rate_limits(True, time_scale=60)
    assert [post(http, emulator, path, single).status for _ in range(30)] == [200] * 30
    wait = retry_after(post(http, emulator, path, single))
    assert 0 < wait <= 0.5
    other = {**single, "identity": "someone-else"}
    assert post(http, emulator, path, other).status == 200
    time.sleep(wait + 0.02)
    assert post(http, emulator, path, single).status == 200


def test_rate_limits_are_off_by_default(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    single = {"app_id": APP, **track("solo")}
    assert {post(http, emulator, "/api/track", single).status for _ in range(40)} == {200}


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.25, "0.25"), (1, "1"), (0.12345, "0.123"), (0.0001, "0.001"), (0, "0")]
)
def test_retry_after_formatting(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


# --- control API -------------------------------------------------------------------------------


def control(http: urllib3.PoolManager, emulator: HeapEmulator, action: str, body: Any = None) -> Any:
    if body is None and action == "state":
        response = http.request("GET", f"{emulator.url}/_emulator/state")
    else:
        response = post(http, emulator, f"/_emulator/{action}", body or {})
    assert response.status == 200, response.data
    return response.json()


def test_control_api_drives_faults_and_exposes_state(
    emulator: HeapEmulator, http: urllib3.PoolManager
) -> None:
    faults = {
        "fail_next": {"count": 1, "status": 503, "retry_after": 0.1},
        "drop_connections": {"count": 1, "after_store": True},
        "reject_event_names": ["x"],
        "latency": 0.0,
        "rate_limits": {"enforce": True, "time_scale": 60},
    }
    control(http, emulator, "faults", faults)
    body = bulk(track(idempotency_key="m-1"))
    response = post(http, emulator, "/api/track", body)
    assert (response.status, response.headers["Retry-After"]) == (503, "0.1")
    with pytest.raises(ProtocolError):
        post(http, emulator, "/api/track", body)
    assert post(http, emulator, "/api/track", bulk(track(event="x"))).status == 400
    post(
        http, emulator, "/api/add_user_properties", {"app_id": APP, "identity": "u", "properties": {"a": "b"}}
    )

    state = control(http, emulator, "state")
    assert set(state) == {"tracked_events", "user_properties", "account_properties", "identifies", "stats"}
    assert [event["idempotency_key"] for event in state["tracked_events"]] == ["m-1"]
    assert state["user_properties"] == {"u": {"a": "b"}}
    assert state["stats"]["requests"]["/api/track"] == {"503": 1, "dropped": 1, "400": 1}

    control(http, emulator, "reset")
    assert emulator.tracked_events() == []
    assert control(http, emulator, "state")["stats"]["requests_total"] == 0


@pytest.mark.parametrize(
    "faults",
    [
        {"fail_next": {"count": 1}},
        {"latency": -1},
        {"bogus": 1},
        [1],
        {"reject_event_names": "x"},
        {"outage": True},
        {"outage": {"status": 999}},
    ],
)
def test_control_api_rejects_bad_faults(
    emulator: HeapEmulator, http: urllib3.PoolManager, faults: Any
) -> None:
    response = post(http, emulator, "/_emulator/faults", faults)
    assert response.status == 400
    assert response.data.startswith(b"Invalid faults")


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ({"reject_event_names": {"x": 1}}, "a list of names or an object mapping names to texts"),
        ({"anonymous_refusals": "yes"}, "anonymous_refusals must be true or false"),
        ({"trickle": {"count": 1, "bytes_per_second": 0}}, "bytes_per_second must be a positive number"),
        ({"trickle": {"count": 1, "status": 999}}, "status an HTTP status code"),
        ({"trickle": {"bytes_per_second": 1}}, "'count'"),
    ],
)
def test_control_api_says_why_new_faults_are_bad(
    emulator: HeapEmulator, http: urllib3.PoolManager, faults: Any, reason: str
) -> None:
    response = post(http, emulator, "/_emulator/faults", faults)
    assert response.status == 400
    assert reason in response.data.decode()


def test_control_api_is_not_subject_to_faults(emulator: HeapEmulator, http: urllib3.PoolManager) -> None:
    emulator.fail_next(1, 500)
    assert control(http, emulator, "state")["stats"]["requests_total"] == 0
    assert http.request("POST", f"{emulator.url}/_emulator/state").status == 405
    assert http.request("GET", f"{emulator.url}/_emulator/nope").status == 404
    assert post(http, emulator, "/api/track", bulk(track())).status == 500


# --- lifecycle and command line ----------------------------------------------------------------


def test_stop_closes_the_server_and_a_new_one_starts(http: urllib3.PoolManager) -> None:
    emulator = HeapEmulator([APP]).start()
    url = emulator.url
    assert post(http, emulator, "/api/track", bulk(track())).status == 200
    emulator.stop()
    with pytest.raises(RuntimeError):
        _ = emulator.url
    with pytest.raises(urllib3.exceptions.HTTPError):
        urllib3.PoolManager(retries=False).request("POST", url + "/api/track", body=b"{}", timeout=1)
    with emulator:
        assert post(http, emulator, "/api/track", bulk(track())).status == 200


@pytest.mark.timeout(30)
def test_module_runs_as_a_command_and_stops_on_sigterm(http: urllib3.PoolManager) -> None:
    # This tree's two source roots: the emulator (tools/) and the runtime it imports (handler/).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / root) for root in ("handler", "tools"))}
    command = [sys.executable, "-m", "heap_forwarder_tools.emulator", "--port", "0", "--app-id", "cli-app"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("Heap emulator listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        body = json.dumps({"app_id": "cli-app", **track()}).encode()
        assert http.request("POST", url + "/api/track", body=body).status == 200
        state = http.request("GET", url + "/_emulator/state").json()
        assert len(state["tracked_events"]) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""


@pytest.mark.parametrize("framing", [b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n\r\nzz"])
def test_broken_framing_is_answered_400_and_closed(emulator: HeapEmulator, framing: bytes) -> None:
    host, port = emulator.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"POST /api/track HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n")
        reply = connection.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in reply
