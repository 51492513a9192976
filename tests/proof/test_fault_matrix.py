"""The fault matrix: each cell a fault of Heap or of AWS, each asserting the conservation law.

Every cell sends the same small mixed set through the real handlers, over moto's SQS with the
template's queues and redrive policy (the main queue moves a message to the DLQ on the receive
after the 20th; the consumer parks still-failing events itself, with the reason, on the 19th):

* record A: a track event; record B: an identify (user properties + a Heap user id link);
* record C: ``{"batch": [track "Cell Probe", page, group, identify, bad]}`` where ``bad`` has no
  identity (a permanent Heap rule): it must end in the DLQ once, with its own reason, whatever
  the fault. Two identify calls: their Heap user id links go as concurrent single requests.

SQS path: the records go to the main queue and Lambda's event source mapping (played locally,
ReportBatchItemFailures) drains it through the real consumer handler, kept warm. API path: the
good events are POSTed to /v1/batch and ``bad`` to /v1/track (refused, 400); then the fault is
healed and the consumer settles whatever the API parked. After each run every event must be in
exactly one place (see proof_support.assert_conserved), and in the place the cell expects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from proof_support import (
    Stage,
    assert_conserved,
    take_census,
)

from heap_forwarder_tools.local.poller import EventSourceMapping, as_lambda_record
from sample_events import raw

PROBE = "Cell Probe"  # the event name Heap refuses in the "400 for one event" cells
OUTAGE = 10**6  # "every request from now on"
NO_DEADLINE_MARGIN = {"DEADLINE_MARGIN_SECONDS": "0"}
# Heap requests that may take 0.8 s at most (0.2 connect + 0.6 read): a request is only started
# if it can end before the Lambda deadline.
DEADLINE_TIMEOUTS = {"HEAP_CONNECT_TIMEOUT_SECONDS": "0.2", "HEAP_READ_TIMEOUT_SECONDS": "0.6"}


def mixed_events(prefix: str) -> dict[str, dict[str, Any]]:
    """The cell's events by role, each with its own messageId (and identity, for identify/group)."""
    return {
        "t1": raw("order_completed", messageId=f"{prefix}-t1"),
        "i1": raw("identify", messageId=f"{prefix}-i1", anonymousId=f"{prefix}-anon-i1"),
        "t2": raw("product_added", messageId=f"{prefix}-t2", event=PROBE),
        "p1": raw("page", messageId=f"{prefix}-p1"),
        "g1": raw("group", messageId=f"{prefix}-g1", groupId=f"{prefix}-org"),
        "i2": raw("identify", messageId=f"{prefix}-i2", anonymousId=f"{prefix}-anon-i2"),
        "bad": raw("order_completed", messageId=f"{prefix}-bad", anonymousId=None, userId=None),
    }


def record_bodies(events: Mapping[str, dict[str, Any]]) -> list[str]:
    batch = [events[r] for r in ("t2", "p1", "g1", "i2", "bad")]
    return [json.dumps(events["t1"]), json.dumps(events["i1"]), json.dumps({"batch": batch})]


Hook = Callable[[Stage, int], None]


def _noop(stage: Stage) -> None:
    return None


def _noop_n(stage: Stage, n: int) -> None:
    return None


@dataclass(frozen=True)
class Cell:
    id: str
    arm: Callable[[Stage], None] = _noop  # the fault, before anything is sent
    before: Hook = _noop_n  # before each invocation (the API: before its one request)
    after: Hook = _noop_n  # after each invocation
    heal: Callable[[Stage], None] = _noop  # API path: the fault over, before the consumer runs
    env: Mapping[str, str] = field(default_factory=dict)  # both functions
    remaining_seconds: float | None = None  # the time Lambda says is left (with no margin)
    sqs: Mapping[str, str] = field(default_factory=dict)  # role -> final place; default heap
    api: Mapping[str, str] | None = field(default_factory=dict)  # None: not an API cell
    api_status: int = 200  # the answer to the good events' request
    bad_api_status: int = 400  # the answer to the bad event's request
    max_letters: int = 1
    reasonless_letters_ok: bool = False
    strict: bool = True  # exactly one place per event once settled (see assert_conserved)
    invocations: int | None = None  # SQS path: how many invocations it takes to settle
    reason: str = ""  # SQS path: in the reason of every retries_exhausted letter
    sqs_run: Callable[[Stage, Any, list[str]], None] | None = None  # instead of draining
    api_repeats: int = 1
    check_sqs: Callable[[Stage, Any], None] | None = None
    check_api: Callable[[Stage, list[Any]], None] | None = None


