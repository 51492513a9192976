"""SSM Parameter Store through Powertools' parameters utility: decrypted, cached with a TTL."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from heap_forwarder.edge.aws import error_code


class ParameterUnavailable(RuntimeError):
    """A parameter could not be read (missing, denied, SSM down). Never carries the value."""


class ParameterStore:
    def __init__(self, max_age: int, provider: SSMProvider | None = None, client: Any = None) -> None:
        self.max_age = max_age
        self._provider = provider
        self._client = client

    @property
    def provider(self) -> SSMProvider:
        # Created on first use: boto3 clients are costly to build, and tests inject moto's.
        if self._provider is None:
            if self._client is None:
                import boto3

                # A client of boto3's default session: a new Session (SSMProvider's default)
                # reloads the service models, ~100 ms more on every cold start.
                self._client = boto3.client("ssm")
            self._provider = SSMProvider(boto3_client=self._client)
        return self._provider

    def get(self, name: str) -> str:
        try:
            value = self.provider.get(name, max_age=self.max_age, decrypt=True)
        except GetParameterError as error:
            # Powertools raises its error inside the except block: SSM's own error is the context.
            cause = error.__cause__ or error.__context__ or error
            raise ParameterUnavailable(f"cannot read SSM parameter {name}: {error_code(cause)}") from None
        if not isinstance(value, str) or not value.strip():
            raise ParameterUnavailable(f"SSM parameter {name} is empty")
        return value.strip()
