"""The API answers as docs/openapi.json says, for inputs generated from that document (schemathesis).

Generated calls go over real HTTP to the local server (the real handler, warm, in the sandbox):
whatever the input, the answer is never a server error, and its status, content type and body
are the documented ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api_support import ROOT, WRITE_KEY, basic
from heap_forwarder_tools.local.sandbox import Sandbox
from heap_forwarder_tools.local.server import LocalApiServer, api_routes

schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
schema.config.phases.coverage.enabled = False  # its exhaustive negative cases take ~10 s
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server(sandbox: Sandbox) -> Iterator[LocalApiServer]:
    with LocalApiServer(sandbox.function("ApiFunction"), routes=api_routes(sandbox.template)) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(server: LocalApiServer) -> str:
    return server.url


@schema.parametrize()
@settings(
    max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
def test_answers_conform_to_the_document(case: schemathesis.Case[Any], base_url: str) -> None:
    response = case.call(base_url=base_url, headers={"Authorization": basic(WRITE_KEY)})

    case.validate_response(response, checks=CHECKS)
