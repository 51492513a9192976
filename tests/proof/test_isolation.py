"""Isolation under attack: refused minorities at any positions, refusal texts that look like a
configuration fault, refusals that travel from one sender to the other. The real handlers, moto's
SQS and the Heap emulator over HTTP; what is asserted is where each event ends.

The law every test here holds: every good event is delivered exactly once, every refused event
has exactly one dead letter that quotes Heap's reason, and no event is dead-lettered as
``retries_exhausted`` (nor answered as refused) unless Heap refused it when it was sent alone.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from proof_support import Stage, read_messages

from heap_forwarder_tools.local.poller import EventSourceMapping

# The limiter opened wide: these tests are about who ends where, not about pacing.
WIDE_OPEN = {"RATE_LIMIT_EVENTS_PER_MINUTE": "100000000", "RATE_LIMIT_BURST": "100000"}

# Texts a refusal may carry or an event may be named: words that a substring test would take
# for a configuration fault, and Heap's own phrasing.
ADVERSARIAL = [
    "Signup app_id mismatch",
    "app_id",
    "APP_ID invalid",
    "app id",
    "401",
    "401 Unauthorized",
    "403 Forbidden: app_id",
    "Invalid app_id",
    "postBody.app_id",
    "postBody.app_id: invalid",
    "every event alike",
    "e-mail jane@example.com",
]


def track(i: int, name: str = "Good Event") -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "userId": f"user-{i % 50}",
        "messageId": f"m-{i}",
        "timestamp": "2024-05-01T12:00:00Z",
        "properties": {"i": i},
    }


def drain(stage: Stage, overrides: dict[str, str] | None = None, *, max_receives: int = 30) -> None:
    consumer = stage.consumer({**WIDE_OPEN, **(overrides or {})})
    EventSourceMapping(stage.sqs, stage.main_url, consumer, batch_size=10).drain(max_receives)


def letters_by_message_id(stage: Stage) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for letter in read_messages(stage.sqs, stage.dlq_url):
        for event in letter.events():
            found.setdefault(str(event.get("messageId")), []).append(letter)
    return found


def assert_isolated(
    stage: Stage,
    events: list[dict[str, Any]],
    refused_names: set[str],
    heap_says: str = "HTTP 400 from Heap: postBody.events[0].event",
) -> None:
    tracked = Counter(str(e.get("idempotency_key")) for e in stage.emulator.tracked_events())
    letters = letters_by_message_id(stage)
    for event in events:
        mid = event["messageId"]
        if event["event"] in refused_names:
            assert tracked[mid] == 0, f"{mid} refused by Heap yet stored"
            assert len(letters.get(mid, [])) == 1, f"{mid}: {len(letters.get(mid, []))} dead letters"
            letter = letters[mid][0]
            assert letter.error_class == "heap_rejected", (mid, letter.error_class, letter.reason)
            assert heap_says in letter.reason, letter.reason
            assert "HTTP 400 from Heap" in letter.reason, letter.reason
        else:
            assert tracked[mid] == 1, f"{mid} (good) stored {tracked[mid]} times"
            assert mid not in letters, f"{mid} (good) dead-lettered: {letters[mid][0].reason}"


# ------------------------------------------------------------------------------ the findings


@pytest.mark.parametrize("refused_at", [(0, 5, 9), (0, 9), (1, 2, 3), (4,), tuple(range(10))])
def test_a_refused_minority_in_one_request_sinks_no_good_event(
    stage: Stage, refused_at: tuple[int, ...]
) -> None:
    """Finding 1: 10 events in one bulk request, Heap refusing those at 0, 5 and 9: on main none
    of the 7 good events reached Heap and all 10 ended "retries exhausted"."""
    stage.emulator.reject_event_names(["Refused Event"])
    events = [track(i, "Refused Event" if i in refused_at else "Good Event") for i in range(10)]
    stage.send([json.dumps(e) for e in events])
    consumer = stage.consumer(WIDE_OPEN)
    EventSourceMapping(stage.sqs, stage.main_url, consumer, batch_size=10).drain(1)
    assert consumer.invocations == 1  # decided in the first invocation: nothing retried
    assert_isolated(stage, events, {"Refused Event"})


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_an_event_whose_refusal_quotes_app_id_is_not_a_configuration_fault(stage: Stage, name: str) -> None:
    """Finding 1: an event named ``Signup app_id mismatch``, refused, made Heap's text contain
    ``app_id``: on main 0 of 10 were stored and 10 dead-lettered as retries exhausted."""
    stage.emulator.reject_event_names([name])
    events = [track(i, name if i == 3 else "Good Event") for i in range(10)]
    stage.send([json.dumps({"batch": events})])
    drain(stage)
    assert_isolated(stage, events, {name})


def test_an_event_parked_by_the_api_sinks_no_sqs_neighbour(stage: Stage) -> None:
    """Finding 1: an event the API parked (Heap down at the time) joins an SQS batch later and,
    refused there, took 5 other records down on main."""
    api = stage.api(WIDE_OPEN)
    parked = [track(100, "Refused Event"), track(101)]
    stage.emulator.fail_next(1000, 503)
    answer = api.post("/v1/batch", {"batch": parked})
    assert answer.status == 202, answer.body
    stage.emulator.reset()
    stage.emulator.reject_event_names(["Refused Event"])
    others = [track(i) for i in range(5)]
    stage.send([json.dumps(e) for e in others])
    drain(stage)
    assert_isolated(stage, parked + others, {"Refused Event"})


def test_the_api_answers_each_refused_event_with_heaps_reason(stage: Stage) -> None:
    api = stage.api(WIDE_OPEN)
    stage.emulator.reject_event_names(["Signup app_id mismatch"])
    events = [track(i, "Signup app_id mismatch" if i in (0, 5, 9) else "Good Event") for i in range(10)]
    answer = api.post("/v1/batch", {"batch": events})
    assert answer.status == 200, answer.body
    assert answer.body["delivered"] == 7
    assert [r["index"] for r in answer.body["rejected"]] == [0, 5, 9]
    assert {r["error"] for r in answer.body["rejected"]} == {"heap_rejected"}
    assert all("is not accepted" in r["reason"] for r in answer.body["rejected"])
    assert answer.body["parked"] == 0
    assert_isolated(stage, events, {"Signup app_id mismatch"})


# ------------------------------------------------------------------------------ the property

# Texts that head a Heap answer refusing the app ID itself: a refusal *without* a field path
# that starts so is indistinguishable from one (the client stops sending, rightly), so the
# anonymous refusals below never start with them. With a field path they may say anything.
SAYS_APP_ID = ("Invalid app_id", "postBody.app_id")
TEXTS = [*ADVERSARIAL, "user-7 jane@example.com app_id 401"]


def _text(anonymous: bool) -> st.SearchStrategy[str | None]:
    texts = [t for t in TEXTS if not (anonymous and t.startswith(SAYS_APP_ID))]
    return st.one_of(st.none(), st.sampled_from(texts))


# A mix: how many events, which are refused, the refused events' name, what Heap's refusal says
# (None: its own wording, which quotes the name), and whether its text names the item at all.
MIXES = st.tuples(st.integers(min_value=1, max_value=1000), st.booleans()).flatmap(
    lambda n_anonymous: st.tuples(
        st.just(n_anonymous[0]),
        st.sets(st.integers(min_value=0, max_value=n_anonymous[0] - 1), max_size=min(n_anonymous[0], 40)),
        st.sampled_from(ADVERSARIAL),
        _text(n_anonymous[1]),
        st.just(n_anonymous[1]),
    )
)
Mix = tuple[int, set[int], str, str | None, bool]


def over_mixes(test: Callable[[Stage, Mix], None]) -> Callable[..., None]:
    """The properties' examples: generated mixes, and three heavy ones always tried."""
    test = given(mix=MIXES)(test)
    for mix in (
        (1000, set(range(0, 1000, 25)), "Signup app_id mismatch", None, False),
        (1000, {0, 1, 499, 500, 998, 999}, "app id", "user-7 jane@example.com app_id 401", True),
        (3, {0, 1, 2}, "401", "Invalid app_id", False),
    ):
        test = example(mix=mix)(test)
    return settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )(test)


