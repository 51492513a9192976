"""Pipeline.process: full requests go out while later events are still being prepared.

Real parts: the default playbook, Heap's rules, the HTTP client and the emulator. A recording
deliverer (wrapping the real client) shows which deliveries were made, and from which thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from heap_forwarder.heap.client import DeliverySettings, HeapClient
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.outcome import ErrorClass, Fate, Outcome
from heap_forwarder.pipeline import BULK_STREAM_AT, STREAM_CONCURRENCY, Pipeline
from heap_forwarder_tools.emulator import HeapEmulator

APP_ID = "demo-app-id"
STAMP = "2024-06-10T14:03:11.000Z"
Counter = dict[Endpoint, int]


class Recording:
    def __init__(self, client: HeapClient) -> None:
        self.client = client
        self.calls: list[tuple[str, Counter]] = []

    def deliver(self, items: Sequence[HeapItem], *, deadline: float | None = None) -> list[Outcome]:
        counts: Counter = {}
        for item in items:
            counts[item.endpoint] = counts.get(item.endpoint, 0) + 1
        self.calls.append((threading.current_thread().name, counts))
        return self.client.deliver(items, deadline=deadline)


def track(n: int, name: str = "Order Completed") -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "messageId": f"m-{n}",
        "anonymousId": f"anon-{n % 97}",
        "timestamp": STAMP,
        "properties": {"n": n, "cart": {"items": 2}},
    }


def identify(n: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"i-{n}",
        "anonymousId": f"anon-{n}",
        "timestamp": STAMP,
        "traits": {"plan": "pro"},
        "context": {"heap": {"user_id": str(5_000_000 + n)}},
    }


def pipeline(emulator: HeapEmulator, app_id: str = APP_ID) -> tuple[Pipeline, Recording]:
    mapper = Mapper(build_playbook(), {"MY_APP_ID": app_id})
    recording = Recording(
        HeapClient(DeliverySettings(base_url=emulator.url), request_fields=mapper.request_fields)
    )
    return Pipeline(mapper, recording), recording


def test_a_large_invocation_streams_full_requests_and_loses_nothing(emulator: HeapEmulator) -> None:
    raws: list[Any] = [track(n) for n in range(2 * BULK_STREAM_AT + 500)]
    raws[700:700] = [identify(n) for n in range(2 * 40 + 5)]
    raws[1200:1200] = [{"type": "track", "event": ""}, "not an event", {"type": "alias", "previousId": "a"}]
    heap, recording = pipeline(emulator)

    outcomes = heap.process(raws)

    assert len(outcomes) == len(raws)
    assert [o.error_class for o in outcomes[1200:1203]] == [
        ErrorClass.INVALID_EVENT,
        ErrorClass.INVALID_EVENT,
        ErrorClass.UNSUPPORTED,
    ]
    assert sum(o.fate is Fate.DELIVERED for o in outcomes) == len(raws) - 3
    stats = emulator.stats()
    assert stats["events_accepted"] == 2 * BULK_STREAM_AT + 500
    assert stats["identifies_accepted"] == 2 * 40 + 5
    assert stats["users_updated"] == 2 * 40 + 5
    # Still the fewest track requests: two full ones sent early, the rest in the last one.
    assert sum(stats["requests"]["/api/track"].values()) == 3
    # Full track requests went out early, on their own; the rest (identify included) last.
    calls = [counts for _, counts in recording.calls]
    assert calls[:2] == [{Endpoint.TRACK: BULK_STREAM_AT}] * 2
    assert calls[2] == {
        Endpoint.TRACK: 500,
        Endpoint.IDENTIFY: 2 * 40 + 5,
        Endpoint.ADD_USER_PROPERTIES: 2 * 40 + 5,
    }
    assert all(thread.startswith("heap-delivery") for thread, _ in recording.calls)


def test_a_small_invocation_delivers_once_in_the_callers_thread(emulator: HeapEmulator) -> None:
    heap, recording = pipeline(emulator)
    outcomes = heap.process([track(n) for n in range(40)] + [identify(1)])
    assert all(o.fate is Fate.DELIVERED for o in outcomes)
    assert recording.calls == [
        (
            threading.current_thread().name,
            {Endpoint.TRACK: 40, Endpoint.ADD_USER_PROPERTIES: 1, Endpoint.IDENTIFY: 1},
        )
    ]


def test_a_bad_event_in_a_streamed_request_is_isolated(emulator: HeapEmulator) -> None:
    emulator.reject_event_names(["Broken"])
    raws = [track(n, "Broken" if n == 1500 else "Order Completed") for n in range(2500)]
    heap, _ = pipeline(emulator)
    outcomes = heap.process(raws)
    assert outcomes[1500].error_class is ErrorClass.HEAP_REJECTED
    assert sum(o.fate is Fate.DELIVERED for o in outcomes) == 2499
    assert emulator.stats()["events_accepted"] == 2499


def test_after_a_configuration_fault_the_queued_deliveries_are_not_sent(emulator: HeapEmulator) -> None:
    heap, recording = pipeline(emulator, app_id="not-this-app")
    outcomes = heap.process([track(n) for n in range(8 * BULK_STREAM_AT + 10)])  # 9 deliveries
    assert {(o.fate, o.error_class) for o in outcomes} == {(Fate.RETRYABLE, ErrorClass.CONFIG_FAULT)}
    # Only those already in flight when the first fault came back were sent.
    assert len(recording.calls) <= STREAM_CONCURRENCY
    assert sum(emulator.stats()["requests"]["/api/track"].values()) <= STREAM_CONCURRENCY
    assert any("not sent after a configuration fault" in o.reason for o in outcomes)
