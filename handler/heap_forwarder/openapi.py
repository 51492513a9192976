"""The ingest API's OpenAPI document, generated from its routes and models (``docs/openapi.json``).

Regenerate after changing a route, a model or a description (a test compares the two)::

    python -m heap_forwarder.openapi > docs/openapi.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import HTTPBase, SecurityScheme, Tag
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

from heap_forwarder.edge.ingest import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENTS_PER_REQUEST,
    MAX_RAW_BYTES,
    Accepted,
    ErrorBody,
)

TITLE = "heap-forwarder ingest API"
API_VERSION = "1.0"  # the contract's version (the /v1 routes), not the package's
TAG = "tracking"
SECURITY_SCHEME = "writeKey"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
JSON = "application/json"

DESCRIPTION = f"""\
Segment/MetaRouter HTTP tracking API, forwarded to Heap. Point a Segment or RudderStack server SDK
(or any HTTP client) at the API's base URL.

* **Auth**: HTTP Basic, the write key as the user name and an empty password (when the stack runs
  with `ApiAuthMode=WriteKey`; with `ApiAuthMode=IAM`, API Gateway requires SigV4 instead).
* **Bodies**: JSON, optionally `Content-Encoding: gzip`. At most {MAX_RAW_BYTES} bytes as sent,
  {MAX_BODY_BYTES} bytes decompressed, {MAX_EVENTS_PER_REQUEST} events per request,
  {MAX_EVENT_BYTES} bytes per event (compact JSON).
* **Atomic validation**: one invalid event refuses the whole request (400, nothing sent).
* **Nothing lost**: 200 = delivered (events Heap refused are listed and kept in the dead-letter
  queue); 202 = Heap unavailable, events parked and delivered later; 503 = retry the request.

See docs/api.md for the whole contract."""


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

SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    SECURITY_SCHEME: HTTPBase(
        scheme="basic",
        description="The write key as the user name, the password empty (as Segment's SDKs send it).",
    )
}


def document() -> dict[str, Any]:
    """The OpenAPI document of the routes ``heap_forwarder.entry.api`` serves."""
    from heap_forwarder.entry.api import app

    text = app.get_openapi_json_schema(
        title=TITLE,
        version=API_VERSION,
        description=DESCRIPTION,
        security_schemes=SECURITY_SCHEMES,
        tags=[Tag(name=TAG, description="Segment/MetaRouter spec calls, forwarded to Heap.")],
    )
    doc: dict[str, Any] = json.loads(text)
    # Powertools documents 422 for request validation; this API answers such requests with 400.
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    _prune_schemas(doc)
    return doc


_SCHEMA_REF = "#/components/schemas/"


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = (
            {node["$ref"][len(_SCHEMA_REF) :]} if str(node.get("$ref", "")).startswith(_SCHEMA_REF) else set()
        )
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _prune_schemas(doc: dict[str, Any]) -> None:
    """Drop component schemas no route reaches (Powertools' validation-error schemas)."""
    schemas = doc.get("components", {}).get("schemas", {})
    reached: set[str] = set()
    pending = _refs(doc.get("paths", {}))
    while pending:
        name = pending.pop()
        if name not in reached:
            reached.add(name)
            pending |= _refs(schemas.get(name, {}))
    for name in [n for n in schemas if n not in reached]:
        del schemas[name]


def render() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
