"""The dead-letter writer (edge/letters.py) on moto's SQS: each letter says why it is there;
a write never raises."""

from __future__ import annotations

import json

import pytest
from dlq_faults import RefusingSqs

from heap_forwarder.edge.letters import MAX_BODY_BYTES, MAX_REASON, DeadLetter, DeadLetterWriter
from heap_forwarder.outcome import ErrorClass

ATTRIBUTES = {"ErrorClass", "Reason", "SourceRecordId", "FirstSeen", "EntryPoint"}


def letter(n: int = 0, body: str | None = None, reason: str = "identity: required") -> DeadLetter:
    return DeadLetter(
        body=body if body is not None else json.dumps({"type": "track", "n": n}),
        error_class=ErrorClass.HEAP_RULE,
        reason=reason,
        source_record_id=f"record-{n}",
        first_seen="2024-06-10T14:04:02Z",
        letter_id=f"record-{n}:0",
    )


def test_the_attributes_carry_the_reason() -> None:
    attributes = letter(3).attributes()
    assert set(attributes) == ATTRIBUTES | {"LetterId"}
    assert all(a["DataType"] == "String" for a in attributes.values())
    assert {k: a["StringValue"] for k, a in attributes.items()} == {
        "ErrorClass": "heap_rule",
        "Reason": "identity: required",
        "SourceRecordId": "record-3",
        "FirstSeen": "2024-06-10T14:04:02Z",
        "EntryPoint": "sqs",
        "LetterId": "record-3:0",
    }


def test_empty_attributes_are_still_valid_for_sqs() -> None:
    blank = DeadLetter("{}", ErrorClass.INVALID_JSON, "", "", "", entry_point="api")
    values = {k: a["StringValue"] for k, a in blank.attributes().items()}
    assert values["Reason"] == values["SourceRecordId"] == values["FirstSeen"] == "-"  # SQS refuses ""
    assert values["EntryPoint"] == "api"
    assert "LetterId" not in values  # no id: never a twin of another letter without one


def test_a_long_reason_is_cut() -> None:
    assert len(letter(reason="x" * 5000).attributes()["Reason"]["StringValue"]) == MAX_REASON


def test_letters_land_with_body_and_attributes(aws) -> None:
    letters = [letter(n) for n in range(3)]
    assert DeadLetterWriter(aws.sqs, aws.dlq_url).write(letters) == [True, True, True]
    landed = sorted(aws.dead_letters(), key=lambda m: m.attributes["SourceRecordId"])
    assert [m.body for m in landed] == [x.body for x in letters]
    for n, message in enumerate(landed):
        assert message.attributes == {
            "ErrorClass": "heap_rule",
            "Reason": "identity: required",
            "SourceRecordId": f"record-{n}",
            "FirstSeen": "2024-06-10T14:04:02Z",
            "EntryPoint": "sqs",
            "LetterId": f"record-{n}:0",
        }


def test_more_than_ten_letters_go_in_several_batches(aws) -> None:
    calls: list[int] = []

    def seen(params: dict, **_: object) -> None:
        calls.append(len(params["Entries"]))

    aws.sqs.meta.events.register("provide-client-params.sqs.SendMessageBatch", seen)
    try:
        written = DeadLetterWriter(aws.sqs, aws.dlq_url).write([letter(n) for n in range(23)])
    finally:
        aws.sqs.meta.events.unregister("provide-client-params.sqs.SendMessageBatch", seen)
    assert written == [True] * 23
    assert calls == [10, 10, 3]
    assert sorted(m.attributes["SourceRecordId"] for m in aws.dead_letters()) == sorted(
        f"record-{n}" for n in range(23)
    )


def test_nothing_to_write_sends_nothing(aws) -> None:
    assert DeadLetterWriter(aws.sqs, aws.dlq_url).write([]) == []


def test_a_failed_write_is_reported_not_raised(aws) -> None:
    missing = aws.dlq_url.rsplit("/", 1)[0] + "/no-such-queue"
    pauses: list[float] = []
    writer = DeadLetterWriter(aws.sqs, missing, sleep=pauses.append)
    assert writer.write([letter(0), letter(1)]) == [False, False]
    assert pauses == []  # no such queue: trying again would not change that


