"""The one place that owns the logger, metrics and tracer (Powertools).

Logs are structured JSON with a correlation id; metrics go out as EMF at the end of each
invocation; tracing is switched on by the template (POWERTOOLS_TRACE_DISABLED=false + Active
tracing). Never log the app ID, the write key or event traits/properties at INFO.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from heap_forwarder.heap.transport import RequestRecord

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "heap-forwarder")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "HeapForwarder")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def tracing_enabled() -> bool:
    """On in Lambda when the template turns it on; off outside Lambda (local invoke and serve,
    tests, ``sam local``), where there is no X-Ray daemon and no segment to write to."""
    return (
        os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").lower() == "false"
        and bool(os.environ.get("LAMBDA_TASK_ROOT"))
        and not os.environ.get("AWS_SAM_LOCAL")
    )


Handler = TypeVar("Handler", bound=Callable[..., Any])


def traced(handler: Handler) -> Handler:
    """Powertools' ``capture_lambda_handler`` when tracing is on. The Tracer (and the X-Ray SDK
    it imports, ~70 ms of cold start) is only built then."""
    if not tracing_enabled():
        return handler
    from aws_lambda_powertools import Tracer

    return cast(Handler, Tracer(service=SERVICE).capture_lambda_handler(handler))


# Requests are made from several threads (streamed bulk requests, identify calls four at a
# time); Powertools' metric set is a plain dict, read then written: one writer at a time.
_metrics_lock = threading.Lock()

# HeapLatency values one invocation adds at most. Powertools writes a document as soon as a
# metric holds 100 values: 99 keep the invocation's metrics in the one document written at its end.
LATENCY_POINTS = 99


class _RequestTally:
    """The invocation's Heap requests, counted as they are answered and added to the metrics
    once, when the invocation ends (:func:`metered`): Powertools' ``add_metric`` (validation,
    and a document written every 100 values) cost about 19 µs a request, which is 5-20% of an
    identify call's own CPU."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.requests = self.errors = self.isolating = self.resent = 0
        self.latencies_ms: list[float] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests += 1
            self.latencies_ms.append(record.seconds * 1000)
            if record.status is None or record.status >= 400:
                self.errors += 1
            if record.isolating:  # what finding refused events costs: requests, and items sent again
                self.isolating += 1
                self.resent += record.items

    def publish(self) -> None:
        """The tally as metrics (then zero): counts as one point each, latencies as at most
        LATENCY_POINTS values that keep the invocation's distribution (quantiles, the slowest
        request always among them)."""
        with self._lock:
            requests, errors, isolating, resent = self.requests, self.errors, self.isolating, self.resent
            latencies = self.latencies_ms
            self._clear()
        count("HeapRequests", requests)
        count("HeapRequestErrors", errors)
        count("HeapIsolationRequests", isolating)
        count("HeapItemsResent", resent)
        with _metrics_lock:
            for value in latency_points(latencies):
                metrics.add_metric(name="HeapLatency", unit=MetricUnit.Milliseconds, value=value)

    def discard(self) -> None:
        with self._lock:
            self._clear()


def latency_points(latencies_ms: list[float], points: int = LATENCY_POINTS) -> list[float]:
    """Every latency when there are at most ``points``; otherwise ``points`` evenly spaced
    quantiles of them, the fastest and the slowest included. Rounded to 0.1 ms."""
    ordered = sorted(latencies_ms)
    if len(ordered) > points:
        last = len(ordered) - 1
        ordered = [ordered[round(i * last / (points - 1))] for i in range(points)]
    return [round(value, 1) for value in ordered]


_tally = _RequestTally()


def record_heap_request(record: RequestRecord) -> None:
    """Observer handed to the Heap client: each HTTP attempt tallied for the invocation's metrics."""
    _tally.add(record)


def metered(handler: Handler) -> Handler:
    """Powertools' ``log_metrics`` around a Lambda handler, the invocation's Heap requests added
    to its metrics once at its end (even when it raised)."""

    @functools.wraps(handler)
    def invoke(event: Any, context: Any) -> Any:
        _tally.discard()  # requests made outside an invocation (tests, tools) are not its own
        try:
            return handler(event, context)
        finally:
            _tally.publish()

    return cast(Handler, metrics.log_metrics(invoke))


def count(name: str, value: float) -> None:
    if value:
        with _metrics_lock:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