# ------------------------------------------------------------------------------------ faults
def fail_next(count: int, status: int, retry_after: float | None = None) -> Callable[[Stage], None]:
    def arm(stage: Stage) -> None:
        stage.emulator.fail_next(count, status, retry_after=retry_after)

    return arm


def outage_for(invocations: int, status: int = 503) -> tuple[Hook, Hook]:
    """Heap answers ``status`` to everything during the first ``invocations`` invocations."""

    def before(stage: Stage, n: int) -> None:
        if n <= invocations:
            stage.emulator.fail_next(OUTAGE, status)

    def after(stage: Stage, n: int) -> None:
        if n <= invocations:
            stage.heal_outage()

    return before, after


def slow_for(invocations: int, seconds: float) -> tuple[Hook, Hook]:
    def before(stage: Stage, n: int) -> None:
        if n <= invocations:
            stage.emulator.set_latency(seconds)

    def after(stage: Stage, n: int) -> None:
        if n <= invocations:
            stage.emulator.set_latency(0)

    return before, after


def ssm_back_after(invocations: int, break_it: Callable[[Stage], None]) -> tuple[Hook, Hook]:
    def before(stage: Stage, n: int) -> None:
        if n == 1:
            break_it(stage)

    def after(stage: Stage, n: int) -> None:
        if n == invocations:
            stage.restore_parameters()

    return before, after


def dlq_back_after(invocations: int) -> tuple[Hook, Hook]:
    def before(stage: Stage, n: int) -> None:
        if n == 1:
            stage.delete_dlq()

    def after(stage: Stage, n: int) -> None:
        if n == invocations:
            stage.restore_dlq()

    return before, after


def reject_probe(stage: Stage) -> None:
    stage.emulator.reject_event_names([PROBE])


def requests(stage: Stage, path: str = "/api/track") -> dict[str, int]:
    by_outcome: dict[str, int] = stage.emulator.stats()["requests"].get(path, {})
    return by_outcome


# ------------------------------------------------------------------------------------ checks
def saw(status: str, path: str = "/api/track") -> Callable[[Stage, Any], None]:
    def check(stage: Stage, _: Any) -> None:
        assert requests(stage, path).get(status, 0) >= 1, requests(stage, path)

    return check


def deduplicated(stage: Stage, _: Any) -> None:
    """The events Heap stored but the client never heard of came again: Heap dropped the repeats."""
    assert stage.emulator.stats()["duplicates"] >= 1


def first_invocation_failed_only_b_and_c(stage: Stage, function: Any) -> None:
    """Record A's only Heap request went before the deadline; B and C still had some to send."""
    assert function.invocations >= 2
    assert len(function.responses[0]["batchItemFailures"]) == 2


def answered_parked(count: int) -> Callable[[Stage, list[Any]], None]:
    def check(stage: Stage, answers: list[Any]) -> None:
        assert answers[0].body["parked"] == count, answers[0].body

    return check


def answered_rejected(*roles: str) -> Callable[[Stage, list[Any]], None]:
    def check(stage: Stage, answers: list[Any]) -> None:
        listed = sorted(r["messageId"].rsplit("-", 1)[-1] for r in answers[0].body["rejected"])
        assert listed == sorted(roles), answers[0].body
        assert all(r["reason"] for r in answers[0].body["rejected"])

    return check