# ---------------------------------------------------------------------------------- SQS refusing entries
def test_an_entry_sqs_refuses_once_is_sent_again_alone(aws) -> None:
    letters = [letter(n) for n in range(10)]
    sqs = RefusingSqs(aws.sqs, lambda entry: entry["MessageBody"] == letters[4].body)
    pauses: list[float] = []

    written = DeadLetterWriter(sqs, aws.dlq_url, sleep=pauses.append).write(letters)

    assert written == [True] * 10
    assert [len(call) for call in sqs.calls] == [10, 1]
    assert sqs.calls[1] == [letters[4].body]  # the refused one, and only it
    assert sorted(m.body for m in aws.dead_letters()) == sorted(x.body for x in letters)  # 10, not 19
    assert len(pauses) == 1


def test_an_entry_sqs_refuses_as_the_senders_fault_is_not_sent_again(aws) -> None:
    letters = [letter(n) for n in range(10)]
    sqs = RefusingSqs(
        aws.sqs,
        lambda entry: entry["MessageBody"] in (letters[4].body, letters[6].body),
        sender_fault=lambda entry: entry["MessageBody"] == letters[6].body,  # it would fail alike
    )

    written = DeadLetterWriter(sqs, aws.dlq_url, sleep=lambda seconds: None).write(letters)

    assert written == [n != 6 for n in range(10)]
    assert sqs.calls[1:] == [[letters[4].body]]


def test_an_entry_sqs_keeps_refusing_is_reported_and_the_others_are_sent_once(aws) -> None:
    letters = [letter(n) for n in range(10)]
    sqs = RefusingSqs(aws.sqs, lambda entry: entry["MessageBody"] == letters[7].body, times=None)
    pauses: list[float] = []

    written = DeadLetterWriter(sqs, aws.dlq_url, sleep=pauses.append).write(letters)

    assert written == [n != 7 for n in range(10)]
    assert sqs.calls[1:] == [[letters[7].body]] * (len(sqs.calls) - 1)  # the others never again
    assert 2 <= len(sqs.calls) <= 5  # bounded
    assert sum(pauses) <= 1.0  # a short pause in all: the caller keeps the source for a later retry
    assert sorted(m.body for m in aws.dead_letters()) == sorted(
        x.body for n, x in enumerate(letters) if n != 7
    )


def test_a_batch_call_that_raises_is_tried_again(aws) -> None:
    letters = [letter(n) for n in range(12)]
    sqs = RefusingSqs(aws.sqs, raise_calls=1)

    written = DeadLetterWriter(sqs, aws.dlq_url, sleep=lambda seconds: None).write(letters)

    assert written == [True] * 12
    assert [len(call) for call in sqs.calls] == [10, 2, 10]  # the failed batch again, not the other
    assert len(aws.dead_letters()) == 12


@pytest.mark.parametrize(
    "hostile", ["\x00", "a\x01b\x1fc", "\ud800 lone surrogate", "\ufffe", "bell\x07", "\x7f ok"]
)
def test_characters_sqs_refuses_are_escaped_not_lost(hostile: str, aws) -> None:
    original = '{"name": "' + hostile + '"}'
    assert DeadLetterWriter(aws.sqs, aws.dlq_url).write([letter(body=original)]) == [True]
    (landed,) = aws.dead_letters()
    assert "\\u" in landed.body or landed.body == original
    # Every character SQS takes is kept as it was.
    kept = [c for c in original if c in "\t\n\r" or "\x20" <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd"]
    assert all(c in landed.body for c in kept)


def test_a_body_too_big_for_sqs_is_cut_and_says_so(aws) -> None:
    big = "é" * 700_000  # 1.4 MB in UTF-8
    assert DeadLetterWriter(aws.sqs, aws.dlq_url).write([letter(body=big)]) == [True]
    (landed,) = aws.dead_letters()
    assert landed.body.startswith("é" * 1000)
    assert landed.body.endswith(f"[truncated by heap-forwarder: {len(big.encode())} bytes]")
    assert len(landed.body.encode()) < MAX_BODY_BYTES + 100


def test_large_letters_are_not_refused_together(aws) -> None:
    letters = [letter(n, body="x" * 400_000) for n in range(3)]  # each fits SQS; together 1.2 MB
    assert DeadLetterWriter(aws.sqs, aws.dlq_url).write(letters) == [True, True, True]
