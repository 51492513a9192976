"""HeapClient retries: transient statuses, timeouts, dropped connections, Retry-After, deadline, budget.

The HTTP is real (the emulator); only time is fake where waiting would slow the tests down.
"""

from __future__ import annotations

import random
import socket
import time

import pytest
import urllib3
from pydantic_core import to_json

from heap_forwarder.heap.client import DeliverySettings, HeapClient
from heap_forwarder.heap.items import Endpoint
from heap_forwarder.heap.limiter import RateLimiter
from heap_forwarder.heap.transport import RequestRecord
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate
from heap_forwarder_tools.emulator import HeapEmulator, RateLimits


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_transient_statuses_are_retried_until_delivered(status: int, emulator, make_client, kit) -> None:
    emulator.fail_next(2, status, body="try later")
    outcomes = make_client().deliver(kit.tracks(10))
    assert outcomes == [DELIVERED] * 10
    assert kit.requests_to(emulator) == {str(status): 2, "200": 1}
    assert len(emulator.tracked_events()) == 10


def test_backoff_is_jittered_exponential_and_capped(emulator, make_client, kit, clock) -> None:
    emulator.fail_next(8, 503)
    client = make_client(backoff_base_s=0.1, backoff_cap_s=0.5, retry_budget_s=60)
    assert client.deliver(kit.tracks(1)) == [DELIVERED]
    assert len(clock.sleeps) == 8
    for attempt, wait in enumerate(clock.sleeps):
        assert 0 <= wait <= min(0.5, 0.1 * 2**attempt)


def test_retry_after_is_honoured(emulator, make_client, kit, clock) -> None:
    emulator.fail_next(1, 429, retry_after=1.5)
    emulator.fail_next(1, 503, retry_after=0.25)
    outcomes = make_client(backoff_cap_s=0.01).deliver(kit.tracks(5))
    assert outcomes == [DELIVERED] * 5
    assert len(clock.sleeps) == 2
    assert clock.sleeps[0] >= 1.5
    assert clock.sleeps[1] >= 0.25


def test_retry_after_beyond_the_budget_stops_at_once(emulator, make_client, kit, clock) -> None:
    emulator.fail_next(1, 429, retry_after=30, body="slow down")
    outcomes = make_client(retry_budget_s=10).deliver(kit.tracks(3))
    assert {o.fate for o in outcomes} == {Fate.RETRYABLE}
    assert {o.error_class for o in outcomes} == {ErrorClass.TRANSIENT}
    assert outcomes[0].reason == "HTTP 429 from Heap"  # logs get the status, never Heap's text
    assert outcomes[0].full_reason == "HTTP 429 from Heap: slow down"
    assert clock.sleeps == []
    assert kit.request_count(emulator) == 1


def test_retry_budget_is_respected(emulator, make_client, kit, clock) -> None:
    emulator.fail_next(1000, 503, body="down for maintenance")
    start = clock.now
    outcomes = make_client(retry_budget_s=3.0, backoff_cap_s=0.5).deliver(kit.tracks(4))
    assert all(o.fate is Fate.RETRYABLE and o.error_class is ErrorClass.TRANSIENT for o in outcomes)
    assert outcomes[0].reason == "HTTP 503 from Heap"
    assert outcomes[0].full_reason == "HTTP 503 from Heap: down for maintenance"
    assert clock.now - start <= 3.0
    assert len(clock.sleeps) >= 3  # it did retry before giving up
    assert kit.requests_to(emulator) == {"503": len(clock.sleeps) + 1}


def test_cause_quotes_at_most_200_characters(emulator, make_client, kit) -> None:
    emulator.fail_next(1000, 500, body="E" * 1000)
    outcome = make_client(retry_budget_s=0).deliver(kit.tracks(1))[0]
    assert outcome.reason == "HTTP 500 from Heap"
    assert outcome.full_reason == "HTTP 500 from Heap: " + "E" * 200


def test_deadline_stops_retries_and_no_request_starts_after_it(emulator, make_client, kit, clock, records):
    emulator.fail_next(1000, 503)
    deadline = clock.now + 4.0
    starts: list[float] = []
    client = make_client(
        read_timeout_s=1.0,
        connect_timeout_s=0.5,
        backoff_cap_s=0.5,
        observer=lambda r: starts.append(clock.now),
    )
    outcomes = client.deliver(kit.tracks(3), deadline=deadline)
    assert all(o.fate is Fate.RETRYABLE and o.error_class is ErrorClass.DEADLINE for o in outcomes)
    assert "HTTP 503" in outcomes[0].reason
    assert starts and all(t + 1.5 <= deadline for t in starts)  # each attempt could time out in time
    assert clock.now <= deadline


