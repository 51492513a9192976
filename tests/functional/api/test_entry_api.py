"""Every answer of the ingest API, through real HTTP API (v2) events and the real handler.

The function runs with its template environment (local Sandbox: moto SQS/SSM, Heap emulator):
the write key in SSM, the retry queue and the DLQ are the template's.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api_support import (
    NO_RETRY,
    WRITE_KEY,
    Api,
    basic,
    empty_events_batch,
    most_empty_events,
    raw,
    request_event,
    track,
)
from heap_forwarder.edge import api_contract, ingest
from heap_forwarder.edge.api_contract import MAX_EVENTS_PER_REQUEST
from heap_forwarder.entry import api as entry
from heap_forwarder.inbound import normalise_timestamp

ROUTE_EVENTS = {
    "/v1/track": "product_viewed",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/identify": "identify",
    "/v1/group": "group",
}


def untyped(name: str) -> dict[str, Any]:
    return raw(name, type=None)


def emf_totals(stdout: str) -> dict[str, float]:
    """Metric name -> sum over the EMF documents printed to stdout."""
    totals: dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith('{"_aws"'):
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    values = document[metric["Name"]]
                    value = sum(values) if isinstance(values, list) else float(values)
                    totals[metric["Name"]] = totals.get(metric["Name"], 0.0) + value
    return totals


# ------------------------------------------------------------------------------------ 200
@pytest.mark.parametrize("path", sorted(ROUTE_EVENTS))
def test_each_single_event_route_delivers_with_the_type_implied_by_the_route(api: Api, path: str) -> None:
    """A body without ``type`` is that route's type, and it reaches Heap."""
    # Given a Segment HTTP API call without a type
    call = untyped(ROUTE_EVENTS[path])

    # When it is posted to its route
    answer = api.post(path, call)

    # Then it is delivered
    assert answer.status == 200, answer.body
    assert answer.body == {"success": True, "delivered": 1, "rejected": [], "parked": 0}
    state = api.sandbox.emulator.state()
    received = len(state["tracked_events"]) + len(state["user_properties"]) + len(state["account_properties"])
    assert received >= 1


def test_track_reaches_heap_with_its_name_identity_and_idempotency_key(api: Api) -> None:
    """The event Heap receives is the mapped track event, keyed by the producer's messageId."""
    answer = api.post("/v1/track", untyped("product_viewed"))

    assert answer.status == 200
    (event,) = api.sandbox.emulator.tracked_events()
    assert event["event"] == "Product Viewed"
    assert event["identity"] == raw("product_viewed")["anonymousId"]
    assert event["idempotency_key"] == raw("product_viewed")["messageId"]


def test_batch_delivers_every_event_in_one_request(api: Api) -> None:
    """/v1/batch takes Segment's ``{"batch": [...]}`` with batch-level sentAt and writeKey."""
    batch = [track(1), track(2, "Product Added"), raw("identify")]
    document = {"batch": batch, "sentAt": "2024-06-10T14:09:59.870Z", "writeKey": WRITE_KEY}

    answer = api.post("/v1/batch", document)

    assert answer.status == 200, answer.body
    assert answer.body["delivered"] == 3
    names = sorted(e["event"] for e in api.sandbox.emulator.tracked_events())
    assert names == ["Order Completed", "Product Added"]


def test_gzip_body_base64_encoded_by_api_gateway_is_read(api: Api) -> None:
    """A gzip body arrives base64-encoded (isBase64Encoded) and is decompressed."""
    event = request_event("/v1/batch", {"batch": [track(1), track(2)]}, gzip=True)
    assert event["isBase64Encoded"] is True

    answer = api.invoke(event)

    assert answer.status == 200, answer.body
    assert answer.body["delivered"] == 2


def test_any_content_type_is_read_as_json(api: Api) -> None:
    """Browsers' sendBeacon posts text/plain: the body is still a JSON call."""
    event = request_event("/v1/track", untyped("product_viewed"), content_type="text/plain")
    assert event["headers"]["content-type"] == "text/plain"

    answer = api.invoke(event)

    assert answer.status == 200, answer.body


