"""Heap's answer to one request, read: its kind (ok, split, settled) and what of its text may be logged.

Pure: a status and Heap's text in, a verdict out. The sender (``heap/sender.py``) makes the
verdicts; the isolation of refused items (``heap/isolation.py``) reads them.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import NamedTuple

from heap_forwarder.outcome import DELIVERED, ErrorClass, Outcome, rejected, retryable

SNIPPET = 200  # characters of a response body quoted in a retryable cause
REJECTION_TEXT = 1000  # characters of Heap's text kept in a rejection reason
TRANSIENT_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600)) - {501}
_CONFIG_STATUSES = frozenset({401, 403, 404, 501})
_SPLIT_STATUSES = frozenset({400, 413})
# Heap's 400 texts start with the path of the field at fault: ``postBody.events[12].event: ...``.
# Only that head is read (never a word anywhere in the text, which may quote the event itself).
_FIELD_PATH = re.compile(r"\s*(postBody(?:\.[A-Za-z_][A-Za-z0-9_]{0,63}|\[\d{1,7}\]){0,12})")
_APP_ID_PATH = "postBody.app_id"
# The emulator's (and, as far as is known, Heap's) answer to an unknown app_id, read at the head only.
_APP_ID_REFUSAL = re.compile(r"\s*invalid app_id\b", re.IGNORECASE)
# What of Heap's field path may be logged: up to the item and its field (``postBody.events[3]
# .properties``); the keys below it are the event's own property names.
_LOGGABLE_PATH = re.compile(r"postBody(?:\.[A-Za-z_]\w*\[\d+\](?:\.[A-Za-z_]\w*)?|\.[A-Za-z_]\w*)?")


class Kind(Enum):
    OK = "ok"  # 2xx
    SPLIT = "split"  # 400/413 that may be narrowed to some items
    SETTLED = "settled"  # an outcome for every item of the request (give-up or config fault)


class Answer(NamedTuple):
    """The verdict on one request, after its retries."""

    kind: Kind
    status: int | None = None
    text: str = ""  # Heap's text (redacted), kept for SPLIT answers
    outcome: Outcome = DELIVERED  # every item's outcome, for SETTLED answers

    @property
    def config_fault(self) -> bool:
        return self.kind is Kind.SETTLED and self.outcome.error_class is ErrorClass.CONFIG_FAULT


OK = Answer(Kind.OK)


def give_up(error_class: ErrorClass, reason: str, detail: str = "") -> Answer:
    return Answer(Kind.SETTLED, outcome=retryable(error_class, reason, detail))


def classify(status: int, text: str) -> Answer:
    """A final, non-2xx, non-transient status. ``text`` (redacted) only goes into details."""
    path = field_path(text)
    if status == 400 and (path == _APP_ID_PATH or _APP_ID_REFUSAL.match(text)):
        return give_up(ErrorClass.CONFIG_FAULT, *with_text("HTTP 400 from Heap refusing the app ID", text))
    if status in _SPLIT_STATUSES:
        return Answer(Kind.SPLIT, status, text)
    if status in _CONFIG_STATUSES:
        reason = f"HTTP {status} from Heap: check HEAP_API_URL and the app ID"
        return give_up(ErrorClass.CONFIG_FAULT, *with_text(reason, text))
    if 400 <= status < 500:
        return give_up(
            ErrorClass.CONFIG_FAULT, *with_text(f"HTTP {status} from Heap (unexpected client error)", text)
        )
    # 3xx and anything else unforeseen: not retried in place (a redirect will not go away
    # in ten seconds), left to the queue's redelivery.
    return give_up(ErrorClass.TRANSIENT, *with_text(f"HTTP {status} from Heap (unexpected)", text))


def refused(answer: Answer) -> Outcome:
    """The outcome of an item Heap refused when it was sent alone: its own answer is the reason."""
    detail = f"HTTP {answer.status} from Heap: {snippet(answer.text, REJECTION_TEXT)}"
    return rejected(ErrorClass.HEAP_REJECTED, status_cause(answer.status, answer.text), detail)


def with_text(reason: str, text: str) -> tuple[str, str]:
    """(reason for logs, detail for letters): the detail is the reason followed by Heap's text."""
    return reason, f"{reason}: {snippet(text)}"


def status_cause(status: int | None, text: str) -> str:
    path = loggable_path(text)
    return f"HTTP {status} from Heap" + (f" at {path}" if path else "")


def snippet(text: str, limit: int = SNIPPET) -> str:
    text = text.strip()
    return text[:limit] if text else "(empty body)"


def loggable_path(text: str) -> str:
    match = _LOGGABLE_PATH.match(field_path(text))
    return match.group(0) if match else ""


def field_path(text: str) -> str:
    """The field path heading Heap's text (``postBody.events[3].event``), or ""."""
    match = _FIELD_PATH.match(text)
    return match.group(1) if match else ""