def test_nothing_is_sent_when_the_deadline_leaves_no_room(emulator, make_client, kit, clock) -> None:
    client = make_client(read_timeout_s=5.0)
    outcomes = client.deliver([*kit.tracks(3), kit.identify(0)], deadline=clock.now + 3.0)
    assert all(o.fate is Fate.RETRYABLE and o.error_class is ErrorClass.DEADLINE for o in outcomes)
    assert kit.request_count(emulator) == 0


def test_deadline_before_budget_end_reports_deadline(emulator, make_client, kit, clock) -> None:
    emulator.fail_next(1, 503, retry_after=5)
    client = make_client(read_timeout_s=1.0, connect_timeout_s=1.0, retry_budget_s=60)
    outcomes = client.deliver(kit.tracks(2), deadline=clock.now + 4.0)
    assert {o.error_class for o in outcomes} == {ErrorClass.DEADLINE}
    assert clock.sleeps == []


def test_timeouts_are_retried(emulator, make_client, kit, records: list[RequestRecord]) -> None:
    emulator.set_latency(0.6)

    def observe(record: RequestRecord) -> None:
        records.append(record)
        emulator.set_latency(0)  # Heap recovers after the first slow answer

    client = make_client(read_timeout_s=0.15, observer=observe)
    outcomes = client.deliver(kit.tracks(5))
    assert outcomes == [DELIVERED] * 5
    assert records[0].status is None
    assert records[0].error == "timeout after 0.15s"
    assert records[-1].status == 200
    # The timed-out request may still land later; its keys make it harmless.
    emulator.wait_for_events(5)
    keys = [e["idempotency_key"] for e in emulator.tracked_events()]
    assert sorted(keys) == sorted(f"k{n}" for n in range(5))


def test_persistent_timeouts_give_up_as_transient(emulator, make_client, kit, clock) -> None:
    emulator.set_latency(0.3)
    outcomes = make_client(read_timeout_s=0.05, retry_budget_s=0.0).deliver(kit.tracks(2))
    assert [o.error_class for o in outcomes] == [ErrorClass.TRANSIENT] * 2
    assert outcomes[0].reason == "timeout after 0.05s"


@pytest.mark.parametrize("after_store", [False, True])
def test_dropped_connections_are_retried_without_duplicates(
    after_store: bool, emulator, make_client, kit, records
) -> None:
    emulator.drop_connections(2, after_store=after_store)
    outcomes = make_client().deliver(kit.tracks(50))
    assert outcomes == [DELIVERED] * 50
    assert kit.requests_to(emulator) == {"dropped": 2, "200": 1}
    assert all(r.error and r.error.startswith("connection error") for r in records[:2])
    keys = [e["idempotency_key"] for e in emulator.tracked_events()]
    assert sorted(keys) == sorted(f"k{n}" for n in range(50))  # each stored once
    assert emulator.stats()["duplicates"] == (100 if after_store else 0)


def test_idempotency_keys_and_bytes_are_unchanged_on_retry(emulator, make_client, kit) -> None:
    items = kit.tracks(20)
    emulator.drop_connections(1, after_store=True)
    assert make_client().deliver(items) == [DELIVERED] * 20
    stored = emulator.tracked_events()
    assert [e["idempotency_key"] for e in stored] == [item.body["idempotency_key"] for item in items]
    assert emulator.stats()["duplicates"] == 20
    # The same bytes went twice: each request was exactly the one encoded document.
    body = b'{"app_id":"demo-app-id","events":[' + b",".join(to_json(i.body) for i in items) + b"]}"
    assert emulator.stats()["bytes_received"] == 2 * len(body)


