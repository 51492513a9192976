"""The hostile corpus (corpus.py) through both entry points, next to a good event.

SQS: the hostile body is one record, a good event another, in the same invocation of the real
consumer handler (warm) over the template's queues. The good event is delivered, once; the
hostile record is delivered when Heap takes it as it is, else every event of it is in the DLQ
with the expected ErrorClass and a reason naming the field; nothing stays in the queue.

API: the hostile event and a good one in one /v1/batch request (or the hostile body as the whole
request) to the real API handler. Invalid: a 4xx with a JSON error body naming index 0 and the
field, and nothing of the request reaches Heap (it is refused whole). Acceptable: 200, both in
Heap. Unsupported (alias): 200, listed as rejected, in the DLQ, the good one delivered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from corpus import CORPUS, Hostile
from proof_support import (
    ApiFunction,
    SqsFunction,
    Stage,
    api_event,
    assert_conserved,
    take_census,
)

from heap_forwarder_tools.local.poller import EventSourceMapping
from sample_events import raw

SQS_CASES = [c for c in CORPUS if c.sqs != "n/a"]
API_CASES = CORPUS
# Inputs that show a known bug, by id (each an xfail of the API path); none open today.
KNOWN_BUGS: dict[str, str] = {}


def good_event(case: Hostile) -> dict[str, Any]:
    return raw("product_viewed", messageId=f"good-{case.id}", anonymousId=f"good-anon-{case.id}")


@pytest.fixture(scope="module")
def consumer(module_stage: Stage) -> Iterator[SqsFunction]:
    """One warm consumer for the module (the corpus changes inputs, never the environment)."""
    yield module_stage.consumer()


@pytest.fixture(scope="module")
def api(module_stage: Stage) -> Iterator[ApiFunction]:
    yield module_stage.api()


def hostile_delivered(census: Any, good: dict[str, Any]) -> int:
    """What Heap holds besides the good event: tracked events, user and account profiles."""
    others = [e for e in census.tracked_events if e.get("idempotency_key") != good["messageId"]]
    return len(others) + len(census.users) + len(census.accounts)


# What completion may add to an event (inbound.py ``fill``), on both paths.
FILLED = {"messageId", "receivedAt", "timestamp"}


def assert_completed(sent: Any, letter: Any) -> None:
    """``letter`` is ``sent`` with at most the fields completion fills, where they were missing."""
    if not isinstance(sent, dict):
        assert letter == sent
        return
    kept = {k: v for k, v in sent.items() if not (k in FILLED and v in (None, ""))}
    assert {k: letter.get(k) for k in kept} == kept
    assert set(letter) - set(kept) <= FILLED, sorted(letter)


def _param(case: Hostile, path: str) -> Any:
    marks = []
    if case.id in KNOWN_BUGS and path == "api":
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[case.id]))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c, "sqs") for c in SQS_CASES])
def test_sqs_consumer(case: Hostile, stage: Stage, consumer: SqsFunction) -> None:
    assert isinstance(case.text, str)
    good = good_event(case)
    stage.send([case.text, json.dumps(good)])

    EventSourceMapping(stage.sqs, stage.main_url, consumer, batch_size=10).drain(max_polls=5)

    census = take_census(stage.sandbox)
    assert consumer.responses[-1] == {"batchItemFailures": []}  # nothing left to retry
    assert census.queued == [] and census.in_flight == 0
    assert census.tracked[good["messageId"]] == 1  # the good neighbour, delivered once
    letters = census.dead_letters
    assert all(letter.has_reason for letter in letters), [m.attributes for m in letters]
    assert not census.letters_of(good["messageId"])
    if case.sqs == "delivered":
        assert letters == []
        assert hostile_delivered(census, good) == 1
        assert max(census.tracked.values()) == 1
    elif case.sqs == "none":
        assert letters == []
        assert hostile_delivered(census, good) == 0
    else:
        assert hostile_delivered(census, good) == 0
        assert len(letters) == case.letters, [(m.error_class, m.reason) for m in letters]
        assert {m.error_class for m in letters} == {case.sqs}, [m.reason for m in letters]
        assert all(case.field in m.reason for m in letters), [m.reason for m in letters]
        if len(letters) == 1 and case.kind == "event" and letters[0].parsed:
            # The letter holds the event as it came, completed as the consumer completed it (or the
            # record body, when it was not JSON).
            assert_completed(json.loads(case.text), letters[0].document)
        elif case.sqs == "invalid_json":
            assert letters[0].body == case.text


@pytest.mark.parametrize("case", [_param(c, "api") for c in API_CASES])
def test_api(case: Hostile, stage: Stage, api: ApiFunction) -> None:
    good = good_event(case)
    answer = api.invoke(api_event("/v1/batch", data=case.api_body(good), headers=case.headers))

    census = take_census(stage.sandbox)
    assert isinstance(answer.body, dict), answer.body  # every answer is a JSON object
    assert census.queued == []  # nothing was parked: Heap is healthy
    if case.api == "delivered":
        assert answer.status == 200, answer.body
        assert answer.body["rejected"] == []
        if case.kind == "event":
            assert answer.body["delivered"] == 2
            assert census.tracked[good["messageId"]] == 1
            assert hostile_delivered(census, good) == 1
        assert census.dead_letters == []
        return
    if case.api.startswith("rejected:"):
        assert answer.status == 200, answer.body
        assert answer.body["delivered"] == 1
        ((rejected),) = answer.body["rejected"]
        assert (rejected["index"], rejected["error"]) == (0, case.api.split(":", 1)[1])
        assert rejected["reason"]
        (letter,) = census.dead_letters
        assert letter.error_class == rejected["error"] and letter.reason
        assert census.tracked[good["messageId"]] == 1
        return
    # Refused whole: a 4xx with the documented JSON error body, nothing sent anywhere.
    assert 400 <= answer.status < 500, answer.body
    assert answer.body["error"] == answer.body["code"] and answer.body["message"]
    assert hostile_delivered(census, good) == 0 and census.tracked[good["messageId"]] == 0
    assert census.dead_letters == []
    status, _, error = case.api.partition(":")
    assert answer.status == int(status), answer.body
    if answer.status == 413:
        assert answer.body["error"] == "payload_too_large"
        if case.kind == "event":
            assert [p["index"] for p in answer.body["problems"]] == [0]
        return
    assert answer.body["error"] == error, answer.body
    if error == "invalid_events":
        problems = answer.body["problems"]
        assert problems, answer.body
        if case.letters > 1:  # a batch of garbage: each of its events named
            assert sorted({p["index"] for p in problems}) == list(range(case.letters))
        else:
            assert {p["index"] for p in problems} == {0}, problems
            assert any(p["field"] == case.field for p in problems), problems
        assert all(p["message"] for p in problems)


def test_the_corpus_is_big_enough_and_covers_both_paths() -> None:
    assert len(CORPUS) >= 50
    assert len(SQS_CASES) >= 50
    outcomes = {c.sqs for c in SQS_CASES}
    assert {"delivered", "invalid_json", "invalid_event", "heap_rule", "unsupported"} <= outcomes


def test_a_batch_of_every_hostile_event_conserves_each_of_them(stage: Stage, consumer: SqsFunction) -> None:
    """All hostile records at once, in invocations of ten: nothing lost, nothing doubled."""
    good = [good_event(c) for c in SQS_CASES[:5]]
    stage.send([c.text for c in SQS_CASES if isinstance(c.text, str)] + [json.dumps(g) for g in good])

    EventSourceMapping(stage.sqs, stage.main_url, consumer, batch_size=10).drain(max_polls=50)

    census = take_census(stage.sandbox)
    assert census.queued == [] and census.in_flight == 0
    assert_conserved(good, census, others_ok=True)
    delivered_cases = [c for c in SQS_CASES if c.sqs == "delivered"]
    letters = sum(c.letters for c in SQS_CASES if c.sqs not in ("delivered", "none"))
    assert len(census.dead_letters) == letters
    assert hostile_delivered(census, good[0]) - len(good) + 1 == len(delivered_cases)


@pytest.mark.parametrize(
    "heap_fault",
    [
        pytest.param(lambda e: e.fail_next(10**6, 401), id="heap-unavailable-events-parked"),
        pytest.param(
            lambda e: e.reject_event_names(["Product Viewed"]), id="heap-refuses-event-dead-lettered"
        ),
    ],
)
def test_an_overflowing_number_in_the_batch_context_never_crashes_the_api(
    heap_fault: Any, stage: Stage, api: ApiFunction
) -> None:
    case = CORPUS[0]
    good = good_event(case)
    body = b'{"batch":[' + json.dumps(good).encode() + b'],"context":{"screen":{"density":1e400}}}'
    heap_fault(stage.emulator)

    answer = api.invoke(api_event("/v1/batch", data=body))

    assert answer.status in (202, 200, 400), answer.body
    census = take_census(stage.sandbox)
    assert_conserved(
        [good], census, refused=[good["messageId"]] if answer.status == 400 else [], strict=False
    )
