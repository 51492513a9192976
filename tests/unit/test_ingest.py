"""The ingest logic without AWS: credentials, event completion, parking, settling outcomes.

``Ingest`` is built from real parts (the default playbook, the real Pipeline) with in-memory
stand-ins for Heap delivery, the DLQ and the retry queue, and reached the way production reaches
it: through the API's Lambda handler and its router (``api_support.handle``).
"""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from api_support import (
    WRITE_KEY,
    Answer,
    basic,
    empty_events_batch,
    handle,
    most_empty_events,
    raw,
    request_event,
    track,
)
from heap_forwarder.edge.api_contract import (
    MAX_BODY_BYTES,
    MAX_EVENTS_PER_REQUEST,
    MAX_PROBLEMS_LISTED,
    ApiError,
    ErrorCode,
)
from heap_forwarder.edge.ingest import Ingest, basic_auth_user, route_of
from heap_forwarder.edge.letters import DeadLetter
from heap_forwarder.edge.parking import park_bodies, sqs_safe_json
from heap_forwarder.heap.items import HeapItem
from heap_forwarder.inbound import complete_event, implied_timestamp
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.models import Problem
from heap_forwarder.outcome import DELIVERED, ErrorClass, Outcome, rejected, retryable
from heap_forwarder.pipeline import Pipeline, Prepared

RECEIVED = "2024-06-10T14:00:00.000Z"


# ------------------------------------------------------------------------------ credentials
@pytest.mark.parametrize(
    ("header", "user"),
    [
        (basic("k"), "k"),
        (basic("k", "secret"), "k"),
        ("basic " + basic("k").split()[1], "k"),
        (basic(""), ""),
        (None, None),
        ("", None),
        ("Basic", None),
        ("Basic !!", None),
        ("Bearer abc", None),
        ("Basic " + "bm8tY29sb24=", None),  # "no-colon": not user:password
    ],
)
def test_basic_auth_user(header: str | None, user: str | None) -> None:
    assert basic_auth_user(header) == user


# ------------------------------------------------------------------------------ the route
def test_route_comes_from_the_route_key_else_the_raw_path() -> None:
    assert route_of({"routeKey": "POST /v1/page", "rawPath": "/prod/v1/page"}) == ("POST", "/v1/page")
    event = {"routeKey": "$default", "rawPath": "/v1/track", "requestContext": {"http": {"method": "post"}}}
    assert route_of(event) == ("POST", "/v1/track")


# ------------------------------------------------------------------------------ completing events
def test_the_route_type_comes_first_and_the_write_key_goes() -> None:
    completed = complete_event({"event": "x", "writeKey": "k", "messageId": "m"}, "track", {}, RECEIVED)

    assert next(iter(completed)) == "type"
    assert completed["type"] == "track"
    assert "writeKey" not in completed


def test_what_the_producer_set_is_kept() -> None:
    event = track(1, receivedAt="2024-01-01T00:00:00.000Z", sentAt="2024-01-01T00:00:00.000Z")

    completed = complete_event(dict(event), None, {"sentAt": "2030-01-01T00:00:00Z"}, RECEIVED)

    assert completed == event


def test_a_missing_message_id_is_assigned_once() -> None:
    completed = complete_event({"type": "track", "messageId": None}, None, {}, RECEIVED)
    again = complete_event(completed, None, {}, RECEIVED)

    assert completed["messageId"]
    assert again["messageId"] == completed["messageId"]


def test_batch_level_context_integrations_and_sent_at_apply_to_each_event() -> None:
    shared = {
        "context": {"library": {"name": "sdk"}, "ip": "1.1.1.1"},
        "integrations": {"All": True},
        "sentAt": "2024-06-10T14:00:01Z",
    }

    completed = complete_event({"type": "track", "context": {"ip": "2.2.2.2"}}, None, shared, RECEIVED)

    assert completed["context"] == {"library": {"name": "sdk"}, "ip": "2.2.2.2"}
    assert completed["integrations"] == {"All": True}
    assert completed["sentAt"] == "2024-06-10T14:00:01Z"


