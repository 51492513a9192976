"""End to end over moto's SQS: the real handler, a warm process, Lambda's event source mapping
(ReportBatchItemFailures) and the queues' real redrive policy; Heap is the emulator over HTTP.

The backoff is 0 and the in-process retry budget 0 so that twenty receives take a moment; what
is asserted is where every event ends, never how long it took.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from heap_forwarder.entry import sqs as entry
from heap_forwarder_tools.local.invoke import LocalContext
from heap_forwarder_tools.local.poller import EventSourceMapping
from heap_forwarder_tools.local.sandbox import Sandbox, environment
from heap_forwarder_tools.local.template import FunctionSpec

FAST = {
    "BACKOFF_BASE_SECONDS": "0",
    "BACKOFF_CAP_SECONDS": "0",
    "RETRY_BUDGET_SECONDS": "0",
    "HEAP_CONNECT_TIMEOUT_SECONDS": "1",
    "HEAP_READ_TIMEOUT_SECONDS": "2",
}
SINGLE_EVENT_FILES = [
    "cart_viewed",
    "checkout_started",
    "custom_track",
    "identify",
    "order_completed",
    "page",
    "payment_info_entered",
    "product_added",
    "product_clicked",
    "product_list_viewed",
    "product_viewed",
    "products_searched",
    "screen",
]


class Function:
    """The ConsumerFunction in one warm Lambda process; ``before``/``after`` run around each call."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self.invocations = 0
        self.before: Callable[[int], None] = lambda n: None
        self.after: Callable[[int], None] = lambda n: None
        entry.reset()  # cold start on the first invocation

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.invocations += 1
        self.before(self.invocations)
        try:
            with environment(self.spec.environment):
                context = LocalContext(self.spec.logical_id, self.spec.memory_mb, self.spec.timeout)
                return entry.lambda_handler(event, context)
        finally:
            self.after(self.invocations)


def sample_bodies(kit) -> list[str]:
    bodies = []
    for name in SINGLE_EVENT_FILES:
        document = json.loads((kit.ROOT / "events" / "sqs" / f"{name}.json").read_text("utf-8"))
        (record,) = document["Records"]
        bodies.append(record["body"])
    return bodies


def message_ids(bodies: list[str]) -> list[str]:
    found = []
    for text in bodies:
        document = json.loads(text)
        found.extend(e["messageId"] for e in document.get("batch", [document]))
    return found


def send(sandbox: Sandbox, url: str, bodies: list[str]) -> None:
    sqs = sandbox.client("sqs")
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
        assert len(sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]) == len(entries)


def counts(sandbox: Sandbox, url: str) -> tuple[int, int]:
    attributes = sandbox.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
        "Attributes"
    ]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def outage(sandbox: Sandbox, receives: int) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """Heap answers 503 to everything during the first ``receives`` invocations, then recovers."""

    def before(n: int) -> None:
        if n <= receives:
            sandbox.emulator.fail_next(10**6, 503)

    def after(n: int) -> None:
        if n <= receives:
            assert sandbox.emulator.tracked_events() == []  # nothing got through the outage
            sandbox.emulator.reset()  # the faults disarmed: Heap is back

    return before, after


def test_the_sandbox_queues_follow_the_template(sandbox) -> None:
    sqs = sandbox.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=sandbox.queue_url("MainQueue"), AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["maxReceiveCount"] in (20, "20")
    assert redrive["deadLetterTargetArn"] == sandbox.resources["DeadLetterQueue"]["Arn"]
    assert sandbox.function("ConsumerFunction").environment["MAX_RECEIVE_COUNT"] == "19"


def test_an_outage_longer_than_the_retry_window_parks_every_event_with_a_reason(sandbox, kit) -> None:
    """Template numbers: the queue redrives after 20 receives, the consumer parks on the 19th."""
    function = Function(sandbox.function("ConsumerFunction", FAST))
    main = sandbox.queue_url("MainQueue")
    bodies = sample_bodies(kit)
    send(sandbox, main, bodies)
    sandbox.emulator.fail_next(10**6, 503)

    result = EventSourceMapping(sandbox.client("sqs"), main, function, batch_size=10).drain(max_polls=200)

    assert counts(sandbox, main) == (0, 0)  # nothing left behind
    letters = kit.read_queue(sandbox.client("sqs"), sandbox.queue_url("DeadLetterQueue"))
    parked = Counter(letter.event()["messageId"] for letter in letters)
    assert parked == Counter(message_ids(bodies))  # every event, exactly once
    for letter in letters:
        assert letter.error_class == "retries_exhausted"  # parked by the consumer, not redriven by SQS
        assert letter.reason.startswith("retries exhausted: ")
        assert "503" in letter.reason
    assert sandbox.emulator.tracked_events() == []
    assert sandbox.emulator.user_properties() == {}
    # Each message was received 19 times: failed 18 times, then parked and deleted.
    assert (result.received, result.failed, result.deleted) == (
        19 * len(bodies),
        18 * len(bodies),
        len(bodies),
    )


