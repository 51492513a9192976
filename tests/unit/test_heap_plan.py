"""Planning a delivery (heap/plan.py): pure, so no emulator; the bytes are read back as JSON."""

from __future__ import annotations

import json
from typing import Any

from heap_forwarder.heap.client import DeliverySettings
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.plan import RequestCaps, plan_delivery, plan_requests
from heap_forwarder.outcome import ErrorClass, Fate

FIELDS = {"app_id": "demo-app-id"}


def track(n: int, *, pad: int = 0) -> HeapItem:
    properties: dict[str, Any] = {"n": n, **({"pad": "x" * pad} if pad else {})}
    body = {
        "identity": f"user-{n}",
        "event": "Order Completed",
        "properties": properties,
        "idempotency_key": f"k{n}",
    }
    return HeapItem(Endpoint.TRACK, body, source=n)


def identify(n: int, user_id: str | None = None) -> HeapItem:
    return HeapItem(Endpoint.IDENTIFY, {"user_id": user_id or str(1_000_000 + n), "identity": f"user-{n}"}, n)


def user(n: int) -> HeapItem:
    return HeapItem(Endpoint.ADD_USER_PROPERTIES, {"identity": f"user-{n}", "properties": {"plan": "pro"}}, n)


def test_packing_keeps_order_within_the_item_cap() -> None:
    plan = plan_delivery([track(n) for n in range(25)], FIELDS, RequestCaps(max_items_per_request=10))
    assert [b.indices for b in plan.batches] == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert not plan.refused and not plan.twins


def test_packing_fills_each_request_up_to_the_byte_cap() -> None:
    items = [track(n, pad=300) for n in range(20)]
    cap = 2_000
    plan = plan_delivery(items, FIELDS, RequestCaps(max_request_bytes=cap))
    sizes = [len(plan.body(b.endpoint, b.indices)) for b in plan.batches]
    assert all(size <= cap for size in sizes)
    assert [i for b in plan.batches for i in b.indices] == list(range(20))  # order kept, none lost
    item_size = len(plan.encoded[0])
    assert all(size + item_size + 1 > cap for size in sizes[:-1])  # greedy: the next would not fit


def test_groups_go_by_endpoint_in_order_of_first_appearance() -> None:
    items = [user(0), track(1), user(2), track(3), identify(4)]
    plan = plan_delivery(items, FIELDS, RequestCaps())
    assert [(b.endpoint, b.indices) for b in plan.batches] == [
        (Endpoint.ADD_USER_PROPERTIES, [0, 2]),
        (Endpoint.TRACK, [1, 3]),
        (Endpoint.IDENTIFY, [4]),
    ]


def test_planned_bodies_are_exactly_the_merged_documents() -> None:
    """The spliced bytes parse to {**request_fields, "events": [bodies]}; identify merges flat;
    the client's settings are the caps (moved from tests/functional/heap/test_heap_client_batching.py)."""
    items = [
        track(0),
        HeapItem(Endpoint.TRACK, {"identity": "é", "event": "ü", "idempotency_key": "x"}),
        identify(2),
        user(3),
        track(4, pad=5_000),  # too big for the cap below: in no request
    ]
    fields = {"app_id": "a", "extra": [1, {"b": None}], "events": "shadowed"}
    plans = plan_requests(items, fields, DeliverySettings(max_request_bytes=4_000))
    assert [(p.endpoint, p.indices) for p in plans] == [
        (Endpoint.TRACK, (0, 1)),
        (Endpoint.IDENTIFY, (2,)),
        (Endpoint.ADD_USER_PROPERTIES, (3,)),
    ]
    assert json.loads(plans[0].data) == {**fields, "events": [items[0].body, items[1].body]}
    assert plans[1].body() == {**fields, **items[2].body}
    assert plans[2].body() == {**fields, "users": [items[3].body]}
    assert plan_requests([track(0)], {})[0].body() == {"events": [track(0).body]}


def test_an_item_too_large_alone_is_refused_and_the_rest_goes() -> None:
    items = [track(0), track(1, pad=5_000), track(2)]
    plan = plan_delivery(items, FIELDS, RequestCaps(max_request_bytes=4_000))
    assert [b.indices for b in plan.batches] == [[0, 2]]
    (refusal,) = plan.refused.values()
    assert list(plan.refused) == [1]
    assert (refusal.fate, refusal.error_class) == (Fate.REJECTED, ErrorClass.HEAP_RULE)
    assert "the cap is 4000 bytes" in refusal.reason


def test_an_item_that_cannot_be_encoded_is_refused() -> None:
    bad = HeapItem(Endpoint.TRACK, {"identity": "u", "event": "e", "properties": {"x": object()}})
    plan = plan_delivery([bad, track(1)], FIELDS, RequestCaps())
    assert [b.indices for b in plan.batches] == [[1]]
    assert plan.refused[0].error_class is ErrorClass.HEAP_RULE
    assert "not JSON-serialisable" in plan.refused[0].reason


def test_identical_identify_calls_are_planned_once_and_twinned() -> None:
    items = [identify(0), identify(1), identify(0), track(3), identify(0), identify(1, user_id="other")]
    plan = plan_delivery(items, FIELDS, RequestCaps())
    assert [(b.endpoint, b.indices) for b in plan.batches] == [
        (Endpoint.IDENTIFY, [0]),
        (Endpoint.IDENTIFY, [1]),
        (Endpoint.IDENTIFY, [5]),  # the endpoint's group, then the next endpoint's
        (Endpoint.TRACK, [3]),
    ]
    assert plan.twins == {0: [2, 4]}
    assert json.loads(plan.body(Endpoint.IDENTIFY, [0])) == {**FIELDS, **items[0].body}


def test_a_part_of_a_batch_gets_the_same_envelope() -> None:
    plan = plan_delivery([track(n) for n in range(4)], FIELDS, RequestCaps())
    assert json.loads(plan.body(Endpoint.TRACK, [1, 3])) == {
        **FIELDS,
        "events": [track(1).body, track(3).body],
    }


def test_nothing_in_nothing_planned() -> None:
    plan = plan_delivery([], FIELDS, RequestCaps())
    assert plan.batches == [] and plan.refused == {} and plan.twins == {}
