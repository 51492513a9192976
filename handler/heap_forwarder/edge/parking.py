"""Parking: events the API could not deliver go to the main queue, as ``{"batch": [...]}``
messages of at most 256 KB each in request order, where the SQS consumer delivers them later."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from heap_forwarder.edge.aws import error_code
from heap_forwarder.edge.observability import logger

# One parked SQS message: SQS takes 256 KiB; a little is kept back.
MAX_PARK_BYTES = 256_000


def compact_json(value: Any, *, ascii_only: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=False)


# SQS message bodies take only these characters (lone surrogates, U+FFFE... are refused).
_NOT_SQS_TEXT = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_safe_json(value: Any) -> str:
    """Compact JSON that SQS accepts as a message body (escaped to ASCII only when it must be)."""
    text = compact_json(value)
    return compact_json(value, ascii_only=True) if _NOT_SQS_TEXT.search(text) else text


def park_bodies(encoded: Sequence[str], limit: int = MAX_PARK_BYTES) -> list[str]:
    """Pack encoded events, in order, in the fewest ``{"batch": [...]}`` bodies of at most ``limit`` bytes."""
    head, tail = '{"batch":[', "]}"
    bodies: list[str] = []
    current: list[str] = []
    size = len(head) + len(tail)
    for text in encoded:
        added = len(text.encode("utf-8")) + (1 if current else 0)
        if current and size + added > limit:
            bodies.append(head + ",".join(current) + tail)
            current, size, added = [], len(head) + len(tail), added - 1
        current.append(text)
        size += added
    if current:
        bodies.append(head + ",".join(current) + tail)
    return bodies


class RetryQueue:
    """Parks events in the main queue, where the SQS consumer delivers them like any other."""

    def __init__(self, sqs_client: Any, queue_url: str | None) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url

    def park(self, events: Sequence[Any]) -> bool:
        """Send the events as few messages; True only when SQS took every one."""
        if not events:
            return True
        if not self.queue_url:
            logger.error("cannot park events: RETRY_QUEUE_URL is not set")
            return False
        ok = True
        for body in park_bodies([sqs_safe_json(e) for e in events]):
            try:
                self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
            except (BotoCoreError, ClientError) as error:
                logger.error("could not park events in the retry queue", extra={"cause": error_code(error)})
                ok = False
        return ok
