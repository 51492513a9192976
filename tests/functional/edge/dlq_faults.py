"""An SQS client that refuses chosen dead letters the way SQS does: the batch call succeeds and
lists them under ``Failed``; every other entry really goes to the (moto) queue.

A plain module (test modules cannot import a conftest reliably)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError


class RefusingSqs:
    """Wraps a boto3 SQS client. ``refuse(entry)`` picks the SendMessageBatch entries to refuse,
    each at most ``times`` times (None: always), as SQS's own fault unless ``sender_fault(entry)``;
    the first ``raise_calls`` batch calls raise instead (a 503).
    ``calls`` records the message bodies of every SendMessageBatch call, in order."""

    def __init__(
        self,
        sqs: Any,
        refuse: Callable[[dict[str, Any]], bool] = lambda entry: False,
        *,
        times: int | None = 1,
        sender_fault: Callable[[dict[str, Any]], bool] = lambda entry: False,
        raise_calls: int = 0,
    ) -> None:
        self.sqs = sqs
        self.refuse = refuse
        self.times = times
        self.sender_fault = sender_fault
        self.raise_calls = raise_calls
        self.calls: list[list[str]] = []
        self.refused: Counter[str] = Counter()

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([entry["MessageBody"] for entry in Entries])
        if len(self.calls) <= self.raise_calls:
            error = {
                "Error": {"Code": "ServiceUnavailable", "Message": "injected"},
                "ResponseMetadata": {"HTTPStatusCode": 503},
            }
            raise ClientError(error, "SendMessageBatch")
        refused, passed = [], []
        for entry in Entries:
            body = entry["MessageBody"]
            if self.refuse(entry) and (self.times is None or self.refused[body] < self.times):
                self.refused[body] += 1
                refused.append(entry)
            else:
                passed.append(entry)
        response: dict[str, Any] = {"Successful": []}
        if passed:
            response = dict(self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=passed))
        response["Failed"] = [
            *response.get("Failed", []),
            *(
                {
                    "Id": entry["Id"],
                    "SenderFault": self.sender_fault(entry),
                    "Code": "InvalidParameterValue" if self.sender_fault(entry) else "InternalError",
                    "Message": "injected",
                }
                for entry in refused
            ),
        ]
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sqs, name)
