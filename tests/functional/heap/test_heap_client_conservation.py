"""Nothing is lost, nothing is doubled: random fault scripts against random item lists."""

from __future__ import annotations

import random
from typing import Any

import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heap_forwarder.heap.client import DeliverySettings, HeapClient
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.outcome import Fate
from heap_forwarder_tools.emulator import HeapEmulator

NAMES = ["Viewed", "Clicked", "Bad"]
# Each bad event gets a name of its own ("Bad 17"), so no two refusals read alike: the
# every-event-alike rule is tested elsewhere, and here only real offenders may be refused.
REJECTED_NAMES = [f"Bad {n}" for n in range(100)]

# A fault script is applied in order before the delivery; the emulator consumes each fault
# on the next request(s) that arrive.
faults = st.lists(
    st.one_of(
        st.tuples(st.just("fail"), st.integers(1, 3), st.sampled_from([500, 502, 503, 429, 408])),
        st.tuples(st.just("fail"), st.just(1), st.sampled_from([401, 403, 404, 501])),
        st.tuples(st.just("drop"), st.integers(1, 2), st.booleans()),
    ),
    max_size=4,
)

item_kinds = st.lists(
    st.one_of(
        st.tuples(st.just("track"), st.sampled_from(NAMES)),
        st.tuples(st.just("user"), st.just("")),
        st.tuples(st.just("identify"), st.just("")),
    ),
    min_size=0,
    max_size=60,
)


def _items(kinds: list[tuple[str, str]]) -> list[HeapItem]:
    items = []
    for n, (kind, name) in enumerate(kinds):
        if kind == "track":
            event = f"{name} {n}" if name == "Bad" else name
            body: dict[str, Any] = {"identity": f"u{n % 7}", "event": event, "idempotency_key": f"key-{n}"}
            items.append(HeapItem(Endpoint.TRACK, body, n))
        elif kind == "user":
            items.append(
                HeapItem(Endpoint.ADD_USER_PROPERTIES, {"identity": f"u{n}", "properties": {"n": n}}, n)
            )
        else:
            items.append(HeapItem(Endpoint.IDENTIFY, {"user_id": str(n + 1), "identity": f"u{n}"}, n))
    return items


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=item_kinds, script=faults, max_items=st.sampled_from([1, 3, 7, 1000]), seed=st.integers(0, 99))
def test_every_item_gets_one_outcome_and_heap_holds_each_event_once(
    heap_emulator: HeapEmulator, kinds: list[tuple[str, str]], script: list[Any], max_items: int, seed: int
) -> None:
    emulator = heap_emulator
    emulator.reset()
    emulator.reject_event_names(REJECTED_NAMES)
    for kind, count, arg in script:
        if kind == "fail":
            emulator.fail_next(count, arg, retry_after=0.01 if arg == 429 else None)
        else:
            emulator.drop_connections(count, after_store=arg)
    fake_now = [0.0]

    def sleep(seconds: float) -> None:
        fake_now[0] += seconds

    pool = urllib3.PoolManager(retries=False)
    client = HeapClient(
        DeliverySettings(base_url=emulator.url, max_items_per_request=max_items, retry_budget_s=60),
        pool=pool,
        sleep=sleep,
        clock=lambda: fake_now[0],
        rng=random.Random(seed),
        request_fields={"app_id": "demo-app-id"},
    )
    items = _items(kinds)
    outcomes = client.deliver(items)
    pool.clear()

    assert len(outcomes) == len(items)
    stored = [e["idempotency_key"] for e in emulator.tracked_events()]
    assert len(stored) == len(set(stored)), "a key was stored twice"
    stored_keys = set(stored)
    tracked = [
        (item.body["idempotency_key"], item.body["event"], o)
        for item, o in zip(items, outcomes, strict=True)
        if item.endpoint is Endpoint.TRACK
    ]
    delivered = {key for key, _, o in tracked if o.fate is Fate.DELIVERED}
    retryable = {key for key, _, o in tracked if o.fate is Fate.RETRYABLE}
    refused = {key for key, _, o in tracked if o.fate is Fate.REJECTED}
    # Delivered means stored; whatever else was stored is only ever an unacknowledged retryable one
    # (dropped after store, then a config fault), which redelivery keeps harmless.
    assert delivered <= stored_keys
    assert stored_keys - delivered <= retryable
    assert not refused & stored_keys
    assert all(name in REJECTED_NAMES for key, name, o in tracked if key in refused)
    if not retryable:
        assert len(delivered) == len(stored_keys)
    # Without configuration faults in the script, every good event arrives and only bad ones are refused.
    if all(kind == "drop" or arg in (500, 502, 503, 429, 408) for kind, _, arg in script):
        for key, name, o in tracked:
            if name in REJECTED_NAMES:
                assert o.fate is not Fate.DELIVERED
            else:
                assert o.fate is Fate.DELIVERED, (key, o)
