"""Regenerate the HTTP API sample events under ``events/api/`` from the plain events in ``events/raw/``.

Usage::

    python events/make_api_events.py          # (re)write events/api/*.json
    python events/make_api_events.py --check  # exit 1, listing every file that is missing or out of date

Each file is an API Gateway HTTP API (payload 2.0) request in the shape API Gateway hands the
ingest function (``sam local generate-event apigateway http-api-proxy`` gives the same shape), so
it can be fed to ``sam local invoke ApiFunction -e``, ``heap-forwarder invoke`` or the handler in
tests. Requests carry the demo write key ``demo-write-key`` (HTTP Basic user name, the key the
local sandbox stores in SSM), except the two that show a 401. Gzip bodies are base64-encoded, as
API Gateway passes them; ``--check`` compares them decompressed, so another zlib build that
compresses differently does not count as a change. Ids and times derive from the file name, so
running the script twice gives the same files.

Standard library only.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

# The sibling script shares its write-or-check logic, whether this one runs as a script or is
# loaded by path (the tests do).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_events import parse_args, sync

EVENTS_DIR = Path(__file__).resolve().parent
RAW_DIR = EVENTS_DIR / "raw"
API_DIR = EVENTS_DIR / "api"

WRITE_KEY = "demo-write-key"  # demo only: what `heap-forwarder serve` and the demo put in SSM
API_ID = "a1b2c3d4e5"
DOMAIN = f"{API_ID}.execute-api.us-east-1.amazonaws.com"
SOURCE_IP = "203.0.113.42"
TIME = "10/Jun/2024:14:10:00 +0000"
TIME_EPOCH = 1718028600000
SDK_AGENT = "analytics-python/2.4.0"  # Segment's Python SDK posts /v1/batch
CURL_AGENT = "curl/8.5.0"
OVERSIZED_EVENTS = 26  # x ~20 KB each: over the 500 KB batch limit, every event under 32 KB
SENT_AT = "2024-06-10T14:09:59.870Z"


def load_raw() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(RAW_DIR.glob("*.json"))}


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode("ascii")


def _untyped(event: dict[str, Any]) -> dict[str, Any]:
    """A call for a single-event route: the route implies the type, as in Segment's HTTP API."""
    call = copy.deepcopy(event)
    call.pop("type", None)
    return call


def http_event(
    name: str,
    path: str,
    document: Any,
    *,
    key: str | None = WRITE_KEY,
    gzipped: bool = False,
    agent: str = CURL_AGENT,
) -> dict[str, Any]:
    """One HTTP API request; ``name`` (the output file) seeds the ids."""
    data = compact(document).encode("utf-8")
    if gzipped:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    seed = hashlib.sha256(name.encode("utf-8")).hexdigest()
    headers = {
        "accept": "*/*",
        "accept-encoding": "gzip, deflate",
    }
    if key is not None:
        headers["authorization"] = basic(key)
    headers["content-length"] = str(len(data))
    headers["content-type"] = "application/json"
    if gzipped:
        headers["content-encoding"] = "gzip"
    headers.update(
        {
            "host": DOMAIN,
            "user-agent": agent,
            "x-amzn-trace-id": f"Root=1-66670958-{seed[:24]}",
            "x-forwarded-for": SOURCE_IP,
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        }
    )
    route_key = f"POST {path}"
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": API_ID,
            "domainName": DOMAIN,
            "domainPrefix": API_ID,
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": agent,
            },
            "requestId": base64.b32encode(bytes.fromhex(seed[:20])).decode("ascii").rstrip("="),
            "routeKey": route_key,
            "stage": "$default",
            "time": TIME,
            "timeEpoch": TIME_EPOCH,
        },
        "body": base64.b64encode(data).decode("ascii") if gzipped else data.decode("utf-8"),
        "isBase64Encoded": gzipped,
    }


def build(raw: dict[str, dict[str, Any]]) -> dict[Path, dict[str, Any]]:
    """Every output file (absolute path) and the HTTP API event it should hold."""
    out: dict[Path, dict[str, Any]] = {}

    def add(name: str, path: str, document: Any, **options: Any) -> None:
        out[API_DIR / f"{name}.json"] = http_event(f"api/{name}.json", path, document, **options)

    # One call per single-event route, without `type` (the route implies it).
    add("track", "/v1/track", _untyped(raw["product_viewed"]))
    for route in ("page", "screen", "identify", "group", "alias"):
        add(route, f"/v1/{route}", _untyped(raw[route]))

    # What Segment's Python SDK sends: typed calls under "batch", sentAt and the write key at the top.
    calls = [raw["page"], raw["product_added"], raw["identify"], raw["custom_track"]]
    add("batch", "/v1/batch", {"batch": calls, "sentAt": SENT_AT, "writeKey": WRITE_KEY}, agent=SDK_AGENT)

    # What RudderStack's SDKs send by default: the same, gzip-compressed.
    checkout = [
        raw["cart_viewed"],
        raw["checkout_started"],
        raw["payment_info_entered"],
        raw["order_completed"],
    ]
    add("batch_gzip", "/v1/batch", {"batch": checkout, "sentAt": SENT_AT}, gzipped=True)

    # Over the 500 KB batch limit once decompressed (each event alone is under 32 KB): 413.
    big = []
    for i in range(OVERSIZED_EVENTS):
        event = copy.deepcopy(raw["products_searched"])
        event["messageId"] = f"oversized-{i:03d}"
        event["properties"]["notes"] = "x" * 20_000
        big.append(event)
    add("batch_oversized", "/v1/batch", {"batch": big}, gzipped=True)

    # Auth: no write key, and a wrong one: 401.
    add("track_without_write_key", "/v1/track", _untyped(raw["order_completed"]), key=None)
    add("track_wrong_write_key", "/v1/track", _untyped(raw["order_completed"]), key="not-the-write-key")

    # One invalid event refuses the whole request: 400 naming index 1, field "event".
    no_name = copy.deepcopy(raw["cart_viewed"])
    del no_name["event"]
    add("batch_with_one_bad_event", "/v1/batch", {"batch": [raw["product_added"], no_name, raw["page"]]})
    return out


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _comparable(text: str) -> Any:
    """A file's content with a gzip body decompressed (and its compressed length left out)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    headers = doc.get("headers") if isinstance(doc, dict) else None
    if isinstance(headers, dict) and headers.get("content-encoding") == "gzip":
        try:
            body = gzip.decompress(base64.b64decode(doc["body"]))
        except (KeyError, TypeError, ValueError, OSError):
            return doc
        doc = {
            **doc,
            "body": json.loads(body),
            "headers": {k: v for k, v in headers.items() if k != "content-length"},
        }
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__.splitlines()[0] if __doc__ else None)
    wanted = {path: render(doc) for path, doc in build(load_raw()).items()}
    return sync(
        wanted,
        [API_DIR],
        check=args.check,
        script="make_api_events.py",
        same=lambda a, b: _comparable(a) == _comparable(b),
    )


if __name__ == "__main__":
    sys.exit(main())