def test_an_outage_over_short_queues_parks_every_event_with_a_reason(sandbox, kit) -> None:
    """The same with queues of maxReceiveCount 4 and the consumer parking on the 3rd, 25 events."""
    sqs = sandbox.client("sqs")
    dlq = sqs.create_queue(QueueName="short-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    main = sqs.create_queue(
        QueueName="short-main",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "4"})},
    )["QueueUrl"]
    overrides = {**FAST, "MAX_RECEIVE_COUNT": "3", "RETRY_QUEUE_URL": main, "DEAD_LETTER_QUEUE_URL": dlq}
    function = Function(sandbox.function("ConsumerFunction", overrides))
    bodies = [kit.body(kit.track(n)) for n in range(20)] + [
        kit.body(kit.track(20), kit.track(21), kit.raw("identify", messageId="identify-1")),
        *sample_bodies(kit)[:2],
    ]
    send(sandbox, main, bodies)
    sandbox.emulator.fail_next(10**6, 500)

    result = EventSourceMapping(sqs, main, function, batch_size=10).drain(max_polls=100)

    assert counts(sandbox, main) == (0, 0)
    letters = kit.read_queue(sqs, dlq)
    assert Counter(letter.event()["messageId"] for letter in letters) == Counter(message_ids(bodies))
    assert {letter.error_class for letter in letters} == {"retries_exhausted"}
    assert all(letter.reason.startswith("retries exhausted: HTTP 500") for letter in letters)
    assert result.received == 3 * len(bodies)


def test_heap_back_after_two_receives_delivers_every_event_once(sandbox, kit) -> None:
    function = Function(sandbox.function("ConsumerFunction", FAST))
    function.before, function.after = outage(sandbox, receives=2)
    main = sandbox.queue_url("MainQueue")
    bodies = sample_bodies(kit)
    send(sandbox, main, bodies)

    # One batch holds every message: each invocation is one receive of all of them.
    poller = EventSourceMapping(sandbox.client("sqs"), main, function, batch_size=100)
    result = poller.drain(max_polls=20)

    assert function.invocations == 3
    assert (result.received, result.failed, result.deleted) == (3 * len(bodies), 2 * len(bodies), len(bodies))
    assert counts(sandbox, main) == (0, 0)
    assert kit.read_queue(sandbox.client("sqs"), sandbox.queue_url("DeadLetterQueue")) == []
    tracked = sandbox.emulator.tracked_events()
    keys = [e["idempotency_key"] for e in tracked]
    assert len(keys) == len(set(keys)) == 12  # every track-like event (identify is not one), once
    assert set(keys) <= set(message_ids(bodies))
    assert sandbox.emulator.stats()["duplicates"] == 0  # nothing reached Heap during the outage
    assert "130161d0-8fee-4167-aa4d-d151eed27c6b" in sandbox.emulator.user_properties()


def test_a_lost_acknowledgement_is_redelivered_and_deduplicated(sandbox, kit) -> None:
    """Heap stores the bulk but the connection drops before the answer: the records are retried,
    and Heap drops the repeats by idempotency key. At least once, and stored exactly once."""
    function = Function(sandbox.function("ConsumerFunction", FAST))
    main = sandbox.queue_url("MainQueue")
    bodies = [kit.body(kit.track(n)) for n in range(8)]
    send(sandbox, main, bodies)
    sandbox.emulator.drop_connections(1, after_store=True)

    result = EventSourceMapping(sandbox.client("sqs"), main, function, batch_size=100).drain(max_polls=20)

    assert function.invocations == 2
    assert result.failed == 8
    assert counts(sandbox, main) == (0, 0)
    keys = [e["idempotency_key"] for e in sandbox.emulator.tracked_events()]
    assert sorted(keys) == sorted(f"msg-{n}" for n in range(8))
    assert sandbox.emulator.stats()["duplicates"] == 8
    assert kit.read_queue(sandbox.client("sqs"), sandbox.queue_url("DeadLetterQueue")) == []


