"""A request's worth of items encoded in one call (``heap/plan.py``, ``_together``) gives the
bytes the items encoded one by one give, for the whole request and for any part of it sent on
its own (isolation); more items than a request takes, or an item that does not encode, are
packed item by item as before."""

from __future__ import annotations

from typing import Any

import pydantic_core
from hypothesis import given, settings
from hypothesis import strategies as st

from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.plan import RequestCaps, plan_delivery

FIELDS = {"app_id": "demo-app-id"}
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(), inner, max_size=3)),
    max_leaves=10,
)
BODIES = st.lists(st.dictionaries(st.text(), VALUES, max_size=5), min_size=1, max_size=12)


def _one_by_one(endpoint: Endpoint, bodies: list[dict[str, Any]]) -> bytes:
    return (
        pydantic_core.to_json({**FIELDS, endpoint.bulk_key: []})[:-2]
        + b",".join(pydantic_core.to_json(body) for body in bodies)
        + b"]}"
    )


@settings(max_examples=300, deadline=None)
@given(BODIES, st.sampled_from([Endpoint.TRACK, Endpoint.ADD_USER_PROPERTIES]), st.data())
def test_items_encoded_together_give_the_bytes_of_items_encoded_one_by_one(
    bodies: list[dict[str, Any]], endpoint: Endpoint, data: st.DataObject
) -> None:
    items = [HeapItem(endpoint, body, n) for n, body in enumerate(bodies)]
    plan = plan_delivery(items, FIELDS, RequestCaps())
    (batch,) = plan.batches
    assert plan.together  # the one-call way was taken
    assert plan.body(batch.endpoint, batch.indices) == _one_by_one(endpoint, bodies)
    piece = sorted(data.draw(st.sets(st.sampled_from(range(len(bodies))), min_size=1)))
    assert plan.body(batch.endpoint, piece) == _one_by_one(endpoint, [bodies[i] for i in piece])


@given(BODIES.filter(lambda bodies: len(bodies) > 2))
def test_more_items_than_a_request_takes_are_packed_item_by_item(bodies: list[dict[str, Any]]) -> None:
    items = [HeapItem(Endpoint.TRACK, body, n) for n, body in enumerate(bodies)]
    plan = plan_delivery(items, FIELDS, RequestCaps(max_items_per_request=2))
    assert not plan.together
    assert b"".join(plan.body(b.endpoint, b.indices) for b in plan.batches) == b"".join(
        _one_by_one(Endpoint.TRACK, [bodies[i] for i in b.indices]) for b in plan.batches
    )


def test_an_item_that_does_not_encode_is_refused_alone() -> None:
    items = [HeapItem(Endpoint.TRACK, {"n": 1}, 0), HeapItem(Endpoint.TRACK, {"n": object()}, 1)]
    plan = plan_delivery(items, FIELDS, RequestCaps())
    assert not plan.together
    assert [b.indices for b in plan.batches] == [[0]]
    assert list(plan.refused) == [1]