def test_identify_traits_sent_in_context_only_are_taken_from_there() -> None:
    """RudderStack's identify carries its traits in context.traits only."""
    identify = {"type": "identify", "anonymousId": "a", "context": {"traits": {"plan": "team"}}}

    completed = complete_event(identify, None, {}, RECEIVED)

    assert completed["traits"] == {"plan": "team"}
    assert complete_event({**identify, "traits": {}}, None, {}, RECEIVED)["traits"] == {}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # the producer's clock runs 10 s ahead: corrected by receivedAt - (sentAt - originalTimestamp)
        (
            {"originalTimestamp": "2024-06-10T14:00:10Z", "sentAt": "2024-06-10T14:00:12Z"},
            "2024-06-10T13:59:58.000Z",
        ),
        ({"originalTimestamp": "2024-06-10T13:00:00+01:00"}, "2024-06-10T12:00:00.000Z"),
        ({}, RECEIVED),
        ({"originalTimestamp": "garbage"}, RECEIVED),
        # clocks so far apart that the correction leaves the calendar: the producer's time is kept
        (
            {"originalTimestamp": "0002-01-01T00:00:00Z", "sentAt": "9000-01-01T00:00:00Z"},
            "0002-01-01T00:00:00.000Z",
        ),
    ],
)
def test_implied_timestamp(fields: dict[str, Any], expected: str) -> None:
    assert implied_timestamp({"receivedAt": RECEIVED, **fields}) == expected


# ------------------------------------------------------------------------------ parking
def test_park_bodies_pack_in_order_under_the_limit() -> None:
    events = [sqs_safe_json({"i": i, "pad": "x" * (i * 37 % 500)}) for i in range(200)]

    bodies = park_bodies(events, limit=4_000)

    assert len(bodies) > 1
    assert all(len(b.encode()) <= 4_000 for b in bodies)
    unpacked = [e for b in bodies for e in json.loads(b)["batch"]]
    assert [e["i"] for e in unpacked] == list(range(200))


def test_sqs_safe_json_escapes_what_sqs_refuses() -> None:
    assert sqs_safe_json({"name": "café"}) == '{"name":"café"}'
    assert sqs_safe_json({"name": "\ud800"}) == '{"name":"\\ud800"}'


def test_error_answers_list_a_bounded_number_of_problems() -> None:
    problems = [Problem(i, "event", "Field required") for i in range(250)]

    answer = ApiError(400, ErrorCode.INVALID_EVENTS, "bad", problems).response()

    assert len(answer.body["problems"]) == MAX_PROBLEMS_LISTED
    assert "250 problems" in answer.body["message"]


# ------------------------------------------------------------------------------ settling outcomes
class ScriptedHeap:
    """Delivery that answers each item by its event's name."""

    def __init__(self, fates: Mapping[str, Outcome]) -> None:
        self.fates = fates
        self.sent: list[HeapItem] = []

    def deliver(self, items: Sequence[HeapItem], *, deadline: float | None = None) -> list[Outcome]:
        self.sent.extend(items)
        return [self.fates.get(str(item.body.get("event")), DELIVERED) for item in items]


class MemoryDlq:
    def __init__(self, works: bool = True, refuses: frozenset[str] = frozenset()) -> None:
        self.works = works
        self.refuses = refuses  # messageIds of the events whose letters it refuses
        self.letters: list[DeadLetter] = []

    def write(self, letters: Sequence[DeadLetter], *, until: float | None = None) -> list[bool]:
        taken = [self.works and json.loads(x.body).get("messageId") not in self.refuses for x in letters]
        self.letters.extend(x for x, ok in zip(letters, taken, strict=True) if ok)
        return taken


class MemoryQueue:
    def __init__(self, works: bool = True) -> None:
        self.works = works
        self.parked: list[Any] = []

    def park(self, events: Sequence[Any]) -> bool:
        if self.works:
            self.parked.extend(events)
        return self.works


def make_ingest(heap: ScriptedHeap, dlq: MemoryDlq, queue: MemoryQueue) -> Ingest:
    mapper = Mapper(build_playbook(None), {"MY_APP_ID": "app"})
    return Ingest(lambda: Pipeline(mapper, heap), queue, dlq, lambda: WRITE_KEY)  # type: ignore[arg-type]


def post(ingest: Ingest, path: str, document: Any) -> Answer:
    return handle(ingest, request_event(path, document))


REFUSED = rejected(ErrorClass.HEAP_REJECTED, "HTTP 400 from Heap: bad event")
DOWN = retryable(ErrorClass.TRANSIENT, "HTTP 503 from Heap")


