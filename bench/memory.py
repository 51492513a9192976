"""Memory: peak RSS of the handlers with the largest batch Lambda can hand over, and of the
API with the most events a small request can carry.

    python bench/memory.py [--records N]   # starts its own emulator and moto

Lambda caps an invocation's payload at 6 MB: with realistic records (bodies of ~1-2 KB, JSON-
escaped inside the SQS record, plus each record's attributes) that is about 2,500 records.
The parent builds the largest such payload (at most ``--records`` records) and writes it to a
file; a fresh worker process imports the handler, invokes it once with 10 records (what every
invocation keeps: SSM read, boto3 clients, playbook, connection pool), reads and decodes the
payload (as Lambda's runtime client does), invokes the handler with it against the emulator
and moto in their own processes, then reads its own high-water mark (VmHWM in
/proc/self/status) after each step. Target: <= 96 MB, so that the
function fits in 128 MB with room for the runtime client.

The API figure: ``{"batch": [{}, {}, ...]}`` with as many ``{}`` as fit under the API's
decompressed-body cap, gzipped to a few hundred bytes. Every ``{}`` is an event to count, and
before the per-request event cap the API completed each one (ids, timestamps) and validated
them all, half a gigabyte for a request under 1 KB. A fresh worker imports the API handler,
answers one small valid request (the baseline: what any warm API process holds), then answers
the inflating request; its peak RSS (``ru_maxrss``) after each. Target: <= 160 MB, so that the
256 MB API function keeps its headroom whatever a caller sends.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as c


def build_payload(max_records: int, cap: int = c.LAMBDA_PAYLOAD_CAP) -> tuple[str, int]:
    """The largest SQS event of at most ``max_records`` records whose JSON fits in ``cap`` bytes."""
    bodies = [c.compact(e) for e in c.build_events(max_records, tag="mem")]
    records = c.sqs_event(bodies, tag="mem")["Records"]
    size = len(b'{"Records": []}')
    kept = 0
    for record in records:
        added = len(json.dumps(record).encode()) + (2 if kept else 0)
        if size + added > cap:
            break
        size += added
        kept += 1
    payload = json.dumps({"Records": records[:kept]})
    return payload, kept


API_PEAK_TARGET_MB = 160.0


def inflating_request(max_body_bytes: int | None = None) -> tuple[dict[str, Any], int, int]:
    """The API request of the most ``{}`` events that fit under the decompressed-body cap, gzipped:
    (the HTTP API event, its event count, its body's size as sent)."""
    from heap_forwarder.edge.api_contract import MAX_BODY_BYTES

    cap = MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
    head, tail = b'{"batch":[', b"]}"
    count = (cap - len(head) - len(tail) + 1) // 3  # "{}" and a comma each, but the last
    document = head + b",".join([b"{}"] * count) + tail
    assert len(document) <= cap
    body = gzip.compress(document, compresslevel=9, mtime=0)
    return _api_event("/v1/batch", body, gzip_encoded=True), count, len(body)


def small_request() -> dict[str, Any]:
    """One valid track call: what every warm API process has answered."""
    (event,) = c.build_events(1, mix={"order_completed": 1}, tag="memapi")
    return _api_event("/v1/batch", c.compact({"batch": [event]}).encode("utf-8"), gzip_encoded=False)


def _api_event(path: str, body: bytes, *, gzip_encoded: bool) -> dict[str, Any]:
    from heap_forwarder_tools.local.server import http_api_event

    headers = [("Content-Type", "application/json"), ("User-Agent", "bench")]
    if gzip_encoded:
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(len(body))))
    return http_api_event("POST", path, headers, body)  # gzip arrives base64-encoded, as from API Gateway


