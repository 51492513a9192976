"""HeapClient batching: grouping by endpoint, splitting at the item and byte caps, oversized items."""

from __future__ import annotations

import pydantic_core

from heap_forwarder.heap.client import DeliverySettings
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate


def test_2500_events_travel_in_three_requests(emulator, make_client, kit) -> None:
    items = kit.tracks(2500)
    outcomes = make_client().deliver(items)
    assert outcomes == [DELIVERED] * 2500
    assert kit.requests_to(emulator) == {"200": 3}
    stored = emulator.tracked_events()
    assert [e["idempotency_key"] for e in stored] == [f"k{n}" for n in range(2500)]  # order kept


def test_configurable_lower_item_cap(emulator, make_client, kit) -> None:
    outcomes = make_client(max_items_per_request=100).deliver(kit.tracks(250))
    assert outcomes == [DELIVERED] * 250
    assert kit.requests_to(emulator) == {"200": 3}


def test_split_at_the_byte_cap(emulator, make_client, kit) -> None:
    items = kit.tracks(100, pad=400)
    sizes = {len(pydantic_core.to_json(item.body)) for item in items}
    overhead = len(b'{"app_id":"demo-app-id","events":[]}')
    cap = 10_000
    # Greedy packing of equal-sized items: as many as fit, commas included.
    item_size = max(sizes)
    per_request = (cap - overhead + 1) // (item_size + 1)
    expected = -(-100 // per_request)
    outcomes = make_client(max_request_bytes=cap).deliver(items)
    assert outcomes == [DELIVERED] * 100
    assert kit.requests_to(emulator) == {"200": expected}
    assert emulator.stats()["bytes_received"] <= expected * cap
    assert len(emulator.tracked_events()) == 100


def test_default_byte_cap_lets_1000_one_kb_events_go_together(emulator, make_client, kit) -> None:
    items = kit.tracks(1000, pad=900)
    assert make_client().deliver(items) == [DELIVERED] * 1000
    assert kit.requests_to(emulator) == {"200": 1}


def test_an_item_too_big_alone_is_rejected_without_sending(emulator, make_client, kit) -> None:
    items = [kit.track(0), kit.track(1, pad=20_000), kit.track(2)]
    outcomes = make_client(max_request_bytes=10_000).deliver(items)
    assert outcomes[0] == DELIVERED
    assert outcomes[2] == DELIVERED
    assert outcomes[1].fate is Fate.REJECTED
    assert outcomes[1].error_class is ErrorClass.HEAP_RULE
    assert "10000" in outcomes[1].reason
    assert kit.requests_to(emulator) == {"200": 1}
    assert [e["idempotency_key"] for e in emulator.tracked_events()] == ["k0", "k2"]


def test_endpoints_are_grouped_and_identify_goes_one_by_one(emulator, make_client, kit) -> None:
    items = [
        kit.identify(0),
        kit.track(0),
        kit.user(0),
        kit.track(1),
        kit.account(0),
        kit.identify(1),
        kit.user(1),
        kit.account(1),
        kit.identify(2),
    ]
    outcomes = make_client().deliver(items)
    assert outcomes == [DELIVERED] * len(items)
    assert kit.requests_to(emulator, Endpoint.IDENTIFY) == {"200": 3}
    assert kit.requests_to(emulator, Endpoint.TRACK) == {"200": 1}
    assert kit.requests_to(emulator, Endpoint.ADD_USER_PROPERTIES) == {"200": 1}
    assert kit.requests_to(emulator, Endpoint.ADD_ACCOUNT_PROPERTIES) == {"200": 1}
    # Identify calls go four at a time: Heap may store them in any order.
    assert sorted(r["identity"] for r in emulator.identifies()) == ["user-0", "user-1", "user-2"]
    assert emulator.user_properties() == {"user-0": {"plan": "pro"}, "user-1": {"plan": "pro"}}
    assert emulator.account_properties() == {"acct-0": {"seats": 0}, "acct-1": {"seats": 1}}


def test_request_fields_merge_into_every_body(emulator, make_client, kit) -> None:
    # The bulk key in request_fields must not produce a duplicate key; the items win.
    fields = {**kit.fields, "events": "ignored"}
    assert make_client(request_fields=fields).deliver(kit.tracks(3)) == [DELIVERED] * 3
    assert len(emulator.tracked_events()) == 3


def test_empty_input_sends_nothing(emulator, make_client, kit) -> None:
    assert make_client().deliver([]) == []
    assert kit.request_count(emulator) == 0


def test_unserialisable_body_is_rejected_not_raised(emulator, make_client, kit) -> None:
    bad = HeapItem(Endpoint.TRACK, {"identity": "u", "event": "e", "properties": {"x": object()}})
    outcomes = make_client().deliver([bad, kit.track(1)])
    assert outcomes[0].fate is Fate.REJECTED
    assert outcomes[0].error_class is ErrorClass.HEAP_RULE
    assert outcomes[1] == DELIVERED


def test_settings_are_validated() -> None:
    import pytest

    for bad in (
        {"max_items_per_request": 0},
        {"max_items_per_request": 1001},
        {"base_url": "heapanalytics.com"},
        {"read_timeout_s": 0},
        {"retry_budget_s": -1},
    ):
        with pytest.raises(ValueError):
            DeliverySettings(**bad)  # type: ignore[arg-type]


def test_default_pool_is_shared_verified_and_never_retries_by_itself() -> None:
    import ssl

    from heap_forwarder.heap.client import HeapClient
    from heap_forwarder.heap.transport import shared_pool

    pool = shared_pool()
    assert HeapClient(request_fields={}).transport.pool is pool
    assert HeapClient(request_fields={}).transport.pool is HeapClient(request_fields={}).transport.pool
    assert pool.connection_pool_kw["cert_reqs"] in ("CERT_REQUIRED", ssl.CERT_REQUIRED)
    assert pool.connection_pool_kw["retries"].total is False
