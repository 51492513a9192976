"""HeapClient and Heap's refusals: isolating bad items, 413 splits, configuration faults."""

from __future__ import annotations

import math

import pytest

from heap_forwarder.heap.items import Endpoint
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate
from heap_forwarder_tools.emulator import HeapEmulator


def _bisection_bound(n: int, offenders: int = 1) -> int:
    # The first request, then two requests per halving on each offender's path.
    return 1 + 2 * offenders * math.ceil(math.log2(n))


def _hinted_bound(offenders: int) -> int:
    # Heap names the first bad item: it is sent alone and the rest in two halves, per offender.
    return 1 + 3 * offenders


@pytest.mark.parametrize("bad", [0, 1, 499, 500, 777, 999])
def test_one_bad_event_in_1000_is_isolated(bad: int, emulator, make_client, kit) -> None:
    emulator.reject_event_names(["Bad Event"])
    items = kit.tracks(1000)
    items[bad] = kit.track(bad, "Bad Event")
    outcomes = make_client().deliver(items)
    assert outcomes[bad].fate is Fate.REJECTED
    assert outcomes[bad].error_class is ErrorClass.HEAP_REJECTED
    assert "Bad Event" in outcomes[bad].full_reason  # the dead letter quotes Heap
    assert outcomes[bad].full_reason.startswith("HTTP 400 from Heap: postBody.events[0].event: ")
    assert outcomes[bad].reason == "HTTP 400 from Heap at postBody.events[0].event"  # logs don't
    assert [o for i, o in enumerate(outcomes) if i != bad] == [DELIVERED] * 999
    assert len(emulator.tracked_events()) == 999
    assert kit.request_count(emulator) <= _hinted_bound(1)


def test_several_bad_events_are_each_isolated(emulator, make_client, kit) -> None:
    emulator.reject_event_names(["Bad Event"])
    bad = {3, 4, 250, 640, 999}
    items = [kit.track(n, "Bad Event" if n in bad else "Good") for n in range(1000)]
    outcomes = make_client().deliver(items)
    assert {i for i, o in enumerate(outcomes) if o.fate is Fate.REJECTED} == bad
    assert sum(o.delivered for o in outcomes) == 995
    assert len(emulator.tracked_events()) == 995
    assert kit.request_count(emulator) <= _hinted_bound(len(bad))


def test_bad_user_property_is_isolated(emulator, make_client, kit) -> None:
    from heap_forwarder.heap.items import HeapItem

    items = [kit.user(n) for n in range(8)]
    items[5] = HeapItem(Endpoint.ADD_USER_PROPERTIES, {"identity": "user-5", "properties": {"ID": 1}}, 5)
    outcomes = make_client().deliver(items)
    assert [o.fate for o in outcomes] == [Fate.DELIVERED] * 5 + [Fate.REJECTED] + [Fate.DELIVERED] * 2
    assert "reserved" in outcomes[5].full_reason


def test_bad_identify_is_rejected_alone(emulator, make_client, kit) -> None:
    from heap_forwarder.heap.items import HeapItem

    items = [
        kit.identify(0),
        HeapItem(Endpoint.IDENTIFY, {"user_id": "1", "identity": "undefined"}),
        kit.identify(2),
    ]
    outcomes = make_client().deliver(items)
    assert outcomes[0] == outcomes[2] == DELIVERED
    assert outcomes[1].fate is Fate.REJECTED
    assert outcomes[1].error_class is ErrorClass.HEAP_REJECTED


@pytest.fixture
def small_heap(kit):
    with HeapEmulator(app_ids=(kit.app_id,), max_body_bytes=50_000) as heap:
        yield heap


