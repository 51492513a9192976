"""SSM Parameter Store through Powertools' parameters utility: decrypted, cached with a TTL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.parameters import SSMProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from heap_forwarder.edge.aws import error_code
from heap_forwarder.edge.observability import count, logger

SECURE_STRING = "SecureString"


class ParameterUnavailable(RuntimeError):
    """A parameter could not be read (missing, denied, SSM down). Never carries the value."""


class _TypeAwareSSMProvider(SSMProvider):
    """Powertools' SSM provider that also reports the Type of each parameter it fetches.

    GetParameter answers with the type next to the value, but Powertools keeps only the value.
    ``_get`` is the hook Powertools calls on a cache miss (its extension point for providers),
    so ``on_fetch`` runs once per cache fill, not on every read.
    """

    def __init__(self, client: Any, on_fetch: Callable[[str, str], None]) -> None:
        super().__init__(boto3_client=client)
        self._on_fetch = on_fetch

    def _get(self, name: str, decrypt: bool = False, **sdk_options: Any) -> str:
        sdk_options["Name"] = name
        sdk_options["WithDecryption"] = decrypt
        parameter = self.client.get_parameter(**sdk_options)["Parameter"]
        self._on_fetch(name, str(parameter.get("Type", "")))
        return str(parameter["Value"])


class ParameterStore:
    def __init__(self, max_age: int, provider: SSMProvider | None = None, client: Any = None) -> None:
        self.max_age = max_age
        self._provider = provider
        self._client = client
        self._secrets: set[str] = set()

    @property
    def provider(self) -> SSMProvider:
        # Created on first use: boto3 clients are costly to build, and tests inject moto's.
        if self._provider is None:
            if self._client is None:
                import boto3

                # A client of boto3's default session: a new Session (SSMProvider's default)
                # reloads the service models, ~100 ms more on every cold start.
                self._client = boto3.client("ssm")
            self._provider = _TypeAwareSSMProvider(self._client, self._check_type)
        return self._provider

    def get(self, name: str, *, secret: bool = False) -> str:
        """The parameter's value. ``secret``: it should be a SecureString (the app ID, the write
        key); when it is not, each cache fill logs a warning and counts ``InsecureParameter``."""
        if secret:
            self._secrets.add(name)
        try:
            value = self.provider.get(name, max_age=self.max_age, decrypt=True)
        except GetParameterError as error:
            # Powertools raises its error inside the except block: SSM's own error is the context.
            cause = error.__cause__ or error.__context__ or error
            raise ParameterUnavailable(f"cannot read SSM parameter {name}: {error_code(cause)}") from None
        if not isinstance(value, str) or not value.strip():
            raise ParameterUnavailable(f"SSM parameter {name} is empty")
        return value.strip()

    def _check_type(self, name: str, kind: str) -> None:
        # It works, so a warning rather than a fault; but a String is stored unencrypted and
        # anyone allowed ssm:GetParameter on it reads the secret, no kms:Decrypt needed.
        if name in self._secrets and kind != SECURE_STRING:
            logger.warning(
                "SSM parameter holding a secret is not a SecureString; recreate it with --type SecureString",
                extra={"parameter": name, "parameter_type": kind or "unknown"},
            )
            count("InsecureParameter", 1)
