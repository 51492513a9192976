"""The local API server over real HTTP, and Segment's Python SDK pointed at it with its defaults."""

from __future__ import annotations

import base64
import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import segment.analytics as segment

import heap_forwarder.entry.api as api_entry
from api_support import WRITE_KEY, Api, basic, raw
from heap_forwarder_tools.local.sandbox import Sandbox
from heap_forwarder_tools.local.server import LocalApiServer, api_routes, http_api_event, http_response


@pytest.fixture(scope="module")
def server(sandbox: Sandbox) -> Iterator[LocalApiServer]:
    with LocalApiServer(sandbox.function("ApiFunction"), routes=api_routes(sandbox.template)) as running:
        yield running


def post(
    server: LocalApiServer, path: str, data: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(server.url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def json_headers(key: str | None = WRITE_KEY) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = basic(key)
    return headers


# ------------------------------------------------------------------------------ over HTTP
def test_a_track_call_over_http_is_delivered(server: LocalApiServer, api: Api) -> None:
    body = json.dumps(raw("product_viewed", type=None)).encode()

    status, _, answer = post(server, "/v1/track", body, json_headers())

    assert status == 200, answer
    assert answer == {"success": True, "delivered": 1, "rejected": [], "parked": 0}
    assert [e["event"] for e in api.sandbox.emulator.tracked_events()] == ["Product Viewed"]


def test_401_over_http_carries_the_basic_challenge(server: LocalApiServer, api: Api) -> None:
    status, headers, answer = post(server, "/v1/track", b"{}", json_headers(key="wrong"))

    assert status == 401
    assert answer["error"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Basic")


def test_a_gzip_body_over_http_is_delivered(server: LocalApiServer, api: Api) -> None:
    body = gzip.compress(json.dumps({"batch": [raw("product_added"), raw("order_completed")]}).encode())

    status, _, answer = post(server, "/v1/batch", body, {**json_headers(), "Content-Encoding": "gzip"})

    assert status == 200, answer
    assert answer["delivered"] == 2


def test_routes_outside_the_template_are_404_as_api_gateway_answers(server: LocalApiServer, api: Api) -> None:
    status, _, answer = post(server, "/v1/nothing", b"{}", json_headers())

    assert status == 404
    assert answer == {"message": "Not Found"}


def test_the_handler_stays_warm_between_requests(server: LocalApiServer, api: Api) -> None:
    """One warm instance: the runtime (pool, SSM cache, playbook) is built once."""
    body = json.dumps(raw("page", type=None)).encode()
    post(server, "/v1/page", body, json_headers())
    first = api_entry._warm.runtime

    post(server, "/v1/page", body, json_headers())

    assert first is not None
    assert api_entry._warm.runtime is first


# ---------------------------------------------------------------------- the HTTP <-> event translation
def test_requests_become_http_api_v2_events() -> None:
    """Headers lower-cased (repeats joined), route key, request context, text body kept as text."""
    now = datetime(2024, 6, 10, 14, 0, tzinfo=UTC)
    headers = [("Content-Type", "application/json"), ("X-Tag", "a"), ("X-Tag", "b"), ("Host", "h.example")]
    headers.append(("Cookie", "a=1; b=2"))

    event = http_api_event(
        "post", "/v1/track?debug=1", headers, b'{"event":"x"}', source_ip="10.0.0.9", request_id="r1", now=now
    )

    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /v1/track"
    assert event["rawPath"] == "/v1/track"
    assert event["rawQueryString"] == "debug=1"
    assert event["queryStringParameters"] == {"debug": "1"}
    assert event["headers"] == {"content-type": "application/json", "x-tag": "a,b", "host": "h.example"}
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["body"] == '{"event":"x"}'
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/v1/track",
        "protocol": "HTTP/1.1",
        "sourceIp": "10.0.0.9",
        "userAgent": "",
    }
    assert context["requestId"] == "r1"
    assert context["stage"] == "$default"
    assert context["timeEpoch"] == int(now.timestamp() * 1000)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([("Content-Type", "application/json"), ("Content-Encoding", "gzip")], gzip.compress(b"{}")),
        ([("Content-Type", "application/octet-stream")], b"\x00\x01"),
        ([("Content-Type", "application/json")], b"\xff\xfe not utf-8"),
    ],
    ids=["content-encoded", "binary-type", "not-utf8"],
)
def test_binary_or_encoded_bodies_are_base64(headers: list[tuple[str, str]], body: bytes) -> None:
    event = http_api_event("POST", "/v1/batch", headers, body)

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_unknown_routes_get_the_default_route_key() -> None:
    assert http_api_event("GET", "/v1/track", [], b"")["routeKey"] == "$default"