def test_413_from_a_smaller_heap(small_heap, pool, clock, kit) -> None:
    from heap_forwarder.heap.client import DeliverySettings, HeapClient

    client = HeapClient(
        DeliverySettings(base_url=small_heap.url),
        request_fields=kit.fields,
        pool=pool,
        sleep=clock.sleep,
        clock=clock,
    )
    items = kit.tracks(200, pad=900)  # ~200 KB in one request, four times what this Heap takes
    items.append(kit.track(200, pad=60_000))  # too big for this Heap even alone
    outcomes = client.deliver(items)
    assert outcomes[:200] == [DELIVERED] * 200
    assert outcomes[200].fate is Fate.REJECTED
    assert outcomes[200].error_class is ErrorClass.HEAP_REJECTED
    assert outcomes[200].reason.startswith("HTTP 413 from Heap")
    assert len(small_heap.tracked_events()) == 200
    by_status = kit.requests_to(small_heap)
    assert by_status["413"] >= 3
    assert sum(by_status.values()) <= 30


def test_invalid_app_id_is_a_config_fault_without_bisection(emulator, make_client, kit) -> None:
    items = [*kit.tracks(2500), kit.user(0), kit.identify(0)]
    outcomes = make_client(request_fields={"app_id": "not-my-app"}).deliver(items)
    assert {o.fate for o in outcomes} == {Fate.RETRYABLE}
    assert {o.error_class for o in outcomes} == {ErrorClass.CONFIG_FAULT}
    assert "app ID" in outcomes[0].reason
    assert "Invalid app_id" in outcomes[0].full_reason
    assert kit.request_count(emulator) == 1  # the rest of the call is not sent either
    assert emulator.tracked_events() == []


def test_app_id_value_is_redacted_from_causes(emulator, make_client, kit) -> None:
    emulator.fail_next(1, 400, body="postBody.app_id: sekrit-app-123 is unknown")
    outcome = make_client(request_fields={"app_id": "sekrit-app-123"}).deliver(kit.tracks(1))[0]
    assert outcome.error_class is ErrorClass.CONFIG_FAULT
    assert "sekrit-app-123" not in outcome.reason + outcome.detail
    assert "<app_id>" in outcome.detail


def test_app_id_echoed_in_a_refusal_is_redacted(emulator, make_client, kit) -> None:
    emulator.fail_next(1, 400, body="postBody.events[0].event: sekrit-app-123 does not take this")
    outcome = make_client(request_fields={"app_id": "sekrit-app-123"}).deliver(kit.tracks(1))[0]
    assert outcome.error_class is ErrorClass.HEAP_REJECTED
    assert outcome.detail == "HTTP 400 from Heap: postBody.events[0].event: <app_id> does not take this"


def test_a_400_without_a_field_path_is_bisected_and_each_event_refused_alone(
    emulator, make_client, kit
) -> None:
    """Heap refusing everything with a text that names no field: no guessing at a configuration
    fault from its words. Each event is rejected only once it was refused when sent alone."""
    emulator.fail_next(10_000, 400, body="Events are not accepted for this environment")
    outcomes = make_client().deliver(kit.tracks(8))
    assert {(o.fate, o.error_class) for o in outcomes} == {(Fate.REJECTED, ErrorClass.HEAP_REJECTED)}
    assert outcomes[0].full_reason == "HTTP 400 from Heap: Events are not accepted for this environment"
    assert kit.request_count(emulator) == 15  # the whole halving tree: 1 + 2 + 4 + 8


def test_isolation_stops_at_its_request_budget_and_leaves_the_rest_retryable(
    emulator, make_client, kit
) -> None:
    emulator.fail_next(10_000, 400, body="no")
    records: list = []
    client = make_client(max_isolation_requests=20, observer=records.append)
    outcomes = client.deliver(kit.tracks(1000))
    rejected = [i for i, o in enumerate(outcomes) if o.fate is Fate.REJECTED]
    unfinished = [o for o in outcomes if o.fate is Fate.RETRYABLE]
    assert len(rejected) + len(unfinished) == 1000
    assert {o.error_class for o in unfinished} == {ErrorClass.DEADLINE}
    assert {o.reason for o in unfinished} == {"isolation unfinished: isolation request budget (20) used up"}
    assert kit.request_count(emulator) == 21
    # Nothing is rejected that Heap did not refuse alone.
    assert len(rejected) == sum(1 for r in records if r.items == 1 and r.status == 400)
    assert sum(r.isolating for r in records) == 20


