"""Review of the pace-bounded invocation (``Redelivery.requeue``): what a record sent back to the
queue as a new message must keep from its first self. On moto and the emulator."""

from __future__ import annotations

import json
from typing import Any

from dlq_faults import RefusingSqs

from heap_forwarder.edge.consumer import ORIGINAL_MESSAGE_ID, Pace
from heap_forwarder.edge.letters import DeadLetterWriter


def _dense(record: int, events: int, kit: Any, *, pad: int = 0) -> str:
    """One ``{"batch": [...]}`` body of ``events`` events (``pad`` bytes of property each)."""
    return kit.body(*[kit.track(record * 10_000 + p, properties={"pad": "x" * pad}) for p in range(events)])


def _receive_again(aws: Any, message_ids: set[str] | None = None) -> dict[str, Any]:
    event = aws.receive()
    if message_ids is not None:
        event["Records"] = [r for r in event["Records"] if r["messageId"] in message_ids]
    return event


def test_receives_spent_before_a_send_back_still_count_toward_the_limit(
    aws, emulator, make_consumer, kit
) -> None:
    # Heap is down. Two records, each on its 2nd receive (limit 3); the pace takes on one.
    # The other is sent back as a new message: SQS counts its receives from 1 again. Unless the
    # consumer carries the receives it spent, the record escapes the redrive limit: a send-back
    # whenever the cap bites resets it, and it is retried for as long as that goes on.
    emulator.fail_next(10**6, 503)
    consumer = make_consumer(pace=Pace(0.0, 2))
    ids = aws.send(_dense(1, 2, kit), _dense(2, 2, kit))
    first = aws.receive(2)  # the first receive of each: spent (say, an earlier outage)
    for record in first["Records"]:
        aws.sqs.change_message_visibility(
            QueueUrl=aws.main_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
        )
    event = aws.receive(2)
    assert {r["attributes"]["ApproximateReceiveCount"] for r in event["Records"]} == {"2"}
    response = consumer.handle(event, 4.0)
    [kept] = response["batchItemFailures"]  # one taken on (failed), one sent back

    # The receive that sent it back was no attempt (waiting costs no receive), the one before
    # was: its 1st receive as a new message is its 2nd attempt (retried), its 2nd is its last.
    def sent_back() -> dict[str, Any]:
        again = aws.receive()
        again["Records"] = [r for r in again["Records"] if r["messageAttributes"].get(ORIGINAL_MESSAGE_ID)]
        return again

    attempt_2 = sent_back()
    [record] = attempt_2["Records"]
    origin = record["messageAttributes"][ORIGINAL_MESSAGE_ID]["stringValue"]
    assert origin in ids and origin != kept["itemIdentifier"]
    assert consumer.handle(attempt_2, 4.0) == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert aws.dead_letters() == []
    attempt_3 = sent_back()
    assert attempt_3["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"  # SQS's count
    assert consumer.handle(attempt_3, 4.0) == {"batchItemFailures": []}  # parked, with the reason
    letters = aws.dead_letters()
    assert len(letters) == 2  # its two events
    assert {letter.error_class for letter in letters} == {"retries_exhausted"}, [
        letter.error_class for letter in letters
    ]


def test_dense_records_sent_back_together_do_not_exceed_a_batch_request(
    aws, emulator, make_consumer, kit
) -> None:
    # The records the pace leaves are the dense ones: the API's parked batches and the
    # backfill's messages, near SQS's 256 KB each. Ten of them in one SendMessageBatch are far
    # past what one request may hold (SQS: BatchRequestTooLong), so the whole chunk stays
    # failed and spends its receive: the very case the send-back was made for.
    consumer = make_consumer(pace=Pace(0.0, 1))
    bodies = [_dense(r, 200, kit, pad=250) for r in range(6)]
    assert all(200_000 < len(b) < 256_000 for b in bodies)
    event = aws.lambda_event(*bodies)
    response = consumer.handle(event, 4.0)
    assert response == {"batchItemFailures": []}  # 1 taken on, 5 sent back (none failed)
    assert len(emulator.tracked_events()) == 200
    again = aws.receive(5)
    assert {r["attributes"]["ApproximateReceiveCount"] for r in again["Records"]} == {"1"}


def test_letters_of_a_sent_back_record_keep_their_first_letter_ids(aws, emulator, make_consumer, kit) -> None:
    # A record of 10 refused events; the DLQ refuses one letter, so the record is retried (its
    # other letters are in the DLQ, each with its LetterId, twins to be met by redrive). On its
    # next receive the pace sends it back: the new message writes the letters again, and they
    # must be the same letters (same LetterId), or redrive moves both copies of each.
    bad = [kit.track(n, anonymousId=None, userId=None) for n in range(10)]
    filler = kit.track(99, anonymousId=None, userId=None)
    event = aws.lambda_event(kit.body(filler), kit.body(*bad))
    record_id = event["Records"][1]["messageId"]
    consumer = make_consumer(pace=Pace(0.0, 1))
    refusing = RefusingSqs(
        aws.sqs,
        lambda entry: json.loads(entry["MessageBody"])["messageId"] in ("msg-4", "msg-99"),
        times=None,
    )
    consumer.dead_letters = DeadLetterWriter(refusing, aws.dlq_url, sleep=lambda seconds: None)
    consumer.max_events_per_invocation = 50_000
    first = consumer.handle(event, None)  # no deadline: the pace does not apply
    assert len(first["batchItemFailures"]) == 2

    consumer.dead_letters = DeadLetterWriter(aws.sqs, aws.dlq_url)
    second = aws.receive(2)
    second["Records"].sort(key=lambda r: r["messageId"] != event["Records"][0]["messageId"])
    assert consumer.handle(second, 4.0) == {
        "batchItemFailures": []
    }  # the filler settled, the record sent back
    third = aws.receive(1)
    assert third["Records"][0]["messageAttributes"][ORIGINAL_MESSAGE_ID]["stringValue"] == record_id
    assert consumer.handle(third, 4.0) == {"batchItemFailures": []}

    letter_ids: dict[str, set[str]] = {}
    for letter in aws.dead_letters():
        letter_ids.setdefault(letter.event()["messageId"], set()).add(letter.attributes["LetterId"])
    assert letter_ids == {
        "msg-99": {f"{event['Records'][0]['messageId']}:0"},
        **{f"msg-{n}": {f"{record_id}:{n}"} for n in range(10)},
    }
