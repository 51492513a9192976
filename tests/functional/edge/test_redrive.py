"""``heap-forwarder redrive`` over moto's SQS: filters, dry run, limits, failures, the CLI."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dlq_faults import RefusingSqs

from heap_forwarder.edge import letters as letters_module
from heap_forwarder.edge.letters import DeadLetter, DeadLetterWriter
from heap_forwarder.outcome import ErrorClass
from heap_forwarder_tools import redrive as redrive_module
from heap_forwarder_tools.cli import main
from heap_forwarder_tools.redrive import (
    REASON_CLASSES,
    RedriveError,
    redrive,
    region_of,
    resolve_queue_urls,
)

REGION = "us-east-1"
MISSING_QUEUE = f"https://sqs.{REGION}.amazonaws.com/123456789012/no-such-queue"


@dataclass
class Queues:
    sqs: Any
    dlq: str
    main: str

    def park(self, error_class: ErrorClass, reason: str, count: int = 1, start: int = 0) -> list[str]:
        """Dead-letter ``count`` events the way the consumer does; their bodies."""
        bodies = [
            json.dumps({"type": "track", "event": "Order Completed", "messageId": f"m-{start + i}"})
            for i in range(count)
        ]
        letters = [
            DeadLetter(body, error_class, reason, f"record-{start + i}", "2024-06-10T14:05:40Z")
            for i, body in enumerate(bodies)
        ]
        assert all(DeadLetterWriter(self.sqs, self.dlq).write(letters))
        return bodies

    def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def take(self, url: str) -> list[dict[str, Any]]:
        """Receive (and delete) every visible message of a queue."""
        taken: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return taken
            for message in messages:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            taken.extend(messages)

    def run(self, **options: Any) -> Any:
        options.setdefault("wait_seconds", 0)
        return redrive(self.sqs, self.dlq, options.pop("queue_url", self.main), **options)


@pytest.fixture
def queues(aws_env: None) -> Iterator[Queues]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        dlq_url = sqs.create_queue(QueueName="redrive-dlq")["QueueUrl"]
        main_url = sqs.create_queue(QueueName="redrive-main")["QueueUrl"]
        yield Queues(sqs, dlq_url, main_url)


# ---------------------------------------------------------------------------------- the basics
def test_reads_the_attributes_the_dlq_writer_writes() -> None:
    assert redrive_module.ATTR_ERROR_CLASS == letters_module.ATTR_ERROR_CLASS
    assert redrive_module.ATTR_REASON == letters_module.ATTR_REASON
    assert redrive_module.ATTR_LETTER_ID == letters_module.ATTR_LETTER_ID
    assert set(REASON_CLASSES) == {str(c) for c in ErrorClass if c is not ErrorClass.NONE} | {"unknown"}


def test_moves_every_letter_with_its_body_unchanged(queues: Queues) -> None:
    bodies = queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted: HTTP 503 from Heap", count=23)

    report = queues.run()

    assert report.ok
    assert (report.moved, report.skipped, report.failed, report.left) == (23, 0, 0, 0)
    assert report.by_reason == {"retries_exhausted": 23}
    assert queues.counts(queues.dlq) == (0, 0)
    moved = queues.take(queues.main)
    assert sorted(m["Body"] for m in moved) == sorted(bodies)  # the idempotency key travels in the body
    for message in moved:
        attributes = message["MessageAttributes"]
        assert set(attributes) == {"RedrivenFrom", "RedriveCount"}
        assert attributes["RedrivenFrom"]["StringValue"] == "retries_exhausted"
        assert attributes["RedriveCount"] == {"DataType": "Number", "StringValue": "1"}


def test_counts_redrives_and_takes_letters_without_a_reason(queues: Queues) -> None:
    # SQS moved this one itself (no ErrorClass), after it had been redriven twice already.
    queues.sqs.send_message(
        QueueUrl=queues.dlq,
        MessageBody="{}",
        MessageAttributes={"RedriveCount": {"DataType": "Number", "StringValue": "2"}},
    )

    report = queues.run(reasons=["unknown"])

    assert report.by_reason == {"unknown": 1}
    (message,) = queues.take(queues.main)
    assert message["MessageAttributes"]["RedriveCount"]["StringValue"] == "3"
    assert message["MessageAttributes"]["RedrivenFrom"]["StringValue"] == "unknown"


def test_an_empty_dead_letter_queue_is_a_quiet_success(queues: Queues) -> None:
    lines: list[str] = []
    report = queues.run(progress=lines.append)
    assert report.ok
    assert report.moved == 0
    assert lines == []
    assert "moved 0 message(s)" in report.summary()


# ---------------------------------------------------------------------------------- dry run
def test_dry_run_changes_nothing(queues: Queues) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted: HTTP 503 from Heap", count=12)
    queues.park(ErrorClass.CONFIG_FAULT, "Heap answered 401: Invalid app_id", count=3, start=100)
    queues.park(ErrorClass.INVALID_JSON, "body is not JSON", count=1, start=200)
    before = queues.counts(queues.dlq)

    report = queues.run(dry_run=True)

    assert before == (16, 0)
    assert queues.counts(queues.dlq) == before  # everything visible again, nothing deleted
    assert queues.counts(queues.main) == (0, 0)
    assert report.dry_run
    assert report.moved == 16
    assert report.by_reason == {"retries_exhausted": 12, "config_fault": 3, "invalid_json": 1}
    assert report.samples["config_fault"] == ["Heap answered 401: Invalid app_id"]
    summary = report.summary()
    assert summary.startswith("dry run: would move 16 message(s); nothing was changed")
    assert "e.g. Heap answered 401: Invalid app_id" in summary
    assert "  invalid_json: 1  (comes back unless" in summary  # a warning before redriving those


def test_dry_run_warns_that_a_too_large_record_comes_back_unless_split(queues: Queues) -> None:
    queues.park(ErrorClass.TOO_LARGE, "the record holds 85000 events; the limit is 2500 per record")

    summary = queues.run(dry_run=True).summary()

    assert "  too_large: 1  (comes back: split the batch into messages of at most 2,500 events" in summary


def test_dry_run_with_filters_shows_what_the_real_run_would_move(queues: Queues) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted: HTTP 503 from Heap", count=5)
    queues.park(ErrorClass.HEAP_REJECTED, "Heap answered 400: bad", count=4, start=10)

    preview = queues.run(dry_run=True, reasons=["heap_rejected"])
    report = queues.run(reasons=["heap_rejected"])

    assert (preview.moved, preview.skipped) == (report.moved, report.skipped) == (4, 5)
    assert preview.skipped_by_reason == {"retries_exhausted": 5}


# ---------------------------------------------------------------------------------- filters
def test_filter_by_reason_leaves_the_others_visible(queues: Queues) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted: timeout", count=5)
    queues.park(ErrorClass.CONFIG_FAULT, "Heap answered 403", count=3, start=10)
    queues.park(ErrorClass.INVALID_JSON, "not JSON", count=2, start=20)

    report = queues.run(reasons=["retries_exhausted", "config_fault"])

    assert (report.moved, report.skipped) == (8, 2)
    assert report.by_reason == {"retries_exhausted": 5, "config_fault": 3}
    assert queues.counts(queues.dlq) == (2, 0)  # filtered out, and visible again at once
    assert {m["MessageAttributes"]["RedrivenFrom"]["StringValue"] for m in queues.take(queues.main)} == {
        "retries_exhausted",
        "config_fault",
    }
    left = queues.take(queues.dlq)
    assert {m["MessageAttributes"]["ErrorClass"]["StringValue"] for m in left} == {"invalid_json"}


def test_filter_by_reason_text_ignores_case(queues: Queues) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted: HTTP 503 from Heap", count=3)
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted: connection refused", count=2, start=10)

    report = queues.run(match="CONNECTION")

    assert (report.moved, report.skipped) == (2, 3)
    assert queues.counts(queues.dlq) == (3, 0)


def test_reason_and_text_filters_combine(queues: Queues) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted: HTTP 503", count=2)
    queues.park(ErrorClass.CONFIG_FAULT, "HTTP 503 from SSM", count=2, start=10)

    report = queues.run(reasons=["config_fault"], match="503")

    assert (report.moved, report.skipped) == (2, 2)


def test_max_stops_after_that_many(queues: Queues) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted", count=25)

    report = queues.run(max_messages=7)

    assert report.moved == 7
    assert report.ok
    assert queues.counts(queues.main) == (7, 0)
    assert queues.counts(queues.dlq) == (18, 0)  # the rest stay, visible


# ---------------------------------------------------------------------------------- failures
def test_nothing_is_deleted_when_the_main_queue_refuses(queues: Queues) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted", count=15)
    lines: list[str] = []

    report = queues.run(queue_url=MISSING_QUEUE, progress=lines.append)

    assert not report.ok
    assert report.moved == 0
    assert report.failed == 10  # the first batch; then the run stops
    assert report.aborted is not None
    assert "main queue" in report.aborted
    assert queues.counts(queues.dlq) == (15, 0)  # all still there, and visible
    assert "FAILED" in report.summary()
    assert lines == ["moved 0 / skipped 0 / failed 10"]


class PartlyFailingSqs:
    """The moto client, except that the main queue refuses every third message of a batch."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sqs, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        refused = [e for i, e in enumerate(Entries) if i % 3 == 0]
        taken = [e for i, e in enumerate(Entries) if i % 3]
        response = dict(self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=taken))
        response["Failed"] = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try again"}
            for e in refused
        ]
        return response


