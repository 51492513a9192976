"""API fuzzing: no 5xx for any input, every 4xx a JSON error body, every 2xx accounting for each event.

tests/api/test_api_conformance.py checks that answers conform to docs/openapi.json (8 examples per
operation, the coverage phase off). This extends it:

* schemathesis over every operation with more examples, the coverage phase on (its boundary
  and negative cases), with the write key and with whatever credentials schemathesis makes up;
  the answers held to the product's own promises rather than the document's shapes;
* raw HTTP that no schema describes: any bytes, any method, path, Content-Type, Content-Encoding
  and Authorization (hypothesis), to the same local server.

Everything goes over real HTTP to ``LocalApiServer`` (the real handler, warm) in the sandbox.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proof_support import ROOT, WRITE_KEY, Stage, basic, take_census
from schemathesis.checks import not_a_server_error

from heap_forwarder.edge.api_contract import ErrorCode
from heap_forwarder.envelopes import ROUTE_TYPES
from heap_forwarder_tools.local.server import LocalApiServer, api_routes

EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "30"))  # per operation and per test in CI
ERROR_CODES = {code.value for code in ErrorCode}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    print_blob=True,
)

# With the write key: every phase, the coverage phase's boundary and negative cases included.
schema = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
# Without it the answer is 401 before the body is read: generated data only, no coverage phase.
schema_without_key = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.json")
schema_without_key.config.phases.coverage.enabled = False


@pytest.fixture(scope="module")
def server(module_stage: Stage) -> Iterator[LocalApiServer]:
    sandbox = module_stage.sandbox
    with LocalApiServer(sandbox.function("ApiFunction"), routes=api_routes(sandbox.template)) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(server: LocalApiServer) -> str:
    return server.url


@pytest.fixture(scope="module")
def http() -> Iterator[urllib3.PoolManager]:
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=30))
    yield pool
    pool.clear()


def events_sent(path: str, body: Any) -> int | None:
    """How many events the request carries (None when its body is no JSON document of events)."""
    if ROUTE_TYPES.get(path, "") is not None:
        return 1
    if isinstance(body, dict) and isinstance(body.get("batch"), list):
        return len(body["batch"])
    return None


def header(headers: Any, name: str) -> str:
    """A response header, whichever client read it (schemathesis: lower-cased lists)."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) else value)
    return ""


CALLS: Counter[str] = Counter()  # answers checked, by status class (a guard against vacuity)


def check_answer(status: int, headers: Any, data: bytes, path: str, body: Any, *, documented: bool) -> None:
    """The product's promises, whatever the input: no 5xx; JSON always; the documented error body
    on every 4xx of a documented route; a 2xx accounts for each event of the request."""
    CALLS[f"{status // 100}xx"] += 1
    assert status < 500, (status, data[:500])
    document = json.loads(data)
    assert isinstance(document, dict), document
    if not documented:
        return  # a route API Gateway itself answers (404, oversized request): its own JSON
    if 400 <= status < 500:
        assert document["error"] in ERROR_CODES and document["code"] == document["error"], document
        assert isinstance(document["message"], str) and document["message"], document
        for problem in document["problems"]:
            assert isinstance(problem["index"], int) and problem["index"] >= 0
            assert isinstance(problem["field"], str) and isinstance(problem["message"], str)
        if status == 401:
            assert header(headers, "WWW-Authenticate").startswith("Basic ")
        return
    assert status in (200, 202), (status, document)
    assert document["success"] is True
    sent = events_sent(path, body)
    if sent is not None:
        accounted = document["delivered"] + len(document["rejected"]) + document["parked"]
        assert accounted == sent, (sent, document)


@schema.parametrize()
@FUZZ
def test_generated_calls_with_the_write_key(case: schemathesis.Case[Any], base_url: str) -> None:
    response = case.call(base_url=base_url, headers={"Authorization": basic(WRITE_KEY)})

    case.validate_response(response, checks=[not_a_server_error])
    check_answer(
        response.status_code,
        response.headers,
        response.content,
        case.path,
        case.body,
        documented=case.method.upper() == "POST",  # other methods: API Gateway's own 404
    )