def test_delivered_rejected_and_retryable_events_each_go_their_way() -> None:
    heap = ScriptedHeap({"Refused": REFUSED, "Later": DOWN})
    dlq, queue = MemoryDlq(), MemoryQueue()
    ingest = make_ingest(heap, dlq, queue)
    batch = [track(1), track(2, "Refused"), track(3, "Later")]

    answer = post(ingest, "/v1/batch", {"batch": batch})

    assert answer.status == 202
    assert answer.body["delivered"] == 1
    assert answer.body["parked"] == 1
    assert [r["messageId"] for r in answer.body["rejected"]] == ["api-2"]
    assert [json.loads(letter.body)["messageId"] for letter in dlq.letters] == ["api-2"]
    assert dlq.letters[0].entry_point == "api"
    assert [e["messageId"] for e in queue.parked] == ["api-3"]


def test_a_rejected_event_the_dlq_refuses_is_parked_instead() -> None:
    """Nothing lost: the consumer will meet Heap's refusal again and dead-letter it then."""
    heap = ScriptedHeap({"Refused": REFUSED})
    dlq, queue = MemoryDlq(works=False), MemoryQueue()

    answer = post(make_ingest(heap, dlq, queue), "/v1/batch", {"batch": [track(1, "Refused")]})

    assert answer.status == 202
    assert [e["messageId"] for e in queue.parked] == ["api-1"]


def test_a_rejected_event_the_dlq_refuses_is_counted_only_as_parked() -> None:
    heap = ScriptedHeap({"Refused": REFUSED})
    dlq, queue = MemoryDlq(works=False), MemoryQueue()

    answer = post(make_ingest(heap, dlq, queue), "/v1/batch", {"batch": [track(1, "Refused")]})

    assert answer.status == 202
    assert answer.body["rejected"] == []  # not in the DLQ: listing it would count it twice
    assert answer.body["parked"] == 1
    assert answer.body["delivered"] == 0


def test_each_event_is_counted_once_when_the_dlq_takes_only_some_letters() -> None:
    heap = ScriptedHeap({"Refused": REFUSED})
    dlq, queue = MemoryDlq(refuses=frozenset({"api-3"})), MemoryQueue()
    batch = [track(1), track(2, "Refused"), track(3, "Refused"), track(4)]

    answer = post(make_ingest(heap, dlq, queue), "/v1/batch", {"batch": batch})

    assert answer.status == 202
    assert answer.body["delivered"] == 2
    assert [r["messageId"] for r in answer.body["rejected"]] == ["api-2"]
    assert [json.loads(letter.body)["messageId"] for letter in dlq.letters] == ["api-2"]
    assert answer.body["parked"] == 1
    assert [e["messageId"] for e in queue.parked] == ["api-3"]


def test_each_letter_is_named_by_the_request_id_and_the_event_index() -> None:
    heap = ScriptedHeap({"Refused": REFUSED})
    dlq = MemoryDlq()
    event = request_event("/v1/batch", {"batch": [track(1), track(2, "Refused"), track(3, "Refused")]})
    request_id = event["requestContext"]["requestId"]

    handle(make_ingest(heap, dlq, MemoryQueue()), event)

    assert [letter.letter_id for letter in dlq.letters] == [f"{request_id}:1", f"{request_id}:2"]
    assert all(letter.source_record_id == request_id for letter in dlq.letters)


MARKER = "leaky.person@example.com"


def test_heaps_own_text_goes_to_the_letter_and_the_answer_never_to_the_logs(log_stream: io.StringIO) -> None:
    heap = ScriptedHeap(
        {
            "Refused": rejected(
                ErrorClass.HEAP_REJECTED, "HTTP 400 from Heap", f"HTTP 400: {MARKER} refused"
            ),
            "Later": retryable(ErrorClass.TRANSIENT, "HTTP 503 from Heap", f"HTTP 503: {MARKER} later"),
        }
    )
    dlq, queue = MemoryDlq(), MemoryQueue()

    answer = post(
        make_ingest(heap, dlq, queue), "/v1/batch", {"batch": [track(1, "Refused"), track(2, "Later")]}
    )

    assert answer.status == 202
    (listed,) = answer.body["rejected"]
    assert listed["reason"] == f"HTTP 400: {MARKER} refused"
    (letter,) = dlq.letters
    assert letter.reason == f"HTTP 400: {MARKER} refused"
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    assert {line["message"] for line in lines} >= {
        "event parked in the DLQ",
        "events parked for later delivery",
    }
    assert MARKER not in log_stream.getvalue()