def test_an_event_without_timestamp_gets_the_skew_corrected_one(api: Api) -> None:
    """RudderStack's SDKs send originalTimestamp + sentAt, no timestamp: Segment's rule fills it."""
    # Given an event whose producer clock runs 10 s ahead, received at a known time
    event = track(1, timestamp=None)
    event.update(
        originalTimestamp="2024-06-10T14:00:10.000Z",
        sentAt="2024-06-10T14:00:12.000Z",
        receivedAt="2024-06-10T14:00:02.500Z",
    )

    answer = api.post("/v1/batch", {"batch": [event]})

    # Then Heap gets receivedAt - (sentAt - originalTimestamp)
    assert answer.status == 200, answer.body
    (tracked,) = api.sandbox.emulator.tracked_events()
    assert tracked["timestamp"] == "2024-06-10T14:00:00.500Z"


def test_iam_mode_needs_no_write_key(api: Api) -> None:
    """ApiAuthMode=IAM: API Gateway authenticates, the function has no key and serves without one."""
    iam = {"ApiAuthMode": "IAM", "WriteKeyParameterName": ""}

    answer = api.post("/v1/track", untyped("product_viewed"), key=None, parameters=iam)

    assert answer.status == 200, answer.body
    assert len(api.sandbox.emulator.tracked_events()) == 1


# ---------------------------------------------------------------------- 200 with rejected
def test_events_heap_refuses_are_listed_and_dead_lettered(api: Api) -> None:
    """Heap refusing one event after delivery began: 200, listed with the reason, and in the DLQ."""
    # Given Heap refuses the event named "Refused Event"
    api.sandbox.emulator.reject_event_names(["Refused Event"])
    batch = [track(1), track(2, "Refused Event"), track(3)]

    # When the batch is posted
    answer = api.post("/v1/batch", {"batch": batch})

    # Then the others are delivered and the refused one is listed with Heap's reason
    assert answer.status == 200, answer.body
    assert answer.body["delivered"] == 2
    assert answer.body["parked"] == 0
    (rejected,) = answer.body["rejected"]
    assert rejected["index"] == 1
    assert rejected["messageId"] == "api-2"
    assert rejected["error"] == "heap_rejected"
    assert "400" in rejected["reason"]
    # And it is in the DLQ, with the reason and the API as its entry point
    (letter,) = api.queue("DeadLetterQueue")
    assert json.loads(letter.body)["messageId"] == "api-2"
    assert letter.attributes["ErrorClass"] == "heap_rejected"
    assert letter.attributes["EntryPoint"] == "api"
    assert api.parked() == []


def test_a_refused_events_letter_is_named_by_the_request_and_the_event_index(api: Api) -> None:
    """LetterId: the same event dead-lettered twice has twins with one id, which redrive moves once."""
    api.sandbox.emulator.reject_event_names(["Refused Event"])
    event = request_event("/v1/batch", {"batch": [track(1), track(2), track(3, "Refused Event")]})

    answer = api.invoke(event)

    assert answer.status == 200, answer.body
    (letter,) = api.queue("DeadLetterQueue")
    assert letter.attributes["LetterId"] == f"{event['requestContext']['requestId']}:2"


# ------------------------------------------------------------------------------------ 202
def test_heap_down_parks_the_events_and_the_consumer_delivers_them_once(api: Api) -> None:
    """Heap unavailable: 202, one {"batch": [...]} message; the consumer delivers each event once."""
    # Given Heap answers 503 to everything
    emulator = api.sandbox.emulator
    emulator.fail_next(1000, 503)
    batch = [track(1), track(2), raw("identify")]

    # When the batch is posted
    answer = api.post("/v1/batch", {"batch": batch}, env=NO_RETRY)

    # Then it is accepted for later delivery, parked as one message
    assert answer.status == 202, answer.body
    assert answer.body == {"success": True, "delivered": 0, "rejected": [], "parked": 3}
    (message,) = api.parked()
    assert [e["messageId"] for e in message["batch"]] == ["api-1", "api-2", raw("identify")["messageId"]]
    assert emulator.tracked_events() == []

    # When Heap recovers and the consumer drains the queue (twice: nothing is left over)
    emulator.reset()
    assert api.run_consumer() == 1
    assert api.run_consumer() == 0

    # Then every event reached Heap exactly once, and nothing was dead-lettered
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == ["api-1", "api-2"]
    assert list(emulator.user_properties()) == [raw("identify")["anonymousId"]]
    assert emulator.stats()["duplicates"] == 0
    assert api.queue("DeadLetterQueue") == []


