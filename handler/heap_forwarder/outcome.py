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
    HEAP_RULE = "heap_rule"  # the mapped event breaks one of Heap's documented rules
    HEAP_REJECTED = "heap_rejected"  # Heap answered 400/413 for this very event
    TRANSIENT = "transient"  # 408/429/5xx, timeouts, connection errors
    CONFIG_FAULT = "config_fault"  # 401/403/404, a 400 refusing everything, SSM unreadable
    DEADLINE = "deadline"  # no time left to try (Lambda deadline or retry budget)
    RETRIES_EXHAUSTED = "retries_exhausted"


class Outcome(NamedTuple):
    fate: Fate
    error_class: ErrorClass = ErrorClass.NONE
    reason: str = ""

    @property
    def delivered(self) -> bool:
        return self.fate is Fate.DELIVERED


DELIVERED = Outcome(Fate.DELIVERED)


def retryable(error_class: ErrorClass, reason: str) -> Outcome:
    return Outcome(Fate.RETRYABLE, error_class, reason)


def rejected(error_class: ErrorClass, reason: str) -> Outcome:
    return Outcome(Fate.REJECTED, error_class, reason)


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
