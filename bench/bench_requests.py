"""What one single-event Heap request costs this process: CPU per identify call, and per-request metrics.

    python bench/bench_requests.py [--quick]

Identify has no bulk form: a batch with 500 identify events makes 500 requests, so the CPU of one
request is a figure of its own. Against the Heap emulator in its own process (its CPU is not
counted), the same identify body N times, one after the other, CPU time of this process per call:

- ``Transport.post`` as the client sends identify calls (``http.client`` on a connection of the
  watched urllib3 pool, the watchdog's limit) with the functions' observer;
- the same transport sending them through urllib3's ``PoolManager.request`` (the way bulk
  requests go, and every request went before), watched and observed alike;
- a bare ``http.client`` connection (no pool, no limit): the floor for a Python request.

And the metrics: the functions' observer (``record_heap_request``: a tally, added once per
invocation) against adding each request's points to Powertools' metrics as it is answered.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import _common as c

BODY = json.dumps(
    {"app_id": c.APP_ID, "identity": "user-1", "user_id": "anon-1", "timestamp": "2026-01-01T00:00:00Z"}
).encode()


def cpu_per_call(call: Callable[[], object], calls: int, warmup: int = 30) -> float:
    """Seconds of this process's CPU per call (median of three rounds)."""
    for _ in range(warmup):
        call()
    rounds = []
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            call()
        rounds.append((time.process_time() - started) / calls)
    return sorted(rounds)[1]


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    # Powertools writes an EMF document to stdout every 100 values of a metric.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def run(url: str, calls: int) -> dict[str, Any]:
    from aws_lambda_powertools.metrics import MetricUnit

    from heap_forwarder.edge import observability
    from heap_forwarder.heap.items import Endpoint
    from heap_forwarder.heap.transport import RequestRecord, Transport, new_pool

    def functions_transport() -> Transport:
        """As the functions make it: the template's timeouts, a watched pool, their observer."""
        return Transport(
            url,
            connect_timeout_s=3,
            read_timeout_s=10,
            pool=new_pool(maxsize=8, block=True),
            observer=observability.record_heap_request,
        )

    parts = urlsplit(url)
    transport = functions_transport()
    # The same transport, its identify calls sent the way bulk requests go (urllib3's
    # PoolManager.request, watched the same way): what every request did before.
    urllib3_way = functions_transport()
    urllib3_way._direct = False
    pool = urllib3_way.pool
    headers = {"Content-Type": "application/json", "User-Agent": "bench"}
    bare = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)

    def via_transport() -> None:
        assert transport.post(Endpoint.IDENTIFY, BODY, 1, 13.0).status == 200

    def via_pool_manager() -> None:
        assert urllib3_way.post(Endpoint.IDENTIFY, BODY, 1, 13.0).status == 200

    def via_http_client() -> None:
        bare.request("POST", "/api/v1/identify", body=BODY, headers=headers)
        answer = bare.getresponse()
        answer.read()
        assert answer.status == 200

    record = RequestRecord(Endpoint.IDENTIFY, 200, 1, 0.0012, None)
    metrics = observability.metrics

    def tallied() -> None:
        observability.record_heap_request(record)

    def per_request_points() -> None:  # what record_heap_request did before
        metrics.add_metric(name="HeapRequests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="HeapLatency", unit=MetricUnit.Milliseconds, value=1.2)

    with _quiet_stdout():
        result = {
            "calls": calls,
            "transport_cpu_s": cpu_per_call(via_transport, calls),
            "pool_manager_cpu_s": cpu_per_call(via_pool_manager, calls),
            "http_client_cpu_s": cpu_per_call(via_http_client, calls),
            "metrics_tally_cpu_s": cpu_per_call(tallied, 20 * calls),
            "metrics_per_request_cpu_s": cpu_per_call(per_request_points, 20 * calls),
        }
        observability._tally.publish()  # what one invocation's end adds: once
        metrics.flush_metrics()
    bare.close()
    pool.clear()
    return result


def report(result: dict[str, Any]) -> str:
    def us(key: str) -> str:
        return f"{1e6 * result[key]:.0f} µs"

    return "\n".join(
        [
            f"identify, CPU of this process per call ({result['calls']} calls a round, median of 3):",
            f"  Transport.post, http.client on the pooled connection: {us('transport_cpu_s')}",
            f"  Transport.post, urllib3's PoolManager.request (before): {us('pool_manager_cpu_s')}",
            f"  a bare http.client connection (the floor): {us('http_client_cpu_s')}",
            f"metrics per request: tallied for the invocation {1e6 * result['metrics_tally_cpu_s']:.1f} µs, "
            f"Powertools points per request {1e6 * result['metrics_per_request_cpu_s']:.1f} µs",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls (CI smoke run)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    emulator = c.start_emulator()
    try:
        result = run(emulator.url, 100 if args.quick else 1000)
    finally:
        emulator.stop()
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