def test_parked_events_carry_the_type_the_route_implied(api: Api) -> None:
    """A single-route call is parked with ``type`` filled in, so the consumer maps it the same way."""
    api.sandbox.emulator.fail_next(1000, 503)

    answer = api.post("/v1/page", untyped("page"), env=NO_RETRY)

    assert answer.status == 202, answer.body
    ((parked,),) = [m["batch"] for m in api.parked()]
    assert parked["type"] == "page"
    assert "writeKey" not in parked


def test_an_event_without_timestamp_gets_one_heap_timestamp_through_either_entry_point(api: Api) -> None:
    """One completion rule: RudderStack's ``originalTimestamp`` without ``timestamp`` is the
    event's time whether it was posted to the API or sent to the queue; with neither, the time
    it was received (the API's request time, the queue's SentTimestamp)."""
    unset = {"timestamp": None, "sentAt": None, "receivedAt": None}
    original = raw("product_viewed", **unset)["originalTimestamp"]
    sqs = api.sandbox.client("sqs")
    main_url = api.sandbox.queue_url("MainQueue")
    before = datetime.now(UTC) - timedelta(seconds=1)

    # When the same event (its own messageId on each path) comes through both entry points
    for via in ("api", "sqs"):
        timed = raw("product_viewed", messageId=f"timed-{via}", **unset)
        bare = raw("product_viewed", messageId=f"bare-{via}", originalTimestamp=None, **unset)
        if via == "api":
            answer = api.post("/v1/batch", {"batch": [timed, bare]})
            assert answer.status == 200, answer.body
        else:
            sqs.send_message(QueueUrl=main_url, MessageBody=json.dumps({"batch": [timed, bare]}))
            assert api.run_consumer() == 1

    # Then Heap has the same timestamp for both, and a receive time for the bare ones
    assert api.queue("DeadLetterQueue") == []
    stored = {e["idempotency_key"]: e["timestamp"] for e in api.sandbox.emulator.tracked_events()}
    assert stored["timed-api"] == stored["timed-sqs"] == normalise_timestamp(original)
    after = datetime.now(UTC) + timedelta(seconds=1)
    for via in ("api", "sqs"):
        assert before <= datetime.fromisoformat(stored[f"bare-{via}"]) <= after, stored


def test_an_event_without_message_id_keeps_one_idempotency_key_across_the_retry(api: Api) -> None:
    """The messageId is assigned before the first attempt: Heap stored it, the retry is a duplicate."""
    # Given an event without messageId, and Heap that stores it but drops the connection
    emulator = api.sandbox.emulator
    emulator.drop_connections(1, after_store=True)
    event = raw("order_completed", messageId=None)

    # When it is posted, Heap's answer is lost: the event is parked
    answer = api.post("/v1/batch", {"batch": [event]}, env=NO_RETRY)
    assert answer.status == 202, answer.body
    ((parked,),) = [m["batch"] for m in api.parked()]
    assert parked["messageId"]

    # When the consumer delivers the parked copy
    assert api.run_consumer() == 1

    # Then Heap dropped it as a repeat of the first attempt: stored once
    (stored,) = emulator.tracked_events()
    assert stored["idempotency_key"] == parked["messageId"]
    assert emulator.stats()["duplicates"] == 1


def test_only_the_events_not_delivered_are_parked(api: Api) -> None:
    """Delivered events are not parked again: one endpoint down, the other up."""
    # Given Heap's track endpoint answers its first request with 503 (user properties succeed)
    api.sandbox.emulator.fail_next(1, 503)

    answer = api.post("/v1/batch", {"batch": [track(1), raw("identify")]}, env=NO_RETRY)

    assert answer.status == 202, answer.body
    assert answer.body["delivered"] == 1
    assert answer.body["parked"] == 1
    ((parked,),) = [m["batch"] for m in api.parked()]
    assert parked["messageId"] == "api-1"


