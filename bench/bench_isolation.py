"""Isolation benchmark: what finding k refused events among 1,000 costs, and how long a trickling
Heap holds each entry point.

1. Isolation cost. 1,000 track items in one ``HeapClient.deliver`` call, k of them (spread
   over the batch) refused by the Heap emulator, for k = 1, 3, 10, 100: the requests sent (of
   which isolating), the items sent again, and what re-sending costs at the template's rate
   settings (each consumer instance's 6,000 events/min, Heap's 15,000 per app). Twice: with
   Heap's text naming the refused item (``postBody.events[i]...``, as Heap answers), and with
   texts that name none (halving alone). The baselines, measured in the same run: the same
   1,000 items with nothing refused (one request) and a peer's one request per event (1,000).
2. A trickling Heap (full mode only). The real SQS and API handlers, the template's Heap
   timeouts (connect 3 s + read 10 s), told they have 30 s left; Heap sends its headers at
   once and then a byte a second: the seconds until each handler returns.

    python bench/bench_isolation.py [--quick]

Exit status 1 when a good item was not delivered or a refused one not rejected (never on timings).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heap_forwarder.heap.client import DeliverySettings, HeapClient
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.transport import RequestRecord, new_pool
from heap_forwarder.outcome import Fate
from heap_forwarder_tools.emulator import HeapEmulator

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "bench-app"
BATCH = 1_000
TEMPLATE_CONSUMER_RATE = 6_000  # events/min per consumer instance (RateLimitEventsPerMinute)
HEAP_APP_RATE = 15_000  # events/min per app ID (Heap's cap)
REFUSED_NAME = "Refused Event"


def item(n: int, refused: bool) -> HeapItem:
    return HeapItem(
        Endpoint.TRACK,
        {
            "identity": f"user-{n % 97}",
            "event": REFUSED_NAME if refused else "Order Completed",
            "timestamp": "2024-05-01T12:00:00Z",
            "properties": {"n": n, "order_id": f"o-{n}", "total": 99.5},
            "idempotency_key": f"iso-{n}",
        },
        n,
    )


def isolate(heap: HeapEmulator, k: int, *, named: bool) -> dict[str, Any]:
    heap.reset()
    heap.reject_event_names([REFUSED_NAME])
    heap.set_anonymous_refusals(not named)
    refused = set(random.Random(k).sample(range(BATCH), k)) if k else set()
    records: list[RequestRecord] = []
    client = HeapClient(
        DeliverySettings(base_url=heap.url, max_isolation_requests=10_000),
        request_fields={"app_id": APP_ID},
        pool=new_pool(),
        observer=records.append,
    )
    started = time.perf_counter()
    outcomes = client.deliver([item(n, n in refused) for n in range(BATCH)])
    seconds = time.perf_counter() - started
    rejected = {i for i, o in enumerate(outcomes) if o.fate is Fate.REJECTED}
    resent = sum(r.items for r in records if r.isolating)
    return {
        "k": k,
        "named": named,
        "requests": len(records),
        "isolating": sum(1 for r in records if r.isolating),
        "resent": resent,
        "seconds_at_consumer_rate": 60 * resent / TEMPLATE_CONSUMER_RATE,
        "seconds_at_heap_cap": 60 * resent / HEAP_APP_RATE,
        "wall_s": seconds,
        "correct": rejected == refused and sum(o.delivered for o in outcomes) == BATCH - k,
    }


def trickle(kind: str) -> dict[str, Any]:
    """The real handler with 30 s left, against a Heap that trickles its answers."""
    from heap_forwarder.entry import api as api_entry
    from heap_forwarder.entry import sqs as sqs_entry
    from heap_forwarder_tools.local.invoke import LocalContext
    from heap_forwarder_tools.local.poller import as_lambda_record
    from heap_forwarder_tools.local.sandbox import LOCAL_WRITE_KEY, Sandbox, environment
    from heap_forwarder_tools.local.server import http_api_event

    events = [
        {
            "type": "track",
            "event": "Order Completed",
            "userId": f"u-{i}",
            "messageId": f"trickle-{kind}-{i}",
            "timestamp": "2024-05-01T12:00:00Z",
        }
        for i in range(10)
    ]
    with Sandbox(template_path=ROOT / "template.yaml") as box:
        box.emulator.trickle_next(1_000, bytes_per_second=1, body="x" * 1_000)
        name = "ConsumerFunction" if kind == "sqs" else "ApiFunction"
        spec = box.function(
            name, {"POWERTOOLS_LOG_LEVEL": "CRITICAL", "POWERTOOLS_METRICS_NAMESPACE": "Bench"}
        )
        with environment(spec.environment):
            context = LocalContext(spec.logical_id, spec.memory_mb, 30)
            if kind == "sqs":
                sqs_entry.reset()
                sqs = box.client("sqs")
                url = box.queue_url("MainQueue")
                for event in events:
                    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
                messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
                records = [as_lambda_record(m, "arn:aws:sqs:us-east-1:1:q") for m in messages["Messages"]]
                lambda_event = {"Records": records}
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # the handler's log and metric lines
                    response = sqs_entry.lambda_handler(lambda_event, context)
                outcome = f"{len(response['batchItemFailures'])} of {len(records)} records left for retry"
            else:
                api_entry.reset()
                auth = "Basic " + base64.b64encode(f"{LOCAL_WRITE_KEY}:".encode()).decode()
                body = json.dumps({"batch": events}).encode()
                request = http_api_event(
                    "POST", "/v1/batch", [("Content-Type", "application/json"), ("Authorization", auth)], body
                )
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    response = api_entry.lambda_handler(request, context)
                outcome = f"HTTP {response['statusCode']}: {response['body'][:80]}"
            seconds = time.perf_counter() - started
    return {"entry": kind, "seconds": seconds, "outcome": outcome}


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no trickle runs (they take about 30 s)")
    args = parser.parse_args(argv)
    results = []
    with HeapEmulator(app_ids=(APP_ID,)) as heap:
        baseline = isolate(heap, 0, named=True)
        for named in (True, False):
            results.extend(isolate(heap, k, named=named) for k in (1, 3, 10, 100))
    rows = [
        (
            "refused k",
            "Heap's text",
            "requests",
            "isolating",
            "items re-sent",
            "at 6,000/min",
            "at 15,000/min",
            "vs peers",
        )
    ]
    rows.append(
        ("0", "-", str(baseline["requests"]), "0", "0", "0 s", "0 s", f"{baseline['requests'] / BATCH:.3f}")
    )
    for r in results:
        rows.append(
            (
                str(r["k"]),
                "names the item" if r["named"] else "names none",
                str(r["requests"]),
                str(r["isolating"]),
                f"{r['resent']:,}",
                f"{r['seconds_at_consumer_rate']:.0f} s",
                f"{r['seconds_at_heap_cap']:.0f} s",
                f"{r['requests'] / BATCH:.3f}",
            )
        )
    print(f"Isolating k refused events among {BATCH:,} in one delivery (peers: {BATCH:,} requests)")
    print(table(rows))
    ok = baseline["correct"] and all(r["correct"] for r in results)
    if not args.quick:
        print(
            "\nA trickling Heap (headers at once, then 1 byte/s), template timeouts (3 s + 10 s), 30 s left:"
        )
        for kind in ("sqs", "api"):
            t = trickle(kind)
            print(f"  {kind}: returned after {t['seconds']:.1f} s ({t['outcome']})")
    if not ok:
        print("ERROR: an item ended in the wrong place", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
