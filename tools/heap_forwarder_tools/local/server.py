"""Docker-free ``sam local start-api``: a local HTTP server in front of the real API handler.

Each HTTP request becomes the API Gateway HTTP API (payload 2.0) event API Gateway would hand
the function (lower-cased headers, a base64 body when it is binary or content-encoded), and the
handler's answer becomes the HTTP response. The handler stays warm between requests, as a Lambda
instance does (its environment is set once, when the server starts), and runs one request at a
time, as one instance does.

``heap-forwarder serve`` runs it as part of the local stack (``local.stack``: moto's server, the
Heap emulator, the consumer), or with ``--aws`` against the real services named by the template
and your environment (``serve_aws``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from heap_forwarder.envelopes import ROUTE_TYPES
from heap_forwarder_tools.emulator import listening_url
from heap_forwarder_tools.local.invoke import LocalContext, load_handler
from heap_forwarder_tools.local.metrics import split_metrics
from heap_forwarder_tools.local.sandbox import environment
from heap_forwarder_tools.local.template import FunctionSpec
from heap_forwarder_tools.service import Service

FUNCTION = "ApiFunction"
# API Gateway's own limit on an HTTP API request body.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "+json", "+xml")
_FORM = "application/x-www-form-urlencoded"
_DEFAULT_ROUTES = frozenset(("POST", path) for path in ROUTE_TYPES)

Route = tuple[str, str]


def _is_text(content_type: str, content_encoding: str, body: bytes) -> bool:
    """Does API Gateway pass this body as text (else base64)? Content-encoded bodies are binary."""
    if content_encoding.strip().lower() not in ("", "identity"):
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind and not (any(t in kind for t in _TEXT_TYPES) or kind == _FORM):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def http_api_event(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    source_ip: str = "127.0.0.1",
    routes: Iterable[Route] = _DEFAULT_ROUTES,
    request_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The HTTP API (payload 2.0) event for one request: ``target`` is the path and query string."""
    url = urlsplit(target)
    path = url.path or "/"
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]},{value}" if key in merged else value  # as API Gateway joins them
    method = method.upper()
    route_key = f"{method} {path}" if (method, path) in set(routes) else "$default"
    moment = now or datetime.now(UTC)
    request_id = request_id or base64.b32encode(uuid.uuid4().bytes[:10]).decode("ascii").rstrip("=")
    host = merged.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": url.query,
        "headers": merged,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": moment.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(moment.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if "cookie" in merged:  # API Gateway moves cookies out of the headers
        event["cookies"] = [c.strip() for c in merged.pop("cookie").split(";") if c.strip()]
    if url.query:
        parameters: dict[str, str] = {}
        for name, value in parse_qsl(url.query, keep_blank_values=True):
            parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
        event["queryStringParameters"] = parameters
    if body:
        if _is_text(merged.get("content-type", ""), merged.get("content-encoding", ""), body):
            event["body"] = body.decode("utf-8")
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of a handler's answer, as API Gateway reads payload 2.0 answers."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # Anything else is taken as a JSON body with status 200.
        text = result if isinstance(result, str) else json.dumps(result)
        return 200, [("Content-Type", "application/json")], text.encode("utf-8")
    status = int(result["statusCode"])
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    headers.extend(("Set-Cookie", str(c)) for c in result.get("cookies") or [])
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    return status, headers, payload


def answer_summary(status: int, body: bytes) -> str:
    """What an answer of the API says, in a few words: the counts of a 200/202 (with the reasons of
    the events Heap refused), else the error's message (and its first problem)."""
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        return ""
    if status in (200, 202) and "delivered" in answer:
        rejected = answer.get("rejected") or []
        parts = [f"{answer.get('delivered', 0)} delivered"]
        if answer.get("parked"):
            parts.append(
                f"{answer['parked']} parked in the main queue for the consumer (Heap did not answer in time)"
            )
        if rejected:
            reasons = sorted(
                {f"{r.get('error')}: {r.get('reason')}" for r in rejected if isinstance(r, dict)}
            )
            parts.append(f"{len(rejected)} refused and dead-lettered ({'; '.join(reasons)})")
        return ", ".join(parts)
    message = str(answer.get("message") or answer.get("error") or "")
    problems = answer.get("problems") or []
    if problems and isinstance(problems[0], dict):
        first = problems[0]
        message += f" (event {first.get('index')}: {first.get('field')}: {first.get('message')})"
    return message


@dataclass(frozen=True)
class ApiExchange:
    """One request the local API answered, for whoever watches the traffic."""

    method: str
    path: str
    status: int
    body: bytes
    milliseconds: float
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return answer_summary(self.status, self.body)


