"""The local stack (``heap-forwarder serve``): moto's server, the Heap emulator over HTTP, the API
and the consumer with their own template environments, and the outage rehearsal of docs/local.md
(its own module: moto's server state is per process, and the stack empties it at start)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

import heap_forwarder.edge.observability  # noqa: F401  (the logger binds to a lasting stdout)
from heap_forwarder_tools import cli
from heap_forwarder_tools.local.stack import LocalStack, Traffic, consumer_summary

ROOT = Path(__file__).resolve().parents[2]
# 900x: the consumer's backoff of 30 s doubling to 30 min becomes 0 s for the first receives,
# then 1 s, so the 19 receives of an event that never gets through take about 15 s.
TIME_SCALE = 900
REHEARSAL_SECONDS = 60


def post_json(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read() or b"{}")


def track(message_id: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "anonymousId": f"anon-{message_id}",
        "messageId": message_id,
        "properties": {"order_id": message_id, "total": 9.5},
    }


class Rehearsal:
    """The stack, and what a newcomer does to it from the outside: HTTP to the API and to the
    emulator's control API, SQS through moto's server, and the real ``redrive`` command."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.deadline = time.monotonic() + REHEARSAL_SECONDS
        self.sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint_url, region_name=stack.region)
        key = stack.write_key
        assert key, "the template's API takes a write key"
        self.auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}

    def heap(self, faults: dict[str, Any]) -> None:
        assert post_json(f"{self.stack.emulator_url}/_emulator/faults", faults)[0] == 200

    def send_to_api(self, *message_ids: str) -> dict[str, Any]:
        status, answer = post_json(
            f"{self.stack.api_url}/v1/batch", {"batch": [track(m) for m in message_ids]}, self.auth
        )
        assert status == 202, answer
        return dict(answer)

    def send_to_queue(self, message_id: str) -> None:
        self.sqs.send_message(QueueUrl=self.stack.main_queue_url, MessageBody=json.dumps(track(message_id)))

    def delivered_keys(self) -> list[str]:
        with urllib.request.urlopen(f"{self.stack.emulator_url}/_emulator/state", timeout=10) as response:
            state = json.loads(response.read())
        return sorted(e["idempotency_key"] for e in state["tracked_events"])

    def until(self, what: str, condition: Callable[[], bool]) -> None:
        while not condition():
            if time.monotonic() > self.deadline:
                raise AssertionError(f"the rehearsal did not end within {REHEARSAL_SECONDS} s: {what}")
            time.sleep(0.1)

    def dead_letter_count(self) -> int:
        visible, in_flight = self.stack.queue_depths()["dead_letter"]
        return visible + in_flight


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(
        ROOT / "template.yaml", time_scale=TIME_SCALE, log_path=tmp_path / "logs.jsonl"
    ) as running:
        yield running