# ------------------------------------------------------------------------------------ SQS runs
def duplicate_delivery(stage: Stage, function: Any, bodies: list[str]) -> None:
    """SQS hands the same records twice (at-least-once), and a producer sent record A twice."""
    stage.send([bodies[0]])  # the producer's duplicate: another message, the same event
    sqs = stage.sqs
    messages = []
    while batch := sqs.receive_message(
        QueueUrl=stage.main_url, MaxNumberOfMessages=10, VisibilityTimeout=60, AttributeNames=["All"]
    ).get("Messages", []):
        messages.extend(batch)
    assert len(messages) == 4
    arn = sqs.get_queue_attributes(QueueUrl=stage.main_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    event = {"Records": [as_lambda_record(m, arn) for m in messages]}
    first, second = function(event), function(event)  # the same receive, handed over twice
    assert first == second == {"batchItemFailures": []}
    sqs.delete_message_batch(
        QueueUrl=stage.main_url,
        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
    )


def duplicate_request(stage: Stage, answers: list[Any]) -> None:
    assert [a.status for a in answers] == [200, 200]
    assert [a.body["delivered"] for a in answers] == [6, 6]  # Heap deduplicated the second copy


# ------------------------------------------------------------------------------------ the cells
EXHAUSTED = "dlq:retries_exhausted"
GOOD = ("t1", "i1", "t2", "p1", "g1", "i2")


def every(place: str, roles: tuple[str, ...] = GOOD) -> dict[str, str]:
    return dict.fromkeys(roles, place)


# Without the app ID the API cannot map or check Heap's rules: it refuses only what breaks the
# event spec and parks the rest (202), the bad event included; the consumer dead-letters it later.
WITHOUT_PIPELINE_API: dict[str, Any] = {
    "api_status": 202,
    "bad_api_status": 202,
    "api": {"bad": "dlq:heap_rule"},
}

_outage_2 = outage_for(2)
_slow_1 = slow_for(1, 0.6)
# Each Heap request takes 0.4 s; 1.5 s left: the first two requests start in time (before
# 1.5 - 0.8 = 0.7 s), the third (at 0.8 s) would not end before the deadline and is not sent.
_deadline_slow = slow_for(1, 0.4)
_ssm_back = ssm_back_after(2, Stage.delete_app_id)
_app_id_fixed = ssm_back_after(2, lambda stage: stage.set_app_id("not-a-heap-app"))
_dlq_back = dlq_back_after(3)

CELLS = [
    Cell("heap-500", arm=fail_next(2, 500), check_sqs=saw("500")),
    Cell("heap-502", arm=fail_next(2, 502), check_sqs=saw("502")),
    Cell(
        "heap-503-outage-beyond-the-retry-window",
        arm=fail_next(OUTAGE, 503),
        heal=Stage.heal_outage,
        sqs=every(EXHAUSTED),
        invocations=19,  # the consumer parks on the 19th receive, before SQS's redrive (20)
        reason="HTTP 503",
        api_status=202,
        check_api=answered_parked(6),
    ),
    Cell(
        "heap-503-for-two-receives",
        before=_outage_2[0],
        after=_outage_2[1],
        invocations=3,
        api_status=202,
        check_api=answered_parked(6),
    ),
    Cell(
        "heap-429-retry-after-short",
        arm=fail_next(1, 429, retry_after=0.05),
        env={"RETRY_BUDGET_SECONDS": "1"},
        invocations=1,  # waited Retry-After and retried within the invocation
        check_sqs=saw("429"),
    ),
    Cell(
        "heap-429-retry-after-beyond-the-budget",
        arm=fail_next(1, 429, retry_after=120),
        invocations=2,  # not waited for in process: the queue redelivers
        check_sqs=saw("429"),
        api_status=202,
        check_api=answered_parked(3),  # the three track events of the refused bulk
    ),
    Cell("heap-429-no-retry-after", arm=fail_next(2, 429), check_sqs=saw("429")),
    Cell(
        "heap-slow-beyond-the-read-timeout",
        env={"RETRY_BUDGET_SECONDS": "0.05"},
        before=_slow_1[0],
        after=_slow_1[1],
        invocations=2,
        check_sqs=deduplicated,
        api_status=202,
        check_api=answered_parked(6),
    ),
    Cell(
        "connection-reset-before-heap-stored",
        arm=lambda s: s.emulator.drop_connections(1),
        check_sqs=saw("dropped"),
    ),
    Cell(
        "connection-reset-after-heap-stored",
        arm=lambda s: s.emulator.drop_connections(1, after_store=True),
        check_sqs=deduplicated,
    ),
    Cell(
        "heap-400-for-one-event-in-the-bulk",
        arm=reject_probe,
        sqs={"t2": "dlq:heap_rejected"},
        invocations=1,
        api={"t2": "dlq:heap_rejected"},
        check_api=answered_rejected("t2"),
    ),
    Cell(
        "heap-400-for-every-event-invalid-app-id",
        arm=lambda s: s.set_app_id("not-a-heap-app"),
        heal=Stage.restore_parameters,
        sqs=every(EXHAUSTED),
        invocations=19,
        reason="app ID",
        api_status=202,
        check_api=answered_parked(6),
    ),
    Cell(
        "heap-400-invalid-app-id-fixed-after-two-receives",
        before=_app_id_fixed[0],
        after=_app_id_fixed[1],
        heal=Stage.restore_parameters,
        env={"POWERTOOLS_PARAMETERS_MAX_AGE": "0"},
        invocations=3,
        api_status=202,
        check_api=answered_parked(6),
    ),
    Cell(
        "heap-401",
        arm=fail_next(OUTAGE, 401),
        heal=Stage.heal_outage,
        sqs=every(EXHAUSTED),
        invocations=19,
        reason="HTTP 401",
        api_status=202,
        check_api=answered_parked(6),
    ),
    Cell("heap-413-once-then-split", arm=fail_next(1, 413), invocations=1, check_sqs=saw("413")),
    Cell(
        "heap-413-for-every-request",
        arm=fail_next(OUTAGE, 413),
        sqs=every("dlq:heap_rejected"),
        invocations=1,
        api=every("dlq:heap_rejected"),
        check_api=answered_rejected(*GOOD),
    ),
    Cell(
        "ssm-parameter-deleted",
        arm=Stage.delete_app_id,
        heal=Stage.restore_parameters,
        # The pipeline never ran: each record is parked whole, bad event included.
        sqs={**every(EXHAUSTED), "bad": EXHAUSTED},
        invocations=19,
        reason="SSM parameter /heap-forwarder/app-id",
        **WITHOUT_PIPELINE_API,
    ),
    Cell(
        "ssm-parameter-name-missing",
        env={"HEAP_APP_ID_PARAMETER": "/heap-forwarder/no-such-parameter"},
        sqs={**every(EXHAUSTED), "bad": EXHAUSTED},
        invocations=19,
        reason="/heap-forwarder/no-such-parameter",
        **WITHOUT_PIPELINE_API,
    ),
    Cell(
        "ssm-unreachable",
        env={"AWS_ENDPOINT_URL_SSM": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"},
        sqs={**every(EXHAUSTED), "bad": EXHAUSTED},
        invocations=19,
        reason="configuration fault: cannot read SSM parameter",
        # The write key cannot be checked either: 503 + Retry-After, the caller keeps the events.
        api={**every("returned"), "bad": "returned"},
        api_status=503,
        bad_api_status=503,
    ),
    Cell(
        "ssm-back-after-two-receives",
        before=_ssm_back[0],
        after=_ssm_back[1],
        heal=Stage.restore_parameters,
        env={"POWERTOOLS_PARAMETERS_MAX_AGE": "0"},
        invocations=3,
        **WITHOUT_PIPELINE_API,
    ),
    Cell(
        "dlq-send-failing-then-back",
        arm=reject_probe,
        before=_dlq_back[0],
        after=_dlq_back[1],
        heal=Stage.restore_dlq,
        sqs={"t2": "dlq:heap_rejected"},
        invocations=4,  # record C kept in the queue while its letters cannot be written
        api={"t2": "dlq:heap_rejected"},
        api_status=202,
        check_api=answered_parked(1),  # the letter could not be written: parked instead
    ),
    Cell(
        "dlq-send-failing-for-good",
        arm=reject_probe,
        env={"DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-dlq"},
        # The consumer cannot write its letters: record C stays in the queue until SQS's own
        # redrive moves it, whole, to the DLQ after the 20th receive. Nothing is lost, but SQS's
        # move carries no reason, and the record's delivered events come along (a redrive of
        # them is deduplicated by Heap): the one cell where an event may be in two places.
        sqs={"t2": "dlq:-", "bad": "dlq:-", **every("heap+dlq:-", ("p1", "g1", "i2"))},
        invocations=20,
        reasonless_letters_ok=True,
        strict=False,
        api={"t2": "dlq:heap_rejected"},
        api_status=202,
        check_api=answered_parked(1),
    ),
    Cell(
        "lambda-deadline-mid-batch",
        before=_deadline_slow[0],
        after=_deadline_slow[1],
        env=DEADLINE_TIMEOUTS,
        remaining_seconds=1.5,
        invocations=2,
        check_sqs=first_invocation_failed_only_b_and_c,
        api_status=202,
        check_api=answered_parked(3),  # the identifies and the group: their requests not started
    ),
    Cell(
        "lambda-deadline-already-passed",
        env=DEADLINE_TIMEOUTS,
        remaining_seconds=0.0,
        sqs=every(EXHAUSTED),
        invocations=19,
        reason="deadline",
        api_status=202,
        check_api=answered_parked(6),
    ),
    Cell(
        "duplicate-delivery",
        sqs_run=duplicate_delivery,
        max_letters=2,  # the bad event, dead-lettered by each delivery of its record
        api_repeats=2,
        check_api=duplicate_request,
    ),
]
API_CELLS = [c for c in CELLS if c.api is not None]


def _expected(cell_places: Mapping[str, str], events: Mapping[str, dict[str, Any]], bad: str) -> dict:
    places = {role: cell_places.get(role, "heap") for role in GOOD}
    places["bad"] = cell_places.get("bad", bad)
    return {events[role]["messageId"]: place for role, place in places.items()}


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_sqs_path(cell: Cell, stage: Stage) -> None:
    events = mixed_events(f"sqs-{cell.id}")
    bodies = record_bodies(events)
    env = dict(cell.env)
    if cell.remaining_seconds is not None:
        env.update(NO_DEADLINE_MARGIN)
    function = stage.consumer(env, remaining_seconds=cell.remaining_seconds)
    function.before = lambda n: cell.before(stage, n)
    function.after = lambda n: cell.after(stage, n)
    cell.arm(stage)
    stage.send(bodies)

    if cell.sqs_run is not None:
        cell.sqs_run(stage, function, bodies)
    else:
        EventSourceMapping(stage.sqs, stage.main_url, function, batch_size=10).drain(max_polls=60)

    census = take_census(stage.sandbox)
    fates = assert_conserved(
        list(events.values()),
        census,
        max_letters=cell.max_letters,
        reasonless_letters_ok=cell.reasonless_letters_ok,
        strict=cell.strict,
    )
    assert fates == _expected(cell.sqs, events, "dlq:heap_rule")
    assert census.queued == []
    for letter in census.letters_of(events["bad"]["messageId"]):
        if letter.has_reason and letter.error_class == "heap_rule":
            assert letter.reason.startswith("identity: required")
    if cell.check_sqs is not None:
        cell.check_sqs(stage, function)
    if cell.invocations is not None:
        assert function.invocations == cell.invocations
    if cell.reason:
        exhausted = [m for m in census.dead_letters if m.error_class == "retries_exhausted"]
        assert exhausted
        assert all(
            m.reason.startswith("retries exhausted: ") and cell.reason in m.reason for m in exhausted
        ), [m.reason for m in exhausted]


@pytest.mark.parametrize("cell", API_CELLS, ids=[c.id for c in API_CELLS])
def test_api_path(cell: Cell, stage: Stage) -> None:
    events = mixed_events(f"api-{cell.id}")
    goods = [events[r] for r in GOOD]
    env = dict(cell.env)
    if cell.remaining_seconds is not None:
        env.update(NO_DEADLINE_MARGIN)
    api = stage.api(env, remaining_seconds=cell.remaining_seconds)
    cell.arm(stage)

    answers = []
    for n in range(1, cell.api_repeats + 1):
        cell.before(stage, n)
        try:
            answers.append(api.post("/v1/batch", {"batch": goods}))
        finally:
            cell.after(stage, n)
    refusal = api.post("/v1/track", events["bad"])

    # The answers: the batch as the cell expects, the bad event refused (or returned) whole.
    assert answers[0].status == cell.api_status, answers[0].body
    for answer in [*answers, refusal]:
        assert isinstance(answer.body, dict)
        if answer.status >= 400:
            assert answer.body["error"] and answer.body["message"]
    refused: set[str] = set()
    returned: set[str] = set()
    if cell.api_status == 503:
        assert answers[0].headers.get("retry-after")
        returned = {e["messageId"] for e in events.values()}
    assert refusal.status == cell.bad_api_status, refusal.body
    if refusal.status == 400:
        assert [p["field"] for p in refusal.body["problems"]] == ["identity"]
        refused = {events["bad"]["messageId"]}

    # Mid-way: each event somewhere (delivered, dead-lettered, parked or refused).
    census = take_census(stage.sandbox)
    assert_conserved(list(events.values()), census, refused=refused, returned=returned, strict=False)
    if cell.check_api is not None:
        cell.check_api(stage, answers)

    # The fault over, the consumer settles what was parked.
    cell.heal(stage)
    EventSourceMapping(stage.sqs, stage.main_url, stage.consumer(), batch_size=10).drain(max_polls=60)
    census = take_census(stage.sandbox)
    fates = assert_conserved(list(events.values()), census, refused=refused, returned=returned)
    assert cell.api is not None
    assert fates == _expected(cell.api, events, "refused")