def _mixed(kit) -> tuple[list[str], dict[str, Any]]:
    bad = kit.track(2, anonymousId=None, userId=None)  # no identity: a Heap rule, permanent
    bodies = [kit.body(kit.track(1), bad, kit.track(3)), kit.body(kit.track(4))]
    return bodies, bad


@pytest.mark.parametrize("outage_receives", [10**6, 2], ids=["endless-outage", "two-receive-outage"])
def test_a_bad_event_in_a_batch_is_parked_once_whatever_the_outage(
    outage_receives: int, sandbox, kit
) -> None:
    function = Function(sandbox.function("ConsumerFunction", FAST))
    function.before, function.after = outage(sandbox, receives=outage_receives)
    main = sandbox.queue_url("MainQueue")
    bodies, bad = _mixed(kit)
    send(sandbox, main, bodies)

    EventSourceMapping(sandbox.client("sqs"), main, function, batch_size=10).drain(max_polls=100)

    assert counts(sandbox, main) == (0, 0)
    letters = kit.read_queue(sandbox.client("sqs"), sandbox.queue_url("DeadLetterQueue"))
    by_event = Counter(letter.event()["messageId"] for letter in letters)
    (bad_letter,) = [x for x in letters if x.event()["messageId"] == "msg-2"]
    assert bad_letter.event() == bad
    assert bad_letter.error_class == "heap_rule"  # its own reason, not the outage's
    assert bad_letter.reason.startswith("identity: required")
    if outage_receives == 2:
        assert function.invocations == 3
        assert by_event == Counter({"msg-2": 1})
        assert sorted(e["idempotency_key"] for e in sandbox.emulator.tracked_events()) == [
            "msg-1",
            "msg-3",
            "msg-4",
        ]
    else:
        assert function.invocations == 19
        assert by_event == Counter({"msg-1": 1, "msg-2": 1, "msg-3": 1, "msg-4": 1})
        assert {x.error_class for x in letters if x is not bad_letter} == {"retries_exhausted"}
        assert sandbox.emulator.tracked_events() == []


def test_heap_refusing_access_for_longer_than_the_window_parks_with_a_reason(sandbox, kit) -> None:
    function = Function(sandbox.function("ConsumerFunction", FAST))
    main = sandbox.queue_url("MainQueue")
    bodies = sample_bodies(kit)[:4]
    send(sandbox, main, bodies)
    sandbox.emulator.fail_next(10**6, 401)

    EventSourceMapping(sandbox.client("sqs"), main, function, batch_size=10).drain(max_polls=100)

    assert counts(sandbox, main) == (0, 0)
    letters = kit.read_queue(sandbox.client("sqs"), sandbox.queue_url("DeadLetterQueue"))
    assert Counter(x.event()["messageId"] for x in letters) == Counter(message_ids(bodies))
    assert {x.error_class for x in letters} == {"retries_exhausted"}
    assert all(x.reason.startswith("retries exhausted: ") and "HTTP 401" in x.reason for x in letters)


def _ssm_outage(sandbox, kit) -> tuple[list[str], list[Any]]:
    function = Function(sandbox.function("ConsumerFunction", {**FAST, "POWERTOOLS_PARAMETERS_MAX_AGE": "0"}))
    main = sandbox.queue_url("MainQueue")
    bodies = [kit.body(kit.track(1)), kit.body(kit.track(2), kit.track(3))]
    send(sandbox, main, bodies)
    sandbox.client("ssm").delete_parameter(Name="/heap-forwarder/app-id")

    EventSourceMapping(sandbox.client("sqs"), main, function, batch_size=10).drain(max_polls=100)

    assert counts(sandbox, main) == (0, 0)
    return bodies, kit.read_queue(sandbox.client("sqs"), sandbox.queue_url("DeadLetterQueue"))


def test_an_ssm_outage_longer_than_the_window_parks_every_record_with_a_reason(sandbox, kit) -> None:
    bodies, letters = _ssm_outage(sandbox, kit)
    assert sorted(x.body for x in letters) == sorted(bodies)  # every record, whole, once
    for letter in letters:
        assert letter.error_class == "retries_exhausted"  # by the consumer, not SQS's redrive
        assert letter.reason.startswith("retries exhausted: configuration fault: ")
        assert "SSM parameter /heap-forwarder/app-id" in letter.reason
