"""Pacing: a backlog drained against an emulator that enforces Heap's rate limits.

    python bench/pacing.py [--events N] [--time-scale K] [--batch B] [--share S]

The emulator (its own process) enforces Heap's caps (15,000 track events a minute per app,
1,000 per identity) on a clock running K times faster than real time. A fresh worker process
drains a backlog of N track events (the mix's track, page and screen events; identities spread
as in a real stream) through the real SQS consumer in invocations of B records, playing the
event source mapping: the records an invocation lists in ``batchItemFailures`` go back to the
queue with their receive count raised, until every record is settled.

The consumer's limiter is the production ``RateLimiter`` with the share S of Heap's cap and a
burst of one bulk request (1,000 events): ``events_per_minute = S x 15,000 - burst``, as
``RateLimiter.for_share`` makes it. Time compression: rather than scale its clock (which the
Heap client shares for deadlines and ``Retry-After``), its rate is multiplied by K, which is
the same bucket seen in Heap time. Lambda's timeout (60 s) and the retry budget (40 s, the
template's) stay in real seconds: the client starts a request only if its real HTTP timeouts
(3 s + 10 s) fit before the deadline, and a wait for tokens here is far shorter.

Figures: delivered events per Heap minute as a fraction of the cap, 429s received, and
events lost = N - delivered - parked in the DLQ - still queued (must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import _common as c

HEAP_CAP_PER_MINUTE = 15_000
BURST = 1_000
LAMBDA_TIMEOUT_S = 60.0
DEADLINE_MARGIN_S = 3.0
RETRY_BUDGET_S = 40.0
MAX_RECEIVE_COUNT = 19


class _SqsSink:
    """Stands in for SQS where the consumer writes: dead letters kept, visibility calls counted."""

    def __init__(self) -> None:
        self.letters: list[dict[str, Any]] = []
        self.visibility_calls = 0

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.letters.extend(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.visibility_calls += 1
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def worker(events: int, time_scale: float, batch: int, share: float) -> dict[str, Any]:
    from heap_forwarder.edge.consumer import BackoffPolicy, Consumer
    from heap_forwarder.edge.letters import DeadLetterWriter
    from heap_forwarder.heap.client import DeliverySettings, HeapClient
    from heap_forwarder.heap.limiter import RateLimiter
    from heap_forwarder.mapping.engine import Mapper
    from heap_forwarder.mapping.loader import build_playbook
    from heap_forwarder.pipeline import Pipeline

    url = os.environ["HEAP_API_URL"]
    k = time_scale
    limiter = RateLimiter((share * HEAP_CAP_PER_MINUTE - BURST) * k, BURST)
    mapper = Mapper(build_playbook(), {"MY_APP_ID": c.APP_ID})
    heap = HeapClient(
        DeliverySettings(
            base_url=url, retry_budget_s=RETRY_BUDGET_S, connect_timeout_s=3.0, read_timeout_s=10.0
        ),
        request_fields=mapper.request_fields,
        limiter=limiter,
    )
    pipeline = Pipeline(mapper, heap)
    sink = _SqsSink()
    consumer = Consumer(
        lambda: pipeline,
        sink,
        None,  # no visibility changes: a failed record simply comes back (below)
        DeadLetterWriter(sink, "bench-dlq"),
        BackoffPolicy(0.0, 0.0),
        max_receive_count=MAX_RECEIVE_COUNT,
    )
    bodies = [c.compact(e) for e in c.build_events(events, mix=c.TRACK_MIX, tag="pace")]
    queue = deque(c.sqs_event(bodies, tag="pace")["Records"])
    c.emulator_call(url, "reset")

    invocations = retried = 0
    remaining = LAMBDA_TIMEOUT_S - DEADLINE_MARGIN_S
    started = time.perf_counter()
    cpu = time.process_time()
    while queue and invocations < 10 * (events // batch + 10):
        records = [queue.popleft() for _ in range(min(batch, len(queue)))]
        response = consumer.handle({"Records": records}, remaining)
        invocations += 1
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for record in records:
            if record["messageId"] in failed:
                attributes = record["attributes"]
                attributes["ApproximateReceiveCount"] = str(int(attributes["ApproximateReceiveCount"]) + 1)
                queue.append(record)
                retried += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    stats = c.emulator_stats(url)
    delivered = stats["events_accepted"]
    heap_minutes = elapsed * k / 60
    lost = events - delivered - len(sink.letters) - len(queue)
    track_requests = stats["requests"].get("/api/track", {})
    return {
        "events": events,
        "time_scale": k,
        "batch": batch,
        "share": share,
        "limiter_events_per_minute": share * HEAP_CAP_PER_MINUTE - BURST,
        "invocations": invocations,
        "records_retried": retried,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "heap_minutes": heap_minutes,
        "delivered": delivered,
        "duplicates": stats["duplicates"],
        "rate": delivered / heap_minutes / HEAP_CAP_PER_MINUTE if heap_minutes else 0.0,
        "rate_limited": stats["rate_limited"],
        "track_requests": sum(track_requests.values()),
        "requests": stats["requests"],
        "dead_lettered": len(sink.letters),
        "still_queued": len(queue),
        "lost": lost,
        "delivered_all": delivered == events and not sink.letters and not queue,
    }


def run(*, events: int, time_scale: float, batch: int = 1000, share: float = 1.0) -> dict[str, Any]:
    emulator = c.start_emulator(enforce_rate_limits=True, time_scale=time_scale)
    try:
        return c.run_worker(
            "pacing.py",
            [
                "--events",
                str(events),
                "--time-scale",
                str(time_scale),
                "--batch",
                str(batch),
                "--share",
                str(share),
            ],
            env={
                "HEAP_API_URL": emulator.url,
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                **c.DUMMY_AWS,
                **c.LAMBDA_ENV,
            },
        )
    finally:
        emulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--time-scale", type=float, default=20.0, help="Heap seconds per real second")
    parser.add_argument("--batch", type=int, default=1000, help="records per invocation")
    parser.add_argument("--share", type=float, default=1.0, help="this consumer's share of Heap's cap")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        c.write_result(args.out, worker(args.events, args.time_scale, args.batch, args.share))
        return 0
    result = run(events=args.events, time_scale=args.time_scale, batch=args.batch, share=args.share)
    print(json.dumps(result, indent=2))
    return 0 if result["lost"] == 0 and result["delivered_all"] else 1


if __name__ == "__main__":
    sys.exit(main())