def peak_rss_mb() -> dict[str, float]:
    """This process's peak RSS: VmHWM, and ``ru_maxrss`` for comparison. VmHWM is the figure:
    Linux carries ``ru_maxrss`` over from the forking parent across exec, so in a worker it
    cannot read below the parent's size when it forked (the bench's own process, moto's client
    and all)."""
    return {
        "VmHWM": c.vm_status()["VmHWM"],
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def api_worker(requests_path: str) -> dict[str, Any]:
    requests = json.loads(Path(requests_path).read_text("utf-8"))
    peak = {"start": peak_rss_mb()}
    from heap_forwarder.entry import api as entry

    peak["imports"] = peak_rss_mb()
    small = entry.lambda_handler(requests["small"], c.FakeContext(timeout_s=25))
    peak["small_request"] = peak_rss_mb()
    inflating = entry.lambda_handler(requests["inflating"], c.FakeContext(timeout_s=25))
    peak["inflating_request"] = peak_rss_mb()
    answer = json.loads(inflating["body"])
    return {
        "rss_mb": peak,
        "peak_mb": peak["inflating_request"]["VmHWM"],
        "baseline_mb": peak["small_request"]["VmHWM"],
        "small_status": small["statusCode"],
        "inflating_status": inflating["statusCode"],
        "inflating_error": answer.get("error"),
        "inflating_message": str(answer.get("message", ""))[:200],
    }


def run_api(env: dict[str, str]) -> dict[str, Any]:
    inflating, events, sent_bytes = inflating_request()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.json"
        path.write_text(json.dumps({"small": small_request(), "inflating": inflating}), "utf-8")
        result = c.run_worker("memory.py", ["--api-requests", str(path)], env=env)
    result["events"] = events
    result["sent_bytes"] = sent_bytes
    result["target_mb"] = API_PEAK_TARGET_MB
    # The small request must be delivered, and the inflating one refused without a 5xx.
    result["delivered_all"] = result["small_status"] == 200 and 400 <= result["inflating_status"] < 500
    return result


def worker(payload_path: str) -> dict[str, Any]:
    after: dict[str, dict[str, float]] = {"start": c.vm_status()}
    from heap_forwarder.entry import sqs as entry

    after["imports"] = c.vm_status()
    # A first small invocation makes what every invocation keeps (SSM read, boto3 clients, the
    # playbook, the connection pool), so that the batch's own share shows on its own.
    warm = c.sqs_event([c.compact(e) for e in c.build_events(10, tag="memwarm")], tag="memwarm")
    started = time.perf_counter()
    entry.lambda_handler(warm, c.FakeContext())
    first_invocation_s = time.perf_counter() - started
    del warm
    after["first_invocation"] = c.vm_status()
    data = Path(payload_path).read_bytes()
    event = json.loads(data)
    del data
    after["payload"] = c.vm_status()
    c.emulator_call(os.environ["HEAP_API_URL"], "reset")
    response = entry.lambda_handler(event, c.FakeContext())
    after["invocation"] = c.vm_status()
    stats = c.emulator_stats(os.environ["HEAP_API_URL"])
    accepted = (
        stats["events_accepted"]
        + stats["users_updated"]
        + stats["accounts_updated"]
        + stats["identifies_accepted"]
    )
    return {
        "records": len(event["Records"]),
        "vm": after,
        "peak_mb": after["invocation"]["VmHWM"],
        "after_imports_mb": after["imports"]["VmHWM"],
        "first_invocation_s": first_invocation_s,
        "failed_records": len(response["batchItemFailures"]),
        "heap_items_accepted": accepted,
        "delivered_all": not response["batchItemFailures"] and stats["rejected"] == 0,
    }


def run(env: dict[str, str], *, records: int) -> dict[str, Any]:
    payload, kept = build_payload(records)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "payload.json"
        path.write_text(payload, "utf-8")
        result = c.run_worker("memory.py", ["--payload", str(path)], env=env)
    result["payload_mb"] = len(payload.encode()) / 1e6
    result["payload_cap_mb"] = c.LAMBDA_PAYLOAD_CAP / 1e6
    result["records_requested"] = records
    assert result["records"] == kept
    result["api"] = run_api(env)
    result["delivered_all"] = result["delivered_all"] and result["api"]["delivered_all"]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=5_000, help="at most this many (the 6 MB cap decides)")
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    parser.add_argument("--api-requests", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        c.write_result(args.out, api_worker(args.api_requests) if args.api_requests else worker(args.payload))
        return 0
    with c.services() as running:
        result = run(running.env, records=args.records)
    print(json.dumps(result, indent=2))
    return 0 if result["delivered_all"] else 1


if __name__ == "__main__":
    sys.exit(main())
