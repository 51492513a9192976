"""Unwrapping what carries events: SQS records, API Gateway HTTP API (v2) requests, plain bodies.

Shared by the Lambda entry points and the CLI so that both read events the same way.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from typing import Any

from heap_forwarder.inbound import InvalidJson, decode_json

# The Segment/MetaRouter tracking API implies the event type by the route.
ROUTE_TYPES = {
    "/v1/track": "track",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/identify": "identify",
    "/v1/group": "group",
    "/v1/alias": "alias",
    "/v1/batch": None,
}


class BodyError(ValueError):
    """A body that cannot be read as events (bad base64, bad gzip, not JSON)."""


def is_sqs_event(document: Any) -> bool:
    records = document.get("Records") if isinstance(document, dict) else None
    return isinstance(records, list) and all(
        isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records
    )


def is_http_api_event(document: Any) -> bool:
    return isinstance(document, dict) and document.get("version") == "2.0" and "rawPath" in document


def header(event: Mapping[str, Any], name: str) -> str | None:
    headers = event.get("headers") or {}
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def http_body_bytes(event: Mapping[str, Any], max_bytes: int | None = None) -> bytes:
    """The request body as the producer sent it: base64 undone, gzip/deflate decompressed.

    ``max_bytes`` bounds the decompressed size, so a small gzip bomb cannot exhaust memory.
    """
    body = event.get("body") or ""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BodyError("body is marked base64 but is not valid base64") from None
    encoding = (header(event, "content-encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        decompressor = zlib.decompressobj(wbits)
        limit = max_bytes + 1 if max_bytes is not None else 0
        try:
            raw = decompressor.decompress(raw, limit)
        except zlib.error as error:
            raise BodyError(f"body is not valid {encoding}: {error}") from None
    elif encoding not in ("", "identity"):
        raise BodyError(f"unsupported Content-Encoding {encoding!r}; send identity or gzip")
    return raw


def sqs_bodies(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(messageId, body) of each SQS record."""
    return [(str(r.get("messageId", "")), str(r.get("body", ""))) for r in document["Records"]]


def decode_body(body: str | bytes, *, finite_numbers: bool = True) -> Any:
    try:
        return decode_json(body, finite_numbers=finite_numbers)
    except InvalidJson as error:
        raise BodyError(str(error)) from None
