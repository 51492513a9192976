"""Memory: peak RSS of the handler with the largest batch Lambda can hand over.

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
"""

from __future__ import annotations

import argparse
import json
import os
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
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=5_000, help="at most this many (the 6 MB cap decides)")
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        c.write_result(args.out, worker(args.payload))
        return 0
    with c.services() as running:
        result = run(running.env, records=args.records)
    print(json.dumps(result, indent=2))
    return 0 if result["delivered_all"] else 1


if __name__ == "__main__":
    sys.exit(main())