def _arm(stage: Stage, mix: Mix) -> tuple[list[dict[str, Any]], str]:
    """Reset the stage, make Heap refuse the mix's refused events; the events, and what each
    refused event's dead letter must quote."""
    n, refused, name, text, anonymous = mix
    stage.reset()
    stage.emulator.reject_event_names([name] if text is None else {name: text})
    stage.emulator.set_anonymous_refusals(anonymous)
    heap_says = text if text is not None else f"event name {name!r} is not accepted"
    if not anonymous:
        heap_says = f"postBody.events[0].event: {heap_says}"
    return [track(i, name if i in refused else "Good Event") for i in range(n)], heap_says


@over_mixes
def test_property_sqs_good_events_delivered_once_refused_ones_dead_lettered_once(
    stage: Stage, mix: Mix
) -> None:
    events, heap_says = _arm(stage, mix)
    # One record per 500 events: several records of one batch, one bulk request per 1,000.
    stage.send([json.dumps({"batch": events[i : i + 500]}) for i in range(0, len(events), 500)])
    drain(stage)
    assert_isolated(stage, events, {mix[2]}, heap_says)


@over_mixes
def test_property_api_good_events_delivered_once_refused_ones_dead_lettered_once(
    stage: Stage, mix: Mix
) -> None:
    events, heap_says = _arm(stage, mix)
    answer = stage.api(WIDE_OPEN).post("/v1/batch", {"batch": events})
    assert answer.status in (200, 202), answer.body
    assert sorted(r["index"] for r in answer.body["rejected"]) == sorted(mix[1])
    assert answer.body["delivered"] + len(answer.body["rejected"]) + answer.body["parked"] == len(events)
    drain(stage)  # whatever was parked goes through the consumer
    assert_isolated(stage, events, {mix[2]}, heap_says)


