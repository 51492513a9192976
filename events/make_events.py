"""Regenerate the SQS sample events under ``events/`` from the plain events in ``events/raw/``.

Usage::

    python events/make_events.py          # (re)write events/sqs/*.json and events/bad/*.json
    python events/make_events.py --check  # exit 1, listing every file that is missing or out of date

Each output file is an SQS event in the shape ``sam local generate-event sqs receive-message``
produces, so it can be fed to ``sam local invoke -e`` or straight to the handler in tests.
The SQS ``body`` is the compact JSON of the raw event and ``md5OfBody`` is the real MD5 of that
body (as SQS computes it, over the UTF-8 bytes).  Message ids, receipt handles and timestamps are
derived from the output file name, so running the script twice gives byte-identical files.

Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import sys
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parent
RAW_DIR = EVENTS_DIR / "raw"
SQS_DIR = EVENTS_DIR / "sqs"
BAD_DIR = EVENTS_DIR / "bad"

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:heap-forwarder-dev-main"
AWS_REGION = "us-east-1"
SENDER_ID = "123456789012"
# Namespace for the deterministic SQS message ids (uuid5 of "<output file>#<record index>").
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/heap-forwarder/events")
# Used as SentTimestamp when a body has no usable receivedAt (2024-06-10T14:00:00Z).
FALLBACK_SENT_MS = 1718028000000

# Raw events that get no single-event SQS file: Heap has no equivalent for them, so they only
# appear in mixed_batch.json (alias also in bad/unsupported_type.json).
NO_SQS_FILE = frozenset({"alias", "group"})


def load_raw() -> dict[str, dict[str, Any]]:
    """Return every raw event, keyed by file stem, in sorted order."""
    events: dict[str, dict[str, Any]] = {}
    for path in sorted(RAW_DIR.glob("*.json")):
        events[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return events


def compact(obj: Any) -> str:
    """The SQS body form of a JSON value: compact, UTF-8 (not \\u-escaped), key order preserved."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # SQS computes the same checksum


def _sent_ms(body: str) -> int:
    """SentTimestamp for a record: shortly after the event's receivedAt, if the body has one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return FALLBACK_SENT_MS
    batch = doc.get("batch") if isinstance(doc, dict) else None
    event = batch[0] if isinstance(batch, list) and batch else doc
    received = event.get("receivedAt") if isinstance(event, dict) else None
    if not isinstance(received, str):
        return FALLBACK_SENT_MS
    try:
        when = datetime.fromisoformat(received)
    except ValueError:
        return FALLBACK_SENT_MS
    return round(when.timestamp() * 1000) + 37


def sqs_record(body: str, key: str) -> dict[str, Any]:
    """One SQS record carrying ``body``; ``key`` (file name + index) seeds the stable ids."""
    sent = _sent_ms(body)
    seed = key.encode("utf-8")
    opaque = hashlib.sha512(seed).digest() + hashlib.sha256(seed).digest()
    handle = base64.b64encode(opaque).decode("ascii")
    return {
        "messageId": str(uuid.uuid5(ID_NAMESPACE, key)),
        "receiptHandle": "AQEB" + handle,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(sent),
            "SenderId": SENDER_ID,
            "ApproximateFirstReceiveTimestamp": str(sent + 12),
        },
        "messageAttributes": {},
        "md5OfBody": md5_hex(body),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": AWS_REGION,
    }


def sqs_event(file_name: str, bodies: Iterable[str]) -> dict[str, Any]:
    return {"Records": [sqs_record(body, f"{file_name}#{i}") for i, body in enumerate(bodies)]}


def build(raw: dict[str, dict[str, Any]]) -> dict[Path, dict[str, Any]]:
    """Every output file (absolute path) and the SQS event it should hold."""
    out: dict[Path, dict[str, Any]] = {}

    def add(directory: Path, name: str, bodies: Iterable[str]) -> None:
        out[directory / f"{name}.json"] = sqs_event(f"{directory.name}/{name}.json", bodies)

    # One file per raw event.
    for name, event in raw.items():
        if name not in NO_SQS_FILE:
            add(SQS_DIR, name, [compact(event)])

    # Every raw event as its own record, plus one Segment-style batch envelope.
    batch = {"batch": [raw["page"], raw["product_viewed"], raw["identify"]]}
    add(SQS_DIR, "mixed_batch", [*(compact(e) for e in raw.values()), compact(batch)])

    # --- events/bad: things the forwarder must reject or report, never crash on or drop silently.
    good_track = raw["product_viewed"]
    truncated = compact(good_track)
    truncated = truncated[: len(truncated) * 2 // 3]  # cut mid-way: not valid JSON
    add(BAD_DIR, "malformed_json", [truncated])

    no_identity = copy.deepcopy(raw["product_added"])
    no_identity.pop("anonymousId", None)
    no_identity.pop("userId", None)
    add(BAD_DIR, "missing_identity", [compact(no_identity)])

    add(BAD_DIR, "unsupported_type", [compact(raw["alias"])])

    no_name = copy.deepcopy(raw["cart_viewed"])
    del no_name["event"]
    add(
        BAD_DIR,
        "batch_with_one_bad_event",
        [compact({"batch": [raw["product_added"], no_name, raw["page"]]})],
    )

    wrong = copy.deepcopy(raw["product_clicked"])
    wrong["properties"] = [wrong["properties"]["product_id"], wrong["properties"]["sku"]]
    wrong["timestamp"] = "not a date"
    add(BAD_DIR, "wrong_types", [compact(wrong)])

    add(
        BAD_DIR,
        "mixed_good_and_bad",
        [compact(raw["product_viewed"]), truncated, compact(raw["order_completed"])],
    )
    return out


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _rel(path: Path) -> str:
    return str(path.relative_to(EVENTS_DIR.parent))


def sync(
    wanted: dict[Path, str],
    generated_dirs: list[Path],
    *,
    check: bool,
    script: str,
    same: Callable[[str, str], bool] = lambda a, b: a == b,
) -> int:
    """Write the files that differ from ``wanted`` (or, with ``check``, list them and exit 1)."""
    extra = sorted(p for d in generated_dirs if d.is_dir() for p in d.glob("*.json") if p not in wanted)
    for path in extra:
        print(f"note: {_rel(path)} is not generated by this script", file=sys.stderr)

    def current(path: Path, text: str) -> bool:
        return path.is_file() and same(path.read_text(encoding="utf-8"), text)

    if check:
        stale = [path for path, text in wanted.items() if not current(path, text)]
        for path in stale:
            print(f"{_rel(path)}: {'missing' if not path.is_file() else 'differs'}")
        if stale:
            print(f"{len(stale)} file(s) out of date; run: python events/{script}", file=sys.stderr)
            return 1
        return 0

    written = 0
    for path, text in wanted.items():
        if current(path, text):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {_rel(path)}")
        written += 1
    print(f"{written} written, {len(wanted) - written} unchanged", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None, description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing files that are missing or differ from what would be written",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.splitlines()[0] if __doc__ else None)
    wanted = {path: render(doc) for path, doc in build(load_raw()).items()}
    return sync(wanted, [SQS_DIR, BAD_DIR], check=args.check, script="make_events.py")


if __name__ == "__main__":
    sys.exit(main())