def test_a_message_leaves_the_dlq_only_once_the_main_queue_took_it(queues: Queues) -> None:
    queues.park(ErrorClass.TRANSIENT, "HTTP 502", count=10)

    report = redrive(PartlyFailingSqs(queues.sqs), queues.dlq, queues.main, wait_seconds=0)

    assert (report.moved, report.failed) == (6, 4)
    assert queues.counts(queues.main) == (6, 0)
    assert queues.counts(queues.dlq) == (4, 0)  # the refused ones: kept, and visible for a re-run
    assert len(report.errors) == 4
    assert all("InternalError" in error for error in report.errors)


class TooLongTogetherSqs(PartlyFailingSqs):
    """The moto client, except that a batch send is refused as too long (large letters)."""

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        error = {"Error": {"Code": "AWS.SimpleQueueService.BatchRequestTooLong", "Message": "too long"}}
        raise ClientError(error, "SendMessageBatch")


def test_letters_too_large_to_send_together_are_sent_one_by_one(queues: Queues) -> None:
    bodies = queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted", count=12)

    report = redrive(TooLongTogetherSqs(queues.sqs), queues.dlq, queues.main, wait_seconds=0)

    assert report.ok
    assert report.moved == 12
    assert sorted(m["Body"] for m in queues.take(queues.main)) == sorted(bodies)
    assert queues.counts(queues.dlq) == (0, 0)


