"""The settle step both entry points share: refused events into dead letters, logs and metrics.

The caller decides which events are refused for good (its own policy: the consumer's retries and
last receive, the API's parking first); ``settle`` writes their letters through the
``DeadLetterWriter`` (bounded by ``until``), says which letters SQS did not take (the caller
keeps those events: retry or park), logs each letter written and counts it.

Each letter carries the outcome's ``full_reason`` (Heap's own text included); its log line only
the outcome's ``reason``: Heap's text may echo event data and goes where the event goes, never
into a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from heap_forwarder.edge.dlq import DeadLetter
from heap_forwarder.edge.observability import count, logger
from heap_forwarder.outcome import Outcome


class LetterWriter(Protocol):
    def write(self, letters: Sequence[DeadLetter], *, until: float | None = None) -> list[bool]: ...


class Entry(NamedTuple):
    """Where refused events come from: the letters' ``EntryPoint`` and the key naming an event's
    owner in the log line (the SQS record's id, or the API event's ``messageId``)."""

    name: str
    owner_key: str


SQS = Entry("sqs", "sqs_message_id")
API = Entry("api", "message_id")


class Refusal(NamedTuple):
    """One event (or one whole unreadable record) for the DLQ."""

    body: str  # what the letter holds: the event, or the record's body
    outcome: Outcome  # rejected: its error class, its reason (logs) and full reason (letter)
    letter_id: str  # ``<source>:<position>``: the same when the event is refused again
    source: str  # the SQS message id or the API request id (``SourceRecordId``)
    first_seen: str  # when the source was first received (``FirstSeen``)
    owner: str | None  # what the log line names it by (``Entry.owner_key``)


def settle(
    writer: LetterWriter,
    refusals: Sequence[Refusal],
    entry: Entry,
    *,
    until: float | None = None,
    announce: bool = True,
) -> list[bool]:
    """Write each refusal's letter; True where SQS took it (False: the caller keeps the event).

    ``announce``: each letter written is logged ("event parked in the DLQ") and counted
    (``EventsRejected.<class>``, ``EventsRejected``); off for records the pipeline never saw,
    which were not counted as received either. ``DlqWrites`` counts the letters written."""
    letters = [
        DeadLetter(
            r.body,
            r.outcome.error_class,
            r.outcome.full_reason,
            r.source,
            r.first_seen,
            entry.name,
            letter_id=r.letter_id,
        )
        for r in refusals
    ]
    written = writer.write(letters, until=until) if letters else []
    if announce:
        for refusal, ok in zip(refusals, written, strict=True):
            if ok:
                logger.warning(
                    "event parked in the DLQ",
                    extra={
                        entry.owner_key: refusal.owner,
                        "error_class": str(refusal.outcome.error_class),
                        "reason": refusal.outcome.reason,
                    },
                )
                count(f"EventsRejected.{refusal.outcome.error_class}", 1)
        count("EventsRejected", sum(written))
    count("DlqWrites", sum(written))
    return written
