"""``heap-forwarder studio``: the event tester page and its JSON API, on 127.0.0.1 only.

The page (``static/``: plain HTML, CSS and JavaScript, nothing from a CDN) previews an event
with a playbook override exactly as ``heap-forwarder preview`` does, sends it through the local
stack (:mod:`heap_forwarder_tools.studio.stack`) and shows the traffic, the DLQ and the Heap
emulator's fault switches.

A page on another site must not drive it: every request whose ``Host`` is not this server's
own address, or whose ``Origin`` (when sent) is not this server's own origin, is refused with
403 (a foreign page's requests carry its origin; DNS rebinding carries a foreign Host), and a
POST must be JSON (a cross-site form cannot send that without a preflight, which is refused).
"""

from __future__ import annotations

import json
import mimetypes
import sys
import tempfile
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from heap_forwarder.mapping.engine import MissingParameter
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import PlaybookError
from heap_forwarder_tools.json_files import JsonFileError, read_json
from heap_forwarder_tools.preview import Previewer, Unreadable, events_in
from heap_forwarder_tools.studio.problems import locate_problems
from heap_forwarder_tools.studio.stack import StudioStack

HOST = "127.0.0.1"
OVERRIDE_NAME = "override.yaml"
SAMPLE_FOLDERS = ("raw", "sqs", "api", "bad")
STATIC_FILES = ("index.html", "studio.css", "studio.js")
MAX_BODY_BYTES = 1_000_000
# What the page may load: itself only (no CDN, no inline script, no framing by another site).
_SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class RequestRefused(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Studio:
    """What the page asks for, answered from the preview machinery and the local stack."""

    def __init__(self, root: Path, stack: StudioStack | None) -> None:
        self.root = root
        self.stack = stack
        self._workdir = tempfile.TemporaryDirectory(prefix="heap-forwarder-studio-")
        self._override_path = Path(self._workdir.name) / OVERRIDE_NAME
        self._override_lock = threading.Lock()
        self._faults: dict[str, Any] = {"outage": False, "latency": 0.0, "reject_event_names": []}

    def close(self) -> None:
        self._workdir.cleanup()

    # ------------------------------------------------------------------ samples
    def samples(self) -> list[str]:
        events = self.root / "events"
        return [
            f"{folder}/{path.name}"
            for folder in SAMPLE_FOLDERS
            for path in sorted((events / folder).glob("*.json"))
        ]

    def sample(self, name: str) -> dict[str, str]:
        if name not in self.samples():  # only the listed files: no path from the request is opened
            raise RequestRefused(HTTPStatus.NOT_FOUND, f"no sample named {name!r}")
        return {"name": f"events/{name}", "text": (self.root / "events" / name).read_text("utf-8")}

    # ------------------------------------------------------------------ preview
    def preview(
        self, event_text: str, override_text: str, name: str, explain: bool = False
    ) -> dict[str, Any]:
        """What ``heap-forwarder preview [--explain] [--mapping OVERRIDE] NAME`` prints, and the
        same as data."""
        override, previewer = self._previewer(override_text, explain)
        result: dict[str, Any] = {"override": override, "preview": None}
        if previewer is None:
            result["text"] = f"error: {override['error']}"
            result["status"] = 2
            return result
        try:
            document = self._read_event(event_text, name)
        except JsonFileError as error:
            result["text"] = f"== {name}\nerror: {error}"
            result["status"] = 1
            return result
        preview = previewer.document(document, name)
        # The override is a file of the studio's own temporary folder: named as a user would.
        own = str(self._override_path)
        result["preview"] = {
            "verdicts": [
                {**vars(v), "explanation": [line.replace(own, OVERRIDE_NAME) for line in v.explanation]}
                for v in preview.verdicts
            ],
            "requests": [{"endpoint": r.endpoint, "body": r.body} for r in preview.requests],
        }
        result["text"] = "\n".join(preview.lines()).replace(own, OVERRIDE_NAME)
        result["status"] = 0 if preview.all_mapped else 1
        return result

    def _read_event(self, text: str, name: str) -> Any:
        """The pasted event read as ``preview`` reads its files (the same messages), under ``name``."""
        with self._override_lock:
            path = Path(self._workdir.name) / "event.json"
            path.write_text(text, "utf-8")
            try:
                return read_json(path)
            except JsonFileError as error:
                raise JsonFileError(str(error).replace(str(path), name)) from None

    def _previewer(
        self, override_text: str, explain: bool = False
    ) -> tuple[dict[str, Any], Previewer | None]:
        with self._override_lock:
            path = None
            if override_text.strip():
                self._override_path.write_text(override_text, "utf-8")
                path = self._override_path
            source = str(self._override_path)
            try:
                return {"ok": True, "problems": []}, Previewer(build_playbook(path), explain=explain)
            except MissingParameter as error:
                message = f"{error}; the studio has no hash key (preview takes it from --hash-key-file)"
                return {
                    "ok": False,
                    "problems": [{"text": message, "line": None, "column": None}],
                    "error": message,
                }, None
            except PlaybookError as error:
                problems = [
                    {"text": p.text.replace(source, OVERRIDE_NAME), "line": p.line, "column": p.column}
                    for p in locate_problems(error, override_text, source)
                ]
                message = str(error).replace(source, OVERRIDE_NAME)
                return {"ok": False, "problems": problems, "error": message}, None

    # ------------------------------------------------------------------ the local stack
    def _running(self) -> StudioStack:
        if self.stack is None:
            raise RequestRefused(HTTPStatus.SERVICE_UNAVAILABLE, "the studio runs without its local stack")
        return self.stack

    def send(self, event_text: str, override_text: str, via: str) -> dict[str, Any]:
        stack = self._running()
        _, previewer = self._previewer(override_text)
        if previewer is None:
            raise RequestRefused(HTTPStatus.CONFLICT, "the override has problems: fix them before sending")
        try:
            document = json.loads(event_text)
        except (ValueError, RecursionError) as error:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, f"the event is not JSON: {error}") from None
        labelled = events_in(document)
        events = [raw for _, raw in labelled if not isinstance(raw, Unreadable)]
        if len(events) != len(labelled):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "part of the event cannot be read as JSON")
        if not events:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "the document holds no event")
        stack.set_override(override_text)
        if via == "queue":
            return {"via": "queue", **stack.send_to_queue(events)}
        if via != "api":
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "via is 'api' or 'queue'")
        return {"via": "api", **stack.send_to_api(events)}

    def traffic(self) -> dict[str, Any]:
        stack = self._running()
        stack.resolve()
        visible, in_flight = stack.local.queue_depths()["main"]
        letters = []
        for letter in stack.dead_letters():
            try:
                body: Any = json.loads(letter.body)
            except ValueError:
                body = letter.body
            letters.append(
                {
                    "error_class": letter.attributes.get("ErrorClass", ""),
                    "reason": letter.attributes.get("Reason", ""),
                    "letter_id": letter.attributes.get("LetterId", ""),
                    "entry_point": letter.attributes.get("EntryPoint", ""),
                    "message_id": body.get("messageId", "") if isinstance(body, dict) else "",
                    "body": body,
                }
            )
        state = stack.heap_state()
        return {
            "traffic": stack.traffic.entries(),
            "stack_log": [
                {"at": t.at, "source": t.source, "summary": t.summary} for t in stack.local.traffic()[-12:]
            ],
            "dead_letters": letters,
            "main_queue": {"waiting": visible, "in_flight": in_flight},
            "heap": {
                "tracked_events": state["tracked_events"][-20:],
                "tracked_total": len(state["tracked_events"]),
                "user_properties": state["user_properties"],
                "account_properties": state["account_properties"],
                "requests": state["stats"]["requests"],
            },
            "faults": self.faults(),
            "time_scale": stack.time_scale,
        }

    def faults(self) -> dict[str, Any]:
        return dict(self._faults)

    def set_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        """The emulator's switches: Heap fails (503 until switched off), Heap is slow (seconds
        per request), Heap refuses these track event names."""
        emulator = self._running().sandbox.emulator
        unknown = set(changes) - set(self._faults)
        if unknown:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, f"unknown switches {sorted(unknown)}")
        try:
            if "outage" in changes:
                on = changes["outage"] is True
                emulator.set_outage(503 if on else None, retry_after=1 if on else None)
                self._faults["outage"] = on
            if "latency" in changes:
                seconds = float(changes["latency"])
                emulator.set_latency(seconds)
                self._faults["latency"] = seconds
            if "reject_event_names" in changes:
                names = [str(n).strip() for n in changes["reject_event_names"] if str(n).strip()]
                emulator.reject_event_names(names)
                self._faults["reject_event_names"] = names
        except (TypeError, ValueError) as error:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, f"bad switch value: {error}") from None
        return self.faults()


