"""docs/openapi.json: generated from the routes and models, and kept in sync with them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api_support import ROOT
from heap_forwarder_tools import openapi

DOCUMENT = ROOT / "docs" / "openapi.json"
ROUTES = {
    "/v1/track": "TrackCall",
    "/v1/page": "PageCall",
    "/v1/screen": "ScreenCall",
    "/v1/identify": "IdentifyCall",
    "/v1/group": "GroupCall",
    "/v1/alias": "AliasCall",
    "/v1/batch": "BatchCall",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    generated: dict[str, Any] = json.loads(openapi.render())
    return generated


def test_the_checked_in_document_is_up_to_date() -> None:
    """Regenerate with: python -m heap_forwarder_tools.openapi > docs/openapi.json"""
    assert DOCUMENT.read_text("utf-8") == openapi.render(), (
        "docs/openapi.json is stale: run `python -m heap_forwarder_tools.openapi > docs/openapi.json`"
    )


def test_exactly_the_seven_routes_are_documented(document: dict[str, Any]) -> None:
    assert sorted(document["paths"]) == sorted(ROUTES)
    assert all(list(operations) == ["post"] for operations in document["paths"].values())


@pytest.mark.parametrize(("path", "model"), sorted(ROUTES.items()))
def test_each_route_documents_its_body_answers_and_security(
    document: dict[str, Any], path: str, model: str
) -> None:
    operation = document["paths"][path]["post"]

    body = operation["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{model}"
    responses = operation["responses"]
    assert sorted(responses) == ["200", "202", "400", "401", "413", "503"]
    for status in ("200", "202"):
        assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/Accepted")
    for status in ("400", "401", "413", "503"):
        assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert operation["security"] == [{"writeKey": []}]


def test_security_is_http_basic(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["writeKey"]["type"] == "http"
    assert document["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"


def test_single_event_routes_imply_the_type_and_batch_events_name_it(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "type" not in schemas["TrackCall"].get("required", [])
    assert schemas["TrackCall"]["properties"]["type"]["default"] == "track"
    assert "type" in schemas["TrackEvent"]["required"]
    assert schemas["BatchCall"]["properties"]["batch"]["items"]["discriminator"]["propertyName"] == "type"


def test_error_codes_are_an_enumeration(document: dict[str, Any]) -> None:
    codes = document["components"]["schemas"]["ErrorCode"]["enum"]
    assert codes == [
        "invalid_json",
        "invalid_body",
        "invalid_events",
        "unauthorized",
        "not_found",
        "payload_too_large",
        "unavailable",
    ]


def test_no_dangling_references(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    for name in document["components"]["schemas"]:
        assert f'"#/components/schemas/{name}"' in text
    for reference in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert reference in document["components"]["schemas"]
