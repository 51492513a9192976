"""Dead letters: the way back both entry points share, from refused events to the DLQ.

``settle``: the caller decides which events are refused for good (its own policy: the consumer's
retries and last receive, the API's parking first); ``settle`` makes each a letter, writes them
through the ``DeadLetterWriter`` (bounded by ``until``), says which letters SQS did not take (the
caller keeps those events: retry or park), logs each letter written and counts it.

``DeadLetterWriter``: every message says why it is there. The body is the original event (or the
raw body when it was not JSON); message attributes carry the reason: error class, message,
source record id, first-seen time, and a letter id that stays the same when the same event is
dead-lettered again. Redrive (``heap-forwarder redrive``) reads the same attributes to filter by
reason and to move one letter per id.

Each letter carries the outcome's ``full_reason`` (Heap's own text included, in the ``Reason``
attribute); its log line only the outcome's ``reason``: Heap's text may echo event data and goes
where the event goes (the letter), never into a log line.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from heap_forwarder.edge.observability import count, logger
from heap_forwarder.outcome import ErrorClass, Outcome


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


# ---------------------------------------------------------------------------------------------
# The writer: letters to the DLQ, reasons as attributes, only refused entries resent

# SQS allows 1 MiB per message and per batch; keep well under it for the attributes.
MAX_BODY_BYTES = 1_000_000
MAX_REASON = 1000
_BATCH_BYTES = 1_048_576
_ATTRIBUTE_ALLOWANCE = 2_000  # the attributes' names and values, reason included

ATTR_ERROR_CLASS = "ErrorClass"
ATTR_REASON = "Reason"
ATTR_SOURCE_RECORD = "SourceRecordId"
ATTR_FIRST_SEEN = "FirstSeen"
ATTR_ENTRY = "EntryPoint"
ATTR_LETTER_ID = "LetterId"

# SQS refusing some entries of a batch (InternalError, throttling) is usually momentary: the
# refused entries alone are sent again, a few times, before the caller falls back on keeping
# the source for a later retry. The pauses stay well under a second in all. A refusal that
# cannot change (SQS blames the sender: no such queue, access denied...) is not tried again.
WRITE_ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 0.1
_THROTTLED = frozenset({"Throttling", "ThrottlingException", "RequestThrottled"})


class DeadLetter(NamedTuple):
    """One event (or one unreadable record) for the DLQ.

    ``reason`` is what the letter carries: the outcome's ``full_reason``, Heap's own text
    included; log lines take the outcome's ``reason`` instead. ``letter_id`` names the event at
    its source (``<sqs messageId>:<position>``, ``<sqs messageId>:record``,
    ``<api requestId>:<index>``), so that a letter written again on a redelivery has a twin
    with the same id; empty: no ``LetterId`` attribute.
    """

    body: str
    error_class: ErrorClass
    reason: str
    source_record_id: str
    first_seen: str
    entry_point: str = "sqs"
    letter_id: str = ""

    def attributes(self) -> dict[str, dict[str, str]]:
        def text(value: str) -> dict[str, str]:
            return {"DataType": "String", "StringValue": value or "-"}

        attributes = {
            ATTR_ERROR_CLASS: text(str(self.error_class)),
            ATTR_REASON: text(self.reason[:MAX_REASON]),
            ATTR_SOURCE_RECORD: text(self.source_record_id),
            ATTR_FIRST_SEEN: text(self.first_seen),
            ATTR_ENTRY: text(self.entry_point),
        }
        if self.letter_id:
            # Left out rather than "-" when unknown: letters without an id must never be
            # taken for twins of one another by redrive.
            attributes[ATTR_LETTER_ID] = text(self.letter_id)
        return attributes


class DeadLetterWriter:
    def __init__(
        self,
        sqs_client: Any,
        queue_url: str,
        *,
        attempts: int = WRITE_ATTEMPTS,
        pause_seconds: float = RETRY_PAUSE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.attempts = max(1, attempts)
        self.pause_seconds = pause_seconds
        self.sleep = sleep
        self.clock = clock

    def write(self, letters: Sequence[DeadLetter], *, until: float | None = None) -> list[bool]:
        """Send each letter; True where SQS took it. A failure never raises: the caller retries.

        Only the entries SQS refused on its side (or those of a batch call that failed for a
        reason that may pass) are sent again: a letter SQS took is never sent twice by one call.
        No batch is started after ``until`` (on ``clock``): those letters are False, for the
        caller to retry their records later, rather than let the function time out."""
        written = [False] * len(letters)
        pending = [(i, _bounded(letter.body), letter) for i, letter in enumerate(letters)]
        for attempt in range(self.attempts):
            if attempt:
                pause = self.pause_seconds * 2 ** (attempt - 1)
                if until is not None and self.clock() + pause > until:
                    return written
                self.sleep(pause)
            retry: set[int] = set()
            for batch in _batches(pending):
                if until is not None and self.clock() > until:
                    return written
                taken, again = self._send(batch)
                for i in taken:
                    written[i] = True
                retry.update(again)
            pending = [entry for entry in pending if entry[0] in retry]
            if not pending:
                break
        return written

    def _send(self, batch: list[tuple[int, str, DeadLetter]]) -> tuple[list[int], list[int]]:
        """The indexes of the letters of ``batch`` that SQS took, and of those worth sending again."""
        entries = [
            {"Id": str(i), "MessageBody": body, "MessageAttributes": letter.attributes()}
            for i, body, letter in batch
        ]
        try:
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except BotoCoreError:  # no answer (connection, timeout): it may well work next time
            return [], [i for i, _, _ in batch]
        except ClientError as error:
            return [], [i for i, _, _ in batch] if _momentary(error) else []
        taken = [int(success["Id"]) for success in response.get("Successful", [])]
        again = [
            int(failure["Id"]) for failure in response.get("Failed", []) if not failure.get("SenderFault")
        ]
        return taken, again


def _momentary(error: ClientError) -> bool:
    """SQS failed on its side (5xx) or throttled the call: a later try may succeed."""
    response: dict[str, Any] = getattr(error, "response", None) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    code = str((response.get("Error") or {}).get("Code", ""))
    return int(status) >= 500 or code.rsplit(".", 1)[-1] in _THROTTLED


def _batches(entries: list[tuple[int, str, DeadLetter]]) -> list[list[tuple[int, str, DeadLetter]]]:
    """SendMessageBatch takes 10 messages and 1 MiB at most: a big letter travels alone."""
    batches: list[list[tuple[int, str, DeadLetter]]] = []
    current: list[tuple[int, str, DeadLetter]] = []
    size = 0
    for entry in entries:
        entry_size = len(entry[1].encode("utf-8")) + _ATTRIBUTE_ALLOWANCE
        if current and (len(current) == 10 or size + entry_size > _BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry_size
    if current:
        batches.append(current)
    return batches


# SQS takes only these characters; anything else (control characters, lone surrogates from a
# hostile producer) is escaped so the letter can still be written.
_NOT_SQS_TEXT_PATTERN = "[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


@functools.cache
def _not_sqs_text() -> re.Pattern[str]:
    return re.compile(_NOT_SQS_TEXT_PATTERN)  # compiled on first use: it is big, and rarely needed


def _bounded(body: str) -> str:
    body = _not_sqs_text().sub(lambda m: f"\\u{ord(m.group()):04x}", body)
    encoded = body.encode("utf-8")
    if len(encoded) <= MAX_BODY_BYTES:
        return body
    # Too big for SQS: keep the head, and say so, rather than lose the whole letter.
    head = encoded[:MAX_BODY_BYTES].decode("utf-8", "ignore")
    return head + f"\n[truncated by heap-forwarder: {len(encoded)} bytes]"
