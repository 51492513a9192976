"""The services a warm Lambda process keeps between invocations, built on first use.

Module-level on purpose: Lambda reuses the process, so the Heap connection pool, boto3
clients, the SSM cache and the compiled playbook survive from one invocation to the next. The
Heap client is bound to the app ID read from SSM: it (and the pipeline) is built again only when
that value (or the playbook) changes after the cache's TTL.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from heap_forwarder.edge.aws import ClientOnFirstUse
from heap_forwarder.edge.config import ConfigurationError, Settings, load_settings
from heap_forwarder.edge.observability import count, logger, record_heap_request
from heap_forwarder.edge.parameters import ParameterStore
from heap_forwarder.heap.client import HeapClient
from heap_forwarder.heap.limiter import RateLimiter
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import PlaybookHolder, build_playbook
from heap_forwarder.mapping.playbook import PlaybookError
from heap_forwarder.pipeline import Pipeline


def _report_bad_playbook(error: PlaybookError) -> None:
    logger.error(
        "mapping override refused; keeping the last good playbook",
        extra={"problems": [str(problem) for problem in error.details]},  # with file:line:column
    )
    count("MappingErrors", 1)


HeapFactory = Callable[[Mapping[str, Any]], HeapClient]  # request fields (the app ID) -> client


@dataclass
class Runtime:
    settings: Settings
    parameters: ParameterStore
    heap_factory: HeapFactory
    sqs_client: Any = None
    _playbooks: PlaybookHolder | None = None
    _heap: HeapClient | None = field(default=None, repr=False)
    _pipeline: Pipeline | None = field(default=None, repr=False)
    _pipeline_key: tuple[str, int, bytes | None] | None = field(default=None, repr=False)

    def playbook_holder(self) -> PlaybookHolder:
        if self._playbooks is None:
            self._playbooks = PlaybookHolder(build_playbook(self.settings.mapping_file), _report_bad_playbook)
        return self._playbooks

    def pipeline(self) -> Pipeline:
        """The pipeline with the current app ID and playbook (both cached; SSM re-read after the TTL).

        Built again only when either changed; its Heap client only when the request fields did.
        """
        if not self.settings.heap_app_id_parameter:
            raise ConfigurationError(
                "HEAP_APP_ID_PARAMETER is not set: name the SSM parameter holding the app ID"
            )
        app_id = self.parameters.get(self.settings.heap_app_id_parameter, secret=True)
        holder = self.playbook_holder()
        if self.settings.mapping_parameter:
            name = self.settings.mapping_parameter
            holder.refresh(self.settings.mapping_file, self.parameters.get(name), name)
        hash_key = self.hash_key() if holder.playbook.uses_hash else None
        key = (app_id, id(holder.playbook), hash_key)
        if self._pipeline is None or key != self._pipeline_key:
            mapper = Mapper(holder.playbook, {"MY_APP_ID": app_id}, hash_key=hash_key)
            if self._heap is None or self._heap.request_fields != mapper.request_fields:
                self._heap = self.heap_factory(mapper.request_fields)
            self._pipeline = Pipeline(mapper, self._heap)
            self._pipeline_key = key
        return self._pipeline

    def hash_key(self) -> bytes:
        """The secret key of the playbook's hash operation, from its SecureString parameter."""
        if not self.settings.hash_key_parameter:
            raise ConfigurationError(
                "the playbook hashes values but HASH_KEY_PARAMETER is not set: name the SecureString "
                "parameter holding the hash key (template parameter HashKeyParameterName)"
            )
        return self.parameters.get(self.settings.hash_key_parameter, secret=True).encode("utf-8")

    def sqs(self) -> Any:
        """The SQS client, made when first used (a batch delivered whole never uses it)."""
        if self.sqs_client is None:
            self.sqs_client = ClientOnFirstUse("sqs")
        return self.sqs_client


def build_runtime(settings: Settings | None = None, *, retry_budget_seconds: float | None = None) -> Runtime:
    settings = settings or load_settings()
    delivery = settings.delivery(retry_budget_seconds=retry_budget_seconds)
    # One limiter for the process: a client built again for a new app ID keeps the pace.
    limiter = RateLimiter(settings.rate_limit_events_per_minute, settings.rate_limit_burst)

    def heap_for(request_fields: Mapping[str, Any]) -> HeapClient:
        return HeapClient(
            delivery, request_fields=request_fields, limiter=limiter, observer=record_heap_request
        )

    tune_garbage_collector()
    return Runtime(settings, ParameterStore(settings.parameters_max_age), heap_for)


def tune_garbage_collector() -> None:
    """A batch builds hundreds of thousands of small, short-lived objects: with CPython's
    default thresholds the collector runs thousands of times per batch and re-scans every
    long-lived object (modules, models, the playbook) each time. Freeze what exists at start
    and collect the young generation less often. (The SQS entry module keeps the collector off
    until here: it is switched on again.)"""
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    gc.enable()
