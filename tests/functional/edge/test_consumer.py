"""The SQS consumer through real Lambda-shaped events: moto's SQS, the Heap emulator over HTTP.

Every record ends settled (its events delivered, or parked in the DLQ with a reason) or listed in
``batchItemFailures`` with a growing visibility timeout; nothing is lost and nothing is parked twice.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from dlq_faults import RefusingSqs

from heap_forwarder.edge.api_contract import MAX_EVENTS_PER_REQUEST
from heap_forwarder.edge.config import ConfigurationError, Settings
from heap_forwarder.edge.consumer import MAX_EVENTS_PER_RECORD, BackoffPolicy, read_records
from heap_forwarder.edge.letters import DeadLetterWriter
from heap_forwarder.edge.parameters import ParameterStore
from heap_forwarder.edge.runtime import Runtime
from heap_forwarder.heap.client import HeapClient
from heap_forwarder.heap.items import HeapItem
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.outcome import DELIVERED, ErrorClass, Outcome, rejected, retryable
from heap_forwarder.pipeline import Pipeline


def failures(response: dict) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def ids(event: dict) -> list[str]:
    return [r["messageId"] for r in event["Records"]]


def with_receive_count(event: dict, count: int) -> dict:
    for record in event["Records"]:
        record["attributes"]["ApproximateReceiveCount"] = str(count)
    return event


# ---------------------------------------------------------------------------------- all good
def test_good_records_settle_and_every_event_reaches_heap(aws, emulator, make_consumer, kit) -> None:
    event = aws.lambda_event(
        kit.body(kit.track(1)), kit.body(kit.track(2), kit.track(3)), kit.body(kit.raw("identify"))
    )
    response = make_consumer().handle(event, 30.0)
    assert response == {"batchItemFailures": []}
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == ["msg-1", "msg-2", "msg-3"]
    assert "130161d0-8fee-4167-aa4d-d151eed27c6b" in emulator.user_properties(kit.APP_ID)
    assert aws.dead_letters() == []
    assert aws.visibility_calls == []  # nothing to back off


def test_an_empty_event_is_an_empty_response(make_consumer) -> None:
    assert make_consumer().handle({"Records": []}, 30.0) == {"batchItemFailures": []}
    assert make_consumer().handle({}, 30.0) == {"batchItemFailures": []}


def test_an_empty_batch_body_settles_with_nothing_to_send(aws, emulator, make_consumer) -> None:
    event = aws.lambda_event(json.dumps({"batch": []}))
    assert make_consumer().handle(event, 30.0) == {"batchItemFailures": []}
    assert emulator.stats()["requests_total"] == 0
    assert aws.dead_letters() == []


# ---------------------------------------------------------------------------------- partial failures
def test_partial_batch_failure_lists_exactly_the_failing_records(aws, emulator, make_consumer, kit) -> None:
    # Requests go per endpoint in order of first appearance: user properties (the identify), then
    # the identify link, then the track bulk. Only the first fails, with no retry budget left.
    identify = kit.raw("identify")
    event = aws.lambda_event(
        kit.body(kit.track(1)),
        kit.body(identify),
        kit.body(kit.track(2)),
        kit.body(kit.track(3), kit.raw("identify", messageId="identify-2")),
    )
    event["Records"].insert(0, event["Records"].pop(1))  # the identify first
    emulator.fail_next(1, 503)
    response = make_consumer(retry_budget_s=0).handle(event, 30.0)
    record_ids = ids(event)
    # The identify record and the batch holding the second identify: nothing else.
    assert failures(response) == [record_ids[0], record_ids[3]]
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == ["msg-1", "msg-2", "msg-3"]
    assert aws.dead_letters() == []
    # Exactly the failed records were given a new visibility timeout.
    handles = {r["messageId"]: r["receiptHandle"] for r in event["Records"]}
    backed_off = [e["ReceiptHandle"] for call in aws.visibility_calls for e in call["Entries"]]
    assert backed_off == [handles[record_ids[0]], handles[record_ids[3]]]


def test_a_whole_outage_fails_every_record_and_parks_nothing(aws, emulator, make_consumer, kit) -> None:
    event = aws.lambda_event(*(kit.body(kit.track(n)) for n in range(12)))
    emulator.fail_next(10**6, 503)
    response = make_consumer().handle(event, 30.0)
    assert sorted(failures(response)) == sorted(ids(event))
    assert len(set(failures(response))) == 12
    assert aws.dead_letters() == []
    assert emulator.tracked_events() == []


def test_failures_are_listed_once_per_record_even_with_many_events(aws, emulator, make_consumer, kit) -> None:
    event = aws.lambda_event(kit.body(*(kit.track(n) for n in range(30))))
    emulator.fail_next(10**6, 500)
    response = make_consumer().handle(event, 30.0)
    assert failures(response) == ids(event)


# ---------------------------------------------------------------------------------- permanent problems
def test_permanent_problems_are_parked_per_event_with_reasons(aws, emulator, make_consumer, kit) -> None:
    bad_bodies = {
        "invalid_json": '{"type": "track", "event": "Cut',
        "unsupported": kit.body(kit.raw("alias")),
        "heap_rule": kit.body(kit.track(9, anonymousId=None, userId=None)),
        "invalid_event": kit.body(kit.track(10, timestamp="not a date")),
    }
    event = aws.lambda_event(kit.body(kit.track(1)), *bad_bodies.values())
    record_ids = ids(event)
    response = make_consumer().handle(event, 30.0)

    assert response == {"batchItemFailures": []}  # parked, not retried
    assert [e["idempotency_key"] for e in emulator.tracked_events()] == ["msg-1"]
    letters = {letter.error_class: letter for letter in aws.dead_letters()}
    assert sorted(letters) == sorted(bad_bodies)
    for (error_class, sent), record_id in zip(bad_bodies.items(), record_ids[1:], strict=True):
        letter = letters[error_class]
        assert letter.attributes["SourceRecordId"] == record_id
        assert letter.attributes["EntryPoint"] == "sqs"
        assert letter.reason and letter.reason != "-"
        datetime.fromisoformat(letter.attributes["FirstSeen"].replace("Z", "+00:00"))
        if error_class == "invalid_json":
            assert letter.body == sent  # the raw body, as it came
        else:
            assert letter.event() == json.loads(sent)
    assert letters["invalid_json"].reason.startswith("body is not valid JSON")
    assert "alias" in letters["unsupported"].reason
    assert letters["heap_rule"].reason.startswith("identity: required")
    assert "timestamp" in letters["invalid_event"].reason


def test_a_record_of_too_many_events_is_one_dead_letter(aws, emulator, make_consumer, kit, logs) -> None:
    """85,000 ``{}`` in one 255 KB message: one letter for the record (its body, the count and the
    cap), not 85,000; the other records of the batch are delivered as usual."""
    # Given a record of 85,000 empty events between two good records
    flood = json.dumps({"batch": [{}] * 85_000}, separators=(",", ":"))
    event = aws.lambda_event(kit.body(kit.track(1)), flood, kit.body(kit.track(2), kit.track(3)))
    sent_batches: list[dict] = []

    def seen(params: dict, **_: object) -> None:
        sent_batches.append(params)

    aws.sqs.meta.events.register("provide-client-params.sqs.SendMessageBatch", seen)
    try:
        # When the consumer handles the batch
        response = make_consumer().handle(event, 30.0)
    finally:
        aws.sqs.meta.events.unregister("provide-client-params.sqs.SendMessageBatch", seen)

    # Then the flood is one dead letter, written in one SendMessageBatch entry, and nothing is retried
    assert response == {"batchItemFailures": []}
    (letter,) = aws.dead_letters()
    assert letter.body == flood
    assert letter.error_class == "too_large"
    assert letter.reason == (
        f"the record holds 85000 events; the limit is {MAX_EVENTS_PER_RECORD} per record;"
        " split it into smaller messages"
    )
    assert letter.attributes["SourceRecordId"] == ids(event)[1]
    assert [len(call["Entries"]) for call in sent_batches] == [1]
    assert logs.messages("WARNING") == ["event parked in the DLQ"]
    # And the other records' events reach Heap
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == ["msg-1", "msg-2", "msg-3"]


def test_a_record_at_the_cap_is_read_and_one_over_it_is_not() -> None:
    def record(events: int) -> dict:
        return {"messageId": f"m{events}", "body": json.dumps({"batch": [{}] * events})}

    full, over = read_records({"Records": [record(MAX_EVENTS_PER_RECORD), record(MAX_EVENTS_PER_RECORD + 1)]})

    assert full.unreadable is None
    assert len(full.events) == MAX_EVENTS_PER_RECORD
    assert over.unreadable is not None
    assert over.unreadable.error_class is ErrorClass.TOO_LARGE
    assert over.events == []


def test_a_request_the_api_parks_whole_fits_one_record() -> None:
    """The API parks what it could not deliver as records of many events: the consumer must
    take as many events in a record as the API takes in a request."""
    assert MAX_EVENTS_PER_RECORD >= MAX_EVENTS_PER_REQUEST


def test_good_siblings_of_a_bad_event_are_delivered(aws, emulator, make_consumer, kit) -> None:
    bad = kit.track(2, timestamp="not a date")
    event = aws.lambda_event(kit.body(kit.track(1), bad, kit.track(3)))
    response = make_consumer().handle(event, 30.0)
    assert response == {"batchItemFailures": []}
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == ["msg-1", "msg-3"]
    (letter,) = aws.dead_letters()
    assert letter.event() == bad  # the one event, not its whole batch
    assert letter.error_class == "invalid_event"
    assert letter.attributes["SourceRecordId"] == ids(event)[0]


def test_an_event_heap_refuses_is_isolated_and_parked(aws, emulator, make_consumer, kit) -> None:
    emulator.reject_event_names(["Forbidden Event"])
    event = aws.lambda_event(
        kit.body(kit.track(1), kit.track(2, "Forbidden Event"), kit.track(3)), kit.body(kit.track(4))
    )
    response = make_consumer().handle(event, 30.0)
    assert response == {"batchItemFailures": []}
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == ["msg-1", "msg-3", "msg-4"]
    (letter,) = aws.dead_letters()
    assert letter.error_class == "heap_rejected"
    assert letter.reason.startswith("HTTP 400 from Heap")
    assert letter.event()["event"] == "Forbidden Event"


def test_a_rejected_sibling_waits_until_its_record_settles(aws, emulator, make_consumer, kit) -> None:
    bad = kit.track(2, anonymousId=None, userId=None)
    sent = kit.body(kit.track(1), bad, kit.track(3))
    aws.send(sent)
    consumer = make_consumer()

    emulator.fail_next(10**6, 503)
    first = consumer.handle(aws.receive(1), 30.0)
    assert len(failures(first)) == 1
    assert aws.dead_letters() == []  # not yet: the record comes back

    emulator.reset()  # Heap is back
    second = consumer.handle(aws.receive(1), 30.0)  # visible again at once: backoff base 0
    assert second == {"batchItemFailures": []}
    (letter,) = aws.dead_letters()
    assert letter.event() == bad
    assert letter.error_class == "heap_rule"
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == ["msg-1", "msg-3"]


def test_a_record_stays_queued_when_the_dlq_refuses_its_letter(aws, emulator, make_consumer, kit) -> None:
    missing_dlq = aws.dlq_url.rsplit("/", 1)[0] + "/no-such-queue"
    event = aws.lambda_event(kit.body(kit.track(1)), kit.body(kit.raw("alias")))
    response = make_consumer(dlq_url=missing_dlq).handle(event, 30.0)
    assert failures(response) == [ids(event)[1]]  # kept rather than lost
    assert [e["idempotency_key"] for e in emulator.tracked_events()] == ["msg-1"]


# ---------------------------------------------------------------------------------- one letter per event
def test_a_dead_letter_sqs_refuses_once_is_written_again_alone(aws, emulator, make_consumer, kit) -> None:
    bad = [kit.track(n, anonymousId=None, userId=None) for n in range(10)]
    event = aws.lambda_event(kit.body(*bad))
    consumer = make_consumer()
    sqs = RefusingSqs(aws.sqs, lambda entry: json.loads(entry["MessageBody"])["messageId"] == "msg-4")
    consumer.dead_letters = DeadLetterWriter(sqs, aws.dlq_url, sleep=lambda seconds: None)

    response = consumer.handle(event, 30.0)

    assert response == {"batchItemFailures": []}  # settled: no redelivery, hence no second copies
    letters = aws.dead_letters()
    assert sorted(letter.event()["messageId"] for letter in letters) == [f"msg-{n}" for n in range(10)]
    assert [len(call) for call in sqs.calls] == [10, 1]
    assert json.loads(sqs.calls[1][0])["messageId"] == "msg-4"


def test_when_the_dlq_keeps_refusing_a_letter_only_its_record_is_retried(
    aws, emulator, make_consumer, kit
) -> None:
    bad = [kit.track(n, anonymousId=None, userId=None) for n in range(10)]
    event = aws.lambda_event(kit.body(*bad), kit.body(kit.raw("alias")))
    consumer = make_consumer()
    sqs = RefusingSqs(
        aws.sqs, lambda entry: json.loads(entry["MessageBody"])["messageId"] == "msg-4", times=None
    )
    consumer.dead_letters = DeadLetterWriter(sqs, aws.dlq_url, sleep=lambda seconds: None)

    response = consumer.handle(event, 30.0)

    assert failures(response) == [ids(event)[0]]  # the record of the refused letter, not the alias's
    sent = Counter(json.loads(body)["messageId"] for call in sqs.calls for body in call)
    assert sent["msg-4"] > 1  # tried again in the invocation, alone:
    assert all(n == 1 for key, n in sent.items() if key != "msg-4")  # the accepted letters never resent
    kept = sorted(letter.event()["messageId"] for letter in aws.dead_letters())
    assert kept == sorted([f"msg-{n}" for n in range(10) if n != 4] + [kit.raw("alias")["messageId"]])

    # The redelivery writes the record's letters again: twins, with the same LetterId.
    consumer.dead_letters = DeadLetterWriter(aws.sqs, aws.dlq_url)
    assert consumer.handle(aws.receive(1), 30.0) == {"batchItemFailures": []}
    letter_ids = Counter(
        letter.attributes["LetterId"]
        for letter in aws.dead_letters()
        if letter.attributes["SourceRecordId"] == ids(event)[0]
    )
    assert letter_ids == {f"{ids(event)[0]}:{n}": 1 if n == 4 else 2 for n in range(10)}


def test_each_letter_carries_a_stable_id_from_its_record_and_position(
    aws, emulator, make_consumer, kit
) -> None:
    event = aws.lambda_event(
        kit.body(kit.track(1, anonymousId=None, userId=None), kit.track(2), kit.raw("alias")),
        '{"not json',
        kit.body(kit.raw("alias")),
    )
    record_ids = ids(event)

    assert make_consumer().handle(event, 30.0) == {"batchItemFailures": []}

    assert sorted(letter.attributes["LetterId"] for letter in aws.dead_letters()) == sorted(
        [f"{record_ids[0]}:0", f"{record_ids[0]}:2", f"{record_ids[1]}:record", f"{record_ids[2]}:0"]
    )


def test_a_record_parked_whole_on_its_last_receive_has_a_whole_record_letter_id(
    aws, emulator, make_consumer, kit
) -> None:
    def broken():
        raise ConfigurationError("HEAP_APP_ID_PARAMETER is not set")

    event = with_receive_count(aws.lambda_event(kit.body(kit.track(1))), kit.TEST_MAX_RECEIVE_COUNT)

    assert make_consumer(pipeline_factory=broken).handle(event, 30.0) == {"batchItemFailures": []}

    (letter,) = aws.dead_letters()
    assert letter.attributes["LetterId"] == f"{ids(event)[0]}:record"


# ---------------------------------------------------------------------------------- reasons that don't leak
MARKER = "leaky.person@example.com"


class ScriptedHeap:
    """Delivery that answers each item by its event's name, with Heap's text as the detail."""

    def __init__(self, fates: Mapping[str, Outcome]) -> None:
        self.fates = fates

    def deliver(self, items: Sequence[HeapItem], *, deadline: float | None = None) -> list[Outcome]:
        return [self.fates.get(str(item.body.get("event")), DELIVERED) for item in items]


def test_heaps_own_text_goes_to_the_letters_and_never_to_the_logs(
    aws, make_consumer, kit, playbook, logs
) -> None:
    heap = ScriptedHeap(
        {
            "Refused": rejected(
                ErrorClass.HEAP_REJECTED, "HTTP 400 from Heap", f"HTTP 400 from Heap: {MARKER} is not allowed"
            ),
            "Flaky": retryable(ErrorClass.TRANSIENT, "HTTP 503 from Heap", f"HTTP 503 from Heap: {MARKER}"),
        }
    )
    mapper = Mapper(playbook, {"MY_APP_ID": kit.APP_ID})
    event = aws.lambda_event(
        kit.body(kit.track(1, "Refused")), kit.body(kit.track(2, "Flaky")), kit.body(kit.track(3, "Flaky"))
    )
    event["Records"][2]["attributes"]["ApproximateReceiveCount"] = str(kit.TEST_MAX_RECEIVE_COUNT)

    response = make_consumer(pipeline_factory=lambda: Pipeline(mapper, heap)).handle(event, 30.0)

    assert failures(response) == [ids(event)[1]]
    reasons = {letter.event()["messageId"]: letter.reason for letter in aws.dead_letters()}
    assert reasons == {
        "msg-1": f"HTTP 400 from Heap: {MARKER} is not allowed",
        "msg-3": f"retries exhausted: HTTP 503 from Heap: {MARKER}",
    }
    parked = [r for r in logs.records() if r["message"] == "event parked in the DLQ"]
    assert sorted(r["reason"] for r in parked) == [
        "HTTP 400 from Heap",
        "retries exhausted: HTTP 503 from Heap",
    ]
    (retry,) = [r for r in logs.records() if r["message"] == "records left for retry"]
    assert retry["first_cause"] == "HTTP 503 from Heap"
    assert MARKER not in logs.text()


# ---------------------------------------------------------------------------------- backoff
def test_backoff_grows_with_the_receive_count_up_to_the_cap() -> None:
    policy = BackoffPolicy(base_seconds=30, cap_seconds=1800)
    rng = random.Random(3)
    timeouts = [policy.visibility_timeout(n, rng) for n in range(1, 20)]
    for n, timeout in enumerate(timeouts, start=1):
        ceiling = min(1800, 30 * 2 ** (n - 1))
        assert int(0.8 * ceiling) <= timeout <= ceiling
    growing = timeouts[:7]  # 30 * 2^6 = 1920 > 1800: capped from the 7th receive on
    assert growing == sorted(growing)
    assert len(set(growing)) == len(growing)
    assert max(timeouts) <= 1800


@pytest.mark.parametrize("receive_count", [0, -3, 1, 64, 10**9])
def test_backoff_stays_within_sqs_limits(receive_count: int) -> None:
    timeout = BackoffPolicy(30, 43200).visibility_timeout(receive_count, random.Random(1))
    assert isinstance(timeout, int)
    assert 0 <= timeout <= 43200


def test_backoff_of_zero_means_at_once() -> None:
    assert {BackoffPolicy(0, 0).visibility_timeout(n, random.Random(n)) for n in range(1, 30)} == {0}


def test_the_consumer_asks_sqs_for_the_growing_backoff(aws, emulator, make_consumer, kit) -> None:
    aws.send(kit.body(kit.track(1)))
    event = aws.receive(1)
    emulator.fail_next(10**6, 503)
    asked = []
    for count in range(1, 9):
        consumer = make_consumer(base=10, cap=600, seed=count, max_receive_count=100)
        assert len(failures(consumer.handle(with_receive_count(event, count), 30.0))) == 1
        (call,) = aws.visibility_calls[-1:]
        (entry,) = call["Entries"]
        assert call["QueueUrl"] == aws.main_url
        assert entry["ReceiptHandle"] == event["Records"][0]["receiptHandle"]
        expected = BackoffPolicy(10, 600).visibility_timeout(count, random.Random(count))
        assert entry["VisibilityTimeout"] == expected
        asked.append(entry["VisibilityTimeout"])
    # 10, 20, 40 ... 320, then the cap (600, less up to 20 % of jitter)
    assert asked[:7] == sorted(set(asked[:7]))
    assert all(480 <= t <= 600 for t in asked[6:])


def test_a_failed_record_is_hidden_for_its_backoff(aws, emulator, make_consumer, kit) -> None:
    aws.send(kit.body(kit.track(1)))
    emulator.fail_next(10**6, 503)
    make_consumer(base=60, cap=600).handle(aws.receive(1, visibility=0), 30.0)
    # The receive left it visible (timeout 0); the consumer's backoff hid it.
    assert aws.receive()["Records"] == []
    assert aws.main_counts() == (0, 1)


def test_with_no_backoff_a_failed_record_comes_straight_back(aws, emulator, make_consumer, kit) -> None:
    aws.send(kit.body(kit.track(1)))
    emulator.fail_next(10**6, 503)
    make_consumer(base=0, cap=0).handle(aws.receive(1, visibility=300), 30.0)
    (again,) = aws.receive(1)["Records"]  # despite the 300 s of the receive
    assert again["attributes"]["ApproximateReceiveCount"] == "2"


def test_backoff_batches_visibility_changes_by_ten(aws, emulator, make_consumer, kit) -> None:
    event = aws.lambda_event(*(kit.body(kit.track(n)) for n in range(23)))
    emulator.fail_next(10**6, 503)
    response = make_consumer(base=5, cap=5).handle(event, 30.0)
    assert len(failures(response)) == 23
    assert [len(call["Entries"]) for call in aws.visibility_calls] == [10, 10, 3]
    assert aws.main_counts() == (0, 23)


# ---------------------------------------------------------------------------------- last receive
def test_the_last_receive_parks_still_failing_events_as_retries_exhausted(
    aws, emulator, make_consumer, kit
) -> None:
    aws.send(kit.body(kit.track(1), kit.track(2)))
    consumer = make_consumer()
    emulator.fail_next(10**6, 503)
    for receive in range(1, kit.TEST_MAX_RECEIVE_COUNT):
        event = aws.receive(1)
        assert event["Records"][0]["attributes"]["ApproximateReceiveCount"] == str(receive)
        assert failures(consumer.handle(event, 30.0)) == ids(event)
        assert aws.dead_letters() == []
    last = aws.receive(1)
    assert last["Records"][0]["attributes"]["ApproximateReceiveCount"] == str(kit.TEST_MAX_RECEIVE_COUNT)
    assert consumer.handle(last, 30.0) == {"batchItemFailures": []}
    letters = aws.dead_letters()
    assert sorted(letter.event()["messageId"] for letter in letters) == ["msg-1", "msg-2"]
    for letter in letters:
        assert letter.error_class == ErrorClass.RETRIES_EXHAUSTED
        assert letter.reason.startswith("retries exhausted: ")
        assert "503" in letter.reason
        assert letter.attributes["SourceRecordId"] == ids(last)[0]


def test_on_the_last_receive_only_the_failing_events_are_parked(aws, emulator, make_consumer, kit) -> None:
    identify = kit.raw("identify")
    event = with_receive_count(aws.lambda_event(kit.body(identify, kit.track(1))), kit.TEST_MAX_RECEIVE_COUNT)
    emulator.fail_next(1, 503)  # the user properties of the identify; the track goes through
    response = make_consumer(retry_budget_s=0).handle(event, 30.0)
    assert response == {"batchItemFailures": []}
    (letter,) = aws.dead_letters()
    assert letter.event() == identify
    assert letter.error_class == "retries_exhausted"
    assert [e["idempotency_key"] for e in emulator.tracked_events()] == ["msg-1"]


def test_past_the_last_receive_events_are_still_parked(aws, emulator, make_consumer, kit) -> None:
    event = with_receive_count(aws.lambda_event(kit.body(kit.track(1))), kit.TEST_MAX_RECEIVE_COUNT + 5)
    emulator.fail_next(10**6, 502)
    assert make_consumer().handle(event, 30.0) == {"batchItemFailures": []}
    assert [letter.error_class for letter in aws.dead_letters()] == ["retries_exhausted"]


def test_no_time_left_means_retry_not_loss(aws, emulator, make_consumer, kit) -> None:
    event = aws.lambda_event(kit.body(kit.track(1)), kit.body(kit.track(2)))
    response = make_consumer().handle(event, 0.0)
    assert sorted(failures(response)) == sorted(ids(event))
    assert emulator.stats()["requests_total"] == 0
    assert aws.dead_letters() == []


# ---------------------------------------------------------------------------------- configuration faults
@pytest.mark.parametrize("status", [401, 403, 404])
def test_heap_refusing_the_configuration_fails_every_record(
    status: int, aws, emulator, make_consumer, kit
) -> None:
    emulator.fail_next(100, status, body="nope")
    event = aws.lambda_event(kit.body(kit.track(1)), kit.body(kit.raw("identify")), kit.body(kit.track(2)))
    response = make_consumer().handle(event, 30.0)
    assert sorted(failures(response)) == sorted(ids(event))
    assert aws.dead_letters() == []
    assert "ConfigurationFaults" in kit.metric_names()


def test_an_app_id_heap_does_not_know_fails_every_record(aws, emulator, make_consumer, kit, logs) -> None:
    event = aws.lambda_event(*(kit.body(kit.track(n)) for n in range(5)))
    response = make_consumer(app_id="someone-elses-app").handle(event, 30.0)
    assert sorted(failures(response)) == sorted(ids(event))
    assert aws.dead_letters() == []
    assert emulator.tracked_events() == []
    assert "ConfigurationFaults" in kit.metric_names()
    assert logs.messages("ERROR") == ["Heap refused the configuration; records will be retried"]


def test_a_pipeline_that_cannot_be_built_fails_every_record(aws, emulator, make_consumer, kit, logs) -> None:
    def broken():
        raise ConfigurationError("HEAP_APP_ID_PARAMETER is not set")

    event = aws.lambda_event(kit.body(kit.track(1)), '{"not json', kit.body(kit.raw("alias")))
    response = make_consumer(pipeline_factory=broken).handle(event, 30.0)
    assert failures(response) == ids(event)  # even the bad ones: they are parked once it works
    assert aws.dead_letters() == []
    assert emulator.stats()["requests_total"] == 0
    assert "ConfigurationFaults" in kit.metric_names()
    (error,) = [r for r in logs.records() if r["level"] == "ERROR"]
    assert error["message"] == "configuration fault: every record will be retried"
    assert "HEAP_APP_ID_PARAMETER" in error["cause"]


def _runtime(aws, emulator, kit, ssm_client, parameter: str = "/heap-forwarder/app-id") -> Runtime:
    settings = Settings(HEAP_APP_ID_PARAMETER=parameter, HEAP_API_URL=emulator.url)
    delivery = kit.fast_delivery(emulator.url)
    return Runtime(
        settings,
        ParameterStore(0, client=ssm_client),
        lambda fields: HeapClient(delivery, request_fields=fields),
    )


def test_the_runtime_reads_the_app_id_from_ssm(aws, emulator, make_consumer, kit) -> None:
    runtime = _runtime(aws, emulator, kit, aws.ssm)
    event = aws.lambda_event(kit.body(kit.track(1)))
    assert make_consumer(pipeline_factory=runtime.pipeline).handle(event, 30.0) == {"batchItemFailures": []}
    assert emulator.tracked_events()[0]["app_id"] == kit.APP_ID


def test_a_missing_ssm_parameter_fails_every_record(aws, emulator, make_consumer, kit, logs) -> None:
    runtime = _runtime(aws, emulator, kit, aws.ssm, parameter="/heap-forwarder/nowhere")
    event = aws.lambda_event(kit.body(kit.track(1)), kit.body(kit.track(2)))
    response = make_consumer(pipeline_factory=runtime.pipeline).handle(event, 30.0)
    assert failures(response) == ids(event)
    assert emulator.stats()["requests_total"] == 0
    assert "ConfigurationFaults" in kit.metric_names()
    (error,) = [r for r in logs.records() if r["level"] == "ERROR"]
    assert "/heap-forwarder/nowhere" in error["cause"]


def test_denied_ssm_fails_every_record(aws, emulator, make_consumer, kit, logs) -> None:
    import boto3
    from botocore.stub import Stubber

    ssm = boto3.client("ssm", region_name="us-east-1")
    stubber = Stubber(ssm)
    stubber.add_client_error(
        "get_parameter", service_error_code="AccessDeniedException", service_message="not authorized"
    )
    runtime = _runtime(aws, emulator, kit, ssm)
    event = aws.lambda_event(kit.body(kit.track(1)), kit.body(kit.track(2)))
    with stubber:
        response = make_consumer(pipeline_factory=runtime.pipeline).handle(event, 30.0)
    assert failures(response) == ids(event)
    assert emulator.stats()["requests_total"] == 0
    assert aws.dead_letters() == []
    assert "ConfigurationFaults" in kit.metric_names()
    assert [r["message"] for r in logs.records() if r["level"] == "ERROR"] == [
        "configuration fault: every record will be retried"
    ]


def test_a_configuration_fault_on_the_last_receive_still_parks_with_a_reason(
    aws, emulator, make_consumer, kit
) -> None:
    def broken():
        raise ConfigurationError("cannot read SSM parameter /heap-forwarder/app-id: ParameterNotFound")

    sent = [kit.body(kit.track(1)), kit.body(kit.track(2), kit.track(3))]
    event = aws.lambda_event(*sent)
    with_receive_count(event, kit.TEST_MAX_RECEIVE_COUNT)
    event["Records"][1]["attributes"]["ApproximateReceiveCount"] = "1"  # not its last receive yet
    response = make_consumer(pipeline_factory=broken).handle(event, 30.0)
    assert failures(response) == [ids(event)[1]]
    (letter,) = aws.dead_letters()  # the record whole: its events were never read
    assert letter.body == sent[0]
    assert letter.error_class == "retries_exhausted"
    assert letter.reason.startswith("retries exhausted: configuration fault: ")
    assert "ParameterNotFound" in letter.reason
    assert letter.attributes["SourceRecordId"] == ids(event)[0]


# ---------------------------------------------------------------------------------- completion
def test_events_are_completed_by_the_apis_rule_alike_on_every_receive(
    aws, emulator, make_consumer, kit
) -> None:
    """An event without ``timestamp`` gets the record's SentTimestamp (``receivedAt``), one without
    ``messageId`` gets ``<record messageId>:<position>``: the same on the redelivery, so Heap,
    which stored the first attempt but never answered it, drops the second as a repeat."""
    # Given a record holding an event with neither, and one with originalTimestamp alone
    unset = {"timestamp": None, "originalTimestamp": None, "sentAt": None, "receivedAt": None}
    bare = {k: v for k, v in kit.track(1, **unset).items() if k != "messageId"}
    original = kit.track(2, **{**unset, "originalTimestamp": "2024-06-10T13:59:30.250Z"})
    event = aws.lambda_event(kit.body(bare, original))
    (record,) = event["Records"]
    sent = datetime.fromtimestamp(int(record["attributes"]["SentTimestamp"]) / 1000, UTC)
    sent_at = sent.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # and Heap that stores the bulk request but drops the connection
    emulator.drop_connections(1, after_store=True)

    # When the record is received, then received again (same attributes, one more receive)
    first = make_consumer(retry_budget_s=0).handle(event, 30.0)
    second = make_consumer(retry_budget_s=0).handle(with_receive_count(event, 2), 30.0)

    # Then it was retried once and then settled
    assert failures(first) == ids(event)
    assert second == {"batchItemFailures": []}
    # and Heap holds each event once, with the same keys and timestamps both times
    stored = {e["idempotency_key"]: e["timestamp"] for e in emulator.tracked_events()}
    assert stored == {f"{record['messageId']}:0": sent_at, "msg-2": "2024-06-10T13:59:30.250Z"}
    assert emulator.stats()["duplicates"] == 2
    assert aws.dead_letters() == []


def test_a_record_over_the_cap_is_one_letter_before_any_completion(
    aws, emulator, make_consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heap_forwarder.edge import consumer as consumer_module

    completed: list[Any] = []
    monkeypatch.setattr(consumer_module, "fill", lambda event, *_: completed.append(event))
    event = aws.lambda_event(json.dumps({"batch": [{}] * (MAX_EVENTS_PER_RECORD + 1)}))

    assert make_consumer().handle(event, 30.0) == {"batchItemFailures": []}

    (letter,) = aws.dead_letters()
    assert letter.error_class == "too_large"
    assert completed == []
    assert emulator.stats()["requests_total"] == 0


# ---------------------------------------------------------------------------------- reading records
def test_read_records_takes_what_lambda_hands_over(aws, kit) -> None:
    event = aws.lambda_event(kit.body(kit.track(1), kit.track(2)), "{oops", json.dumps({"batch": 3}))
    good, unreadable, bad_batch = read_records(event)
    assert [e["messageId"] for e in good.events] == ["msg-1", "msg-2"]
    assert good.receive_count == 1
    assert good.receipt_handle == event["Records"][0]["receiptHandle"]
    assert good.first_seen.endswith("Z")
    assert unreadable.unreadable is not None
    assert unreadable.unreadable.error_class is ErrorClass.INVALID_JSON
    assert bad_batch.unreadable is not None
    assert bad_batch.unreadable.error_class is ErrorClass.INVALID_EVENT


def test_read_records_survives_odd_attributes() -> None:
    (record,) = read_records(
        {"Records": [{"messageId": "m", "body": "{}", "attributes": {"ApproximateReceiveCount": "many"}}]}
    )
    assert record.receive_count == 1
    assert record.first_seen.endswith("Z")


def test_an_invocation_takes_on_a_bounded_number_of_events_and_defers_the_rest(
    aws, emulator, make_consumer, kit
) -> None:
    """Hostile review: 700 records of 2,500 ``{}`` each (5 MB, each under the per-record cap)
    made 1.75 million dead letters in one invocation (1.25 GB, past the deadline). Now the
    invocation reads records until its event cap, and sends the rest back to the queue at once,
    as new messages (no receive spent); a record SQS does not take back is handed back failed."""
    consumer = make_consumer()
    consumer.max_events_per_invocation = 250
    bodies = [json.dumps({"batch": [{}] * 100}) for _ in range(8)]
    event = aws.lambda_event(*bodies)
    response = consumer.handle(event, 30.0)
    assert response == {"batchItemFailures": []}  # two records read (200 events); six sent back
    assert len(aws.dead_letters()) == 200  # the events of the two records read, one letter each
    sent_back = aws.receive()["Records"]
    assert len(sent_back) == 6
    assert {r["messageAttributes"]["HfOriginalMessageId"]["stringValue"] for r in sent_back} == set(
        ids(event)[2:]
    )


def test_records_nearest_their_last_receive_are_read_first() -> None:
    def record(n: int, receives: int) -> dict:
        body = json.dumps({"batch": [{"n": n}] * 100})
        return {"messageId": f"m{n}", "body": body, "attributes": {"ApproximateReceiveCount": str(receives)}}

    batch = {"Records": [record(0, 1), record(1, 5), record(2, 19), record(3, 2)]}
    records = read_records(batch, 250)
    assert [r.message_id for r in records] == ["m0", "m1", "m2", "m3"]  # Lambda's order kept
    assert [r.deferred for r in records] == [True, False, False, True]
    assert [len(r.events) for r in records] == [0, 100, 100, 0]
    # A record on its last receive is read whatever the cap: a deferral would cost it its last try.
    records = read_records(batch, 50, last_receive=5)
    assert [r.deferred for r in records] == [True, False, False, True]


def test_records_on_their_last_receive_are_read_past_the_cap(aws, emulator, make_consumer, kit) -> None:
    """Second review: deferring a record on its last receive dead-lettered events never tried."""
    consumer = make_consumer(max_receive_count=1)
    consumer.max_events_per_invocation = 2
    event = aws.lambda_event(kit.body(kit.track(1), kit.track(2)), kit.body(kit.track(3)))
    assert consumer.handle(event, 30.0) == {"batchItemFailures": []}
    assert aws.dead_letters() == []
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == ["msg-1", "msg-2", "msg-3"]


def test_dead_letters_are_not_written_past_the_invocations_time(aws, emulator, make_consumer, kit) -> None:
    """Letters left unwritten when the time is up keep their record for retry. With no time
    left at all, letters still get LETTER_MIN_SECONDS: here a DLQ answering in 0.4 s takes 3
    of 5 batches in it."""
    import time

    from heap_forwarder.edge.consumer import LETTER_MIN_SECONDS
    from heap_forwarder.edge.letters import DeadLetterWriter

    class SlowSqs:
        def __init__(self, sqs: Any) -> None:
            self.sqs = sqs

        def send_message_batch(self, **kwargs: Any) -> Any:
            time.sleep(0.4)
            return self.sqs.send_message_batch(**kwargs)

    consumer = make_consumer()
    consumer.dead_letters = DeadLetterWriter(SlowSqs(aws.sqs), aws.dlq_url)
    event = aws.lambda_event(json.dumps({"batch": [{}] * 50}))
    response = consumer.handle(event, remaining_seconds=-5.0)
    assert LETTER_MIN_SECONDS == 1.0
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == ids(event)
    assert len(aws.dead_letters()) == 30  # batches started at 0, 0.4 and 0.8 s; not at 1.2 s
