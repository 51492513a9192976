"""The local stack the studio drives, and what it records of the traffic through it.

The sandbox (moto's SQS and SSM in-process, fake credentials, the Heap emulator on 127.0.0.1),
the API function behind the local HTTP server, and the SQS consumer fed from the main queue by
the local event source mapping, so that an event the API parked is delivered once Heap recovers.
Nothing here can reach real AWS: moto intercepts every boto3 call in the process.

Timings are the template's divided by ``time_scale`` (the API's retry budget, the consumer's
backoff), so that retries and parking happen while you watch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from heap_forwarder_tools.local.invoke import LocalContext, load_handler
from heap_forwarder_tools.local.poller import EventSourceMapping
from heap_forwarder_tools.local.sandbox import DeadLetterView, Sandbox, environment
from heap_forwarder_tools.local.server import LocalApiServer, api_routes
from heap_forwarder_tools.local.template import FunctionSpec

MAPPING_PARAMETER = "/heap-forwarder/studio/mapping"
NO_OVERRIDE = "{}"  # SSM refuses an empty value; an empty mapping merges nothing
DEFAULT_TIME_SCALE = 10.0
MAX_TRAFFIC = 50
POLL_SECONDS = 0.25


@dataclass
class TrafficEntry:
    """One event through the local stack: where it is now and how it got there."""

    message_id: str
    name: str
    via: str  # "api" or "queue"
    status: str  # sent, delivered, parked, retrying, dead-lettered, refused
    reason: str = ""
    receives: int = 0
    updated: float = field(default_factory=time.time)
    history: list[str] = field(default_factory=list)


class TrafficLog:
    """The last events through the local API and the consumer, newest first (thread-safe)."""

    def __init__(self, size: int = MAX_TRAFFIC) -> None:
        self._entries: OrderedDict[str, TrafficEntry] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def note(
        self,
        message_id: str,
        status: str,
        reason: str = "",
        *,
        name: str = "",
        via: str = "",
        receives: int = 0,
    ) -> None:
        with self._lock:
            entry = self._entries.pop(message_id, None) or TrafficEntry(
                message_id, name or "?", via or "?", status
            )
            entry.status, entry.reason, entry.updated = status, reason, time.time()
            entry.receives = max(entry.receives, receives)
            entry.history.append(f"{time.strftime('%H:%M:%S')} {status}" + (f": {reason}" if reason else ""))
            self._entries[message_id] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def status_of(self, message_id: str) -> str | None:
        with self._lock:
            entry = self._entries.get(message_id)
            return None if entry is None else entry.status

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(e) for e in reversed(self._entries.values())]


def event_name(event: Any) -> str:
    if not isinstance(event, dict):
        return "?"
    kind = str(event.get("type") or "?")
    return f"track {event['event']}" if kind == "track" and event.get("event") else kind


def with_message_ids(events: list[Any]) -> list[Any]:
    """The events, each given a ``messageId`` when it has none (as the API would) so that its
    path through the stack can be followed."""
    return [
        {**e, "messageId": str(uuid.uuid4())} if isinstance(e, dict) and not e.get("messageId") else e
        for e in events
    ]


def _letter_message_id(letter: DeadLetterView) -> str:
    try:
        body = json.loads(letter.body)
    except ValueError:
        return ""
    return str(body.get("messageId", "")) if isinstance(body, dict) else ""


class StudioStack:
    def __init__(
        self,
        template: Path = Path("template.yaml"),
        *,
        time_scale: float = DEFAULT_TIME_SCALE,
        log_stream: TextIO | None = None,
    ) -> None:
        if not time_scale > 0:
            raise ValueError("time_scale must be positive")
        self.template = template
        self.time_scale = time_scale
        self.traffic = TrafficLog()
        self._log_stream = log_stream
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        self._consumer_thread: threading.Thread | None = None
        self._override = NO_OVERRIDE
        self.sandbox: Sandbox
        self.api: LocalApiServer

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> StudioStack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._consumer_thread is not None:
            self._consumer_thread.join(timeout=10)
        self._stack.close()

    def _start(self) -> None:
        self.sandbox = self._stack.enter_context(
            Sandbox(template_path=self.template, parameters={"MappingParameterName": MAPPING_PARAMETER})
        )
        self.sandbox.client("ssm").put_parameter(
            Name=MAPPING_PARAMETER, Value=NO_OVERRIDE, Type="String", Overwrite=True
        )
        self._quiet_logs()
        common = {
            # SSM read on every invocation (no cache): an override applies at once, not after
            # the deployed 5 minutes.
            "POWERTOOLS_PARAMETERS_MAX_AGE": "0",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        api_spec = self.sandbox.function(
            "ApiFunction",
            {**common, "RETRY_BUDGET_SECONDS": self._scaled("ApiFunction", "RETRY_BUDGET_SECONDS")},
        )
        consumer_spec = self.sandbox.function(
            "ConsumerFunction",
            {
                **common,
                "RETRY_BUDGET_SECONDS": self._scaled("ConsumerFunction", "RETRY_BUDGET_SECONDS"),
                "BACKOFF_BASE_SECONDS": self._scaled("ConsumerFunction", "BACKOFF_BASE_SECONDS"),
                "BACKOFF_CAP_SECONDS": self._scaled("ConsumerFunction", "BACKOFF_CAP_SECONDS"),
            },
        )
        consume = self._warm_consumer(consumer_spec)
        self.api = self._stack.enter_context(
            LocalApiServer(api_spec, routes=api_routes(self.sandbox.template))
        )
        self.write_key = self.sandbox.write_key if api_spec.environment.get("WRITE_KEY_PARAMETER") else None
        mapping = EventSourceMapping(
            self.sandbox.client("sqs"), self.sandbox.queue_url("MainQueue"), self._observed(consume)
        )
        self._consumer_thread = threading.Thread(
            target=self._consume, args=(mapping,), name="studio-consumer", daemon=True
        )
        self._consumer_thread.start()

    def _scaled(self, logical_id: str, variable: str) -> str:
        template_value = float(self.sandbox.function(logical_id).environment[variable])
        return f"{template_value / self.time_scale:g}"

    def _quiet_logs(self) -> None:
        """The functions' JSON logs go to ``log_stream`` (or nowhere), not over the terminal."""
        from heap_forwarder.edge.observability import logger

        handler = logger.registered_handler
        if isinstance(handler, logging.StreamHandler):
            previous = handler.setStream(self._log_stream or _Discard())
            self._stack.callback(handler.setStream, previous)

    def _warm_consumer(self, spec: FunctionSpec) -> Any:
        """The consumer's handler, its warm state built now under its own environment (the
        API's environment holds the process's for as long as the server runs)."""
        with environment(spec.environment):
            handler, module = load_handler(spec)
            reset = getattr(module, "reset", None)
            if callable(reset):
                reset()
                self._stack.callback(reset)
            module.consumer()

        def consume(event: dict[str, Any]) -> dict[str, Any]:
            context = LocalContext(spec.logical_id, spec.memory_mb, spec.timeout)
            response: dict[str, Any] = handler(event, context)
            return response

        return consume

    def _consume(self, mapping: EventSourceMapping) -> None:
        while not self._stop.is_set():
            try:
                result = mapping.poll_once()
            except Exception as error:  # the loop must outlive one bad poll, as Lambda's does
                logging.getLogger(__name__).warning("consumer poll failed: %s", error)
                result = None
            if result is None or not result.received:
                self._stop.wait(POLL_SECONDS)

    def _observed(self, consume: Any) -> Any:
        """The consumer's handler, with each record's events noted in the traffic log."""
        from heap_forwarder.models import events_of

        def handle(event: dict[str, Any]) -> dict[str, Any]:
            records = event.get("Records", [])
            response = consume(event)
            failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}
            letters = {_letter_message_id(letter): letter for letter in self.dead_letters()}
            for record in records:
                try:
                    events = events_of(json.loads(record["body"]))[0]
                except Exception:
                    events = [None]
                receives = int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
                for position, raw in enumerate(events):
                    message_id = (raw or {}).get("messageId") if isinstance(raw, dict) else None
                    message_id = str(message_id or f"{record['messageId']}:{position}")
                    name, via = event_name(raw), "queue"
                    if record["messageId"] in failed:
                        self.traffic.note(
                            message_id,
                            "retrying",
                            f"not delivered on receive {receives}; back in the main queue until its "
                            "visibility timeout passes",
                            name=name,
                            via=via,
                            receives=receives,
                        )
                    elif message_id in letters:
                        attributes = letters[message_id].attributes
                        self.traffic.note(
                            message_id,
                            "dead-lettered",
                            f"{attributes.get('ErrorClass', '?')}: {attributes.get('Reason', '')}",
                            name=name,
                            via=via,
                            receives=receives,
                        )
                    else:
                        self.traffic.note(
                            message_id,
                            "delivered",
                            f"by the consumer, receive {receives}",
                            name=name,
                            via=via,
                            receives=receives,
                        )
            return dict(response or {})

        return handle

    # ------------------------------------------------------------------ what the page does
    def set_override(self, text: str) -> None:
        """The playbook override both functions use, through their MAPPING_PARAMETER (as a
        deployed stack is changed without a redeploy)."""
        value = text if text.strip() else NO_OVERRIDE
        if value != self._override:
            self.sandbox.client("ssm").put_parameter(
                Name=MAPPING_PARAMETER, Value=value, Type="String", Overwrite=True
            )
            self._override = value

    def send_to_api(self, events: list[Any]) -> dict[str, Any]:
        """POST the events to the local API (one call, or ``/v1/batch``); note each outcome."""
        events = with_message_ids(events)
        if len(events) == 1 and isinstance(events[0], dict):
            path, body = f"/v1/{events[0].get('type', 'track')}", events[0]
        else:
            path, body = "/v1/batch", {"batch": events}
        for event in events:
            self._note_event(event, "sent", "to the local API", via="api")
        request = urllib.request.Request(
            self.api.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        if self.write_key:
            token = base64.b64encode(f"{self.write_key}:".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, answer_text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, answer_text = error.code, error.read().decode()
        try:
            answer: Any = json.loads(answer_text)
        except ValueError:
            answer = answer_text
        self._note_api_answer(events, status, answer)
        return {"path": path, "status": status, "answer": answer, "events": events}

    def send_to_queue(self, events: list[Any]) -> dict[str, Any]:
        """Send the events to the main queue as one message, for the consumer."""
        events = with_message_ids(events)
        body = events[0] if len(events) == 1 else {"batch": events}
        sent = self.sandbox.client("sqs").send_message(
            QueueUrl=self.sandbox.queue_url("MainQueue"), MessageBody=json.dumps(body)
        )
        for event in events:
            self._note_event(event, "sent", "to the main queue", via="queue")
        return {"messageId": sent["MessageId"], "events": events}

    def _note_event(self, event: Any, status: str, reason: str, *, via: str) -> None:
        message_id = str(event.get("messageId")) if isinstance(event, dict) else str(uuid.uuid4())
        self.traffic.note(message_id, status, reason, name=event_name(event), via=via)

    def _note_api_answer(self, events: list[Any], status: int, answer: Any) -> None:
        answer = answer if isinstance(answer, dict) else {}
        rejected = {str(r.get("messageId")): r for r in answer.get("rejected") or [] if isinstance(r, dict)}
        parked, delivered = int(answer.get("parked") or 0), int(answer.get("delivered") or 0)
        for event in events:
            message_id = str(event.get("messageId")) if isinstance(event, dict) else ""
            if message_id in rejected:
                refusal = rejected[message_id]
                outcome = ("dead-lettered", f"{refusal.get('error')}: {refusal.get('reason')}")
            elif status == 200:
                outcome = ("delivered", "by the API")
            elif status == 202 and not delivered:
                outcome = ("parked", "Heap unavailable: parked in the main queue for the consumer (202)")
            elif status == 202:
                outcome = (
                    "parked",
                    f"the API delivered {delivered} and parked {parked} of the request's events (202);"
                    " the consumer reports the parked ones",
                )
            else:
                message = answer.get("message") or answer.get("error") or ""
                problems = "; ".join(
                    f"[{p.get('index')}] {p.get('field')}: {p.get('message')}"
                    for p in answer.get("problems") or []
                )
                outcome = ("refused", f"HTTP {status}: {message}" + (f" ({problems})" if problems else ""))
            self.traffic.note(message_id, outcome[0], outcome[1], name=event_name(event), via="api")

    def dead_letters(self) -> list[DeadLetterView]:
        return self.sandbox.dead_letters()

    def heap_state(self) -> dict[str, Any]:
        return self.sandbox.emulator.state()


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
