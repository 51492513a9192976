"""Opening an API request: the route, the write key, the body and the limits, then the events
completed. What does not pass is an ``ApiError`` (404, 401, 503, 413, 400); the rest is an
``IngestRequest`` ready for the pipeline.

In order: the write key (HTTP Basic user name, constant-time compare) -> 401; the body as sent
(base64 undone, gzip/deflate decompressed, size-bounded) -> 413 / 400; JSON -> 400; the events
the route carries, at most 2,500 of them (counted before any per-event work) -> 413, each at
most 32 KB -> 413; a ``type`` that contradicts the route -> 400; then each event is completed
(``inbound.py``: ``complete_event``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from heap_forwarder.edge.api_contract import (
    AUTH_REALM,
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENTS_PER_REQUEST,
    MAX_RAW_BYTES,
    ApiError,
    ErrorCode,
    invalid_events,
    unavailable,
)
from heap_forwarder.edge.observability import count, logger
from heap_forwarder.edge.parking import compact_json
from heap_forwarder.envelopes import ROUTE_TYPES, BodyError, header, http_body_bytes
from heap_forwarder.inbound import complete_event, missing
from heap_forwarder.models import InvalidJson, Problem, decode_json


@dataclass
class IngestRequest:
    """A request that passed the checks of ``open``: its events, completed and ready for the pipeline."""

    request_id: str
    route: str
    events: list[Any]
    received_at: str

    def body_json(self) -> str:
        """The events as the JSON body the route's model describes (for request validation)."""
        document: Any = {"batch": self.events} if ROUTE_TYPES[self.route] is None else self.events[0]
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def route_of(event: Mapping[str, Any]) -> tuple[str, str]:
    """(method, path) of an HTTP API (v2) request; the route key wins when API Gateway matched one."""
    route_key = str(event.get("routeKey") or "")
    method, _, path = route_key.partition(" ")
    if path.startswith("/"):
        return method.upper(), path
    http = (event.get("requestContext") or {}).get("http") or {}
    return str(http.get("method") or "").upper(), str(event.get("rawPath") or http.get("path") or "")


def is_ingest_route(event: Mapping[str, Any]) -> bool:
    method, path = route_of(event)
    return method == "POST" and path in ROUTE_TYPES


def basic_auth_user(authorization: str | None) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header; None when absent or malformed."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, _password = decoded.partition(":")
    return user if colon else None


def _digest(text: str) -> bytes:
    # Compared as digests: equal lengths, so not even the key's length shows in the timing.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _raw_size(event: Mapping[str, Any]) -> int:
    body = event.get("body") or ""
    if not isinstance(body, str):
        return len(body)
    if event.get("isBase64Encoded"):
        return len(body) // 4 * 3 - body[-2:].count("=")
    return len(body.encode("utf-8"))


def open_request(
    event: Mapping[str, Any], write_key: Callable[[], str] | None, now: Callable[[], str]
) -> IngestRequest:
    """Authenticate and read the request; raise ApiError (404/401/503/413/400) when it cannot go on."""
    method, path = route_of(event)
    if method != "POST" or path not in ROUTE_TYPES:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no route {method} {path}")
    authenticate(write_key, header(event, "authorization"))
    raw_size = _raw_size(event)
    if raw_size > MAX_RAW_BYTES:
        raise ApiError(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the request body is {raw_size} bytes; the limit is {MAX_RAW_BYTES} bytes as sent",
        )
    try:
        body = http_body_bytes(event, max_bytes=MAX_BODY_BYTES)
    except BodyError as error:
        raise ApiError(400, ErrorCode.INVALID_BODY, str(error)) from None
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the request body is over {MAX_BODY_BYTES} bytes decompressed; send smaller batches",
        )
    try:
        document = decode_json(body)
    except InvalidJson as error:
        raise ApiError(400, ErrorCode.INVALID_JSON, str(error)) from None
    event_type = ROUTE_TYPES[path]
    events, batch_fields = _events_in(document, path, event_type)
    if len(events) > MAX_EVENTS_PER_REQUEST:
        # Before the size check below: it encodes every event.
        raise ApiError(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the batch holds {len(events)} events; the limit is {MAX_EVENTS_PER_REQUEST} per request;"
            " send smaller batches",
        )
    oversized = [
        Problem(i, "", f"the event is {size} bytes as compact JSON; the limit is {MAX_EVENT_BYTES} bytes")
        for i, size in enumerate(len(compact_json(e).encode("utf-8", "surrogatepass")) for e in events)
        if size > MAX_EVENT_BYTES
    ]
    if oversized:
        raise ApiError(
            413, ErrorCode.PAYLOAD_TOO_LARGE, f"{len(oversized)} event(s) are too large", oversized
        )
    if event_type is not None:
        declared = events[0].get("type")
        if not missing(events[0], "type") and declared != event_type:
            message = f"{declared!r} contradicts the route {path}, which takes {event_type} events"
            raise invalid_events([Problem(0, "type", message)])
    received_at = now()
    completed = [
        complete_event(e, event_type, batch_fields, received_at) if isinstance(e, dict) else e for e in events
    ]
    context = event.get("requestContext") or {}
    request_id = str(context.get("requestId") or uuid.uuid4())
    return IngestRequest(request_id, path, completed, received_at)


def authenticate(write_key: Callable[[], str] | None, authorization: str | None) -> None:
    """Nothing to check without a write key (IAM mode); 503 when it cannot be read, 401 when wrong."""
    if write_key is None:
        return  # no write key configured: API Gateway authenticates (IAM) or nobody does
    try:
        expected = write_key()
    except Exception as error:
        logger.error("cannot read the write key; answering 503", extra={"cause": type(error).__name__})
        count("ConfigurationFaults", 1)
        raise unavailable("the write key cannot be verified right now; retry later") from None
    user = basic_auth_user(authorization)
    if user is None or not hmac.compare_digest(_digest(user), _digest(expected)):
        reason = "missing" if not authorization else "invalid"
        raise ApiError(
            401,
            ErrorCode.UNAUTHORIZED,
            f"{reason} credentials: send HTTP Basic auth with the write key as the user name",
            headers={"WWW-Authenticate": AUTH_REALM},
        )


def _events_in(document: Any, path: str, event_type: str | None) -> tuple[list[Any], dict[str, Any]]:
    """The events a route's body carries, and the batch-level fields that apply to them."""
    if event_type is not None:
        if not isinstance(document, dict):
            raise ApiError(
                400,
                ErrorCode.INVALID_BODY,
                f"the body of {path} must be a JSON object (one {event_type} call), not {_kind(document)}",
            )
        return [document], {}
    if not isinstance(document, dict) or not isinstance(document.get("batch"), list):
        raise ApiError(
            400, ErrorCode.INVALID_BODY, 'the body of /v1/batch must be a JSON object {"batch": [events...]}'
        )
    batch_fields = {k: document[k] for k in ("context", "integrations", "sentAt") if k in document}
    return list(document["batch"]), batch_fields


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
