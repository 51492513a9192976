"""Lambda's SQS event source mapping, played locally: receive, invoke, delete what succeeded.

Used by the end-to-end tests and the local tools so that the real queue semantics (receive
counts, visibility timeouts, the redrive policy moving messages to the DLQ) act on the real
handler, as they do in the account.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SqsHandler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class PollResult:
    received: int = 0
    deleted: int = 0
    failed: int = 0


def as_lambda_record(message: dict[str, Any], queue_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """A ReceiveMessage message in the shape Lambda hands an SQS-triggered function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "dataType": value.get("DataType", "String"),
                "stringListValues": [],
                "binaryListValues": [],
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


class EventSourceMapping:
    """Polls ``queue_url`` and hands batches to ``handler`` with ReportBatchItemFailures semantics."""

    def __init__(self, sqs_client: Any, queue_url: str, handler: SqsHandler, batch_size: int = 10) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.queue_arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    def poll_once(self) -> PollResult:
        """One batch: up to ``batch_size`` messages (in receives of 10, SQS's maximum)."""
        messages: list[dict[str, Any]] = []
        while len(messages) < self.batch_size:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch = response.get("Messages", [])
            if not batch:
                break
            messages.extend(batch)
        if not messages:
            return PollResult()
        event = {"Records": [as_lambda_record(m, self.queue_arn) for m in messages]}
        try:
            response = self.handler(event)
            failed_ids = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}
        except Exception:
            # A crashed invocation fails the whole batch: every message comes back after its
            # visibility timeout, as with the real event source mapping.
            failed_ids = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + 10])
            ]
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        return PollResult(received=len(messages), deleted=len(done), failed=len(messages) - len(done))

    def drain(self, max_polls: int = 1000) -> PollResult:
        """Poll until a receive finds nothing visible (messages backing off are not waited for)."""
        total = PollResult()
        for _ in range(max_polls):
            result = self.poll_once()
            if not result.received:
                break
            total.received += result.received
            total.deleted += result.deleted
            total.failed += result.failed
        return total
