"""Configuration, parsed once from environment variables into a typed model."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from heap_forwarder import defaults
from heap_forwarder.heap.client import DeliverySettings


class ConfigurationError(ValueError):
    """The environment does not describe a working deployment; the message says which variable."""


class ApiAuthMode(StrEnum):
    """Who authenticates the ingest API's callers (the template's ``ApiAuthMode``)."""

    WRITE_KEY = "WriteKey"  # the function, against the write key named by WRITE_KEY_PARAMETER
    IAM = "IAM"  # API Gateway (SigV4) before the function is invoked


class Settings(BaseModel):
    """Every setting, by the environment variable that sets it (see docs/configuration.md)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    heap_app_id_parameter: str | None = Field(None, alias="HEAP_APP_ID_PARAMETER")
    heap_api_url: str = Field(defaults.HEAP_API_URL, alias="HEAP_API_URL")
    retry_queue_url: str | None = Field(None, alias="RETRY_QUEUE_URL")
    dead_letter_queue_url: str | None = Field(None, alias="DEAD_LETTER_QUEUE_URL")
    write_key_parameter: str | None = Field(None, alias="WRITE_KEY_PARAMETER")
    # WriteKey when unset: an API that is not told IAM guards its door, it never assumes someone else does.
    api_auth_mode: ApiAuthMode = Field(ApiAuthMode.WRITE_KEY, alias="API_AUTH_MODE")
    mapping_file: Path | None = Field(None, alias="MAPPING_FILE")
    mapping_parameter: str | None = Field(None, alias="MAPPING_PARAMETER")
    # The secret key of the playbook's `hash` operation (a SecureString; read only if it hashes).
    hash_key_parameter: str | None = Field(None, alias="HASH_KEY_PARAMETER")
    # This process's share of Heap's 15,000 events/min per app (shared by every concurrent sender).
    rate_limit_events_per_minute: float = Field(
        defaults.RATE_LIMIT_EVENTS_PER_MINUTE, gt=0, alias="RATE_LIMIT_EVENTS_PER_MINUTE"
    )
    rate_limit_burst: int = Field(defaults.RATE_LIMIT_BURST, ge=1, alias="RATE_LIMIT_BURST")
    # Visibility-timeout backoff across SQS redeliveries: base * 2^(receives-1), capped.
    backoff_base_seconds: float = Field(defaults.BACKOFF_BASE_SECONDS, ge=0, alias="BACKOFF_BASE_SECONDS")
    backoff_cap_seconds: float = Field(
        defaults.BACKOFF_CAP_SECONDS, ge=0, le=43200, alias="BACKOFF_CAP_SECONDS"
    )
    # On this receive the consumer itself parks still-failing events in the DLQ, with a reason.
    max_receive_count: int = Field(defaults.MAX_RECEIVE_COUNT, ge=1, alias="MAX_RECEIVE_COUNT")
    retry_budget_seconds: float = Field(defaults.RETRY_BUDGET_SECONDS, ge=0, alias="RETRY_BUDGET_SECONDS")
    heap_connect_timeout_seconds: float = Field(
        defaults.HEAP_CONNECT_TIMEOUT_SECONDS, gt=0, alias="HEAP_CONNECT_TIMEOUT_SECONDS"
    )
    heap_read_timeout_seconds: float = Field(
        defaults.HEAP_READ_TIMEOUT_SECONDS, gt=0, alias="HEAP_READ_TIMEOUT_SECONDS"
    )
    heap_max_items_per_request: int = Field(
        defaults.HEAP_BULK_CAP, ge=1, le=defaults.HEAP_BULK_CAP, alias="HEAP_MAX_ITEMS_PER_REQUEST"
    )
    # Seconds kept back from Lambda's remaining time for DLQ writes and the response.
    deadline_margin_seconds: float = Field(
        defaults.DEADLINE_MARGIN_SECONDS, ge=0, alias="DEADLINE_MARGIN_SECONDS"
    )
    parameters_max_age: int = Field(
        defaults.PARAMETERS_MAX_AGE_SECONDS, ge=0, alias="POWERTOOLS_PARAMETERS_MAX_AGE"
    )

    @field_validator(
        "heap_app_id_parameter",
        "retry_queue_url",
        "dead_letter_queue_url",
        "write_key_parameter",
        "mapping_parameter",
        "hash_key_parameter",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_auth_mode", mode="before")
    @classmethod
    def _blank_mode_is_write_key(cls, value: object) -> object:
        return ApiAuthMode.WRITE_KEY if isinstance(value, str) and not value.strip() else value

    @field_validator("mapping_file", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("heap_api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL such as {defaults.HEAP_API_URL}")
        return value.rstrip("/")

    def delivery(self, *, retry_budget_seconds: float | None = None) -> DeliverySettings:
        return DeliverySettings(
            base_url=self.heap_api_url,
            connect_timeout_s=self.heap_connect_timeout_seconds,
            read_timeout_s=self.heap_read_timeout_seconds,
            max_items_per_request=self.heap_max_items_per_request,
            retry_budget_s=self.retry_budget_seconds
            if retry_budget_seconds is None
            else retry_budget_seconds,
        )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    source = os.environ if environ is None else environ
    try:
        return Settings.model_validate(dict(source))
    except ValidationError as error:
        problems = "; ".join(
            f"{Settings.model_fields[str(e['loc'][0])].alias or e['loc'][0]}: {e['msg']}"
            if e["loc"] and str(e["loc"][0]) in Settings.model_fields
            else f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
