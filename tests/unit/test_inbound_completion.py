"""One completion rule for both entry points (``inbound.py`` ``fill``).

The API completes an event from its request (``complete_event``: the request's time, a new
UUID); the consumer completes it from its SQS record (``read_records``: the record's
``SentTimestamp``, ``<record messageId>:<position>``). The same event gets the same verdict and
the same Heap timestamp whichever way it came, and an SQS record is completed alike on every
receive, so Heap's idempotency key is the same on a redelivery.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from heap_forwarder.edge import consumer
from heap_forwarder.edge.consumer import MAX_EVENTS_PER_RECORD, read_records
from heap_forwarder.heap.items import HeapItem
from heap_forwarder.inbound import complete_event, fill, now_iso, received_at_of
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.outcome import ErrorClass
from heap_forwarder.pipeline import Pipeline
from sample_events import raw

RECEIVED = "2024-06-10T14:00:00.000Z"  # the API's request time in these tests
SENT_MS = 1718028425017  # the SQS record's SentTimestamp: 2024-06-10T14:07:05.017Z
SENT = "2024-06-10T14:07:05.017Z"
ORIGINAL = "2024-06-10T13:59:30.250Z"


def sqs_event(body: Any, message_id: str = "rec-1", receives: int = 1, **attributes: str) -> dict[str, Any]:
    """One record as Lambda hands it over on its ``receives``-th receive."""
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": f"handle-{receives}",  # a new handle on every receive
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": str(receives),
                    "SentTimestamp": str(SENT_MS),
                    "ApproximateFirstReceiveTimestamp": str(SENT_MS + 40),
                    **attributes,
                },
            }
        ]
    }


def via_sqs(body: Any, **options: Any) -> list[Any]:
    (record,) = read_records(sqs_event(body, **options))
    assert record.unreadable is None
    return record.events


def via_api(event: dict[str, Any]) -> dict[str, Any]:
    return complete_event(event, None, {}, RECEIVED)


def heap_items(events: list[Any]) -> list[HeapItem]:
    """What the pipeline would send Heap for these events (nothing is sent)."""
    pipeline = Pipeline(Mapper(build_playbook(None), {"MY_APP_ID": "app"}), None)  # type: ignore[arg-type]
    prepared = pipeline.prepare(events)
    assert prepared.decided == [None] * len(events), prepared.decided  # every one of them mapped
    return prepared.items


def untimed(**fields: Any) -> dict[str, Any]:
    """A track event without ``timestamp``, ``originalTimestamp``, ``sentAt`` or ``receivedAt``
    (a producer does not send one), but for ``fields``."""
    unset = {"timestamp": None, "originalTimestamp": None, "sentAt": None, "receivedAt": None}
    return raw("product_viewed", **{**unset, **fields})


# ------------------------------------------------------------------------------ timestamp
def test_original_timestamp_gives_the_same_heap_timestamp_through_sqs_and_the_api() -> None:
    event = untimed(originalTimestamp=ORIGINAL)

    (from_sqs,) = via_sqs(event)
    from_api = via_api(event)

    assert from_sqs["timestamp"] == from_api["timestamp"] == ORIGINAL
    (sqs_item,), (api_item,) = heap_items([from_sqs]), heap_items([from_api])
    assert sqs_item.body["timestamp"] == api_item.body["timestamp"] == ORIGINAL


def test_the_producers_clock_is_corrected_by_the_same_rule_on_both_paths() -> None:
    """``receivedAt - (sentAt - originalTimestamp)``: the API's receivedAt is its request time,
    the consumer's the record's SentTimestamp; each corrects the producer's 10 s lead alike."""
    event = untimed(originalTimestamp="2024-06-10T14:00:10Z", sentAt="2024-06-10T14:00:12Z")

    (from_sqs,) = via_sqs(event)

    assert via_api(event)["timestamp"] == "2024-06-10T13:59:58.000Z"  # RECEIVED - 2 s
    assert from_sqs["timestamp"] == "2024-06-10T14:07:03.017Z"  # SENT - 2 s


def test_without_original_timestamp_the_timestamp_is_received_at() -> None:
    event = untimed()

    (from_sqs,) = via_sqs(event)
    from_api = via_api(event)

    assert from_api["receivedAt"] == from_api["timestamp"] == RECEIVED  # the request's time
    assert from_sqs["receivedAt"] == from_sqs["timestamp"] == SENT  # the record's SentTimestamp
    (item,) = heap_items([from_sqs])
    assert item.body["timestamp"] == SENT