def test_handler_answers_become_http_responses() -> None:
    answer = {"statusCode": 202, "headers": {"X-A": "1"}, "cookies": ["c=1"]}
    answer.update(body="e30=", isBase64Encoded=True)
    status, headers, body = http_response(answer)
    assert (status, headers, body) == (202, [("X-A", "1"), ("Set-Cookie", "c=1")], b"{}")
    assert http_response({"ok": True}) == (200, [("Content-Type", "application/json")], b'{"ok": true}')


# ------------------------------------------------------------------ Segment's SDK, default settings
def test_segment_sdk_in_sync_mode_reaches_heap(server: LocalApiServer, api: Api) -> None:
    """analytics-python posts /v1/batch with Basic auth and a batch-level sentAt: every call lands."""
    client = segment.Client(write_key=WRITE_KEY, host=server.url, sync_mode=True, max_retries=0)
    errors: list[Exception] = []
    client.on_error = lambda error, _batch: errors.append(error)

    client.identify(user_id="user-7", anonymous_id="anon-7", traits={"plan": "pro", "email": "a@example.com"})
    client.track(anonymous_id="anon-7", event="Order Completed", properties={"total": 99.5})
    client.track(user_id="user-8", event="Product Viewed", properties={"sku": "B-1"})
    client.page(anonymous_id="anon-7", name="Home", properties={"path": "/"})
    client.screen(anonymous_id="anon-7", name="Cart")
    client.group(user_id="user-7", group_id="org-1", traits={"name": "Acme"})

    assert errors == []
    emulator = api.sandbox.emulator
    tracked = {(e["event"], e["identity"]) for e in emulator.tracked_events()}
    assert tracked == {
        ("Order Completed", "anon-7"),
        ("Product Viewed", "user-8"),
        ("Pageview", "anon-7"),
        ("Screenview", "anon-7"),
    }
    assert emulator.user_properties()["anon-7"] == {"plan": "pro", "email": "a@example.com"}
    assert emulator.account_properties()["org-1"] == {"name": "Acme"}


def test_segment_sdk_with_default_settings_reaches_heap(server: LocalApiServer, api: Api) -> None:
    """Nothing but the write key and the host: background batches, flushed."""
    client = segment.Client(write_key=WRITE_KEY, host=server.url)
    for i in range(25):
        client.track(anonymous_id=f"anon-{i % 3}", event="Product Added", properties={"i": i})

    client.flush()
    client.join()

    tracked = api.sandbox.emulator.tracked_events()
    assert len(tracked) == 25
    assert {e["identity"] for e in tracked} == {"anon-0", "anon-1", "anon-2"}
    assert sorted(e["properties"]["i"] for e in tracked) == list(range(25))


def test_segment_sdk_with_gzip_reaches_heap(server: LocalApiServer, api: Api) -> None:
    client = segment.Client(write_key=WRITE_KEY, host=server.url, gzip=True, upload_interval=0.05)
    client.track(anonymous_id="anon-1", event="Checkout Started", properties={"total": 12})
    client.identify(anonymous_id="anon-1", traits={"plan": "free"})

    client.flush()
    client.join()

    assert [e["event"] for e in api.sandbox.emulator.tracked_events()] == ["Checkout Started"]
    assert api.sandbox.emulator.user_properties()["anon-1"] == {"plan": "free"}


def test_segment_sdk_with_a_wrong_key_is_refused(server: LocalApiServer, api: Api) -> None:
    client = segment.Client(write_key="not-the-key", host=server.url, sync_mode=True, max_retries=0)
    errors: list[Any] = []
    client.on_error = lambda error, _batch: errors.append(error)

    with pytest.raises(segment.request.APIError) as refused:
        client.track(anonymous_id="a", event="Order Completed")

    assert refused.value.status == 401
    assert api.sandbox.emulator.tracked_events() == []


# ------------------------------------------------------------------ RudderStack's SDK, default settings
def test_rudderstack_sdk_with_default_settings_reaches_heap(server: LocalApiServer, api: Api) -> None:
    """rudder-sdk-python: gzip on by default, the write key as Basic user name, /v1/batch."""
    rudderstack = pytest.importorskip("rudderstack.analytics")
    client = rudderstack.Client(write_key=WRITE_KEY, host=server.url)
    errors: list[Exception] = []
    client.on_error = lambda error, _batch: errors.append(error)

    client.track(user_id="user-9", event="Order Completed", properties={"total": 20})
    client.identify(user_id="user-9", anonymous_id="anon-9", traits={"plan": "team"})
    client.group(user_id="user-9", group_id="org-9", traits={"name": "Initech"})
    client.flush()
    client.join()

    assert errors == []
    emulator = api.sandbox.emulator
    assert [(e["event"], e["identity"]) for e in emulator.tracked_events()] == [("Order Completed", "user-9")]
    assert emulator.user_properties()["anon-9"] == {"plan": "team"}  # sent as context.traits
    assert emulator.account_properties()["org-9"] == {"name": "Initech"}