def test_nothing_delivered_nothing_parked_is_503() -> None:
    heap = ScriptedHeap({"Order Completed": DOWN})

    answer = post(make_ingest(heap, MemoryDlq(), MemoryQueue(works=False)), "/v1/track", track(1))

    assert answer.status == 503
    assert answer.body["error"] == "unavailable"


def test_invalid_requests_reach_neither_heap_nor_the_queue() -> None:
    heap, queue = ScriptedHeap({}), MemoryQueue()
    bad = track(2, anonymousId=None, userId=None)

    answer = post(make_ingest(heap, MemoryDlq(), queue), "/v1/batch", {"batch": [track(1), bad]})

    assert answer.status == 400
    assert heap.sent == []
    assert queue.parked == []


def test_a_broken_pipeline_parks_rather_than_loses() -> None:
    """An unexpected error while preparing: the events go to the queue (202), not to /dev/null."""
    mapper = Mapper(build_playbook(None), {"MY_APP_ID": "app"})
    pipeline = Pipeline(mapper, ScriptedHeap({}))

    def broken(raws: Sequence[Any]) -> Prepared:
        raise ZeroDivisionError("a bug")

    pipeline.prepare = broken  # type: ignore[method-assign]
    queue = MemoryQueue()
    ingest = Ingest(lambda: pipeline, queue, MemoryDlq(), None)  # type: ignore[arg-type]

    answer = handle(ingest, request_event("/v1/track", raw("product_viewed"), key=None))

    assert answer.status == 202
    assert len(queue.parked) == 1


def test_the_single_event_body_for_validation_is_the_completed_event() -> None:
    ingest = make_ingest(ScriptedHeap({}), MemoryDlq(), MemoryQueue())

    request = ingest.open(request_event("/v1/page", raw("page", type=None)))

    assert json.loads(request.body_json())["type"] == "page"


# ------------------------------------------------------------------------------ bounded work
# Python-level peak while handling the inflating request below. Refused on its count, it takes
# about 14 MiB (decompressing it and decoding its 170,000 ``{}``); completing and preparing every
# event took 127 MiB here (and the Lambda handler's re-validation of them much more). Wide on
# purpose: it only has to tell the two apart.
INFLATING_REQUEST_PEAK_BYTES = 60 * 1024 * 1024


def test_a_request_inflating_to_170_000_events_is_handled_in_bounded_memory() -> None:
    heap, dlq, queue = ScriptedHeap({}), MemoryDlq(), MemoryQueue()
    ingest = make_ingest(heap, dlq, queue)
    event = request_event("/v1/batch", data=empty_events_batch(most_empty_events(MAX_BODY_BYTES)), gzip=True)

    tracemalloc.start()
    try:
        answer = handle(ingest, event)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert answer.status == 413
    assert f"the limit is {MAX_EVENTS_PER_REQUEST} per request" in answer.body["message"]
    assert peak < INFLATING_REQUEST_PEAK_BYTES, f"peak {peak / 2**20:.0f} MiB"
    assert heap.sent == dlq.letters == queue.parked == []


def test_a_503_is_answered_before_any_letter_is_written() -> None:
    """Hostile review: letters written, then parking failed and the answer was 503; the client's
    resend wrote them again under the new request's id, where redrive could not pair them."""
    heap = ScriptedHeap({"Refused": REFUSED, "Down": DOWN})
    dlq, queue = MemoryDlq(), MemoryQueue(works=False)

    answer = post(
        make_ingest(heap, dlq, queue), "/v1/batch", {"batch": [track(1, "Refused"), track(2, "Down")]}
    )

    assert answer.status == 503
    assert dlq.letters == []  # the resend decides the refused event's letter, once


def test_every_refused_event_is_listed_so_the_answer_accounts_for_each_event() -> None:
    """Hostile review: 1,500 refused events were listed as 1,000 (the list was capped)."""
    heap = ScriptedHeap({"Refused": REFUSED})
    batch = [
        {"type": "track", "event": "Refused" if i < 1500 else "Fine", "userId": "u", "messageId": f"m{i}"}
        for i in range(1510)
    ]

    answer = post(make_ingest(heap, MemoryDlq(), MemoryQueue()), "/v1/batch", {"batch": batch})

    assert answer.status == 200
    assert answer.body["delivered"] == 10
    assert len(answer.body["rejected"]) == 1500
    assert answer.body["delivered"] + len(answer.body["rejected"]) + answer.body["parked"] == 1510
