"""Identify calls, Heap's endpoint without a bulk form, take the transport's direct way
(``http.client`` on a connection of the urllib3 pool): the same limits and answers as a bulk
request, under the emulator's faults."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import urllib3

from heap_forwarder.heap.client import SINGLE_REQUEST_CONCURRENCY, DeliverySettings, HeapClient
from heap_forwarder.heap.items import Endpoint
from heap_forwarder.heap.transport import (
    MAX_ANSWER_BYTES,
    POOL_CONNECTIONS,
    RequestRecord,
    Transport,
    new_pool,
)
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate


def test_identify_calls_are_delivered_and_reuse_their_connections(emulator, kit) -> None:
    records: list[RequestRecord] = []
    # A pool as the functions' (new_pool as shared_pool makes it): 8 kept, waiting past that.
    pool = new_pool(maxsize=POOL_CONNECTIONS, block=True)
    client = HeapClient(
        DeliverySettings(base_url=emulator.url), request_fields=kit.fields, pool=pool, observer=records.append
    )
    try:
        outcomes = client.deliver([kit.identify(n) for n in range(40)])
        opened = pool.connection_from_url(emulator.url).num_connections
    finally:
        pool.clear()
    assert outcomes == [DELIVERED] * 40
    assert emulator.stats()["identifies_accepted"] == 40
    assert [r.endpoint for r in records] == [Endpoint.IDENTIFY] * 40
    assert {r.status for r in records} == {200}
    # Sent four at a time over kept-alive connections: one per sending thread, not one per call.
    assert opened <= SINGLE_REQUEST_CONCURRENCY


def test_a_trickling_identify_answer_is_cut_off_at_its_time_limit(emulator, make_client, kit) -> None:
    """Headers at once, then a byte a second: each read is quick, only the watchdog's limit on
    the whole request ends it; the connection is dropped and the next identify call goes through."""
    # Five bytes a second: every read well within the read timeout (a loaded machine cannot
    # turn it into a read timeout), 60 s of body in all.
    emulator.trickle_next(1, bytes_per_second=5, body="x" * 300)
    client = make_client(connect_timeout_s=0.5, read_timeout_s=1.0, retry_budget_s=0)
    started = time.monotonic()
    outcome = client.deliver([kit.identify(1)])[0]
    elapsed = time.monotonic() - started
    assert (outcome.fate, outcome.error_class) == (Fate.RETRYABLE, ErrorClass.TRANSIENT)
    assert outcome.reason == "timeout: Heap's answer was not complete after 1.5s (cut off)"
    assert elapsed < 5, elapsed  # 1.5 s and a little, not the 60 s of the trickle
    assert client.deliver([kit.identify(2), kit.identify(3)]) == [DELIVERED] * 2


def test_a_slow_identify_answer_times_out_and_is_retried(
    emulator, make_client, kit, records: list[RequestRecord]
) -> None:
    emulator.set_latency(0.6)

    def observe(record: RequestRecord) -> None:
        records.append(record)
        emulator.set_latency(0)  # Heap recovers after the first slow answer

    outcome = make_client(read_timeout_s=0.15, observer=observe).deliver([kit.identify(1)])[0]
    assert outcome == DELIVERED
    assert (records[0].status, records[0].error) == (None, "timeout after 0.15s")
    assert records[-1].status == 200


def test_identify_calls_never_outlive_the_deadline(emulator, make_client, kit, clock) -> None:
    emulator.trickle_next(10, bytes_per_second=1, body="x" * 300)
    client = make_client(connect_timeout_s=0.5, read_timeout_s=1.0)
    started = time.monotonic()
    outcomes = client.deliver([kit.identify(n) for n in range(3)], deadline=clock() + 1.0)
    assert time.monotonic() - started < 1
    assert {o.error_class for o in outcomes} == {ErrorClass.DEADLINE}


def test_a_huge_identify_answer_is_read_only_as_far_as_it_is_quoted(emulator, make_client, kit) -> None:
    emulator.fail_next(1, 503, body="E" * 1_000_000)
    client = make_client(retry_budget_s=0)
    outcome = client.deliver([kit.identify(1)])[0]
    assert (outcome.fate, outcome.reason) == (Fate.RETRYABLE, "HTTP 503 from Heap")
    assert len(outcome.detail) < 300
    assert MAX_ANSWER_BYTES < 1_000_000
    # The cut answer's connection was closed: its leftovers cannot reach the next request.
    assert client.deliver([kit.identify(2)]) == [DELIVERED]


def test_a_2xx_identify_answer_that_is_not_json_is_not_a_delivery(emulator, make_client, kit) -> None:
    emulator.fail_next(1, 200, body="<html>Sign in to the Wi-Fi</html>")
    outcome = make_client(retry_budget_s=0).deliver([kit.identify(1)])[0]
    assert outcome.error_class is ErrorClass.TRANSIENT
    assert outcome.reason.startswith("HTTP 200 with a body that is not JSON")


def test_an_identify_heap_refuses_is_rejected_with_its_reason(emulator, make_client, kit) -> None:
    emulator.fail_next(1, 400, body="identity: too long")
    outcome = make_client().deliver([kit.identify(1)])[0]
    assert outcome.fate is Fate.REJECTED
    assert outcome.reason.startswith("HTTP 400 from Heap")


def test_identify_to_a_port_nobody_listens_on_is_a_retryable_connection_error(kit) -> None:
    import socket

    with socket.socket() as probe:  # a free port, closed again: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = DeliverySettings(base_url=f"http://127.0.0.1:{port}", connect_timeout_s=0.5, retry_budget_s=0)
    outcome = HeapClient(settings, request_fields=kit.fields).deliver([kit.identify(1)])[0]
    assert (outcome.fate, outcome.error_class) == (Fate.RETRYABLE, ErrorClass.TRANSIENT)
    assert outcome.reason.startswith("connection error")


def test_waiting_for_a_pooled_connection_is_bounded_for_identify_calls(
    emulator, kit, client_without_free_connection
) -> None:
    started = time.monotonic()
    outcome = client_without_free_connection.deliver([kit.identify(1)])[0]
    waited = time.monotonic() - started
    assert outcome.fate is Fate.RETRYABLE
    assert outcome.reason == "connection error: no free connection to Heap within 0.2s"
    assert waited < 2.0
    assert kit.request_count(emulator) == 0


def test_a_cleared_pool_manager_does_not_break_identify_calls(emulator, kit) -> None:
    """The transport keeps the host's pool between requests; one the PoolManager closed (cleared,
    or evicted) is looked up again."""
    pool = urllib3.PoolManager(maxsize=2, block=True, retries=False)
    client = HeapClient(DeliverySettings(base_url=emulator.url), request_fields=kit.fields, pool=pool)
    assert client.deliver([kit.identify(1)]) == [DELIVERED]
    pool.clear()
    assert client.deliver([kit.identify(2)]) == [DELIVERED]


# ---- each sender keeps one connection for its series of calls (Transport.holding)
def _host_pool(pool: urllib3.PoolManager, url: str) -> urllib3.HTTPConnectionPool:
    return pool.connection_from_url(url)


def test_senders_give_their_connections_back_and_the_next_delivery_reuses_them(emulator, kit) -> None:
    pool = new_pool(maxsize=POOL_CONNECTIONS, block=True)
    client = HeapClient(DeliverySettings(base_url=emulator.url), request_fields=kit.fields, pool=pool)
    try:
        assert client.deliver([kit.identify(n) for n in range(40)]) == [DELIVERED] * 40
        host = _host_pool(pool, emulator.url)
        opened = host.num_connections
        # Every slot is back: the kept connections and the unused places (a sender that kept
        # its connection past its series would leave the pool short for everything after it).
        assert host.pool is not None and host.pool.qsize() == POOL_CONNECTIONS
        assert client.deliver([kit.identify(n) for n in range(40, 80)]) == [DELIVERED] * 40
        assert host.num_connections == opened  # the same connections, kept alive
    finally:
        pool.clear()
    assert emulator.stats()["identifies_accepted"] == 80


def test_connections_dropped_in_a_series_are_opened_again_and_nothing_is_lost(
    emulator, make_client, kit
) -> None:
    """Heap resets the connection of several calls at once (before storing them): each of those
    calls fails, its sender opens a new connection, and the retry delivers it, exactly once."""
    emulator.drop_connections(6)
    records: list[RequestRecord] = []
    client = make_client(observer=records.append)
    outcomes = client.deliver([kit.identify(n) for n in range(30)])
    assert outcomes == [DELIVERED] * 30
    assert emulator.stats()["identifies_accepted"] == 30
    failed = [r for r in records if r.status is None]
    assert len(failed) == 6 and all(r.error and r.error.startswith("connection error") for r in failed)


def test_a_stalled_call_holds_up_only_its_own_sender(emulator, make_client, kit) -> None:
    """One call trickles until its limit cuts it: the other senders take the rest of the series
    meanwhile, and the cut call is retried on a new connection."""
    emulator.trickle_next(1, bytes_per_second=5, body="x" * 300)
    records: list[RequestRecord] = []
    client = make_client(connect_timeout_s=0.5, read_timeout_s=1.0, observer=records.append)
    started = time.monotonic()
    outcomes = client.deliver([kit.identify(n) for n in range(40)])
    elapsed = time.monotonic() - started
    assert outcomes == [DELIVERED] * 40
    # The trickled call had been stored before its answer stalled (Heap's identify is
    # idempotent): each of the 40 arrived, and only the cut one was sent twice.
    assert {f"user-{n}" for n in range(40)} <= {i["identity"] for i in emulator.identifies()}
    assert len(records) == 41
    cut = [r for r in records if r.status is None]
    assert len(cut) == 1 and cut[0].error == "timeout: Heap's answer was not complete after 1.5s (cut off)"
    # The 39 others did not queue behind it (not even the ones its sender would have had in a
    # fixed share): all answered before it was cut, and everything took about one limit.
    assert records.index(cut[0]) == 39 and records[-1].status == 200
    assert elapsed < 6, elapsed


def test_more_senders_than_connections_still_deliver_everything(emulator, kit) -> None:
    """A pool smaller than the senders: a sender without a connection waits (bounded), its call
    is retried, and once the others finish their series and give theirs back, it goes through."""
    pool = urllib3.PoolManager(maxsize=2, block=True, retries=False)
    client = HeapClient(
        DeliverySettings(base_url=emulator.url, connect_timeout_s=0.2), request_fields=kit.fields, pool=pool
    )
    try:
        outcomes = client.deliver([kit.identify(n) for n in range(30)])
        assert _host_pool(pool, emulator.url).num_connections <= 2
    finally:
        pool.clear()
    assert outcomes == [DELIVERED] * 30
    assert emulator.stats()["identifies_accepted"] == 30


def test_a_held_connection_goes_back_when_its_block_ends_however_it_ends(emulator, kit) -> None:
    pool = new_pool(maxsize=2, block=True)
    transport = Transport(emulator.url, connect_timeout_s=1.0, read_timeout_s=1.0, pool=pool)
    body = json.dumps({"app_id": kit.app_id, "identity": "user-1", "user_id": "1000001"}).encode()
    host = _host_pool(pool, emulator.url)
    assert host.pool is not None
    try:
        with pytest.raises(RuntimeError), transport.holding():
            with transport.holding():  # nested: the outer block keeps the connection
                assert transport.post(Endpoint.IDENTIFY, body, 1, 2.0).status == 200
            assert host.pool.qsize() == 1  # still held after the inner block
            assert transport.post(Endpoint.IDENTIFY, body, 1, 2.0).status == 200
            raise RuntimeError("the series failed")
        assert host.pool.qsize() == 2
        assert host.num_connections == 1  # both calls on the one connection
    finally:
        pool.clear()


# ---- a held connection is never sent on when it is dead, nor by another transport
def _observed_client(
    emulator: Any, kit: Any, pool: urllib3.PoolManager, records: list[RequestRecord], **options: Any
) -> HeapClient:
    """A client on ``pool`` whose attempts land in ``records``; ``options``: ``rng`` and settings."""
    rng = options.pop("rng", None)
    settings = DeliverySettings(base_url=emulator.url, **options)
    return HeapClient(settings, request_fields=kit.fields, pool=pool, observer=records.append, rng=rng)


def test_a_held_connection_heap_closed_while_its_sender_waited_is_not_sent_on(
    emulator, kit, monkeypatch
) -> None:
    """Heap (its load balancer) closes keep-alive connections idle for a while. A sender waiting
    out a Retry-After keeps its connection meanwhile: before using it again, it checks the
    socket as the pool does (``_get_conn``) and connects again, instead of writing the retry to
    the dead socket (a failed attempt that would cost a backoff and, with the budget nearly
    spent, the delivery itself)."""
    import random

    from heap_forwarder_tools import emulator as emulator_module

    monkeypatch.setattr(emulator_module._Handler, "timeout", 0.2)  # idle connections closed after 0.2 s
    emulator.fail_next(1, 503, retry_after=0.6)
    records: list[RequestRecord] = []
    pool = new_pool(maxsize=POOL_CONNECTIONS, block=True)
    # First backoff 0.13 s (Retry-After's 0.6 s wins), second 1.7 s.
    client = _observed_client(
        emulator, kit, pool, records, rng=random.Random(1), retry_budget_s=0.7, backoff_base_s=1.0
    )
    try:
        outcomes = client.deliver([kit.identify(n) for n in range(2)])
    finally:
        pool.clear()
    assert outcomes == [DELIVERED] * 2  # the held way: the first ends retryable, "broken pipe"
    assert [r.error for r in records if r.status is None] == []


def test_a_held_connection_serves_only_the_transport_that_took_it(emulator, kit) -> None:
    """Inside one transport's ``holding`` block, another transport's identify call (another Heap
    URL, another pool) goes on a connection of its own pool, to its own host, never on the
    connection the first one holds."""
    from heap_forwarder_tools.emulator import HeapEmulator

    other = HeapEmulator(app_ids=(kit.app_id,)).start()
    pool_a, pool_b = new_pool(maxsize=2, block=True), new_pool(maxsize=2, block=True)
    a = Transport(emulator.url, connect_timeout_s=1.0, read_timeout_s=1.0, pool=pool_a)
    b = Transport(other.url, connect_timeout_s=1.0, read_timeout_s=1.0, pool=pool_b)
    body = json.dumps({"app_id": kit.app_id, "identity": "user-1", "user_id": "1000001"}).encode()
    try:
        with a.holding():
            assert a.post(Endpoint.IDENTIFY, body, 1, 2.0).status == 200
            assert b.post(Endpoint.IDENTIFY, body, 1, 2.0).status == 200
        assert other.stats()["identifies_accepted"] == 1  # sent to the other Heap
        assert emulator.stats()["identifies_accepted"] == 1  # not twice to the first
    finally:
        pool_a.clear()
        pool_b.clear()
        other.stop()


def test_a_held_connection_the_watchdog_shut_after_a_complete_answer_is_not_sent_on(
    emulator, kit, monkeypatch
) -> None:
    """The watchdog's limit falls just after the answer was read (the sending thread held off
    the GIL a moment): the answer stands, but the socket is shut. The sender closes it, and its
    next call connects again instead of being written to it."""
    from heap_forwarder.heap import transport as transport_module

    read = transport_module._read_bounded_direct
    stalls = [0.3]

    def read_then_stall(raw: object) -> tuple[bytes, bool]:
        answer = read(raw)  # type: ignore[arg-type]
        if stalls:
            time.sleep(stalls.pop())  # past the 0.2 s limit: the watchdog shuts the socket
        return answer

    monkeypatch.setattr(transport_module, "_read_bounded_direct", read_then_stall)
    records: list[RequestRecord] = []
    pool = new_pool(maxsize=POOL_CONNECTIONS, block=True)
    client = _observed_client(emulator, kit, pool, records, connect_timeout_s=0.1, read_timeout_s=0.1)
    emulator.set_latency(0.03)  # the other senders do not take the whole series meanwhile
    try:
        outcomes = client.deliver([kit.identify(n) for n in range(40)])
    finally:
        pool.clear()
    assert outcomes == [DELIVERED] * 40
    assert [r.error for r in records if r.status is None] == []