def test_outage_rehearsal_delivers_every_event_once_and_leaves_the_dlq_empty(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    rehearsal = Rehearsal(stack)

    # 1. Heap goes down; events sent through the API are parked (202), one comes straight to SQS.
    rehearsal.heap({"outage": {"status": 503}})
    assert rehearsal.send_to_api("early-1", "early-2", "early-3")["parked"] == 3
    rehearsal.send_to_queue("early-sqs")
    # 2. The outage outlasts their 19 receives: the consumer dead-letters them, with the reason.
    rehearsal.until("the early events in the DLQ", lambda: rehearsal.dead_letter_count() == 4)
    assert {letter.attributes["ErrorClass"] for letter in stack.dead_letters()} == {"retries_exhausted"}

    # 3. More events while Heap is still down: parked, then retried by the consumer (backing off).
    assert rehearsal.send_to_api("late-1", "late-2")["parked"] == 2
    rehearsal.until(
        "the consumer retrying the late events",
        lambda: any(t.source == "consumer" and t.detail.get("failed") for t in stack.traffic()),
    )
    # 4. Heap recovers: the consumer delivers the late events on their next receive.
    rehearsal.heap({"outage": False})
    rehearsal.until("the late events delivered", lambda: rehearsal.delivered_keys() == ["late-1", "late-2"])

    # 5. What is left is in the DLQ: list it, then move it back with the real redrive command.
    redrive = stack.redrive_command("--wait-seconds", "0")[2:]  # without "heap-forwarder redrive"
    assert cli.main(["redrive", *redrive, "--dry-run"]) == 0
    assert "retries_exhausted" in capsys.readouterr().out
    assert cli.main(["redrive", *redrive]) == 0
    rehearsal.until("the redriven events delivered", lambda: len(rehearsal.delivered_keys()) == 6)
    rehearsal.until("an empty main queue", lambda: stack.queue_depths()["main"] == (0, 0))

    assert rehearsal.delivered_keys() == ["early-1", "early-2", "early-3", "early-sqs", "late-1", "late-2"]
    assert stack.emulator.stats()["duplicates"] == 0  # each event reached Heap exactly once
    assert stack.queue_depths()["dead_letter"] == (0, 0)
    assert stack.dead_letters() == []


def test_the_consumer_runs_with_its_own_template_environment_scaled(stack: LocalStack) -> None:
    """The consumer's process has the consumer's settings (not the API's), time settings divided by
    the scale; the API keeps its own in this process."""
    consumer = stack.sandbox.function("ConsumerFunction").environment
    api = stack.sandbox.function("ApiFunction").environment
    assert (consumer["BACKOFF_BASE_SECONDS"], consumer["BACKOFF_CAP_SECONDS"]) == ("0.0333333", "2")
    assert consumer["MAX_RECEIVE_COUNT"] == "19"
    assert api["RETRY_BUDGET_SECONDS"] != consumer["RETRY_BUDGET_SECONDS"]
    assert "MAX_RECEIVE_COUNT" not in api
    attributes = rehearsal_queue_attributes(stack)
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] in (20, "20")
    assert attributes["VisibilityTimeout"] == "1"  # 360 s / 900, at least 1 s
    assert stack.consumer_running


def rehearsal_queue_attributes(stack: LocalStack) -> dict[str, str]:
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint_url, region_name=stack.region)
    attributes: dict[str, str] = sqs.get_queue_attributes(
        QueueUrl=stack.main_queue_url, AttributeNames=["All"]
    )["Attributes"]
    return attributes


def test_traffic_reports_api_answers_with_their_reason_and_consumer_invocations(stack: LocalStack) -> None:
    seen: list[Traffic] = []
    key = stack.write_key
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    assert post_json(f"{stack.api_url}/v1/track", track("t-1"), auth)[0] == 200
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint_url, region_name=stack.region)
    sqs.send_message(QueueUrl=stack.main_queue_url, MessageBody=json.dumps(track("t-2")))
    deadline = time.monotonic() + 30
    while not any(t.source == "consumer" for t in seen) and time.monotonic() < deadline:
        seen = stack.traffic()
        time.sleep(0.05)
    api, consumer = seen[0], next(t for t in seen if t.source == "consumer")
    assert (api.source, api.detail["status"], api.summary) == (
        "api",
        200,
        "POST /v1/track -> 200: 1 delivered",
    )
    assert api.detail["metrics"]["EventsDelivered"] == 1
    assert consumer.summary == "1 record(s) (receive 1): 1 delivered"
    assert stack.traffic(since=consumer.seq) == []


def test_consumer_summary_names_retries_dead_letters_and_crashes() -> None:
    records = [{"messageId": "a", "receiveCount": 3}, {"messageId": "b", "receiveCount": 4}]
    retried = {"records": records, "metrics": {"EventsRetried": 2, "DlqWrites": 1}, "error": None}
    crashed = {"records": records[:1], "metrics": {}, "error": "RuntimeError: boom"}
    assert consumer_summary(retried) == (
        "2 record(s) (receives 3-4): 0 delivered,"
        " 2 left in the queue for retry (backing off), 1 dead-lettered"
    )
    assert consumer_summary(crashed) == (
        "1 record(s) (receive 3): the function failed (RuntimeError: boom); all come back"
    )
