"""What events become, without a network: the exact Heap requests and each event's verdict.

One pure function behind ``heap-forwarder preview`` and the studio's live preview, so the page
shows what the command prints (``DocumentPreview.lines`` is that text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from heap_forwarder.envelopes import (
    ROUTE_TYPES,
    BodyError,
    http_body_bytes,
    is_http_api_event,
    is_sqs_event,
    sqs_bodies,
)
from heap_forwarder.heap.items import HeapItem
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import Playbook
from heap_forwarder.models import InvalidEvent, InvalidJson, decode_json, events_of
from heap_forwarder.outcome import ErrorClass

APP_ID_PLACEHOLDER = "<MY_APP_ID>"

Outcome = Literal["mapped", "refused", "unsupported"]


@dataclass(frozen=True)
class Verdict:
    """One event of a document: mapped, or refused / unsupported with the reason."""

    label: str
    outcome: Outcome
    error_class: str | None = None
    reason: str | None = None
    # False when the event's JSON could not even be read (printed before the others).
    readable: bool = True
    # With ``explain``: for each output key of a mapped event, the row or edit and its file.
    explanation: tuple[str, ...] = ()

    def line(self) -> str:
        return f"  rejected {self.label}: {self.error_class}: {self.reason}"


@dataclass(frozen=True)
class HeapRequest:
    endpoint: str
    body: dict[str, Any]


@dataclass(frozen=True)
class DocumentPreview:
    name: str
    verdicts: list[Verdict]
    requests: list[HeapRequest]

    @property
    def all_mapped(self) -> bool:
        return all(v.outcome == "mapped" for v in self.verdicts)

    def lines(self) -> list[str]:
        """Exactly what ``heap-forwarder preview`` prints for this document."""
        out = [f"== {self.name}: {len(self.verdicts)} event(s)"]
        out.extend(v.line() for v in self.verdicts if not v.readable)
        for verdict in self.verdicts:
            if verdict.readable:
                out.extend([verdict.line()] if verdict.outcome != "mapped" else verdict.explanation)
        for request in self.requests:
            out.append(f"POST {request.endpoint}")
            out.extend(json.dumps(request.body, indent=2, ensure_ascii=False).splitlines())
        return out


class Unreadable:
    """An event whose JSON cannot be read, with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _NoDelivery:
    def deliver(self, items: Any, *, deadline: float | None = None) -> list[Any]:
        raise RuntimeError("preview never delivers")


class Previewer:
    """The playbook (default + an override) and the connection parameters preview shows."""

    def __init__(
        self,
        playbook: Playbook,
        app_id: str | None = None,
        user_id: str | None = None,
        *,
        hash_key: bytes | None = None,
        explain: bool = False,
    ) -> None:
        """Raises MissingParameter when the playbook hashes and no ``hash_key`` is given."""
        from heap_forwarder.pipeline import Pipeline

        params = {"MY_APP_ID": app_id or APP_ID_PLACEHOLDER, "MY_USER_ID": user_id}
        self.mapper = Mapper(playbook, params, hash_key=hash_key)
        self.pipeline = Pipeline(self.mapper, deliverer=_NoDelivery())
        self.explain = explain

    @classmethod
    def from_override(
        cls, mapping: Path | None, app_id: str | None = None, user_id: str | None = None
    ) -> Previewer:
        """The bundled playbook with ``mapping`` merged on; raises PlaybookError (or
        MissingParameter, for a playbook that hashes: it needs a key)."""
        return cls(build_playbook(mapping), app_id, user_id)

    def document(self, document: Any, name: str) -> DocumentPreview:
        """Every event ``document`` holds (plain, ``{"batch": [...]}``, SQS or API Gateway event)."""
        labelled = events_in(document)
        verdicts: dict[int, Verdict] = {}
        readable: list[tuple[int, str, Any]] = []
        for position, (label, raw) in enumerate(labelled):
            if isinstance(raw, Unreadable):
                verdicts[position] = Verdict(
                    label, "refused", ErrorClass.INVALID_JSON.value, raw.reason, False
                )
            else:
                readable.append((position, label, raw))
        prepared = self.pipeline.prepare([raw for _, _, raw in readable])
        for (position, label, raw), decided in zip(readable, prepared.decided, strict=True):
            if decided is None:
                verdicts[position] = Verdict(label, "mapped", explanation=self._explained(raw, label))
            else:
                error_class = str(decided.error_class)
                outcome: Outcome = "unsupported" if error_class == ErrorClass.UNSUPPORTED else "refused"
                verdicts[position] = Verdict(label, outcome, error_class, decided.full_reason)
        return DocumentPreview(
            name,
            [verdicts[p] for p in range(len(labelled))],
            _requests(prepared.items, self.mapper.request_fields),
        )

    def _explained(self, raw: Any, label: str) -> tuple[str, ...]:
        if not self.explain:
            return ()
        from heap_forwarder_tools.explain import explain

        return tuple(explain(self.mapper, raw, self.pipeline.rule_settings, label))


def events_in(document: Any) -> list[tuple[str, Any]]:
    """(label, raw event) for every event a document holds, whatever carries it."""
    if is_sqs_event(document):
        found: list[tuple[str, Any]] = []
        for message_id, body in sqs_bodies(document):
            found.extend(_decoded(f"SQS record {message_id}", body.encode("utf-8")))
        return found
    if is_http_api_event(document):
        event_type = ROUTE_TYPES.get(str(document.get("rawPath")))
        try:
            http_body = http_body_bytes(document)
        except BodyError as error:
            return [("HTTP request", Unreadable(str(error)))]
        return [
            (
                label,
                {**raw, "type": raw.get("type", event_type)} if event_type and isinstance(raw, dict) else raw,
            )
            for label, raw in _decoded(f"HTTP {document.get('rawPath')}", http_body)
        ]
    return [(f"event {i}", raw) for i, raw in enumerate(_unbatched(document))]


def _unbatched(document: Any) -> list[Any]:
    try:
        return events_of(document)[0]
    except InvalidEvent:
        return [document]


def _decoded(label: str, body: bytes) -> list[tuple[str, Any]]:
    try:
        document = decode_json(body)
    except InvalidJson as error:
        return [(label, Unreadable(str(error)))]
    events = _unbatched(document)
    if len(events) == 1:
        return [(label, events[0])]
    return [(f"{label} batch[{i}]", raw) for i, raw in enumerate(events)]


def _requests(items: Sequence[HeapItem], request_fields: dict[str, Any]) -> list[HeapRequest]:
    from heap_forwarder.heap.plan import plan_requests

    return [HeapRequest(str(p.endpoint), p.body()) for p in plan_requests(items, request_fields)]