def test_unreadable_app_id_parks_valid_events(api: Api) -> None:
    """A configuration fault (SSM parameter missing) parks the events: 202, nothing lost."""
    answer = api.post("/v1/track", untyped("product_viewed"), env={"HEAP_APP_ID_PARAMETER": "/missing"})

    assert answer.status == 202, answer.body
    assert answer.body["parked"] == 1
    assert len(api.parked()) == 1


def test_unreadable_app_id_still_refuses_invalid_events(api: Api) -> None:
    """Without a pipeline, events that break the spec are still refused (400), not parked."""
    answer = api.post("/v1/track", {"anonymousId": "a"}, env={"HEAP_APP_ID_PARAMETER": "/missing"})

    assert answer.status == 400
    assert api.parked() == []


def test_large_retry_is_parked_in_chunks_under_the_sqs_limit(api: Api) -> None:
    """Parked messages stay under 256 KB: a 450 KB batch becomes two messages, order kept."""
    api.sandbox.emulator.fail_next(1000, 503)
    batch = [track(i, properties={"notes": "n" * 15_000}) for i in range(30)]

    answer = api.post("/v1/batch", {"batch": batch}, env=NO_RETRY)

    assert answer.status == 202, answer.body
    messages = api.queue("MainQueue")
    assert len(messages) == 2
    assert all(len(m.body.encode()) <= 256_000 for m in messages)
    parked = [e["messageId"] for m in messages for e in json.loads(m.body)["batch"]]
    assert sorted(parked) == sorted(f"api-{i}" for i in range(30))


# ------------------------------------------------------------------------------------ 400
def test_one_invalid_event_refuses_the_whole_request(api: Api) -> None:
    """Atomic: one bad event of three -> 400 naming index and field; nothing sent, nothing parked."""
    bad = track(2)
    del bad["event"]

    answer = api.post("/v1/batch", {"batch": [track(1), bad, track(3)]})

    assert answer.status == 400
    assert answer.body["error"] == "invalid_events"
    assert answer.body["problems"] == [{"index": 1, "field": "event", "message": "Field required"}]
    assert api.sandbox.emulator.stats()["requests_total"] == 0
    assert api.parked() == []


def test_heap_rule_problems_are_named_too(api: Api) -> None:
    """Problems found by the mapping/Heap rules (no identity) refuse the request the same way."""
    nobody = track(2, anonymousId=None, userId=None)

    answer = api.post("/v1/batch", {"batch": [track(1), nobody]})

    assert answer.status == 400
    (problem,) = answer.body["problems"]
    assert problem["index"] == 1
    assert problem["field"] == "identity"
    assert api.sandbox.emulator.stats()["requests_total"] == 0


def test_alias_is_answered_rejected_with_the_reason_and_kept_in_the_dlq(api: Api) -> None:
    """Heap's server-side API cannot merge identities: a valid alias call is not a bad request,
    so it does not sink its batch; it is listed as rejected and parked in the DLQ."""
    answer = api.post("/v1/batch", {"batch": [raw("alias"), raw("product_viewed")]})

    assert answer.status == 200
    assert answer.body["delivered"] == 1
    [rejected] = answer.body["rejected"]
    assert rejected["index"] == 0
    assert rejected["error"] == "unsupported"
    assert "alias" in rejected["reason"]
    [letter] = api.queue("DeadLetterQueue")
    assert letter.attributes["ErrorClass"] == "unsupported"


def test_non_json_body_is_400(api: Api) -> None:
    answer = api.post("/v1/track", data=b"{not json")

    assert answer.status == 400
    assert answer.body["error"] == "invalid_json"
    assert answer.body["problems"] == []


@pytest.mark.parametrize(
    ("path", "document"),
    [("/v1/track", [1, 2]), ("/v1/batch", {"events": []}), ("/v1/batch", {"batch": {"type": "track"}})],
)
def test_a_body_of_the_wrong_shape_is_400(api: Api, path: str, document: Any) -> None:
    answer = api.post(path, document)

    assert answer.status == 400
    assert answer.body["error"] == "invalid_body"


def test_a_type_contradicting_the_route_is_400(api: Api) -> None:
    answer = api.post("/v1/track", raw("page"))

    assert answer.status == 400
    (problem,) = answer.body["problems"]
    assert problem["index"] == 0
    assert problem["field"] == "type"
    assert problem["message"] == "'page' contradicts the route /v1/track, which takes track events"


