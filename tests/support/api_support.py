"""Helpers of the ingest API tests (a plain module: test modules cannot import a conftest reliably).

The real handler is fed real HTTP API (v2) events, with its environment from ``template.yaml``
through the local Sandbox (moto's SQS and SSM, the Heap emulator)."""

from __future__ import annotations

import base64
import gzip as gzip_module
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heap_forwarder_tools.local.invoke import LocalContext, load_handler
from heap_forwarder_tools.local.poller import EventSourceMapping
from heap_forwarder_tools.local.sandbox import DeadLetterView, Sandbox, environment
from heap_forwarder_tools.local.server import http_api_event
from heap_forwarder_tools.local.template import FunctionSpec
from sample_events import raw

if TYPE_CHECKING:
    from heap_forwarder.edge.ingest import Ingest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
WRITE_KEY = "demo-write-key"
# Fast: no in-process retry, so that an unavailable Heap is answered by parking at once.
NO_RETRY = {"RETRY_BUDGET_SECONDS": "0"}


def track(n: int, name: str = "Order Completed", **overrides: Any) -> dict[str, Any]:
    """A valid track event with its own messageId ``api-<n>``."""
    return raw("order_completed", event=name, messageId=f"api-{n}", **overrides)


def empty_events_batch(count: int) -> bytes:
    """``{"batch":[{},{},...]}`` with ``count`` empty events: 3 bytes an event, ~1,000x smaller gzipped."""
    return b'{"batch":[' + b",".join([b"{}"] * count) + b"]}"


def most_empty_events(max_bytes: int) -> int:
    """How many ``{}`` events fit in a batch body of at most ``max_bytes`` bytes."""
    return (max_bytes - len(empty_events_batch(0)) + 1) // 3


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def answer_of(response: Mapping[str, Any]) -> Answer:
    return Answer(
        int(response["statusCode"]),
        json.loads(response.get("body") or "{}"),
        {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()},
    )


def request_event(
    path: str,
    document: Any = None,
    *,
    data: bytes | None = None,
    key: str | None = WRITE_KEY,
    gzip: bool = False,
    headers: Iterable[tuple[str, str]] = (),
    content_type: str = "application/json",
) -> dict[str, Any]:
    """The event API Gateway hands the function for ``POST path`` (as the local server builds it)."""
    body = data if data is not None else json.dumps(document).encode("utf-8")
    sent = [("Content-Type", content_type), ("User-Agent", "pytest")]
    if key is not None:
        sent.append(("Authorization", basic(key)))
    if gzip:
        body = gzip_module.compress(body)
        sent.append(("Content-Encoding", "gzip"))
    sent.extend(headers)
    sent.append(("Content-Length", str(len(body))))
    return http_api_event("POST", path, sent, body)


# What ``entry/api.py`` keeps back from Lambda's remaining time when it has no runtime settings.
_DEFAULT_MARGIN_SECONDS = 3.0


def handle(worker: Ingest, event: dict[str, Any], remaining_seconds: float = 10.0) -> Answer:
    """``event`` through the API's real Lambda handler (``entry/api.py``: its router, the route
    models' validation, its answers), with ``worker`` as the warm service: the path production
    takes, with stand-ins for Heap and the queues instead of the environment's."""
    from heap_forwarder.entry import api as api_entry

    context = LocalContext("ApiFunction", 256, int(remaining_seconds + _DEFAULT_MARGIN_SECONDS) + 1)
    api_entry.install(worker)
    try:
        return answer_of(api_entry.lambda_handler(event, context))
    finally:
        api_entry.reset()


# handler -> (environment, warm runtime object) of the last call: see warm_invoke.
_warm: dict[str, tuple[dict[str, str], int]] = {}


def warm_invoke(spec: FunctionSpec, event: dict[str, Any]) -> Any:
    """``local.invoke.invoke``, but warm between calls with the same environment, as Lambda keeps
    an instance warm (building a cold runtime costs ~0.2 s of boto3 clients per call)."""
    with environment(spec.environment):
        handler, module = load_handler(spec)
        state = getattr(module, "_warm", None)
        last = _warm.get(spec.handler)
        if last is None or last[0] != spec.environment or last[1] != id(getattr(state, "runtime", None)):
            module.reset()  # another environment (or someone else's state): start cold
        try:
            return handler(event, LocalContext(spec.logical_id, spec.memory_mb, spec.timeout))
        finally:
            _warm[spec.handler] = (dict(spec.environment), id(getattr(state, "runtime", None)))


def drain(sqs: Any, queue_url: str) -> None:
    """Delete every visible message of a queue (PurgeQueue is allowed once a minute)."""
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


class Api:
    """Calls the ApiFunction's real handler as ``sam local invoke`` would (template environment)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def invoke(
        self,
        event: dict[str, Any],
        env: Mapping[str, str] | None = None,
        parameters: Mapping[str, str] | None = None,
    ) -> Answer:
        """``env`` overrides the function's environment; ``parameters`` the stack's parameters."""
        spec = self.sandbox.function("ApiFunction", env, parameters=parameters)
        return answer_of(warm_invoke(spec, event))

    def post(
        self,
        path: str,
        document: Any = None,
        *,
        env: Mapping[str, str] | None = None,
        parameters: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Answer:
        return self.invoke(request_event(path, document, **options), env, parameters)

    def queue(self, logical_id: str = "MainQueue") -> list[DeadLetterView]:
        """Every message in a queue, left in place."""
        return self.sandbox.dead_letters(logical_id)

    def parked(self) -> list[dict[str, Any]]:
        """The bodies of the messages parked in the main queue, decoded."""
        return [json.loads(m.body) for m in self.queue("MainQueue")]

    def run_consumer(self) -> int:
        """Let the SQS consumer (its real handler and template environment) drain the main queue."""
        spec = self.sandbox.function("ConsumerFunction")
        queue_url = self.sandbox.queue_url("MainQueue")
        mapping = EventSourceMapping(self.sandbox.client("sqs"), queue_url, lambda e: warm_invoke(spec, e))
        return mapping.drain().deleted
