"""An invocation takes on what its pace can deliver in its time; the records past that go back
to the queue as new messages (their events completed as before), so waiting costs them no
receive. On moto and the emulator."""

from __future__ import annotations

from typing import Any

from dlq_faults import RefusingSqs

from heap_forwarder.edge.consumer import ORIGINAL_MESSAGE_ID, BackoffPolicy, Consumer, Pace

EVENTS_PER_RECORD = 20


def _events(record: int, kit: Any) -> list[dict[str, Any]]:
    """Events without a messageId: the consumer fills ``<record's first id>:<position>``."""
    events = []
    for position in range(EVENTS_PER_RECORD):
        event = kit.track(record * 100 + position)
        del event["messageId"]
        events.append(event)
    return events


def test_the_pace_bounds_the_events_taken_on() -> None:
    pace = Pace(events_per_second=100.0, burst=1000)
    assert pace.events_within(57.0) == 6_700  # the template's consumer: 6,000/min, 60 s less 3
    assert pace.events_within(-1.0) == 1000
    assert _bare(pace).events_to_take(57.0) == 6_700
    assert _bare(pace).events_to_take(None) == 50_000  # no deadline: the fixed cap alone
    assert _bare(Pace(1e9, 1)).events_to_take(57.0) == 50_000
    assert _bare(None).events_to_take(57.0) == 50_000


def _bare(pace: Pace | None) -> Consumer:
    return Consumer(lambda: None, None, None, None, BackoffPolicy(0, 0), max_receive_count=5, pace=pace)  # type: ignore[arg-type, return-value]


def test_records_past_the_pace_go_back_as_new_messages_and_are_delivered_once(
    aws, emulator, make_consumer, kit
) -> None:
    # 10 records of 20 events; the pace takes on 60 per invocation (burst 20 + 10/s x 4 s).
    consumer = make_consumer(pace=Pace(10.0, 20))
    bodies = [kit.body(*_events(r, kit)) for r in range(10)]
    event = aws.lambda_event(*bodies)
    first_ids = [record["messageId"] for record in event["Records"]]

    response = consumer.handle(event, 4.0)
    assert response == {"batchItemFailures": []}  # nothing failed: 7 records were sent back
    assert len(emulator.tracked_events()) == 60

    invocations = 1
    while True:
        again = aws.receive()
        if not again["Records"]:
            break
        for record in again["Records"]:
            assert record["attributes"]["ApproximateReceiveCount"] == "1"  # no receive spent
            assert record["messageAttributes"][ORIGINAL_MESSAGE_ID]["stringValue"] in first_ids
        assert consumer.handle(again, 4.0) == {"batchItemFailures": []}
        invocations += 1
    assert invocations == 4  # 60 + 60 + 60 + 20

    stored = emulator.tracked_events()
    assert len(stored) == 200
    # Each event completed as on its first receive: Heap's idempotency key from the first id.
    expected = {f"{first_ids[r]}:{p}" for r in range(10) for p in range(EVENTS_PER_RECORD)}
    assert {e["idempotency_key"] for e in stored} == expected
    assert aws.dead_letters() == []


def test_a_record_sqs_does_not_take_back_stays_failed(aws, emulator, make_consumer, kit) -> None:
    refusing = RefusingSqs(aws.sqs, raise_calls=1)  # the send-back call is answered 503
    consumer = make_consumer(sqs_client=refusing, pace=Pace(10.0, 20))
    event = aws.lambda_event(*[kit.body(*_events(r, kit)) for r in range(4)])
    response = consumer.handle(event, 4.0)
    # 3 records taken on (60 events); the fourth could not be sent back: failed, as it is.
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][3]["messageId"]}]}
    assert len(emulator.tracked_events()) == 60


def test_a_sent_back_record_refused_by_sqs_alone_stays_failed(aws, emulator, make_consumer, kit) -> None:
    marker = kit.track(999)
    refusing = RefusingSqs(aws.sqs, refuse=lambda entry: "msg-999" in entry["MessageBody"], times=None)
    consumer = make_consumer(sqs_client=refusing, pace=Pace(0.0, 1))
    event = aws.lambda_event(kit.body(kit.track(1)), kit.body(marker), kit.body(kit.track(2)))
    response = consumer.handle(event, 4.0)
    # The pace takes on the first record alone; of the two others, SQS took one back.
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    [requeued] = aws.receive()["Records"]
    assert "msg-2" in requeued["body"]
