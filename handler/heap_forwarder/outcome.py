"""The one type every layer agrees on: what became of each input event.

Each input event ends ``delivered``, ``retryable`` (a transient failure, with its cause) or
``rejected`` (permanent, with the rule broken or Heap's message). The edges (SQS consumer,
HTTP API) translate outcomes into their own world; nothing else decides an event's fate.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple


class Fate(StrEnum):
    DELIVERED = "delivered"
    RETRYABLE = "retryable"
    REJECTED = "rejected"


class ErrorClass(StrEnum):
    """Why an event was not delivered: stable names that alarms and DLQ filters rely on."""

    NONE = ""
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNSUPPORTED = "unsupported"
    TOO_LARGE = "too_large"  # more events in one SQS record or API request than the cap allows
    HEAP_RULE = "heap_rule"  # the mapped event breaks one of Heap's documented rules
    HEAP_REJECTED = "heap_rejected"  # Heap answered 400/413 for this very event
    TRANSIENT = "transient"  # 408/429/5xx, timeouts, connection errors
    CONFIG_FAULT = "config_fault"  # 401/403/404, a 400 refusing everything, SSM unreadable
    DEADLINE = "deadline"  # no time left to try (Lambda deadline or retry budget)
    RETRIES_EXHAUSTED = "retries_exhausted"


class Outcome(NamedTuple):
    """``reason`` is safe to log: our own words, and of Heap's answer only its status and field path.
    ``detail`` (when set) adds Heap's own text, which may echo event data: it goes only where the
    event itself goes (the dead letter, the sender's answer), never into a log line."""

    fate: Fate
    error_class: ErrorClass = ErrorClass.NONE
    reason: str = ""
    detail: str = ""

    @property
    def delivered(self) -> bool:
        return self.fate is Fate.DELIVERED

    @property
    def full_reason(self) -> str:
        """What a dead letter or the sender's answer carries: the detail when there is one."""
        return self.detail or self.reason


DELIVERED = Outcome(Fate.DELIVERED)


def retryable(error_class: ErrorClass, reason: str, detail: str = "") -> Outcome:
    return Outcome(Fate.RETRYABLE, error_class, reason, detail)


def rejected(error_class: ErrorClass, reason: str, detail: str = "") -> Outcome:
    return Outcome(Fate.REJECTED, error_class, reason, detail)


# When one event became several Heap items, its fate is the worst of theirs: a retryable
# part keeps the whole event in the retry path (every Heap item is repeat-safe), and a
# rejected part sends the event to the DLQ rather than reporting it delivered.
_SEVERITY = {Fate.DELIVERED: 0, Fate.REJECTED: 1, Fate.RETRYABLE: 2}


def combine(outcomes: Iterable[Outcome]) -> Outcome:
    worst = DELIVERED
    for outcome in outcomes:
        if _SEVERITY[outcome.fate] > _SEVERITY[worst.fate]:
            worst = outcome
    return worst
