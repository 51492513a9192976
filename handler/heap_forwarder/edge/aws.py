"""Small helpers shared by the AWS edge."""

from __future__ import annotations

import threading
from typing import Any


def error_code(error: BaseException) -> str:
    """What AWS said (``ParameterNotFound``, ``AccessDeniedException``...), else the error's type.

    Safe to log: the code names the failure, never a parameter's value.
    """
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__


class ClientOnFirstUse:
    """A boto3 client made when it is first used, not when the function starts.

    Building one costs 20-40 ms of a cold start (its service model read and the endpoint
    rules); the SQS consumer uses its SQS client only to retry records later or write dead
    letters, which a clean batch never does. Attribute access makes the client (once, whichever
    thread comes first) and answers from it.
    """

    def __init__(self, service: str) -> None:
        self._service = service
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3

                    self._client = boto3.client(self._service)
        return self._client

    @property
    def made(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)
