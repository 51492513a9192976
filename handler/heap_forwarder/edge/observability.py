"""The one place that owns the logger, metrics and tracer (Powertools).

Logs are structured JSON with a correlation id; metrics go out as EMF at the end of each
invocation; tracing is switched on by the template (POWERTOOLS_TRACE_DISABLED=false + Active
tracing). Never log the app ID, the write key or event traits/properties at INFO.
"""

from __future__ import annotations

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


def record_heap_request(record: RequestRecord) -> None:
    """Observer handed to the Heap client: one metric point per HTTP attempt."""
    with _metrics_lock:
        metrics.add_metric(name="HeapRequests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(
            name="HeapLatency", unit=MetricUnit.Milliseconds, value=round(record.seconds * 1000, 1)
        )
        if record.status is None or record.status >= 400:
            metrics.add_metric(name="HeapRequestErrors", unit=MetricUnit.Count, value=1)
        if record.isolating:  # what finding refused events costs: requests, and items sent again
            metrics.add_metric(name="HeapIsolationRequests", unit=MetricUnit.Count, value=1)
            metrics.add_metric(name="HeapItemsResent", unit=MetricUnit.Count, value=record.items)


def count(name: str, value: float) -> None:
    if value:
        with _metrics_lock:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
