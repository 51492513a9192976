"""Delivery benchmark: 10,000 mapped events to the Heap emulator in its own process.

Prints the HTTP requests per 1,000 events (bulk: the target is 1; a peer sending one request
per event needs 1,000, measured here too on a sample) and events/s, next to the stdlib JSON
round trip (json.loads + json.dumps) of the same events measured in the same run.

Then the same events through the whole pipeline with Heap's network latency emulated (the
emulator answers each request after ``--latency-ms``): ``Pipeline.process``, which sends each
full bulk request while later events are still being prepared (4 in flight), against preparing
everything first and then delivering (``prepare`` + ``deliver``), the way a pipeline without
streaming works, and against preparing first and then sending the same requests 4 at a time
(which separates what concurrency gives from what the overlap adds). Loopback answers in a
millisecond; Heap, from a Lambda, in tens of them.

    python bench/bench_delivery.py [--events N] [--latency-ms MS] [--quick]

Exit status 1 when an event was not delivered (never on timings).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3

from heap_forwarder.heap.client import DeliverySettings, HeapClient
from heap_forwarder.heap.items import HeapItem
from heap_forwarder.heap.rules import RuleSettings, apply_rules
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.models import as_plain, validate_event
from heap_forwarder.outcome import Outcome
from heap_forwarder.pipeline import BULK_STREAM_AT, STREAM_CONCURRENCY, Pipeline

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "events" / "raw"
TRACK_SAMPLES = (
    "cart_viewed", "checkout_started", "order_completed", "payment_info_entered", "product_added",
    "product_clicked", "product_list_viewed", "product_viewed", "products_searched", "page", "custom_track",
)  # fmt: skip
APP_ID = "bench-app"
FIELDS = {"app_id": APP_ID}


def build_events(count: int) -> list[dict[str, Any]]:
    samples = [json.loads((RAW / f"{name}.json").read_text("utf-8")) for name in TRACK_SAMPLES]
    events = []
    for i in range(count):
        event = json.loads(json.dumps(samples[i % len(samples)]))
        event["messageId"] = f"delivery-bench-{i:08d}"
        events.append(event)
    return events


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "heap_forwarder_tools.emulator", "--port", "0", "--app-id", APP_ID],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        process.kill()
        raise RuntimeError(f"the emulator did not start: {line!r}")
    return process, match.group(0)


def emulator_stats(url: str) -> dict[str, Any]:
    response = urllib3.request("GET", f"{url}/_emulator/state")
    stats: dict[str, Any] = json.loads(response.data)["stats"]
    return stats


def deliver(url: str, items: list[HeapItem], max_items: int) -> tuple[float, int, int]:
    """Seconds, HTTP requests, events accepted by the emulator."""
    urllib3.request("POST", f"{url}/_emulator/reset")
    client = HeapClient(
        DeliverySettings(base_url=url, max_items_per_request=max_items), request_fields=FIELDS
    )
    start = time.perf_counter()
    outcomes = client.deliver(items)
    seconds = time.perf_counter() - start
    stats = emulator_stats(url)
    if not all(o.delivered for o in outcomes):
        raise RuntimeError(f"{sum(not o.delivered for o in outcomes)} event(s) not delivered")
    return seconds, int(stats["requests_total"]), int(stats["events_accepted"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--peer-sample", type=int, default=1_000, help="events sent one request each")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="Heap's latency, emulated")
    parser.add_argument("--quick", action="store_true", help="CI mode: 1,000 events, checks delivery only")
    args = parser.parse_args(argv)
    count, peer_sample = (1_000, 100) if args.quick else (args.events, args.peer_sample)
    streamed_count = 3_000 if args.quick else args.events

    events = build_events(count)
    texts = [json.dumps(e) for e in events]
    mapper = Mapper(build_playbook(), {"MY_APP_ID": APP_ID})
    rules = RuleSettings()
    items = [
        apply_rules(item, rules)
        for i, event in enumerate(events)
        for item in mapper.map(as_plain(validate_event(event, i)), event, i)
    ]

    process, url = start_emulator()
    try:
        baseline = min(_timed(lambda: [json.dumps(json.loads(t)) for t in texts]) for _ in range(3))
        bulk_seconds, bulk_requests, accepted = deliver(url, items, 1000)
        peer_seconds, peer_requests, peer_accepted = deliver(url, items[:peer_sample], 1)
        overlap = streamed_vs_staged(url, build_events(streamed_count), args.latency_ms / 1000)
    except RuntimeError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        process.terminate()
        process.wait(timeout=10)
    if accepted != len(items) or peer_accepted != peer_sample:
        print(f"FAILED: the emulator accepted {accepted} of {len(items)} events", file=sys.stderr)
        return 1

    per_1000 = bulk_requests / len(items) * 1000
    peer_per_1000 = peer_requests / peer_sample * 1000
    print(
        f"{len(items):,} mapped track events to the Heap emulator (own process),"
        f" Python {sys.version.split()[0]}"
    )
    print(f"{'':<28} {'events/s':>10} {'requests/1,000 events':>22}")
    print(f"{'bulk delivery (this client)':<28} {len(items) / bulk_seconds:>10,.0f} {per_1000:>22.2f}")
    print(f"{'one request per event (peer)':<28} {peer_sample / peer_seconds:>10,.0f} {peer_per_1000:>22.0f}")
    print(f"{'baseline: json round trip':<28} {len(texts) / baseline:>10,.0f} {'-':>22}")
    print(
        f"requests per 1,000 events = {per_1000:.2f} (target 1); delivery/baseline = "
        f"{(len(items) / bulk_seconds) / (len(texts) / baseline):.2f}; "
        f"bulk is {(len(items) / bulk_seconds) / (peer_sample / peer_seconds):.0f}x the peers' rate"
    )
    streamed, staged, concurrent = (overlap[k] for k in ("streamed_s", "staged_s", "staged_concurrent_s"))
    print(
        f"whole pipeline, {streamed_count:,} events, Heap answering after {args.latency_ms:g} ms: "
        f"streamed {streamed * 1000:,.0f} ms; prepare then deliver {staged * 1000:,.0f} ms "
        f"({staged / streamed:.2f}x the streamed time); prepare then 4 requests in flight "
        f"{concurrent * 1000:,.0f} ms ({concurrent / streamed:.2f}x: what the overlap adds)"
    )
    return 0


def streamed_vs_staged(url: str, events: list[dict[str, Any]], latency_s: float) -> dict[str, float]:
    """Best of 2 each, alternating: Pipeline.process; prepare() then deliver(); and prepare()
    then the same requests 4 at a time (what concurrency alone gives, without the overlap)."""
    mapper = Mapper(build_playbook(), {"MY_APP_ID": APP_ID})
    client = HeapClient(DeliverySettings(base_url=url), request_fields=mapper.request_fields)
    pipeline = Pipeline(mapper, client)
    runs: dict[str, list[float]] = {"streamed_s": [], "staged_s": [], "staged_concurrent_s": []}

    def staged_concurrent() -> list[Outcome]:
        items = pipeline.prepare(events).items
        chunks = [items[i : i + BULK_STREAM_AT] for i in range(0, len(items), BULK_STREAM_AT)]
        with ThreadPoolExecutor(max_workers=STREAM_CONCURRENCY) as pool:
            done = pool.map(client.deliver, chunks)
            return [outcome for outcomes in done for outcome in outcomes]

    for _ in range(2):
        for name, times in runs.items():
            urllib3.request("POST", f"{url}/_emulator/reset")
            urllib3.request("POST", f"{url}/_emulator/faults", json={"latency": latency_s})
            start = time.perf_counter()
            if name == "streamed_s":
                outcomes = pipeline.process(events)
            elif name == "staged_s":
                outcomes = pipeline.deliver(pipeline.prepare(events))
            else:
                outcomes = staged_concurrent()
            times.append(time.perf_counter() - start)
            if not all(o.delivered for o in outcomes):
                raise RuntimeError(f"{sum(not o.delivered for o in outcomes)} event(s) not delivered")
            if emulator_stats(url)["events_accepted"] != len(events):
                raise RuntimeError("the emulator did not accept every event")
    urllib3.request("POST", f"{url}/_emulator/faults", json={"latency": 0})
    return {name: min(times) for name, times in runs.items()}


def _timed(run: Any) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
