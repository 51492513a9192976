"""End to end over moto's SQS with the template's queues and redrive policy: a Heap outage
fills the dead-letter queue (with reasons), ``redrive`` brings the events back after recovery,
and the Heap emulator ends with every event exactly once."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from heap_forwarder_tools.emulator import HeapEmulator
from heap_forwarder_tools.local.invoke import LocalContext, load_handler
from heap_forwarder_tools.local.poller import EventSourceMapping
from heap_forwarder_tools.local.sandbox import LOCAL_APP_ID, Sandbox, environment
from heap_forwarder_tools.local.template import FunctionSpec
from heap_forwarder_tools.redrive import redrive

ROOT = Path(__file__).resolve().parents[3]
RAW = sorted((ROOT / "events" / "raw").glob("*.json"))
# The template's consumer settings, made fast: no backoff between receives, a short retry
# budget per invocation. MAX_RECEIVE_COUNT (19) and the queue's maxReceiveCount (20) stay real.
FAST = {
    "BACKOFF_BASE_SECONDS": "0",
    "BACKOFF_CAP_SECONDS": "0",
    "RETRY_BUDGET_SECONDS": "0.05",
    "HEAP_READ_TIMEOUT_SECONDS": "0.5",
    "HEAP_CONNECT_TIMEOUT_SECONDS": "0.5",
    # The template turns X-Ray on; there is no X-Ray segment outside Lambda.
    "POWERTOOLS_TRACE_DISABLED": "true",
}
TRACKED_TYPES = {"track", "page", "screen"}  # the types that become Heap track events


def make_events(count: int) -> list[dict[str, Any]]:
    """``count`` events cycling through events/raw (every type), each with its own messageId."""
    events = []
    for i in range(count):
        event = json.loads(RAW[i % len(RAW)].read_text("utf-8"))
        event["messageId"] = f"e2e-{i}-{uuid.uuid4()}"
        events.append(event)
    return events


def send(sandbox: Sandbox, events: list[dict[str, Any]]) -> int:
    """To the main queue as producers do: most one per message, some four in a ``{"batch": [...]}``
    body. Returns the number of messages sent."""
    sqs, url = sandbox.client("sqs"), sandbox.queue_url("MainQueue")
    i = messages = 0
    while i < len(events):
        if i % 10 == 5:
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"batch": events[i : i + 4]}))
            i += 4
        else:
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(events[i]))
            i += 1
        messages += 1
    return messages


@contextmanager
def consumer(sandbox: Sandbox, spec: FunctionSpec) -> Iterator[EventSourceMapping]:
    """The template's SQS event source on the consumer, kept warm between invocations as Lambda
    does (a cold start per invocation, as ``invoke()`` does, costs ~0.3 s of boto3 clients)."""
    with environment(spec.environment):
        handler, module = load_handler(spec)
        module.reset()

        def invoke(event: dict[str, Any]) -> Any:
            return handler(event, LocalContext(spec.logical_id, spec.memory_mb, spec.timeout))

        try:
            yield EventSourceMapping(
                sandbox.client("sqs"), sandbox.queue_url("MainQueue"), invoke, batch_size=100
            )
        finally:
            module.reset()


def message_count(sandbox: Sandbox, logical_id: str) -> int:
    attributes = sandbox.client("sqs").get_queue_attributes(
        QueueUrl=sandbox.queue_url(logical_id),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def tracked_ids(events: list[dict[str, Any]]) -> set[str]:
    return {e["messageId"] for e in events if e["type"] in TRACKED_TYPES}


def run_redrive(sandbox: Sandbox, lines: list[str], **options: Any) -> Any:
    return redrive(
        sandbox.client("sqs"),
        sandbox.queue_url("DeadLetterQueue"),
        sandbox.queue_url("MainQueue"),
        progress=lines.append,
        wait_seconds=0,
        **options,
    )


@pytest.fixture
def sandbox(aws_env: None) -> Iterator[Sandbox]:
    with Sandbox(template_path=ROOT / "template.yaml") as box:
        yield box


def test_outage_dead_letters_then_redrive_delivers_every_event_exactly_once(sandbox: Sandbox) -> None:
    events = make_events(30)
    messages = send(sandbox, events)
    assert messages < len(events)  # some bodies are batches
    assert sandbox.template["Resources"]["MainQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 20

    # Heap is down: every request answers 503, through 19 receives per message.
    sandbox.emulator.fail_next(10**6, 503)
    spec = sandbox.function("ConsumerFunction", FAST)
    assert spec.environment["MAX_RECEIVE_COUNT"] == "19"
    with consumer(sandbox, spec) as mapping:
        polled = mapping.drain()
    aliases = [e for e in events if e["type"] == "alias"]  # no Heap mapping: dead-lettered at once
    # Each message was received 19 times (the consumer parks it on the 19th), then deleted.
    assert polled.deleted == messages
    assert polled.received >= 19 * (messages - len(aliases))
    assert message_count(sandbox, "MainQueue") == 0

    letters = sandbox.dead_letters()
    by_class = Counter(letter.attributes["ErrorClass"] for letter in letters)
    assert by_class == {"retries_exhausted": len(events) - len(aliases), "unsupported": len(aliases)}
    assert sorted(json.loads(letter.body)["messageId"] for letter in letters) == sorted(
        e["messageId"] for e in events
    )
    for letter in letters:
        if letter.attributes["ErrorClass"] == "retries_exhausted":
            assert letter.attributes["Reason"].startswith("retries exhausted: ")
            assert "503" in letter.attributes["Reason"]
    assert sandbox.emulator.tracked_events() == []

    # On call: look first. A dry run moves nothing and hides nothing.
    lines: list[str] = []
    preview = run_redrive(sandbox, lines, dry_run=True)
    assert preview.moved == len(events)
    assert preview.by_reason == {"retries_exhausted": len(events) - len(aliases), "unsupported": len(aliases)}
    assert message_count(sandbox, "DeadLetterQueue") == len(events)
    assert message_count(sandbox, "MainQueue") == 0
    assert len(sandbox.dead_letters()) == len(events)  # all visible again

    # Heap recovers; redrive what the outage parked (the aliases would only come back).
    sandbox.emulator.reset()
    report = run_redrive(sandbox, lines, reasons=["retries_exhausted"])
    assert report.ok
    assert (report.moved, report.skipped, report.failed) == (len(events) - len(aliases), len(aliases), 0)
    assert lines[-1].startswith(f"moved {report.moved} / skipped {len(aliases)}")

    with consumer(sandbox, spec) as mapping:
        polled = mapping.drain()
    assert polled.received == polled.deleted == report.moved

    tracked = sandbox.emulator.tracked_events()
    keys = [event["idempotency_key"] for event in tracked]
    assert len(keys) == len(set(keys)) == len(tracked_ids(events))
    assert set(keys) == tracked_ids(events)
    assert sandbox.emulator.stats()["duplicates"] == 0
    identities = {e["anonymousId"] for e in events if e["type"] == "identify"}
    assert identities <= set(sandbox.emulator.user_properties())
    assert message_count(sandbox, "MainQueue") == 0
    left = sandbox.dead_letters()
    assert [letter.attributes["ErrorClass"] for letter in left] == ["unsupported"] * len(aliases)


def test_redriving_events_heap_already_holds_keeps_them_once(sandbox: Sandbox) -> None:
    events = make_events(30)
    early, late = events[:12], events[12:]
    fast = sandbox.function("ConsumerFunction", FAST)

    # Before the outage: the first events are delivered.
    send(sandbox, early)
    with consumer(sandbox, fast) as mapping:
        mapping.drain()
    assert {e["idempotency_key"] for e in sandbox.emulator.tracked_events()} == tracked_ids(early)

    # The outage: Heap answers 503 to everything. Producers send the rest, and re-send the
    # first six (at-least-once producers retry after a timeout) - those are already in Heap.
    resent = early[:6]
    with HeapEmulator(app_ids=(LOCAL_APP_ID,)) as down:
        down.fail_next(10**6, 503)
        outage = sandbox.function("ConsumerFunction", {**FAST, "HEAP_API_URL": down.url})
        send(sandbox, late + resent)
        with consumer(sandbox, outage) as mapping:
            mapping.drain()
    letters = sandbox.dead_letters()
    parked = [e for e in late + resent if e["type"] != "alias"]
    assert Counter(letter.attributes["ErrorClass"] for letter in letters)["retries_exhausted"] == len(parked)

    # Recovery: redrive everything; Heap already holds some of it.
    lines: list[str] = []
    report = run_redrive(sandbox, lines, reasons=["retries_exhausted"], match="503")
    assert report.moved == len(parked)
    with consumer(sandbox, fast) as mapping:
        mapping.drain()

    tracked = sandbox.emulator.tracked_events()
    keys = [event["idempotency_key"] for event in tracked]
    assert len(keys) == len(set(keys)) == len(tracked_ids(events))
    assert sandbox.emulator.stats()["duplicates"] == len(tracked_ids(resent))
    assert message_count(sandbox, "MainQueue") == 0
    assert {letter.attributes["ErrorClass"] for letter in sandbox.dead_letters()} <= {"unsupported"}