def test_bad_gzip_is_400(api: Api) -> None:
    event = request_event("/v1/track", data=b"not gzip", headers=[("Content-Encoding", "gzip")])

    answer = api.invoke(event)

    assert answer.status == 400
    assert answer.body["error"] == "invalid_body"


def test_a_multi_member_gzip_body_is_read_whole(api: Api) -> None:
    """RFC 1952 allows several gzip members: every one is read, as their concatenation."""
    data = json.dumps({"batch": [track(1), track(2)]}).encode()
    body = gzip.compress(data[:40]) + gzip.compress(data[40:])

    answer = api.invoke(request_event("/v1/batch", data=body, headers=[("Content-Encoding", "gzip")]))

    assert answer.status == 200, answer.body
    assert answer.body["delivered"] == 2


BROKEN_GZIP = gzip.compress(json.dumps({"batch": [track(1)]}).encode())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            BROKEN_GZIP + b"junk",
            "gzip body has 4 bytes of trailing data after its last member",
        ),
        (
            BROKEN_GZIP + gzip.compress(b"{}")[:-2],
            "gzip body is cut off in its trailer (member 2): 6 of its 8 bytes are there",
        ),
        (BROKEN_GZIP[:-4], "gzip body is cut off in its trailer: 4 of its 8 bytes are there"),
        (
            BROKEN_GZIP[:-8] + bytes([BROKEN_GZIP[-8] ^ 1]) + BROKEN_GZIP[-7:],
            "gzip body fails its CRC-32 check: the data is corrupt",
        ),
    ],
    ids=["trailing-garbage", "second-member-cut-off", "trailer-cut-off", "corrupt-crc"],
)
def test_a_gzip_body_not_read_to_its_checked_end_is_400(api: Api, data: bytes, message: str) -> None:
    event = request_event("/v1/batch", data=data, headers=[("Content-Encoding", "gzip")])

    answer = api.invoke(event)

    assert answer.status == 400
    assert answer.body["error"] == "invalid_body"
    assert answer.body["message"] == message
    assert api.sandbox.emulator.stats()["requests_total"] == 0


# ------------------------------------------------------------------------------------ 401
@pytest.mark.parametrize(
    "authorization",
    [None, basic("wrong"), basic(WRITE_KEY + "x"), "Basic !!!notbase64", f"Bearer {WRITE_KEY}", "Basic "],
    ids=["missing", "wrong", "longer", "malformed", "bearer", "empty"],
)
def test_requests_without_the_write_key_are_401(api: Api, authorization: str | None) -> None:
    """Missing, wrong or malformed credentials: 401 with a Basic challenge; nothing sent."""
    headers = [("Authorization", authorization)] if authorization else []

    answer = api.post("/v1/track", untyped("product_viewed"), key=None, headers=headers)

    assert answer.status == 401
    assert answer.body["error"] == "unauthorized"
    assert answer.headers["www-authenticate"].startswith("Basic")
    assert api.sandbox.emulator.stats()["requests_total"] == 0


def test_auth_is_checked_before_the_body_is_read(api: Api) -> None:
    """An unauthenticated request learns nothing about its body: 401, not 400/413."""
    answer = api.post("/v1/batch", data=b"x" * 600_000, key="wrong")

    assert answer.status == 401


def test_the_right_write_key_with_any_password_is_accepted(api: Api) -> None:
    headers = [("Authorization", basic(WRITE_KEY, "ignored"))]

    answer = api.post("/v1/track", untyped("product_viewed"), key=None, headers=headers)

    assert answer.status == 200, answer.body


def test_a_write_key_stored_as_a_plain_string_is_warned_about(api: Api, log_stream: io.StringIO) -> None:
    """It still authenticates, but the WARNING names the parameter and its type, never the key."""
    ssm = api.sandbox.client("ssm")
    ssm.put_parameter(Name="/heap-forwarder/write-key", Value=WRITE_KEY, Type="String", Overwrite=True)
    entry.reset()  # a cold start: the key is read from SSM, not from a warm cache
    try:
        answer = api.post("/v1/track", untyped("product_viewed"))
    finally:
        ssm.put_parameter(
            Name="/heap-forwarder/write-key", Value=WRITE_KEY, Type="SecureString", Overwrite=True
        )
        entry.reset()

    assert answer.status == 200, answer.body
    records = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    (warning,) = [r for r in records if r["level"] == "WARNING"]
    assert (warning["parameter"], warning["parameter_type"]) == ("/heap-forwarder/write-key", "String")
    assert WRITE_KEY not in log_stream.getvalue()