def test_two_items_refused_alike_are_two_rejections(emulator, make_client, kit) -> None:
    emulator.reject_event_names(["Bad Event"])
    items = [kit.track(0, "Bad Event"), kit.track(1, "Bad Event"), kit.user(0)]
    outcomes = make_client().deliver(items)
    assert [o.fate for o in outcomes] == [Fate.REJECTED, Fate.REJECTED, Fate.DELIVERED]


def test_offenders_at_first_middle_and_last_with_one_text_but_good_events_between(
    emulator, make_client, kit
) -> None:
    """Heap's texts name the index, so the parent and both halves all say "events[0]"; the first
    item alone fails alike too, but the last passes: two offenders, not a global refusal."""
    emulator.reject_event_names(["Bad Event"])
    items = kit.tracks(8)
    for n in (0, 4):
        items[n] = kit.track(n, "Bad Event")
    outcomes = make_client().deliver(items)
    assert {i for i, o in enumerate(outcomes) if o.fate is Fate.REJECTED} == {0, 4}
    assert sum(o.delivered for o in outcomes) == 6


@pytest.mark.parametrize("status", [401, 403, 404, 501])
def test_auth_and_routing_statuses_are_config_faults(status: int, emulator, make_client, kit) -> None:
    emulator.fail_next(1, status, body="nope")
    items = [*kit.tracks(1500), kit.identify(0)]
    outcomes = make_client().deliver(items)
    assert {(o.fate, o.error_class) for o in outcomes} == {(Fate.RETRYABLE, ErrorClass.CONFIG_FAULT)}
    assert outcomes[0].reason.startswith(f"HTTP {status} from Heap: check HEAP_API_URL and the app ID")
    assert kit.request_count(emulator) == 1


def test_wrong_base_path_is_a_config_fault(emulator, make_client, kit) -> None:
    outcomes = make_client(base_url=emulator.url + "/wrong").deliver(kit.tracks(3))
    assert {o.error_class for o in outcomes} == {ErrorClass.CONFIG_FAULT}
    assert "HTTP 404" in outcomes[0].reason


def test_unknown_4xx_is_a_config_fault(emulator, make_client, kit) -> None:
    emulator.fail_next(1, 418, body="teapot")
    outcomes = make_client().deliver(kit.tracks(3))
    assert {o.error_class for o in outcomes} == {ErrorClass.CONFIG_FAULT}
    assert kit.request_count(emulator) == 1


def test_unexpected_redirect_is_transient_and_not_retried_in_place(emulator, make_client, kit, clock) -> None:
    emulator.fail_next(1, 301, body="moved")
    outcomes = make_client().deliver([*kit.tracks(3), kit.user(0)])
    assert [o.error_class for o in outcomes[:3]] == [ErrorClass.TRANSIENT] * 3
    assert outcomes[0].reason.startswith("HTTP 301 from Heap")
    assert outcomes[3] == DELIVERED  # not a configuration fault: the other requests still go
    assert clock.sleeps == []


def test_config_fault_mid_isolation_stops_the_rest(emulator, make_client, kit) -> None:
    items = kit.tracks(16)
    emulator.fail_next(1, 400, body="postBody.events[9].event: bad")  # the first answer
    emulator.fail_next(1, 401)  # item 9 alone: Heap's app went away
    outcomes = make_client().deliver([*items, kit.user(0)])
    assert {o.error_class for o in outcomes} == {ErrorClass.CONFIG_FAULT}
    assert kit.request_count(emulator) == 2


def test_unusable_base_url_is_a_config_fault(kit, clock) -> None:
    import urllib3

    from heap_forwarder.heap.client import DeliverySettings, HeapClient

    client = HeapClient(
        DeliverySettings(base_url="http://"),
        request_fields=kit.fields,
        pool=urllib3.PoolManager(),
        clock=clock,
    )
    outcomes = client.deliver([*kit.tracks(2), kit.identify(0)])
    assert {o.error_class for o in outcomes} == {ErrorClass.CONFIG_FAULT}
    assert outcomes[0].reason.startswith("invalid HEAP_API_URL")
    assert clock.sleeps == []


