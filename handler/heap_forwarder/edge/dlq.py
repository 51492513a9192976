"""The dead-letter queue writer: every message says why it is there.

The body is the original event (or the raw body when it was not JSON); message attributes
carry the reason: error class, message, source record id, first-seen time. Redrive
(``heap-forwarder redrive``) reads the same attributes to filter by reason.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from heap_forwarder.outcome import ErrorClass

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


class DeadLetter(NamedTuple):
    body: str
    error_class: ErrorClass
    reason: str
    source_record_id: str
    first_seen: str
    entry_point: str = "sqs"

    def attributes(self) -> dict[str, dict[str, str]]:
        def text(value: str) -> dict[str, str]:
            return {"DataType": "String", "StringValue": value or "-"}

        return {
            ATTR_ERROR_CLASS: text(str(self.error_class)),
            ATTR_REASON: text(self.reason[:MAX_REASON]),
            ATTR_SOURCE_RECORD: text(self.source_record_id),
            ATTR_FIRST_SEEN: text(self.first_seen),
            ATTR_ENTRY: text(self.entry_point),
        }


class DeadLetterWriter:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url

    def write(self, letters: Sequence[DeadLetter]) -> list[bool]:
        """Send each letter; True where SQS took it. A failure never raises: the caller retries."""
        written = [False] * len(letters)
        for batch in _batches([(i, _bounded(letter.body), letter) for i, letter in enumerate(letters)]):
            entries = [
                {"Id": str(i), "MessageBody": body, "MessageAttributes": letter.attributes()}
                for i, body, letter in batch
            ]
            try:
                response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (BotoCoreError, ClientError):
                continue
            for success in response.get("Successful", []):
                written[int(success["Id"])] = True
        return written


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