class RepeatingSqs:
    """A DLQ that hands out the same messages on every receive, as SQS may."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.receives = 0
        self.sent: list[str] = []
        self.deleted: list[str] = []
        self.released: list[str] = []

    def receive_message(self, **_: Any) -> dict[str, Any]:
        self.receives += 1
        return {
            "Messages": [{**m, "ReceiptHandle": f"{m['MessageId']}#{self.receives}"} for m in self.messages]
        }

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent.extend(e["MessageBody"] for e in Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.deleted.extend(e["ReceiptHandle"] for e in Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.released.extend(e["ReceiptHandle"] for e in Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def letter(message_id: str, error_class: str) -> dict[str, Any]:
    return {
        "MessageId": message_id,
        "Body": f'{{"messageId": "{message_id}"}}',
        "MessageAttributes": {
            "ErrorClass": {"DataType": "String", "StringValue": error_class},
            "Reason": {"DataType": "String", "StringValue": "why"},
        },
    }


def test_a_message_seen_twice_is_handled_once_and_the_run_ends() -> None:
    sqs = RepeatingSqs([letter("a", "retries_exhausted"), letter("b", "invalid_json")])

    report = redrive(sqs, "dlq", "main", reasons=["retries_exhausted"])

    assert sqs.receives == 2  # the second receive brought nothing new: stop
    assert sqs.sent == ['{"messageId": "a"}']
    assert sqs.deleted == ["a#1"]
    assert sqs.released == ["b#2"]  # the newest handle of the filtered-out one
    assert (report.moved, report.skipped) == (1, 1)


def test_filtered_letters_are_released_even_when_the_run_is_interrupted() -> None:
    sqs = RepeatingSqs([letter("a", "invalid_json")])

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        redrive(sqs, "dlq", "main", reasons=["retries_exhausted"], progress=interrupt)
    assert sqs.released == ["a#1"]


# ---------------------------------------------------------------------------------- twins
def park_copies(
    queues: Queues, letter_ids: list[str | None], error_class: ErrorClass = ErrorClass.HEAP_REJECTED
) -> None:
    """Dead-letter one letter per entry as the consumer does: the same id, the same event (twins,
    as a redelivered record writes them); None: a letter without a LetterId (its event ``none``)."""
    letters = [
        DeadLetter(
            json.dumps({"type": "track", "event": "Order Completed", "messageId": letter_id or "none"}),
            error_class,
            "HTTP 400 from Heap",
            (letter_id or "record-x").split(":")[0],
            "2024-06-10T14:05:40Z",
            letter_id=letter_id or "",
        )
        for letter_id in letter_ids
    ]
    assert all(DeadLetterWriter(queues.sqs, queues.dlq).write(letters))


def moved_ids(queues: Queues) -> list[str]:
    return sorted(json.loads(m["Body"])["messageId"] for m in queues.take(queues.main))


def test_one_letter_per_id_is_moved_and_its_twins_are_deleted(queues: Queues) -> None:
    # 9 events written 22 times over (twins across receive batches), and two letters without an
    # id that happen to hold the same event: those are moved each, as before LetterId existed.
    park_copies(queues, [f"record-{n % 3}:{n % 9}" for n in range(22)] + [None, None])
    lines: list[str] = []

    report = queues.run(progress=lines.append)

    assert report.ok
    assert (report.moved, report.twins, report.failed) == (11, 13, 0)
    assert moved_ids(queues) == sorted([f"record-{n % 3}:{n}" for n in range(9)] + ["none", "none"])
    assert queues.counts(queues.dlq) == (0, 0)  # the twins are gone too
    assert lines[-1] == "moved 11 / skipped 0 / deleted 13 twin(s) (heap_rejected: 11)"
    assert "deleted 13 twin(s)" in report.summary()


def test_dry_run_reports_the_twins_it_would_delete(queues: Queues) -> None:
    park_copies(queues, ["record-1:0", "record-1:0", "record-1:1", None])

    report = queues.run(dry_run=True)

    assert (report.moved, report.twins) == (3, 1)
    assert "would delete 1 twin(s)" in report.summary()
    assert queues.counts(queues.dlq) == (4, 0)  # nothing changed
    assert queues.counts(queues.main) == (0, 0)


def test_only_twins_that_pass_the_filters_are_deleted(queues: Queues) -> None:
    park_copies(queues, ["record-1:0", "record-1:0"], ErrorClass.RETRIES_EXHAUSTED)
    park_copies(queues, ["record-1:0"], ErrorClass.HEAP_REJECTED)

    report = queues.run(reasons=["retries_exhausted"])

    assert (report.moved, report.twins, report.skipped) == (1, 1, 1)
    assert moved_ids(queues) == ["record-1:0"]
    (left,) = queues.take(queues.dlq)
    assert left["MessageAttributes"]["ErrorClass"]["StringValue"] == "heap_rejected"


def test_twins_stay_when_the_main_queue_refuses_their_letter(queues: Queues) -> None:
    park_copies(queues, ["record-1:0", "record-1:0", "record-2:0", "record-2:0"])
    refused = json.dumps({"type": "track", "event": "Order Completed", "messageId": "record-1:0"})
    sqs = RefusingSqs(queues.sqs, lambda entry: entry["MessageBody"] == refused, times=None)

    report = redrive(sqs, queues.dlq, queues.main, wait_seconds=0)

    assert (report.moved, report.twins, report.failed) == (1, 1, 2)
    assert not report.ok
    assert moved_ids(queues) == ["record-2:0"]
    kept = queues.take(queues.dlq)  # both copies of the refused event: the next run moves one
    assert [m["Body"] for m in kept] == [refused, refused]


# ---------------------------------------------------------------------------------- progress
def test_progress_shows_one_line_per_batch(queues: Queues) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted", count=25)
    queues.park(ErrorClass.INVALID_JSON, "not JSON", count=3, start=100)
    lines: list[str] = []

    report = queues.run(reasons=["retries_exhausted"], progress=lines.append)

    assert len(lines) == 3  # 28 messages, 10 a receive
    pattern = re.compile(r"^moved \d+ / skipped \d+( \(retries_exhausted: \d+\))?$")
    assert all(pattern.match(line) for line in lines), lines
    assert lines[-1] == "moved 25 / skipped 3 (retries_exhausted: 25)"
    assert report.summary().splitlines()[0] == "redrive finished: moved 25 message(s) to the main queue"


def test_dry_run_progress_says_would_move(queues: Queues) -> None:
    queues.park(ErrorClass.DEADLINE, "no time left", count=2)
    lines: list[str] = []
    queues.run(dry_run=True, progress=lines.append)
    assert lines == ["would move 2 / skipped 0 (deadline: 2)"]


# ---------------------------------------------------------------------------------- the CLI
def test_cli_dry_run(queues: Queues, capsys: pytest.CaptureFixture[str]) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted: HTTP 503 from Heap", count=4)

    status = main(
        ["redrive", "--dlq-url", queues.dlq, "--queue-url", queues.main, "--dry-run", "--wait-seconds", "0"]
    )

    assert status == 0
    out, err = capsys.readouterr()
    assert "would move 4 / skipped 0 (retries_exhausted: 4)" in err
    assert out.startswith("dry run: would move 4 message(s)")
    assert queues.counts(queues.dlq) == (4, 0)
    assert queues.counts(queues.main) == (0, 0)


def test_cli_moves_by_reason_with_queues_from_the_environment(
    queues: Queues, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted", count=3)
    queues.park(ErrorClass.INVALID_EVENT, "no messageId", count=2, start=10)
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", queues.dlq)
    monkeypatch.setenv("RETRY_QUEUE_URL", queues.main)

    status = main(["redrive", "--reason", "retries_exhausted", "--max", "10", "--wait-seconds", "0"])

    assert status == 0
    out, _ = capsys.readouterr()
    assert "moved 3 message(s)" in out
    assert "skipped (filtered out, still in the DLQ): 2 (invalid_event: 2)" in out
    assert queues.counts(queues.main) == (3, 0)
    assert queues.counts(queues.dlq) == (2, 0)


def test_cli_fails_when_messages_could_not_be_moved(
    queues: Queues, capsys: pytest.CaptureFixture[str]
) -> None:
    queues.park(ErrorClass.RETRIES_EXHAUSTED, "retries exhausted", count=2)

    status = main(["redrive", "--dlq-url", queues.dlq, "--queue-url", MISSING_QUEUE, "--wait-seconds", "0"])

    assert status == 1
    assert "FAILED" in capsys.readouterr().out
    assert queues.counts(queues.dlq) == (2, 0)


def test_cli_without_queues_says_what_to_give(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DEAD_LETTER_QUEUE_URL", raising=False)
    monkeypatch.delenv("RETRY_QUEUE_URL", raising=False)
    assert main(["redrive", "--dry-run"]) == 2
    assert "--dlq-url, --stack or $DEAD_LETTER_QUEUE_URL" in capsys.readouterr().err


def test_cli_refuses_an_unknown_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["redrive", "--reason", "retries-exhausted", "--dry-run"])
    assert exit_.value.code == 2
    assert "unknown error class 'retries-exhausted'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- queue URLs
class FakeCloudFormation:
    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs
        self.asked: list[str] = []

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        self.asked.append(StackName)
        return {
            "Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]
        }


def args(**values: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"dlq_url": None, "queue_url": None, "stack": None, **values})


def test_queue_urls_come_from_the_stack_outputs() -> None:
    cloudformation = FakeCloudFormation({"DeadLetterQueueUrl": "https://d", "MainQueueUrl": "https://m"})
    environ = {"DEAD_LETTER_QUEUE_URL": "https://other-d", "RETRY_QUEUE_URL": "https://other-m"}

    urls = resolve_queue_urls(args(stack="heap-forwarder-prod"), environ, lambda: cloudformation)

    assert urls == ("https://d", "https://m")  # with --stack, the environment is not used
    assert cloudformation.asked == ["heap-forwarder-prod"]


def test_flags_win_over_the_stack_and_the_environment() -> None:
    cloudformation = FakeCloudFormation({"DeadLetterQueueUrl": "https://d", "MainQueueUrl": "https://m"})
    urls = resolve_queue_urls(
        args(stack="s", dlq_url="https://flag-d"),
        {"RETRY_QUEUE_URL": "https://env-m"},
        lambda: cloudformation,
    )
    assert urls == ("https://flag-d", "https://m")
    assert resolve_queue_urls(
        args(queue_url="https://flag-m"), {"DEAD_LETTER_QUEUE_URL": "https://env-d"}, dict
    ) == (
        "https://env-d",
        "https://flag-m",
    )


def test_a_stack_without_the_outputs_is_refused() -> None:
    with pytest.raises(RedriveError, match="no DeadLetterQueueUrl / MainQueueUrl output"):
        resolve_queue_urls(args(stack="s"), {}, lambda: FakeCloudFormation({}))


def test_the_same_queue_twice_is_refused() -> None:
    with pytest.raises(RedriveError, match="same queue"):
        resolve_queue_urls(args(dlq_url="https://q", queue_url="https://q/"), {}, dict)


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/heap-forwarder-prod-dlq", "eu-west-1"),
        ("https://sqs-fips.us-east-2.amazonaws.com/123456789012/q", "us-east-2"),
        ("https://us-west-2.queue.amazonaws.com/123456789012/q", "us-west-2"),
        ("http://localhost:4566/000000000000/q", None),
    ],
)
def test_region_of_a_queue_url(url: str, region: str | None) -> None:
    assert region_of(url) == region


@pytest.mark.parametrize(
    "where",
    [
        ["--stack", "heap-forwarder-prod"],
        ["--dlq-url", "http://127.0.0.1:1/1/d", "--queue-url", "http://127.0.0.1:1/1/m"],
    ],
)
def test_without_a_region_the_error_says_to_pass_one(
    where: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert main(["redrive", *where]) == 2
    assert "no AWS region: pass --region REGION" in capsys.readouterr().err