def test_a_wrong_index_in_heaps_text_is_only_a_hint(emulator, make_client, kit) -> None:
    """Heap's text names item 2, but item 6 is the bad one: item 2 is sent alone (and stored),
    the rest goes on until the real offender stands alone."""
    emulator.reject_event_names(["Bad Event"])
    items = kit.tracks(10)
    items[6] = kit.track(6, "Bad Event")
    emulator.fail_next(1, 400, body="postBody.events[2].event: made-up")
    outcomes = make_client().deliver(items)
    assert [i for i, o in enumerate(outcomes) if o.fate is Fate.REJECTED] == [6]
    assert sum(o.delivered for o in outcomes) == 9
    assert sorted(e["idempotency_key"] for e in emulator.tracked_events()) == sorted(
        f"k{n}" for n in range(10) if n != 6
    )


@pytest.mark.parametrize("hint", ["postBody.events[99].event: x", "postBody.users[1].identity: x", "[1]"])
def test_an_index_out_of_range_or_of_another_array_falls_back_to_halves(
    hint: str, emulator, make_client, kit
) -> None:
    emulator.reject_event_names(["Bad Event"])
    items = kit.tracks(8)
    items[5] = kit.track(5, "Bad Event")
    emulator.fail_next(1, 400, body=hint)
    outcomes = make_client().deliver(items)
    assert [i for i, o in enumerate(outcomes) if o.fate is Fate.REJECTED] == [5]
    assert sum(o.delivered for o in outcomes) == 7


def test_isolating_never_sends_an_event_the_caller_did_not_give(emulator, make_client, kit, records) -> None:
    """No probe with a synthetic event: every item of every request is one of the input's."""
    emulator.reject_event_names(["Bad Event"])
    emulator.set_anonymous_refusals(True)
    items = [kit.track(n, "Bad Event" if n % 7 == 0 else "Good") for n in range(50)]
    outcomes = make_client().deliver(items)
    assert {i for i, o in enumerate(outcomes) if o.fate is Fate.REJECTED} == set(range(0, 50, 7))
    assert sum(r.items for r in records) == sum(r.items for r in records if r.status) > 0
    assert {e["idempotency_key"] for e in emulator.tracked_events()} == {f"k{n}" for n in range(50) if n % 7}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("<html><body>Sign in to the Wi-Fi</body></html>", "text/html"), ("OK then", "text/plain")],
)
def test_a_2xx_whose_body_is_not_json_is_not_taken_for_a_delivery(
    body: str, content_type: str, emulator, make_client, kit
) -> None:
    emulator.fail_next(1, 200, body=body)
    outcomes = make_client().deliver([*kit.tracks(3)])
    assert {(o.fate, o.error_class) for o in outcomes} == {(Fate.RETRYABLE, ErrorClass.TRANSIENT)}
    assert outcomes[0].reason.startswith("HTTP 200 with a body that is not JSON")
    assert body not in outcomes[0].full_reason  # what answered is not quoted anywhere


@pytest.mark.parametrize("body", ["", "{}", '{"status": "ok"}', "  \n"])
def test_a_2xx_with_an_empty_or_json_body_is_a_delivery(body: str, emulator, make_client, kit) -> None:
    emulator.fail_next(1, 200, body=body)
    assert make_client().deliver(kit.tracks(2)) == [DELIVERED] * 2


def test_a_trickling_answer_is_cut_off_at_the_requests_time_limit(emulator, make_client, kit) -> None:
    """Headers at once, then four bytes a second: each read is quick (a quarter of the 1 s read
    timeout, so a loaded machine does not make it the read timeout that ends it), so only a limit
    on the whole request ends it. Retried, then left for the queue: never counted as delivered."""
    import time

    emulator.trickle_next(10, bytes_per_second=4, body="x" * 300)
    client = make_client(connect_timeout_s=0.5, read_timeout_s=1.0, retry_budget_s=0)
    started = time.monotonic()
    outcomes = client.deliver(kit.tracks(2))
    elapsed = time.monotonic() - started
    assert {(o.fate, o.error_class) for o in outcomes} == {(Fate.RETRYABLE, ErrorClass.TRANSIENT)}
    assert outcomes[0].reason == "timeout: Heap's answer was not complete after 1.5s (cut off)"
    assert elapsed < 5, elapsed  # 1.5 s and a little; on main it read for 300 s


