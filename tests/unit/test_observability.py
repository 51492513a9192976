"""The invocation's Heap request metrics: tallied per request, added to Powertools' metrics once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from heap_forwarder.edge import observability
from heap_forwarder.edge.observability import LATENCY_POINTS, latency_points, metered, metrics
from heap_forwarder.heap.items import Endpoint
from heap_forwarder.heap.transport import RequestRecord


@pytest.fixture(autouse=True)
def _clean_metrics() -> Iterator[None]:
    metrics.clear_metrics()
    observability._tally.discard()
    yield
    metrics.clear_metrics()
    observability._tally.discard()


def record(
    seconds: float, status: int | None = 200, items: int = 1, isolating: bool = False
) -> RequestRecord:
    error = None if status is not None and status < 400 else "failed"
    return RequestRecord(Endpoint.IDENTIFY, status, items, seconds, error, isolating)


def test_few_latencies_are_kept_each_sorted_and_rounded() -> None:
    assert latency_points([3.04, 1.26, 2.0]) == [1.3, 2.0, 3.0]
    assert latency_points([]) == []


def test_many_latencies_become_quantiles_with_the_fastest_and_the_slowest() -> None:
    latencies = [float(n) for n in range(1000, 0, -1)]  # 1..1000 ms, in no useful order
    points = latency_points(latencies)
    assert len(points) == LATENCY_POINTS < 100  # one EMF document per invocation
    assert points == sorted(points)
    assert points[0] == 1.0 and points[-1] == 1000.0
    assert 495.0 <= points[LATENCY_POINTS // 2] <= 505.0  # the median stays the median


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"_aws"')]


def test_requests_are_added_to_the_metrics_once_when_the_invocation_ends(capsys) -> None:
    added_during: list[set[str]] = []

    def handler(event: dict[str, object], context: object) -> str:
        for n in range(250):
            observability.record_heap_request(record(0.001 * (n + 1)))
        observability.record_heap_request(record(0.5, status=None))
        observability.record_heap_request(record(0.2, status=400, items=7, isolating=True))
        added_during.append(set(metrics.metric_set))
        return "done"

    capsys.readouterr()
    assert metered(handler)({}, None) == "done"
    assert added_during == [set()]  # nothing per request
    [document] = emf_documents(capsys.readouterr().out)  # 252 requests, one document
    assert document["HeapRequests"] == [252.0]
    assert document["HeapRequestErrors"] == [2.0]
    assert document["HeapIsolationRequests"] == [1.0]
    assert document["HeapItemsResent"] == [7.0]
    latency = document["HeapLatency"]
    assert len(latency) == LATENCY_POINTS
    assert latency[0] == 1.0 and latency[-1] == 500.0


def test_the_requests_of_an_invocation_that_raised_are_still_counted(capsys) -> None:
    def handler(event: object, context: object) -> None:
        observability.record_heap_request(record(0.01))
        raise RuntimeError("Heap client bug")

    capsys.readouterr()
    with pytest.raises(RuntimeError):
        metered(handler)({}, None)
    [document] = emf_documents(capsys.readouterr().out)
    assert document["HeapRequests"] == [1.0]


def test_requests_made_outside_an_invocation_are_not_the_next_ones(capsys) -> None:
    observability.record_heap_request(record(0.01))

    def handler(event: object, context: object) -> None:
        observability.record_heap_request(record(0.02))

    capsys.readouterr()
    metered(handler)({}, None)
    [document] = emf_documents(capsys.readouterr().out)
    assert document["HeapRequests"] == [1.0]
    assert document["HeapLatency"] == [20.0]