# ---------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, studio: Studio, port: int) -> None:
        self.studio = studio
        super().__init__((HOST, port), _Handler)

    @property
    def own_hosts(self) -> frozenset[str]:
        port = self.server_address[1]
        return frozenset({f"{HOST}:{port}", f"localhost:{port}"})


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the page polls every second: a line per request would bury what matters

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_OPTIONS(self) -> None:  # a CORS preflight: no other origin is ever allowed
        self._send_json(HTTPStatus.FORBIDDEN, {"error": "cross-origin requests are refused"})

    def _serve(self, method: str) -> None:
        try:
            self._check_origin()
            url = urlsplit(self.path)
            body = self._json_body() if method == "POST" else {}
            self._route(method, url.path, parse_qs(url.query), body)
        except RequestRefused as refusal:
            self._send_json(refusal.status, {"error": refusal.message})
        except Exception as error:  # the page shows it; the server keeps serving
            print(f"studio: {method} {self.path} failed: {error!r}", file=sys.stderr)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(error).__name__}: {error}"})

    def _check_origin(self) -> None:
        own = self.server.own_hosts
        host = self.headers.get("Host", "")
        if host not in own:
            self.close_connection = True
            raise RequestRefused(HTTPStatus.FORBIDDEN, "this server answers its own address only")
        origin = self.headers.get("Origin")
        if origin is not None and origin not in {f"http://{h}" for h in own}:
            self.close_connection = True
            raise RequestRefused(HTTPStatus.FORBIDDEN, "requests from another origin are refused")

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        data = self.rfile.read(length) if length > 0 else b""
        if (self.headers.get("Content-Type") or "").split(";", 1)[0].strip() != "application/json":
            raise RequestRefused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)"
            )
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "the request body is a JSON object")
        return body

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> None:
        studio = self.server.studio
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "/api/samples"): lambda: {"samples": studio.samples()},
            ("GET", "/api/sample"): lambda: studio.sample((query.get("name") or [""])[0]),
            ("POST", "/api/preview"): lambda: studio.preview(
                _text(body, "event"),
                _text(body, "override"),
                _text(body, "name") or "pasted event",
                body.get("explain") is True,
            ),
            ("POST", "/api/send"): lambda: studio.send(
                _text(body, "event"), _text(body, "override"), _text(body, "via") or "api"
            ),
            ("GET", "/api/traffic"): studio.traffic,
            ("GET", "/api/faults"): studio.faults,
            ("POST", "/api/faults"): lambda: studio.set_faults(body),
        }
        answer = routes.get((method, path))
        if answer is not None:
            self._send_json(HTTPStatus.OK, answer())
            return
        name = "index.html" if path == "/" else path.removeprefix("/static/")
        if method == "GET" and name in STATIC_FILES:
            data = resources.files("heap_forwarder_tools.studio").joinpath("static", name).read_bytes()
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._send(HTTPStatus.OK, f"{kind}; charset=utf-8", data)
            return
        raise RequestRefused(HTTPStatus.NOT_FOUND, f"no {method} {path}")

    def _send_json(self, status: HTTPStatus, payload: Any) -> None:
        self._send(status, "application/json", json.dumps(payload, ensure_ascii=False).encode("utf-8"))

    def _send(self, status: HTTPStatus, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in _SECURITY_HEADERS:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise RequestRefused(HTTPStatus.BAD_REQUEST, f"{key} is a string")
    return value


class StudioServer:
    """The studio on 127.0.0.1:``port`` (0: any free port), in a background thread."""

    def __init__(self, studio: Studio, port: int = 0) -> None:
        self.studio = studio
        self._server = _Server(studio, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="studio", daemon=True
        )

    def __enter__(self) -> StudioServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.studio.close()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"


def serve(root: Path, template: Path, port: int, time_scale: float) -> None:
    """Run the studio until SIGINT/SIGTERM."""
    from heap_forwarder_tools.local.server import until_signalled, wait_until_set

    log_path = root / ".studio-logs.jsonl"
    with (
        until_signalled() as stop,
        StudioStack(template, time_scale=time_scale, log_path=log_path) as stack,
        StudioServer(Studio(root, stack), port) as server,
    ):
        say = print
        say(f"Event tester (studio): {server.url}", flush=True)
        say(f"  local API {stack.local.api_url}, Heap emulator {stack.local.emulator_url}", flush=True)
        say(f"  timings {time_scale:g}x faster than the template's; function logs: {log_path}", flush=True)
        say("  Press Ctrl+C to stop.", flush=True)
        wait_until_set(stop)