def test_no_request_outlives_the_deadline(emulator, make_client, kit, clock) -> None:
    """A deadline shorter than the request's own limit (on the client's clock): not even started."""
    import time

    emulator.trickle_next(10, bytes_per_second=1, body="x" * 300)
    client = make_client(connect_timeout_s=0.5, read_timeout_s=1.0)
    started = time.monotonic()
    outcomes = client.deliver(kit.tracks(2), deadline=clock() + 1.0)
    assert time.monotonic() - started < 1
    assert {o.error_class for o in outcomes} == {ErrorClass.DEADLINE}


def test_a_huge_answer_is_read_only_as_far_as_it_is_quoted(emulator, make_client, kit) -> None:
    """A proxy's 5 MB error page: at most MAX_ANSWER_BYTES of it is read, its connection is
    dropped rather than reused, and the next request goes through."""
    import tracemalloc

    from heap_forwarder.heap.transport import MAX_ANSWER_BYTES

    emulator.fail_next(1, 503, body="E" * 5_000_000)
    client = make_client(retry_budget_s=0)
    tracemalloc.start()
    try:
        outcome = client.deliver(kit.tracks(1))[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The emulator (in this process) encodes its 5 MB answer; the client must add little to it.
    # On the code before: the body read whole, then decoded to text: over 15 MB.
    assert peak < 8_000_000, peak
    assert (outcome.fate, outcome.reason) == (Fate.RETRYABLE, "HTTP 503 from Heap")
    assert len(outcome.detail) < 300
    assert MAX_ANSWER_BYTES < 5_000_000
    assert client.deliver(kit.tracks(2)) == [DELIVERED] * 2


def test_a_2xx_with_a_body_larger_than_heap_sends_is_not_a_delivery(emulator, make_client, kit) -> None:
    emulator.fail_next(1, 200, body='{"pad": "' + "x" * 200_000 + '"}')
    outcomes = make_client().deliver(kit.tracks(1))
    assert outcomes[0].error_class is ErrorClass.TRANSIENT
    assert outcomes[0].reason.startswith("HTTP 200 with a body over 65536 bytes")


def test_logs_get_the_field_path_only_down_to_the_items_field(emulator, make_client, kit) -> None:
    """Keys below the item's field are the event's own property names: not for the logs."""
    emulator.fail_next(1, 400, body="postBody.events[0].properties.jane_doe_example_com: too long")
    outcome = make_client().deliver(kit.tracks(1))[0]
    assert outcome.reason == "HTTP 400 from Heap at postBody.events[0].properties"
    assert "jane_doe_example_com" in outcome.detail


def test_a_limit_expiring_after_its_connection_moved_on_does_not_cut_the_next_request() -> None:
    """The watchdog acts on a connection only while it still serves the watched request."""
    import socket
    import time as real_time

    from heap_forwarder.heap.transport import _Watch, _Watchdog

    class Connection:
        heap_watch = None

        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

    left, right = socket.socketpair()
    try:
        connection = Connection(left)
        dog = _Watchdog()
        first, second = _Watch(), _Watch()
        first.take(connection)
        second.take(connection)  # back in the pool, now serving another request
        dog.watch(real_time.monotonic() + 0.05, first)
        real_time.sleep(0.3)
        assert not first.cut
        right.sendall(b"still open")
        assert left.recv(100) == b"still open"
        dog.watch(real_time.monotonic() + 0.05, second)
        real_time.sleep(0.3)
        assert second.cut
        assert left.recv(100) == b""  # shut down: a blocked read would return at once
    finally:
        left.close()
        right.close()
