"""``heap-forwarder backfill`` on moto: the stack found with CloudFormation, sources local and in
S3, what reaches the main queue, the checkpoint and the report across an interruption, the dry
run and the exit codes. (The consumer draining it into Heap: test_backfill_e2e.py.)"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from heap_forwarder.edge.consumer import MAX_EVENTS_PER_RECORD
from heap_forwarder_tools.backfill.events import Selection
from heap_forwarder_tools.backfill.pacing import DrainRate
from heap_forwarder_tools.backfill.run import Backfill, Plan, Queue
from heap_forwarder_tools.backfill.sources import list_files
from heap_forwarder_tools.cli import main

REGION = "us-east-1"
STACK = "heap-forwarder-test"
# The stack's parameters and output that a backfill reads, around the queue they describe.
_STACK_TEMPLATE = {
    "Parameters": {
        "RateLimitEventsPerMinute": {"Type": "Number", "Default": "6000"},
        "MaxConcurrency": {"Type": "Number", "Default": "2"},
    },
    "Resources": {"MainQueue": {"Type": "AWS::SQS::Queue"}},
    "Outputs": {"MainQueueUrl": {"Value": {"Ref": "MainQueue"}}},
}


def track(n: int, **overrides: Any) -> dict[str, Any]:
    event = {
        "type": "track",
        "event": "Order Completed" if n % 2 else "Product Viewed",
        "userId": f"u-{n}",
        "messageId": f"m-{n}",
        "timestamp": f"2023-03-{n % 28 + 1:02d}T12:00:00Z",
        "properties": {"n": n},
    }
    return {**event, **overrides}


def write_lines(path: Path, lines: list[str], *, gzipped: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


@dataclass
class Aws:
    sqs: Any
    s3: Any
    cloudformation: Any
    queue_url: str

    def stack(self, **parameters: str) -> str:
        self.cloudformation.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(_STACK_TEMPLATE),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
        outputs = self.cloudformation.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
        return str(next(o["OutputValue"] for o in outputs if o["OutputKey"] == "MainQueueUrl"))

    def messages(self, url: str | None = None) -> list[str]:
        """Every message body of the queue, taken out of it."""
        bodies = []
        while True:
            found = self.sqs.receive_message(QueueUrl=url or self.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not found:
                return bodies
            bodies.extend(m["Body"] for m in found)
            self.sqs.delete_message_batch(
                QueueUrl=url or self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(found)],
            )

    def events(self, url: str | None = None) -> list[dict[str, Any]]:
        return [event for body in self.messages(url) for event in json.loads(body)["batch"]]


@pytest.fixture(scope="module")
def clients() -> tuple[Any, Any, Any]:
    """Made once (they cost ~0.2 s each); moto intercepts them while a mock runs."""
    dummy = {"region_name": REGION, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client("sqs", **dummy), boto3.client("s3", **dummy), boto3.client("cloudformation", **dummy)


@pytest.fixture
def aws(aws_env: None, clients: tuple[Any, Any, Any]) -> Iterator[Aws]:
    sqs, s3, cloudformation = clients
    with mock_aws():  # fresh, empty backends for every test
        url = sqs.create_queue(QueueName="main")["QueueUrl"]
        yield Aws(sqs, s3, cloudformation, url)


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str | Path) -> tuple[int, str, str]:
    status = main(
        [
            "backfill",
            *map(str, args),
            "--checkpoint",
            str(tmp_path / "cp.json"),
            "--report",
            str(tmp_path / "invalid.tsv"),
        ]
    )
    out, err = capsys.readouterr()
    return status, out, err


# ---------------------------------------------------------------------------------- the stack


def test_the_stack_gives_the_queue_and_the_pace_and_events_arrive_as_batches(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    queue_url = aws.stack(RateLimitEventsPerMinute="3000", MaxConcurrency="4")
    without_id = {k: v for k, v in track(3).items() if k != "messageId"}
    source = write_lines(
        tmp_path / "archive" / "a.gz", [json.dumps(track(n)) for n in range(3)] + [json.dumps(without_id)]
    )

    status, out, err = run(capsys, tmp_path, source.parent, "--stack", STACK, "--time-scale", "1000")

    assert status == 0, err
    assert "3,000 a minute x 4 instance(s) = 12,000 events a minute" in err
    assert "backlog at most 120,000 events" in err  # ten minutes of draining
    assert "4 event(s) enqueued in 1 message(s)" in out
    events = aws.events(queue_url)
    assert [e["properties"]["n"] for e in events] == [0, 1, 2, 3]
    assert events[0] == track(0)  # as written: timestamps and all
    assert events[3]["messageId"] not in {"m-0", "m-1", "m-2"} and events[3]["messageId"]


def test_a_re_run_gives_an_event_without_message_id_the_same_id(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = write_lines(
        tmp_path / "a.jsonl",
        [json.dumps({k: v for k, v in track(1).items() if k != "messageId"})],
        gzipped=False,
    )
    ids = []
    for _ in range(2):
        assert run(capsys, tmp_path, source, "--queue-url", aws.queue_url, "--restart")[0] == 0
        ids.append(aws.events()[0]["messageId"])
    assert ids[0] == ids[1]


def test_a_stack_without_the_main_queue_output_is_a_clear_error(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.cloudformation.create_stack(
        StackName="other", TemplateBody=json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}})
    )
    source = write_lines(tmp_path / "a.gz", [json.dumps(track(1))])
    status, _, err = run(capsys, tmp_path, source, "--stack", "other")
    assert status == 2
    assert "stack 'other' has no MainQueueUrl output" in err
    status, _, err = run(capsys, tmp_path, source, "--stack", "no-such-stack")
    assert status == 2
    assert "cannot read stack 'no-such-stack'" in err


def test_no_region_asks_for_region(
    aws_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    source = write_lines(tmp_path / "a.gz", [json.dumps(track(1))])
    status, _, err = run(capsys, tmp_path, source, "--stack", STACK)
    assert status == 2
    assert "no AWS region: give --region" in err


def test_without_a_stack_or_queue_only_a_dry_run_can_start(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "a.gz", [json.dumps(track(1))])
    status, _, err = run(capsys, tmp_path, source)
    assert status == 2
    assert "give --stack NAME" in err


# ---------------------------------------------------------------------------------- sources


def test_an_s3_archive_is_read_in_key_order_and_gzip_or_not(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.s3.create_bucket(Bucket="archive")
    day2 = gzip.compress((json.dumps(track(2)) + "\n").encode())
    aws.s3.put_object(Bucket="archive", Key="segment-logs/src/1672617600000/b.gz", Body=day2)
    aws.s3.put_object(
        Bucket="archive", Key="segment-logs/src/1672531200000/a.json", Body=json.dumps(track(1)) + "\n"
    )
    aws.s3.put_object(Bucket="archive", Key="segment-logs/src/1672531200000/", Body=b"")  # a folder marker
    aws.s3.put_object(Bucket="archive", Key="elsewhere/c.gz", Body=day2)

    status, _, err = run(capsys, tmp_path, "s3://archive/segment-logs/", "--queue-url", aws.queue_url)

    assert status == 0, err
    assert [e["properties"]["n"] for e in aws.events()] == [1, 2]
    assert "2 file(s)" in err


def test_messages_keep_within_the_queues_message_size_and_the_consumers_cap(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    small = aws.sqs.create_queue(QueueName="small", Attributes={"MaximumMessageSize": "4096"})["QueueUrl"]
    source = write_lines(tmp_path / "a.gz", [json.dumps(track(n)) for n in range(300)])
    assert run(capsys, tmp_path, source, "--queue-url", small, "--time-scale", "1000")[0] == 0
    bodies = aws.messages(small)
    assert len(bodies) > 10
    assert all(len(body.encode()) <= 4096 for body in bodies)
    assert [e["properties"]["n"] for b in bodies for e in json.loads(b)["batch"]] == list(range(300))

    # Events of ~90 bytes: 2,500 of them fit in 256 KB, and no more go in one message.
    compact = [
        json.dumps(
            {"type": "track", "event": "A", "userId": "u", "messageId": f"{n}", "timestamp": "2023-01-01"}
        )
        for n in range(MAX_EVENTS_PER_RECORD + 5)
    ]
    tiny = write_lines(tmp_path / "tiny.gz", compact)
    assert (
        run(capsys, tmp_path, tiny, "--queue-url", aws.queue_url, "--time-scale", "1000", "--restart")[0] == 0
    )
    assert [len(json.loads(body)["batch"]) for body in aws.messages()] == [MAX_EVENTS_PER_RECORD, 5]


def test_a_damaged_gzip_file_is_reported_and_the_next_file_is_read(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    whole = gzip.compress(("\n".join(json.dumps(track(n)) for n in range(2000)) + "\n").encode())
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "1.gz").write_bytes(whole[: len(whole) // 2])  # cut off mid-stream
    write_lines(tmp_path / "src" / "2.gz", [json.dumps(track(5000))])

    status, _, _ = run(
        capsys, tmp_path, tmp_path / "src", "--queue-url", aws.queue_url, "--time-scale", "1000"
    )

    assert status == 1
    numbers = [e["properties"]["n"] for e in aws.events()]
    assert numbers[-1] == 5000 and numbers[:-1] == list(range(len(numbers) - 1))
    [report] = (tmp_path / "invalid.tsv").read_text("utf-8").splitlines()
    assert report.startswith(f"{tmp_path / 'src' / '1.gz'}:{len(numbers)}\t")
    assert "damaged" in report


def test_an_event_larger_than_a_message_is_invalid(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    huge = track(2, properties={"blob": "x" * 300_000})
    source = write_lines(tmp_path / "a.gz", [json.dumps(track(1)), json.dumps(huge)])
    status, _, _ = run(capsys, tmp_path, source, "--queue-url", aws.queue_url, "--allow-invalid")
    assert status == 0
    assert [e["properties"]["n"] for e in aws.events()] == [1]
    assert "more than an SQS message of the main queue holds" in (tmp_path / "invalid.tsv").read_text("utf-8")


# ---------------------------------------------------------------------------------- resuming


def test_a_stopped_run_resumed_sends_every_event_once_and_reports_every_invalid_line_once(
    aws: Aws, tmp_path: Path
) -> None:
    lines: list[str] = []
    for n in range(3000):
        lines.append(json.dumps(track(n)))
        if n % 250 == 7:
            lines.append('{"broken": ')
    write_lines(tmp_path / "src" / "a.gz", lines[:1700])
    write_lines(tmp_path / "src" / "b.jsonl", lines[1700:], gzipped=False)
    invalid_count = sum(1 for line in lines if line == '{"broken": ')
    plan = Plan(
        sources=[str(tmp_path / "src")],
        selection=Selection(),
        drain=DrainRate(6000, 2),
        max_backlog=10**6,
        report_path=tmp_path / "invalid.tsv",
        checkpoint_path=tmp_path / "cp.json",
        time_scale=10**6,
    )

    def backfill(stop_after_sends: int | None) -> Any:
        files = list(list_files(plan.sources, lambda: None))
        sends = {"count": 0}

        def stop() -> bool:
            return stop_after_sends is not None and sends["count"] >= stop_after_sends

        running = Backfill(plan, files, Queue(aws.sqs, aws.queue_url, 8_000), stop_requested=stop)
        assert running.enqueuer is not None
        send = running.enqueuer.send

        def counted(bodies: Any) -> None:
            send(bodies)
            sends["count"] += 1

        running.enqueuer.send = counted  # type: ignore[method-assign]
        return running.run()

    first = backfill(stop_after_sends=9)
    assert first.stopped
    assert 0 < first.totals.enqueued < 3000
    second = backfill(stop_after_sends=None)
    assert not second.stopped and second.error is None
    assert second.totals.enqueued == 3000 and second.totals.invalid == invalid_count

    numbers = Counter(e["properties"]["n"] for e in aws.events())
    assert sorted(numbers) == list(range(3000))
    assert set(numbers.values()) == {1}
    reported = (tmp_path / "invalid.tsv").read_text("utf-8").splitlines()
    assert len(reported) == len(set(reported)) == invalid_count
    assert json.loads((tmp_path / "cp.json").read_text("utf-8"))["done"] is True


def test_a_finished_backfill_run_again_has_nothing_to_do_and_restart_replays_it(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "a.gz", [json.dumps(track(n)) for n in range(5)])
    assert run(capsys, tmp_path, source, "--queue-url", aws.queue_url)[0] == 0
    status, out, _ = run(capsys, tmp_path, source, "--queue-url", aws.queue_url)
    assert status == 0
    assert "says this backfill is complete: nothing to do" in out
    assert len(aws.events()) == 5
    assert run(capsys, tmp_path, source, "--queue-url", aws.queue_url, "--restart")[0] == 0
    assert len(aws.events()) == 5


def test_a_checkpoint_of_another_backfill_is_refused(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "a.gz", [json.dumps(track(n)) for n in range(5)])
    assert run(capsys, tmp_path, source, "--queue-url", aws.queue_url, "--type", "page")[0] == 0
    status, _, err = run(capsys, tmp_path, source, "--queue-url", aws.queue_url)
    assert status == 2
    assert "is of another backfill" in err


# ---------------------------------------------------------------------------------- dry run


def test_the_dry_run_counts_times_and_lists_invalid_lines_and_sends_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lines = [json.dumps(track(n)) for n in range(10)] + [
        "oops",
        json.dumps({"type": "page", "name": "Home", "userId": "u", "timestamp": "2023-02-01T00:00:00Z"}),
    ]
    source = write_lines(tmp_path / "a.gz", lines)

    status, out, _ = run(capsys, tmp_path, source, "--dry-run")

    assert status == 1  # an invalid line, and no --allow-invalid
    assert "dry run: nothing was sent" in out
    assert "11 event(s) to send, 0 filtered out, 1 invalid" in out
    assert "time range: 2023-02-01T00:00:00.000Z to 2023-03-10T12:00:00.000Z" in out
    assert re.search(r"^  track +Order Completed +5$", out, re.MULTILINE)
    assert re.search(r"^  track +Product Viewed +5$", out, re.MULTILINE)
    assert re.search(r"^  page +Home +1$", out, re.MULTILINE)
    assert f"{source}:11: not valid JSON" in out
    assert "estimated time: 11 events at 12,000 a minute is about 0 s" in out
    assert not (tmp_path / "cp.json").exists()

    status, out, _ = run(
        capsys, tmp_path, source, "--dry-run", "--event", "order_completed", "--allow-invalid"
    )
    assert status == 0
    assert "5 event(s) to send, 6 filtered out, 1 invalid" in out


class _Dropping:
    """An S3 body whose connection drops once, after ``after`` bytes (what a long pause between
    reads can cost)."""

    def __init__(self, body: Any, after: int) -> None:
        self.body, self.left = body, after

    def read(self, amount: int) -> bytes:
        if self.left <= 0:
            raise ConnectionResetError("connection reset by peer")
        data: bytes = self.body.read(min(amount, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.body.close()


def test_an_s3_read_cut_off_midway_goes_on_from_the_byte_reached(aws: Aws, tmp_path: Path) -> None:
    from heap_forwarder_tools.backfill.reader import read_items
    from heap_forwarder_tools.backfill.sources import CountingReader, decoded

    data = gzip.compress(("\n".join(json.dumps(track(n)) for n in range(5000)) + "\n").encode())
    aws.s3.create_bucket(Bucket="archive")
    aws.s3.put_object(Bucket="archive", Key="a.gz", Body=data)
    ranges: list[str | None] = []

    def note_range(params: dict[str, Any], **_: Any) -> None:
        ranges.append(params.get("Range"))

    def cut(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        if len(ranges) == 1:
            parsed["Body"] = _Dropping(parsed["Body"], len(data) // 3)

    aws.s3.meta.events.register("provide-client-params.s3.GetObject", note_range)
    aws.s3.meta.events.register("after-call.s3.GetObject", cut)
    try:
        [data_file] = list(list_files(["s3://archive/"], lambda: aws.s3))
        with decoded(CountingReader(data_file.open())) as stream:
            numbers = [item.event["properties"]["n"] for item in read_items(stream)]
    finally:
        aws.s3.meta.events.unregister("provide-client-params.s3.GetObject", note_range)
        aws.s3.meta.events.unregister("after-call.s3.GetObject", cut)
    assert numbers == list(range(5000))
    assert ranges == [None, f"bytes={len(data) // 3}-"]