# ------------------------------------------------------------------------------ a trickling Heap
# Heap's requests bounded at 1 + 2 s; the function told it has 8 s left (3 s of them the
# template's margin): it must answer within those 8 s, whatever Heap's answer does.
SHORT_TIMEOUTS = {"HEAP_CONNECT_TIMEOUT_SECONDS": "1", "HEAP_READ_TIMEOUT_SECONDS": "2"}
REMAINING = 8.0


def test_a_trickling_heap_cannot_hold_the_consumer_past_its_deadline(stage: Stage) -> None:
    """Finding 2: 200 and headers at once, then a byte a second: told it had 20 s left, the
    consumer returned after 45 s on main (each read was short, the request was not)."""
    stage.emulator.trickle_next(1000, bytes_per_second=1, body="x" * 600)
    events = [track(i) for i in range(5)]
    stage.send([json.dumps(e) for e in events])
    consumer = stage.consumer({**WIDE_OPEN, **SHORT_TIMEOUTS}, remaining_seconds=REMAINING)
    started = time.monotonic()
    EventSourceMapping(stage.sqs, stage.main_url, consumer, batch_size=10).poll_once()
    elapsed = time.monotonic() - started
    assert elapsed < REMAINING, f"the invocation took {elapsed:.1f}s with {REMAINING}s left"
    failed = consumer.responses[0]["batchItemFailures"]
    assert len(failed) == 5  # every record comes back: a cut-off answer is not a delivery
    assert read_messages(stage.sqs, stage.dlq_url) == []


def test_a_trickling_heap_cannot_hold_the_api_past_its_deadline(stage: Stage) -> None:
    stage.emulator.trickle_next(1000, bytes_per_second=1, body="x" * 600)
    api = stage.api({**WIDE_OPEN, **SHORT_TIMEOUTS}, remaining_seconds=REMAINING)
    started = time.monotonic()
    answer = api.post("/v1/batch", {"batch": [track(i) for i in range(5)]})
    elapsed = time.monotonic() - started
    assert elapsed < REMAINING, f"the API took {elapsed:.1f}s with {REMAINING}s left"
    assert answer.status == 202 and answer.body["parked"] == 5, answer.body


def test_isolation_cut_short_on_the_last_receive_is_exhausted_never_taken_for_heaps_refusal(
    stage: Stage,
) -> None:
    """The rate budget runs out after the first request (a burst of 10 events, 1 a second after
    that): nothing can be sent alone, so on the last receive every event is dead-lettered as
    ``retries_exhausted`` "isolation unfinished", not as refused by Heap."""
    stage.emulator.reject_event_names(["Refused Event"])
    events = [track(i, "Refused Event" if i in (2, 7) else "Good Event") for i in range(10)]
    stage.send([json.dumps({"batch": events})])
    slow = {"RATE_LIMIT_EVENTS_PER_MINUTE": "60", "RATE_LIMIT_BURST": "10", "MAX_RECEIVE_COUNT": "1"}
    consumer = stage.consumer(slow)
    EventSourceMapping(stage.sqs, stage.main_url, consumer, batch_size=10).poll_once()
    letters = letters_by_message_id(stage)
    assert sorted(letters) == sorted(e["messageId"] for e in events)
    for mid, found in letters.items():
        assert len(found) == 1, mid
        assert found[0].error_class == "retries_exhausted", (mid, found[0].error_class)
        assert found[0].reason.startswith("retries exhausted: isolation unfinished: "), found[0].reason
    assert stage.emulator.tracked_events() == []
