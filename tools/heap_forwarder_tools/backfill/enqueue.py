"""Message bodies into the main queue, in SendMessageBatch requests, until SQS has them all.

``send`` returns only when SQS acknowledged every body (so the caller may checkpoint past them),
or raises ``EnqueueError``. Entries SQS failed on its side, throttling and dropped connections are
retried with a growing pause; an entry SQS calls the sender's fault (too large, malformed) is not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from heap_forwarder_tools.backfill.packing import Body
from heap_forwarder_tools.stacks import describe_error

ATTEMPTS = 6
FIRST_PAUSE_SECONDS = 0.5


class EnqueueError(RuntimeError):
    """SQS did not take the messages; none after the last checkpoint can be counted as sent."""


class Enqueuer:
    def __init__(self, sqs: Any, queue_url: str, *, sleep: Callable[[float], object]) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.sleep = sleep
        self.requests = 0  # SendMessageBatch requests made, retries included

    def send(self, bodies: Sequence[Body]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        pending = {str(i): body for i, body in enumerate(bodies)}
        pause = FIRST_PAUSE_SECONDS
        problem = ""
        for _attempt in range(ATTEMPTS):
            entries = [{"Id": key, "MessageBody": body.text} for key, body in pending.items()]
            self.requests += 1
            try:
                response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except ClientError as error:
                if not _transient(error):
                    raise EnqueueError(
                        f"the main queue refused the messages: {describe_error(error)}"
                    ) from None
                problem = describe_error(error)
            except BotoCoreError as error:
                problem = describe_error(error)
            else:
                for entry in response.get("Successful") or []:
                    pending.pop(str(entry["Id"]), None)
                for entry in response.get("Failed") or []:
                    problem = f"{entry.get('Code')}: {entry.get('Message')}"
                    if entry.get("SenderFault"):
                        raise EnqueueError(f"the main queue refused a message: {problem}")
                if not pending:
                    return
            self.sleep(pause)
            pause = min(pause * 2, 30.0)
        raise EnqueueError(
            f"the main queue did not take {len(pending)} message(s) after {ATTEMPTS} attempts: {problem}"
        )


_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "AWS.SimpleQueueService.ServiceUnavailable",
        "KmsThrottled",
    }
)


def _transient(error: Exception) -> bool:
    response = getattr(error, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    return code in _TRANSIENT_CODES or status >= 500
