"""The local stack the studio drives, and what it records of each event through it.

The stack is ``local.stack.LocalStack`` (``heap-forwarder serve``'s): moto's server on
127.0.0.1 with fake credentials, the Heap emulator, the API function behind the local HTTP
server, and the consumer function in its own process polling the main queue, so that an event
the API parked is delivered once Heap recovers. Nothing here can reach real AWS or Heap.

The studio adds two things: both functions read the playbook override the page edits from an
SSM parameter (``MAPPING_PARAMETER``, as a deployed stack is changed without a redeploy), read
afresh on every invocation; and a per-event log, following each event by its ``messageId``.

Timings are the template's divided by ``time_scale`` (the retry budgets, the consumer's
backoff), so that retries and parking happen while you watch.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heap_forwarder_tools.emulator import HeapEmulator
from heap_forwarder_tools.local.sandbox import LOCAL_APP_ID, DeadLetterView, Sandbox
from heap_forwarder_tools.local.stack import LocalStack, Traffic
from heap_forwarder_tools.local.template import FunctionSpec

MAPPING_PARAMETER = "/heap-forwarder/studio/mapping"
NO_OVERRIDE = "{}"  # SSM refuses an empty value; an empty mapping merges nothing
DEFAULT_TIME_SCALE = 10.0
MAX_TRAFFIC = 50
WAITING = ("sent", "parked", "retrying")


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


@dataclass
class _StudioSandbox(Sandbox):
    """The stack's sandbox with the studio's settings on top of both functions' template
    environment: the override parameter, read without a cache."""

    studio_environment: dict[str, str] = field(default_factory=dict)

    def function(
        self,
        logical_id: str,
        overrides: Mapping[str, str] | None = None,
        *,
        parameters: Mapping[str, str] | None = None,
    ) -> FunctionSpec:
        return super().function(
            logical_id, {**self.studio_environment, **(overrides or {})}, parameters=parameters
        )


class StudioStack:
    def __init__(
        self,
        template: Path = Path("template.yaml"),
        *,
        time_scale: float = DEFAULT_TIME_SCALE,
        log_path: Path | None = None,
    ) -> None:
        if not time_scale > 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self.traffic = TrafficLog()
        self._override = NO_OVERRIDE
        self._resolving = threading.Lock()
        self.local = LocalStack(
            template, time_scale=time_scale, log_path=log_path, on_traffic=self._on_traffic
        )
        # LocalStack builds a plain sandbox; the studio's adds the override parameter to both
        # functions (MappingParameterName, as a stack deployed with one) and reads it uncached.
        self.local.sandbox = _StudioSandbox(
            template_path=template,
            aws_server=True,
            time_scale=time_scale,
            emulator=HeapEmulator(app_ids=(LOCAL_APP_ID,)),
            parameters={"MappingParameterName": MAPPING_PARAMETER},
            studio_environment={"POWERTOOLS_PARAMETERS_MAX_AGE": "0"},
        )

    @property
    def sandbox(self) -> Sandbox:
        return self.local.sandbox

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> StudioStack:
        self.local.start()
        try:
            self._put_override(NO_OVERRIDE)
        except BaseException:
            self.local.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.local.stop()

    # ------------------------------------------------------------------ following each event
    def _on_traffic(self, entry: Traffic) -> None:
        if entry.source == "consumer":
            self.resolve(entry.detail)

    def resolve(self, report: dict[str, Any] | None = None) -> None:
        """Settle the events still waiting (sent to the queue, parked, retrying) from what the
        stack shows: a dead letter holding the event; a track event Heap stored under its key;
        an empty main queue (nothing left to deliver, nothing in the DLQ: it was delivered); or
        else, after a consumer invocation that handed records back, retrying."""
        waiting = [e for e in self.traffic.entries() if e["status"] in WAITING]
        if not waiting:
            return
        with self._resolving:
            letters = {_letter_message_id(letter): letter for letter in self.dead_letters()}
            stored = {str(e.get("idempotency_key")) for e in self.sandbox.emulator.tracked_events()}
            visible, in_flight = self.local.queue_depths()["main"]
            failed = set((report or {}).get("failed") or [])
            receives = [
                int(r.get("receiveCount", 1))
                for r in (report or {}).get("records") or []
                if r.get("messageId") in failed
            ]
            for entry in waiting:
                message_id = entry["message_id"]
                if message_id in letters:
                    attributes = letters[message_id].attributes
                    reason = f"{attributes.get('ErrorClass', '?')}: {attributes.get('Reason', '')}"
                    self.traffic.note(message_id, "dead-lettered", reason)
                elif message_id in stored:
                    self.traffic.note(message_id, "delivered", "by the consumer (Heap stored it)")
                elif (entry["status"] != "sent" or entry["via"] == "queue") and visible == in_flight == 0:
                    self.traffic.note(message_id, "delivered", "by the consumer (the main queue is empty)")
                elif receives:
                    self.traffic.note(
                        message_id,
                        "retrying",
                        f"the consumer handed it back on receive {max(receives)}: it waits in the main"
                        " queue, backing off, until Heap answers",
                        receives=max(receives),
                    )

    # ------------------------------------------------------------------ what the page does
    def set_override(self, text: str) -> None:
        """The playbook override both functions use, through their MAPPING_PARAMETER (as a
        deployed stack is changed without a redeploy)."""
        value = text if text.strip() else NO_OVERRIDE
        if value != self._override:
            self._put_override(value)

    def _put_override(self, value: str) -> None:
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
            self.local.api_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        if self.local.write_key:
            token = base64.b64encode(f"{self.local.write_key}:".encode()).decode()
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
            QueueUrl=self.local.main_queue_url, MessageBody=json.dumps(body)
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
        return self.local.dead_letters()

    def heap_state(self) -> dict[str, Any]:
        return self.sandbox.emulator.state()
