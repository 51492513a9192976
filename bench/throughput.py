"""Throughput: the SQS consumer handling one invocation of N records, vs a JSON round trip.

    python bench/throughput.py [--workload track|mix] [--records N] [--repeat R]
                               # starts its own emulator and moto

Two workloads, one event per SQS record, each with its own messageId:

- ``track`` (the throughput figure, issue 16): the track events of ``events/raw`` (about
  1.4 KB each), cycled;
- ``mix``: the web shop's mix (``_common.MIX``: page, screen, track, 5% identify carrying a Heap
  user id, 2% group).

The worker (a fresh interpreter) imports the real Lambda handler
(``heap_forwarder.entry.sqs.lambda_handler``), configured from the environment like the
deployed function (app ID from SSM in a moto server, Heap = the emulator in its own process,
the client's rate limiter opened wide), does one small warm-up invocation (a warm Lambda),
then times R invocations of N records (the emulator is reset before each): the figure is their
median. The baseline is ``json.loads`` + ``json.dumps`` of the same bodies, the median of 5
runs, in the same process. GC is on throughout, as in Lambda.

Then R more invocations run with a timer around each stage's calls (``_StageProbe``); the
breakdown (µs per input event) of the fastest adds up to that invocation's time: envelope
(``read_records`` less JSON decoding), parse/validate (JSON decoding +
``quick_validate``, and the models for what it declines: ``pipeline.plain_event``),
compiled (the compiled playbook's functions: validation, mapping and Heap's rules in one pass),
map (``Mapper.map``) and Heap rules (``apply_rules``) for the events the compiled path declines,
serialise (items encoded and packed into bulk bodies), HTTP (``Transport.post``: the request
and the emulator's answer), other (the rest: outcome folding, settling, metrics, Powertools
decorators, garbage collection).
Serialise and HTTP also run on delivery threads (bulk requests go out while later events are
prepared; identify calls four at a time): their times are summed over the threads, so the
stages can add up to more than the invocation, and "other" is then 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import _common as c

STAGES = ("envelope", "parse/validate", "compiled", "map", "Heap rules", "serialise", "HTTP", "other")


class _StageProbe:
    """Timers around the functions the handler calls for each stage (installed for one run).

    Patched where the handler looks them up (module globals and class attributes), restored
    afterwards; nothing under handler/ is edited. A timer costs ~0.2 µs a call.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.http_by_endpoint: dict[str, dict[str, float]] = {}

    def _timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        seconds = self.seconds
        seconds.setdefault(name, 0.0)
        clock = time.perf_counter

        lock = self.lock

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:  # serialise and HTTP run on delivery threads too
                    seconds[name] += clock() - start

        return timed

    @contextmanager
    def installed(self) -> Iterator[None]:
        from heap_forwarder import pipeline
        from heap_forwarder.edge import consumer
        from heap_forwarder.heap import client, plan, transport
        from heap_forwarder.mapping import compiled, engine

        targets: list[tuple[Any, str, str]] = [
            (consumer, "read_records", "read_records"),
            (consumer, "decode_json", "decode"),
            (pipeline, "plain_event", "validate"),
            (compiled.CompiledPlaybook, "__call__", "compiled"),
            (engine.Mapper, "map", "map"),
            (pipeline, "apply_rules", "rules"),
            (client, "plan_delivery", "serialise"),
            (plan.DeliveryPlan, "body", "serialise"),
        ]
        saved = [(owner, attribute, owner.__dict__[attribute]) for owner, attribute, _ in targets]
        for owner, attribute, name in targets:
            setattr(owner, attribute, self._timed(name, getattr(owner, attribute)))
        post = transport.Transport.post
        by_endpoint = self.http_by_endpoint
        self.seconds.setdefault("http", 0.0)

        def timed_post(heap: Any, endpoint: Any, body: bytes, n_items: int, *args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return post(heap, endpoint, body, n_items, *args, **kw)
            finally:
                spent = time.perf_counter() - start
                with self.lock:
                    self.seconds["http"] += spent
                    entry = by_endpoint.setdefault(endpoint.value, {"requests": 0, "seconds": 0.0})
                    entry["requests"] += 1
                    entry["seconds"] += spent

        transport.Transport.post = timed_post  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            transport.Transport.post = post  # type: ignore[method-assign]
            for owner, attribute, original in saved:
                setattr(owner, attribute, original)

    def stages(self, total: float) -> dict[str, float]:
        t = self.seconds
        stages = {
            "envelope": t["read_records"] - t["decode"],
            "parse/validate": t["decode"] + t["validate"],
            "compiled": t["compiled"],
            "map": t["map"],
            "Heap rules": t["rules"],
            "serialise": t["serialise"],
            "HTTP": t["http"],
        }
        stages["other"] = max(0.0, total - sum(stages.values()))
        return stages


WORKLOADS = {"track": c.TRACK_EVENTS, "mix": c.MIX}
BASELINE_REPEAT = 5  # runs of the stdlib round trip; the figure is their median


def worker(records: int, repeat: int, warmup: int, workload: str, baseline_repeat: int) -> dict[str, Any]:
    import os
    import statistics

    from heap_forwarder.edge.consumer import read_records
    from heap_forwarder.entry import sqs as entry
    from heap_forwarder.heap.rules import apply_rules
    from heap_forwarder.models import as_plain, validate_event

    emulator_url = os.environ["HEAP_API_URL"]
    bodies = [c.compact(e) for e in c.build_events(records, mix=WORKLOADS[workload], tag="tp")]
    event = c.sqs_event(bodies, tag="tp")
    warm_event = c.sqs_event([c.compact(e) for e in c.build_events(warmup, tag="warm")], tag="warm")

    # A warm Lambda: SSM read, boto3 clients, playbook, connection pool all made already.
    response = entry.lambda_handler(warm_event, c.FakeContext())
    if response["batchItemFailures"]:
        raise RuntimeError(f"warm-up invocation failed records: {response['batchItemFailures'][:3]}")

    runs: list[tuple[float, float]] = []  # (wall, cpu) of each invocation
    failures: list[Any] = []
    for _ in range(repeat):
        c.emulator_call(emulator_url, "reset")
        wall, cpu = time.perf_counter(), time.process_time()
        response = entry.lambda_handler(event, c.FakeContext())
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
        failures.extend(response["batchItemFailures"])
    stats = c.emulator_stats(emulator_url)  # of the last invocation
    median_wall, median_cpu = sorted(runs)[len(runs) // 2]

    baseline = c.median_of(baseline_repeat, lambda: [json.dumps(json.loads(b)) for b in bodies])

    # ---- where the time goes: R more invocations, with a timer around each stage's calls; the
    # fastest one is reported (its stages add up to its time)
    probes: list[tuple[float, _StageProbe]] = []
    for _ in range(repeat):
        probe = _StageProbe()
        with probe.installed():
            c.emulator_call(emulator_url, "reset")
            wall = time.perf_counter()
            response = entry.lambda_handler(event, c.FakeContext())
            probes.append((time.perf_counter() - wall, probe))
        failures.extend(response["batchItemFailures"])
    probed_wall, probe = min(probes, key=lambda pair: pair[0])
    stages = probe.stages(probed_wall)

    runtime = entry._warm.runtime
    assert runtime is not None
    pipeline = runtime.pipeline()
    raws = [raw for record in read_records(event) for raw in record.events]
    ruled = [
        apply_rules(item, pipeline.rule_settings)
        for i, raw in enumerate(raws)
        for item in pipeline.mapper.map(as_plain(validate_event(raw, i)), raw, i)
    ]
    n = len(raws)
    items_by_endpoint = Counter(item.endpoint.value for item in ruled)
    expected = {
        "events_accepted": items_by_endpoint.get("/api/track", 0),
        "users_updated": items_by_endpoint.get("/api/add_user_properties", 0),
        "accounts_updated": items_by_endpoint.get("/api/add_account_properties", 0),
        "identifies_accepted": items_by_endpoint.get("/api/v1/identify", 0),
    }
    received = {key: stats[key] for key in expected}
    return {
        "workload": workload,
        "records": records,
        "events": n,
        "payload_mb": c.payload_bytes(event) / 1e6,
        "mean_body_bytes": statistics.mean(len(b.encode()) for b in bodies),
        "items_by_endpoint": dict(items_by_endpoint),
        "handler_s": median_wall,
        "handler_runs_s": [wall for wall, _ in runs],
        "handler_first_s": runs[0][0],
        "handler_cpu_s": median_cpu,
        "baseline_s": baseline,
        "stages_s": stages,
        "probed_handler_s": probed_wall,
        "http_by_endpoint": probe.http_by_endpoint,
        "requests": stats["requests"],
        "rate_limited": stats["rate_limited"],
        "expected": expected,
        "received": received,
        "failed_records": len(failures),
        "delivered_all": not failures and received == expected,
    }


def run(
    env: dict[str, str],
    *,
    records: int,
    repeat: int,
    warmup: int = 50,
    workload: str = "track",
    baseline_repeat: int = BASELINE_REPEAT,
) -> dict[str, Any]:
    return c.run_worker(
        "throughput.py",
        [
            "--records",
            str(records),
            "--repeat",
            str(repeat),
            "--warmup",
            str(warmup),
            "--workload",
            workload,
            "--baseline-repeat",
            str(baseline_repeat),
        ],
        env=env,
    )


def requests_per_1000(result: dict[str, Any]) -> tuple[float, float]:
    """(track requests per 1,000 track events, all requests per 1,000 input events)."""
    requests = result["requests"]
    track_requests = sum(requests.get("/api/track", {}).values())
    all_requests = sum(sum(by.values()) for by in requests.values())
    track_items = result["items_by_endpoint"].get("/api/track", 0)
    return (
        1000 * track_requests / track_items if track_items else float("nan"),
        1000 * all_requests / result["events"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="track")
    parser.add_argument("--baseline-repeat", type=int, default=BASELINE_REPEAT)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        c.write_result(
            args.out, worker(args.records, args.repeat, args.warmup, args.workload, args.baseline_repeat)
        )
        return 0
    with c.services() as running:
        result = run(
            running.env,
            records=args.records,
            repeat=args.repeat,
            warmup=args.warmup,
            workload=args.workload,
            baseline_repeat=args.baseline_repeat,
        )
    print(json.dumps(result, indent=2))
    return 0 if result["delivered_all"] else 1


if __name__ == "__main__":
    sys.exit(main())