@schema_without_key.parametrize()
@FUZZ
def test_generated_calls_with_generated_credentials(case: schemathesis.Case[Any], base_url: str) -> None:
    response = case.call(base_url=base_url)

    case.validate_response(response, checks=[not_a_server_error])
    check_answer(
        response.status_code,
        response.headers,
        response.content,
        case.path,
        case.body,
        documented=case.method.upper() == "POST",  # other methods: API Gateway's own 404
    )
    if response.status_code != 401:  # only the write key opens the door
        assert case.headers and case.headers.get("Authorization", "").replace(" ", "").lower().startswith(
            "basic"
        )


# ------------------------------------------------------------------------------------ raw HTTP
GOOD_EVENT = {
    "type": "track",
    "event": "Fuzzed",
    "anonymousId": "fuzz-anon",
    "timestamp": "2024-06-10T14:07:05Z",
}
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)
EVENTISH = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "page", "screen", "identify", "group", "alias", "Track", ""]),
        "event": st.text(max_size=20),
        "anonymousId": st.one_of(st.text(max_size=20), st.sampled_from(["null", "undefined", ""])),
        "userId": JSON_LEAVES,
        "messageId": JSON_LEAVES,
        "timestamp": st.one_of(st.text(max_size=30), st.integers(), st.just("2024-06-10T14:07:05Z")),
        "properties": JSON_VALUES,
        "traits": JSON_VALUES,
        "context": JSON_VALUES,
        "groupId": JSON_LEAVES,
        "previousId": JSON_LEAVES,
    },
)
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    EVENTISH.map(lambda e: json.dumps(e).encode()),
    st.lists(st.one_of(EVENTISH, st.just(GOOD_EVENT), JSON_VALUES), max_size=5).map(
        lambda b: json.dumps({"batch": b}).encode()
    ),
)
PATHS = st.sampled_from(
    [*ROUTE_TYPES, "/", "/v1", "/v1/identify/", "/v1/Track", "/v2/batch", "/v1/batch?x=1"]
)
AUTHORIZATIONS = st.sampled_from(
    [
        basic(WRITE_KEY),
        basic(WRITE_KEY, "any-password"),
        basic("wrong-key"),
        "Basic !!!",
        "Bearer x",
        "",
        None,
    ]
)


@dataclass(frozen=True)
class RawRequest:
    method: str
    path: str
    body: bytes
    content_type: str
    encoding: str
    compress: bool  # with a gzip/deflate Content-Encoding: whether the body really is compressed
    authorization: str | None

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type, "Content-Encoding": self.encoding}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        return {k: v for k, v in headers.items() if v}

    def data(self) -> bytes:
        if self.compress and self.encoding.lower() == "gzip":
            return gzip.compress(self.body)
        if self.compress and self.encoding == "deflate":
            return zlib.compress(self.body)
        return self.body


RAW_REQUESTS = st.builds(
    RawRequest,
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    path=PATHS,
    body=BODIES,
    content_type=st.sampled_from(["application/json", "text/plain", "application/octet-stream", "", "x/y"]),
    encoding=st.sampled_from(["", "", "identity", "gzip", "deflate", "br", "GZIP"]),
    compress=st.booleans(),
    authorization=AUTHORIZATIONS,
)


@FUZZ
@given(request=RAW_REQUESTS)
def test_raw_requests(request: RawRequest, base_url: str, http: urllib3.PoolManager) -> None:
    response = http.request(
        request.method, base_url + request.path, body=request.data(), headers=request.headers()
    )

    route = request.path.split("?", 1)[0]
    documented = request.method == "POST" and route in ROUTE_TYPES
    try:
        sent: Any = json.loads(request.body)
    except ValueError:
        sent = None
    check_answer(response.status, response.headers, response.data, route, sent, documented=documented)
    if documented and request.authorization not in (basic(WRITE_KEY), basic(WRITE_KEY, "any-password")):
        assert response.status == 401


def test_nothing_was_left_behind(module_stage: Stage) -> None:
    """Heap was healthy throughout: nothing parked; whatever was dead-lettered says why. And the
    fuzzing was not vacuous: requests were answered both 2xx (delivered) and 4xx (refused)."""
    if CALLS:
        print(f"API fuzz answers checked: {dict(CALLS)}")
        assert CALLS["2xx"] >= EXAMPLES and CALLS["4xx"] >= EXAMPLES, CALLS
    census = take_census(module_stage.sandbox)
    assert census.queued == []
    assert all(letter.has_reason for letter in census.dead_letters)
    assert max(census.tracked.values(), default=1) == 1