def test_an_sqs_record_is_completed_alike_on_every_receive() -> None:
    """Two receives of one record: a new receipt handle, a higher receive count, later in time;
    the same SentTimestamp and messageId, so the same completed events and idempotency keys."""
    body = {"batch": [untimed(messageId=None), untimed(originalTimestamp=ORIGINAL)]}

    first = via_sqs(body, receives=1)
    second = via_sqs(body, receives=2, ApproximateFirstReceiveTimestamp=str(SENT_MS + 90_000))

    assert first == second
    assert [e["timestamp"] for e in first] == [SENT, ORIGINAL]
    keys = [[i.body["idempotency_key"] for i in heap_items(events)] for events in (first, second)]
    assert keys[0] == keys[1] == ["rec-1:0", first[1]["messageId"]]


def test_received_at_of_a_record_is_formatted_like_the_apis() -> None:
    assert received_at_of(str(SENT_MS)) == SENT
    assert received_at_of(SENT_MS) == SENT
    assert len(received_at_of(str(SENT_MS)) or "") == len(now_iso())
    for unusable in (None, "", "soon", "1e400", str(10**20)):
        assert received_at_of(unusable) is None, unusable


def test_a_record_without_sent_timestamp_fills_no_time_of_its_own() -> None:
    """No clock reading stands in for it (it would differ on every receive): the event is left
    without ``timestamp``, for the mapping to refuse, the same way each time."""
    (record,) = read_records(
        {"Records": [{"messageId": "rec-1", "body": json.dumps(untimed()), "attributes": {}}]}
    )
    (event,) = record.events
    assert "timestamp" not in event and "receivedAt" not in event
    assert event["messageId"] == raw("product_viewed")["messageId"]
    (event,) = via_sqs(untimed(originalTimestamp=ORIGINAL), SentTimestamp="")
    assert event["timestamp"] == ORIGINAL


# ------------------------------------------------------------------------------ messageId
def test_a_missing_message_id_is_the_record_id_and_the_position_in_it() -> None:
    given = raw("order_completed")
    body = {"batch": [untimed(messageId=None), given, untimed(messageId=""), "not an event"]}

    events = via_sqs(body, message_id="9f1c-rec")

    assert [e["messageId"] if isinstance(e, dict) else e for e in events] == [
        "9f1c-rec:0",
        given["messageId"],
        "9f1c-rec:2",
        "not an event",  # the pipeline refuses it; completion leaves it be
    ]
    assert via_sqs(body, message_id="9f1c-rec", receives=3) == events


def test_the_api_assigns_a_uuid_as_before() -> None:
    completed = via_api(untimed(messageId=None))
    assert len(completed["messageId"]) == 36
    assert via_api(completed)["messageId"] == completed["messageId"]


# ------------------------------------------------------------------------------ one rule
def test_fill_leaves_what_the_producer_set() -> None:
    """Present values, valid or not, are validation's to judge; only absent, null or empty ones
    are filled."""
    event = {"messageId": 7, "receivedAt": "not a date", "timestamp": True}
    fill(event, SENT, lambda: "new")
    assert event == {"messageId": 7, "receivedAt": "not a date", "timestamp": True}

    event = {"messageId": "", "receivedAt": None}
    fill(event, SENT, lambda: "new")
    assert event == {"messageId": "new", "receivedAt": SENT, "timestamp": SENT}


def test_the_api_and_the_consumer_fill_through_the_one_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from heap_forwarder import inbound

    calls: list[tuple[str | None, str | None]] = []
    real = inbound.fill

    def spy(event: dict[str, Any], received_at: str | None, message_id: Any) -> None:
        calls.append((received_at, message_id() if message_id else None))
        real(event, received_at, message_id)

    monkeypatch.setattr(inbound, "fill", spy)
    monkeypatch.setattr(consumer, "fill", spy)

    via_api(untimed())
    via_sqs(untimed())

    assert calls[0][0] == RECEIVED and len(calls[0][1] or "") == 36
    assert calls[1] == (SENT, "rec-1:0")


# ------------------------------------------------------------------------------ caps first
def test_a_record_over_the_cap_is_one_too_large_letter_and_nothing_is_completed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    completed: list[Any] = []
    monkeypatch.setattr(consumer, "fill", lambda event, *_: completed.append(event))

    (record,) = read_records(sqs_event({"batch": [{}] * (MAX_EVENTS_PER_RECORD + 1)}))

    assert record.unreadable is not None
    assert record.unreadable.error_class is ErrorClass.TOO_LARGE
    assert record.events == []
    assert completed == []


def test_records_past_the_invocation_cap_are_not_completed(monkeypatch: pytest.MonkeyPatch) -> None:
    completed: list[Any] = []
    monkeypatch.setattr(consumer, "fill", lambda event, *_: completed.append(event))
    records = [sqs_event({"batch": [{"n": n}] * 100}, message_id=f"m{n}")["Records"][0] for n in range(3)]

    read = read_records({"Records": records}, 150)

    assert [r.deferred for r in read] == [False, True, True]
    assert len(completed) == 100
    assert {e["n"] for e in completed} == {0}