def test_an_unreadable_write_key_is_503_not_401(api: Api) -> None:
    """SSM unreadable: the client is told to retry (503), never that its key is wrong."""
    answer = api.post("/v1/track", untyped("product_viewed"), env={"WRITE_KEY_PARAMETER": "/missing"})

    assert answer.status == 503
    assert answer.body["error"] == "unavailable"


# ---------------------------------------------------------------------- 503: closed by default
NO_KEY = {"ApiAuthMode": "WriteKey", "WriteKeyParameterName": ""}
NO_KEY_MESSAGE = (
    "the API is in WriteKey mode but no write key parameter is configured (WriteKeyParameterName)"
)


def test_write_key_mode_without_a_key_refuses_every_request(
    api: Api, log_stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    """No key to check callers against: 503 with the reason, nothing stored or parked, said once."""
    capsys.readouterr()

    # Given a stack in WriteKey mode whose WriteKeyParameterName is empty (a warm instance)
    answers = [
        api.post("/v1/track", untyped("product_viewed"), key=None, parameters=NO_KEY),
        api.post("/v1/batch", {"batch": [track(1)]}, key=WRITE_KEY, parameters=NO_KEY),
    ]

    # Then every request, with or without credentials, is refused with the reason
    for answer in answers:
        assert answer.status == 503, answer.body
        assert answer.body["error"] == "unavailable"
        assert answer.body["message"] == NO_KEY_MESSAGE
    # and Heap received nothing, nothing was parked
    assert api.sandbox.emulator.stats()["requests_total"] == 0
    assert api.sandbox.emulator.tracked_events() == []
    assert api.queue("MainQueue") == [] and api.queue("DeadLetterQueue") == []
    # and the operator is told once per cold start, not once per request
    errors = [json.loads(line) for line in log_stream.getvalue().splitlines() if '"ERROR"' in line]
    assert [e["message"] for e in errors if "WRITE_KEY_PARAMETER" in e["message"]] == [
        "the API refuses every request: it is in WriteKey mode but WRITE_KEY_PARAMETER is not set;"
        " set WriteKeyParameterName, or ApiAuthMode=IAM"
    ]
    metrics = emf_totals(capsys.readouterr().out)
    assert metrics["ConfigurationFaults"] == 1
    assert metrics["ApiResponses.503"] == 2


def test_an_unset_auth_mode_means_write_key(api: Api) -> None:
    """A function not told ApiAuthMode=IAM never assumes someone else checks callers."""
    env = {"API_AUTH_MODE": "", "WRITE_KEY_PARAMETER": ""}

    answer = api.post("/v1/track", untyped("product_viewed"), key=None, env=env)

    assert answer.status == 503
    assert answer.body["message"] == NO_KEY_MESSAGE
    assert api.sandbox.emulator.stats()["requests_total"] == 0


# ------------------------------------------------------------------------------------ 413
def test_an_event_over_32_kb_is_413_naming_it(api: Api) -> None:
    big = track(2, properties={"notes": "x" * 33_000})

    answer = api.post("/v1/batch", {"batch": [track(1), big]})

    assert answer.status == 413
    assert answer.body["error"] == "payload_too_large"
    (problem,) = answer.body["problems"]
    assert problem["index"] == 1
    assert api.sandbox.emulator.stats()["requests_total"] == 0


def test_a_batch_over_500_kb_is_413(api: Api) -> None:
    batch = [track(i, properties={"notes": "x" * 20_000}) for i in range(26)]

    answer = api.post("/v1/batch", {"batch": batch})

    assert answer.status == 413
    assert answer.body["problems"] == []


def test_a_gzip_body_over_500_kb_decompressed_is_413(api: Api) -> None:
    batch = [track(i, properties={"notes": "x" * 20_000}) for i in range(26)]

    answer = api.post("/v1/batch", {"batch": batch}, gzip=True)

    assert answer.status == 413


def test_a_small_gzip_request_of_too_many_events_is_413_before_any_event_is_completed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~550 bytes gzipped, 170,000 ``{}`` decompressed: refused on the count, before the API
    spends anything per event (completing them took it past 500 MB)."""
    # Given a gzip request holding as many empty events as fit under the decompressed cap
    count = most_empty_events(api_contract.MAX_BODY_BYTES)
    assert count > api_contract.MAX_EVENTS_PER_REQUEST
    event = request_event("/v1/batch", data=empty_events_batch(count), gzip=True)
    assert len(event["body"]) < 1_000  # base64 of the gzip
    completed: list[Any] = []
    complete_event = ingest.complete_event

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        completed.append(args[0])
        return complete_event(*args, **kwargs)

    monkeypatch.setattr(ingest, "complete_event", spy)

    # When it is posted
    answer = api.invoke(event)

    # Then it is refused whole, naming the count and the cap; no event was completed or sent
    assert answer.status == 413, answer.body
    assert answer.body["error"] == "payload_too_large"
    limit = api_contract.MAX_EVENTS_PER_REQUEST
    assert answer.body["message"] == (
        f"the batch holds {count} events; the limit is {limit} per request; send smaller batches"
    )
    assert answer.body["problems"] == []
    assert completed == []
    assert api.sandbox.emulator.stats()["requests_total"] == 0
    assert api.parked() == []
    assert api.queue("DeadLetterQueue") == []


def test_the_event_count_is_checked_before_each_event_s_size(api: Api) -> None:
    """The 32 KB check encodes every event: too many events are refused on their count first."""
    batch = [{} for _ in range(api_contract.MAX_EVENTS_PER_REQUEST)] + [
        track(1, properties={"notes": "x" * 33_000})
    ]

    answer = api.post("/v1/batch", {"batch": batch})

    assert answer.status == 413
    assert answer.body["message"].startswith(f"the batch holds {MAX_EVENTS_PER_REQUEST + 1} events")
    assert answer.body["problems"] == []


def test_the_event_cap_is_exact_a_full_batch_is_accepted(api: Api) -> None:
    """MAX_EVENTS_PER_REQUEST events are taken whole; one more and the request is 413."""
    limit = api_contract.MAX_EVENTS_PER_REQUEST
    batch = [
        {"type": "track", "event": "E", "userId": f"u{i % 50}", "messageId": f"cap-{i}"}
        for i in range(limit + 1)
    ]

    over = api.post("/v1/batch", {"batch": batch})
    full = api.post("/v1/batch", {"batch": batch[:limit]})

    assert over.status == 413
    assert f"the limit is {limit} per request" in over.body["message"]
    # The API's share of Heap's rate (template: a burst of 1,000) delivers part at once and
    # parks the rest for the consumer: every event is taken either way.
    assert full.status in (200, 202), full.body
    assert full.body["delivered"] + full.body["parked"] == limit
    assert full.body["rejected"] == []
    assert len(api.sandbox.emulator.tracked_events()) == full.body["delivered"]


def test_a_body_over_1_mb_as_sent_is_413(api: Api) -> None:
    event = request_event("/v1/batch", data=os.urandom(1_100_000), headers=[("Content-Encoding", "gzip")])

    answer = api.invoke(event)

    assert answer.status == 413


# ------------------------------------------------------------------------------------ 503
def test_heap_down_and_queue_unreachable_is_503(api: Api) -> None:
    """Neither delivered nor parked: 503, so that the client keeps the events and retries."""
    api.sandbox.emulator.fail_next(1000, 503)
    missing_queue = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue"

    answer = api.post("/v1/batch", {"batch": [track(1)]}, env={**NO_RETRY, "RETRY_QUEUE_URL": missing_queue})

    assert answer.status == 503
    assert answer.body["error"] == "unavailable"
    assert answer.headers["retry-after"]
    assert api.parked() == []


# ------------------------------------------------------------------------------------ 404
def test_an_unknown_route_is_404_in_the_error_shape(api: Api) -> None:
    answer = api.post("/v1/unknown", {"x": 1})

    assert answer.status == 404
    assert answer.body["error"] == "not_found"