def api_routes(template: Mapping[str, Any], logical_id: str = FUNCTION) -> frozenset[Route]:
    """The (method, path) routes the template gives a function through HttpApi events."""
    resource = (template.get("Resources") or {}).get(logical_id) or {}
    routes = set()
    for spec in ((resource.get("Properties") or {}).get("Events") or {}).values():
        if spec.get("Type") == "HttpApi":
            properties = spec.get("Properties") or {}
            routes.add((str(properties.get("Method", "ANY")).upper(), str(properties.get("Path", "/"))))
    return frozenset(routes) or _DEFAULT_ROUTES


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: LocalApiServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as SDKs' connection pools expect

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the owner logs one line per request

    def __getattr__(self, name: str) -> Callable[[], None]:
        # Every method (do_POST, do_GET, do_TRACE...): API Gateway matches routes, not the server.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        started = time.perf_counter()
        owner = self.server.owner
        body = self._read_body()
        if body is None:
            status, headers, data = (
                413,
                [("Content-Type", "application/json")],
                b'{"message":"Request Entity Too Large"}',
            )
            self.close_connection = True
        else:
            event = http_api_event(
                self.command,
                self.path,
                self.headers.items(),
                body,
                source_ip=self.client_address[0],
                routes=owner.routes,
            )
            if event["routeKey"] == "$default":
                status, headers, data = (
                    404,
                    [("Content-Type", "application/json")],
                    b'{"message":"Not Found"}',
                )
            else:
                status, headers, data = owner.respond(event)
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        milliseconds = (time.perf_counter() - started) * 1000
        if owner.log is not None:
            summary = answer_summary(status, data)
            owner.log(
                f"{self.command} {self.path} -> {status} ({milliseconds:.0f} ms)"
                + (f": {summary}" if summary else "")
            )
        if owner.observe is not None:
            metrics = owner.metrics_of_this_thread()
            owner.observe(ApiExchange(self.command, self.path, status, data, milliseconds, metrics))

    def _read_body(self) -> bytes | None:
        """The request body; None when it is over API Gateway's limit."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(65537)
                length = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                size += length
                if size > MAX_REQUEST_BYTES:
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline(3)  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            return None
        return self.rfile.read(length) if length > 0 else b""


class LocalApiServer(Service):
    """The API function behind a real HTTP server on ``host:port`` (port 0: any free port)."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        routes: Iterable[Route] = _DEFAULT_ROUTES,
        log: Callable[[str], None] | None = None,
        observe: Callable[[ApiExchange], None] | None = None,
    ) -> None:
        """``log`` gets one line per request; ``observe`` gets each exchange, with the metrics
        the function printed for it (then kept out of stdout)."""
        self.spec = spec
        self.host = host
        self.port = port
        self.routes = frozenset(routes)
        self.log = log
        self.observe = observe
        self._metrics = threading.local()  # each request is handled on its own thread
        self._lock = threading.Lock()  # one invocation at a time, as one Lambda instance
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stack = contextlib.ExitStack()
        self._handler: Callable[[dict[str, Any], Any], Any] | None = None
        self._reset: Callable[[], None] | None = None

    def start(self) -> LocalApiServer:
        if self._server is not None:
            return self
        self._stack.enter_context(environment(self.spec.environment))
        handler, module = load_handler(self.spec)
        reset = getattr(module, "reset", None)
        self._reset = reset if callable(reset) else None
        if self._reset is not None:
            self._reset()  # built afresh for this environment, then kept warm
        self._handler = handler
        self._server = _Server((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if self._reset is not None:
            self._reset()  # the warm state belongs to this server's environment
        self._stack.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return listening_url(self._server.server_address)

    def invoke(self, event: dict[str, Any]) -> Any:
        """Hand one event to the warm handler, as Lambda does."""
        if self._handler is None:
            raise RuntimeError("the server is not started")
        with self._lock:
            context = LocalContext(self.spec.logical_id, self.spec.memory_mb, self.spec.timeout)
            if self.observe is None:
                return self._handler(event, context)
            # The metrics line Powertools prints is taken out of stdout for the observer; this
            # swaps sys.stdout for the whole process, so watchers print to a stream they hold.
            captured = io.StringIO()
            try:
                with contextlib.redirect_stdout(captured):
                    return self._handler(event, context)
            finally:
                metrics, others = split_metrics(captured.getvalue())
                self._metrics.value = dict(metrics)
                for line in others:
                    print(line)

    def metrics_of_this_thread(self) -> Mapping[str, float]:
        """The metrics of the last invocation made on the calling thread (when observed)."""
        metrics: Mapping[str, float] = getattr(self._metrics, "value", {})
        self._metrics.value = {}
        return metrics

    def respond(self, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            return http_response(self.invoke(event))
        except Exception:
            # What API Gateway answers when the integration fails.
            traceback.print_exc(file=sys.stderr)
            return 500, [("Content-Type", "application/json")], b'{"message":"Internal Server Error"}'


@contextlib.contextmanager
def until_signalled() -> Iterator[threading.Event]:
    """An event set by SIGINT (Ctrl+C) or SIGTERM; the previous handlers are restored after."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_until_set(stop: threading.Event) -> None:
    """Wait in short steps, so that the signal handler runs promptly on the main thread."""
    while not stop.wait(0.5):
        pass


def serve_aws(host: str, port: int, template: Path) -> None:
    """``serve --aws``: the API on ``host:port`` against real AWS and Heap, until SIGINT/SIGTERM
    (without it, ``serve`` runs the whole local stack: ``local.stack.serve_stack``)."""
    from heap_forwarder_tools.local.template import Resolver, function_spec, load_template

    def say(text: str) -> None:
        print(text, flush=True)

    with until_signalled() as stop:
        document = load_template(template)
        spec = function_spec(document, FUNCTION, Resolver(document))
        # Values exported in the shell win (e.g. the RETRY_QUEUE_URL of a deployed stack).
        spec.environment.update({k: os.environ[k] for k in spec.environment if k in os.environ})
        with LocalApiServer(spec, host=host, port=port, routes=api_routes(document), log=say) as server:
            say(f"Ingest API (real AWS and Heap): {server.url}")
            say(f"  Heap: {spec.environment.get('HEAP_API_URL', '?')}")
            say("  Press Ctrl+C to stop.")
            wait_until_set(stop)