def test_connection_refused_is_transient(kit, clock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = DeliverySettings(base_url=f"http://127.0.0.1:{port}", retry_budget_s=1.0)
    client = HeapClient(
        settings, request_fields=kit.fields, pool=urllib3.PoolManager(), sleep=clock.sleep, clock=clock
    )
    outcomes = client.deliver(kit.tracks(2))
    assert [o.error_class for o in outcomes] == [ErrorClass.TRANSIENT] * 2
    assert outcomes[0].reason.startswith("connection error")
    assert clock.sleeps  # it retried within the budget


def test_observer_sees_every_attempt_and_cannot_break_delivery(emulator, make_client, kit, records) -> None:
    emulator.fail_next(1, 502)
    client = make_client()
    assert client.deliver([*kit.tracks(3), kit.identify(0)]) == [DELIVERED] * 4
    assert [(r.endpoint, r.status, r.items) for r in records] == [
        (Endpoint.TRACK, 502, 3),
        (Endpoint.TRACK, 200, 3),
        (Endpoint.IDENTIFY, 200, 1),
    ]
    assert records[0].error == "HTTP 502"
    assert records[1].error is None

    def broken(record: RequestRecord) -> None:
        raise RuntimeError("metrics are down")

    client = make_client(observer=broken)
    assert client.deliver(kit.tracks(2, key_prefix="o")) == [DELIVERED] * 2


def test_limiter_is_consulted_per_attempt(emulator, make_client, kit) -> None:
    lclock = kit.FakeClock()
    limiter = RateLimiter(60_000, 1000, clock=lclock, sleep=lclock.sleep)
    emulator.fail_next(1, 503)
    client = make_client(limiter=limiter)
    assert client.deliver([*kit.tracks(300), kit.identify(0)]) == [DELIVERED] * 301
    # 300 + 300 (the retry) + 1 (identify counts one)
    assert limiter.tokens == pytest.approx(1000 - 601)


def test_limiter_that_cannot_grant_before_the_deadline(emulator, make_client, kit, clock) -> None:
    limiter = RateLimiter(60, 10, clock=clock, sleep=clock.sleep)  # one event per second
    assert limiter.acquire(10, None)
    client = make_client(limiter=limiter, read_timeout_s=1.0, connect_timeout_s=1.0)
    outcomes = client.deliver(kit.tracks(5), deadline=clock.now + 4.0)
    assert all(o.error_class is ErrorClass.DEADLINE for o in outcomes)
    assert outcomes[0].reason == "rate limit budget exhausted before deadline"
    assert kit.request_count(emulator) == 0


@pytest.fixture
def limited_heap(kit):
    """A Heap with a 3000 events/min cap on a fast clock: rate limits bite within a second."""
    heap = HeapEmulator(app_ids=(kit.app_id,), rate_limits=RateLimits(events_per_app=3_000))
    with heap:
        yield heap


def test_limiter_keeps_heap_from_rate_limiting(limited_heap, pool, kit) -> None:
    """Real time, compressed: Heap's 60 s windows last 0.25 s; the limiter is scaled the same way."""
    scale = 240.0
    limited_heap.set_enforce_rate_limits(True, time_scale=scale)
    share = RateLimiter.for_share(0.8, 500, events_per_minute_cap=3_000)
    limiter = RateLimiter(share.events_per_minute * scale, share.burst)
    settings = DeliverySettings(base_url=limited_heap.url, max_items_per_request=500)
    client = HeapClient(settings, request_fields=kit.fields, limiter=limiter, pool=pool)
    assert client.deliver(kit.tracks(6_000)) == [DELIVERED] * 6_000
    assert limited_heap.stats()["rate_limited"] == 0
    assert len(limited_heap.tracked_events()) == 6_000


def test_without_limiter_heap_rate_limits_and_retry_after_recovers(limited_heap, pool, kit) -> None:
    """Without a limiter Heap answers 429 (with Retry-After) and the client waits it out."""
    limited_heap.set_enforce_rate_limits(True, time_scale=60.0)  # a Heap minute lasts 1 s
    client = HeapClient(
        DeliverySettings(base_url=limited_heap.url),
        request_fields=kit.fields,
        pool=pool,
        rng=random.Random(1),
    )
    assert client.deliver(kit.tracks(6_000)) == [DELIVERED] * 6_000
    assert limited_heap.stats()["rate_limited"] >= 1
    assert len(limited_heap.tracked_events()) == 6_000


def test_waiting_for_a_pooled_connection_is_bounded(emulator, kit, client_without_free_connection) -> None:
    """A request finds every pooled connection busy: it waits at most connect_timeout_s, then
    fails like a refused connection (retryable), rather than wait past the deadline."""
    started = time.monotonic()
    outcomes = client_without_free_connection.deliver(kit.tracks(2))
    waited = time.monotonic() - started
    assert {o.fate for o in outcomes} == {Fate.RETRYABLE}
    assert "connection" in outcomes[0].reason.lower() or "pool" in outcomes[0].reason.lower()
    assert waited < 2.0  # bounded by the 0.2 s pool wait, not by the emulator or forever
    assert kit.request_count(emulator) == 0
