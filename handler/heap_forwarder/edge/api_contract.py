"""What the ingest API's routes declare about themselves: their answers, security and tag.

The routes in ``heap_forwarder.entry.api`` carry these, so they ship with the function; the
OpenAPI document built from the routes (``heap_forwarder_tools.openapi``) does not.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from heap_forwarder.edge.ingest import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENTS_PER_REQUEST,
    MAX_RAW_BYTES,
    Accepted,
    ErrorBody,
)

TAG = "tracking"
SECURITY_SCHEME = "writeKey"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
JSON = "application/json"


def _json(model: type[Any], description: str, headers: dict[str, Any] | None = None) -> OpenAPIResponse:
    response: OpenAPIResponse = {"description": description, "content": {JSON: {"model": model}}}
    if headers:
        response["headers"] = headers
    return response


RESPONSES: dict[int, OpenAPIResponse] = {
    200: _json(
        Accepted,
        "Delivered to Heap. Events Heap refused after delivery began are listed in `rejected`, with the"
        " reason, and written to the dead-letter queue.",
    ),
    202: _json(
        Accepted,
        "Heap is unavailable (or the time ran out): the events not delivered are parked in the retry"
        " queue and the queue consumer delivers them later.",
    ),
    400: _json(
        ErrorBody,
        "The body is not JSON, is not shaped as the route expects, or at least one event is invalid"
        " (spec, mapping or Heap rules): the whole request is refused and nothing is sent."
        " `problems` names each event's index, field and reason.",
    ),
    401: _json(
        ErrorBody,
        "Missing or wrong write key.",
        {"WWW-Authenticate": {"description": "The Basic auth challenge.", "schema": {"type": "string"}}},
    ),
    413: _json(
        ErrorBody,
        f"Too large: more than {MAX_RAW_BYTES} bytes as sent, {MAX_BODY_BYTES} bytes decompressed,"
        f" more than {MAX_EVENTS_PER_REQUEST} events (checked first, before any event is read),"
        f" or an event over {MAX_EVENT_BYTES} bytes (listed in `problems`).",
    ),
    503: _json(
        ErrorBody,
        "The events could be neither delivered nor parked (or the write key cannot be verified now,"
        " or the API is in WriteKey mode with no write key configured): resend the request later."
        " Events already delivered are deduplicated by `messageId`.",
        {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
}
