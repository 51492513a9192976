"""The ingest API's OpenAPI document, generated from its routes and models (``docs/openapi.json``).

A tool, not shipped with the functions: the contract itself (limits, models, answers, each
route's operation, summary, security and tag) is the runtime's, ``heap_forwarder.edge.api_contract``.

Regenerate after changing a route, a model or a description (a test compares the two)::

    python -m heap_forwarder_tools.openapi > docs/openapi.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import HTTPBase, SecurityScheme, Tag

from heap_forwarder.edge.api_contract import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENTS_PER_REQUEST,
    MAX_RAW_BYTES,
    SECURITY_SCHEME,
    TAG,
)

TITLE = "heap-forwarder ingest API"
API_VERSION = "1.0"  # the contract's version (the /v1 routes), not the package's

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
