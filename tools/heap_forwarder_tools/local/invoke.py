"""Docker-free ``sam local invoke``: run a function's real handler in-process.

The handler, timeout and environment come from ``template.yaml``; the event from a file, as
``sam local invoke -e`` takes it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heap_forwarder.envelopes import is_http_api_event, is_sqs_event
from heap_forwarder_tools.json_files import JsonFileError, read_json
from heap_forwarder_tools.local.sandbox import environment
from heap_forwarder_tools.local.template import FunctionSpec


class InvokeError(ValueError):
    pass


@dataclass
class LocalContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def read_event(path: Path) -> dict[str, Any]:
    try:
        document = read_json(path)
    except JsonFileError as error:
        raise InvokeError(f"event file {error}") from None
    if not isinstance(document, dict):
        raise InvokeError(
            f"event file {path} must hold a JSON object (a Lambda event), not {type(document).__name__}"
        )
    return document


def trigger_of(template: Mapping[str, Any], logical_id: str) -> str | None:
    """What invokes the function in the template: "sqs", "http", or None (nothing known)."""
    resource = (template.get("Resources") or {}).get(logical_id) or {}
    events = (resource.get("Properties") or {}).get("Events") or {}
    kinds = {str(e.get("Type")) for e in events.values() if isinstance(e, dict)}
    if "SQS" in kinds:
        return "sqs"
    if kinds & {"HttpApi", "Api"}:
        return "http"
    return None


def _is_plain(document: Mapping[str, Any]) -> bool:
    return "type" in document or isinstance(document.get("batch"), list)


def shape_event(
    document: dict[str, Any], trigger: str | None, source: str, write_key: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """The Lambda event the function expects, and a note when a plain event had to be wrapped.

    A plain Segment event or ``{"batch": [...]}`` (``events/raw``) is wrapped the way its
    trigger would hand it over: one SQS record, or an HTTP API ``POST /v1/<type>`` request.
    An event of the other trigger's shape is refused with the reason.
    """
    name = Path(source).name
    if trigger == "sqs":
        if is_sqs_event(document):
            return document, None
        if is_http_api_event(document):
            raise InvokeError(f"{source} is an HTTP API event; this function is triggered by SQS")
        if not _is_plain(document):
            raise InvokeError(f"{source} is neither an SQS event nor a Segment event or batch")
        body = json.dumps(document, ensure_ascii=False)
        record = {
            "messageId": str(uuid.uuid5(uuid.NAMESPACE_URL, source)),
            "receiptHandle": f"local-{name}",
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": str(int(time.time() * 1000)),
                "SenderId": "local",
                "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
            },
            "messageAttributes": {},
            "md5OfBody": hashlib.md5(body.encode("utf-8")).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:heap-forwarder-local-MainQueue",
            "awsRegion": "us-east-1",
        }
        return {"Records": [record]}, f"wrapped the plain event of {name} in one SQS record"
    if trigger == "http":
        if is_http_api_event(document):
            return document, None
        if is_sqs_event(document):
            raise InvokeError(f"{source} is an SQS event; this function is triggered by HTTP API requests")
        if not _is_plain(document):
            raise InvokeError(f"{source} is neither an HTTP API event nor a Segment event or batch")
        path = "/v1/batch" if "batch" in document else f"/v1/{document.get('type')}"
        headers = {"content-type": "application/json"}
        if write_key:
            headers["authorization"] = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        event = {
            "version": "2.0",
            "routeKey": f"POST {path}",
            "rawPath": path,
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {
                "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
                "requestId": str(uuid.uuid5(uuid.NAMESPACE_URL, source)),
                "routeKey": f"POST {path}",
                "stage": "$default",
            },
            "body": json.dumps(document, ensure_ascii=False),
            "isBase64Encoded": False,
        }
        return event, f"wrapped the plain event of {name} in an HTTP API request to POST {path}"
    return document, None


def load_handler(spec: FunctionSpec) -> tuple[Callable[[dict[str, Any], Any], Any], Any]:
    module_name, _, function_name = spec.handler.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, function_name), module
    except (ImportError, AttributeError) as error:
        raise InvokeError(f"cannot load handler {spec.handler} of {spec.logical_id}: {error}") from None


def invoke(spec: FunctionSpec, event: dict[str, Any], *, cold: bool = True) -> Any:
    """Call the function's handler with ``event`` under its environment; return its response.

    ``cold`` (the default) forgets the warm state first, as the environment may differ from
    the last invocation's; pass False to reuse it, as Lambda does between invocations.
    """
    with environment(spec.environment):
        handler, module = load_handler(spec)
        reset = getattr(module, "reset", None)
        if cold and callable(reset):
            reset()
        context = LocalContext(spec.logical_id, spec.memory_mb, spec.timeout)
        return handler(event, context)
