"""Lambda handler of the SQS consumer: ``heap_forwarder.entry.sqs.lambda_handler``.

What the module imports is what Lambda's runtime needs to call the handler: the logger, the
metrics and the tracer switch. The consumer, the pipeline, the playbook's schema and pydantic's
core (about 45 ms of imports) are imported by the first invocation, which builds the warm
state from them anyway. Where Lambda initialises a function before any request reaches it
(provisioned concurrency, or a SnapStart snapshot taken at publish time: Lambda's
``AWS_LAMBDA_INITIALIZATION_TYPE``), nothing is gained by waiting, so they are imported at
once (:func:`preload`). Only modules: no clients, connections, clocks, random seeds or
secrets are made before a request, so nothing in a snapshot has to be made unique again after a
restore. See docs/performance.md.
"""

from __future__ import annotations

import gc
import os
from typing import TYPE_CHECKING, Any

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # Until the warm state is built, the collector would run hundreds of times over the objects
    # the imports make, re-scanning all of them each time: about 40 ms of a cold start on the
    # bench machine, and no garbage to find. build_runtime turns it back on, tuned, with what
    # the start made frozen (edge/runtime.py tune_garbage_collector).
    gc.disable()

from heap_forwarder.edge.observability import logger, metered, traced

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from heap_forwarder.edge.consumer import Consumer
    from heap_forwarder.edge.runtime import Runtime

# Initialisation types where the init phase runs before, not on, the first request's path.
AHEAD_OF_REQUESTS = frozenset({"provisioned-concurrency", "snap-start"})


class _Warm:
    """What a warm process keeps: built on the first invocation (pool, SSM cache, playbook)."""

    runtime: Runtime | None = None
    consumer: Consumer | None = None


_warm = _Warm()


def preload() -> None:
    """Import what the first invocation needs (the consumer and everything it builds on, boto3
    for its clients). Modules only: the clients (and the credentials they resolve) are made by
    the first invocation."""
    import boto3  # noqa: F401

    import heap_forwarder.edge.consumer
    import heap_forwarder.edge.letters
    import heap_forwarder.edge.runtime  # noqa: F401


def consumer() -> Consumer:
    if _warm.consumer is None:
        try:
            _warm.consumer = _build_consumer()
        finally:
            gc.enable()  # whether or not the build got as far as tuning the collector
    return _warm.consumer


def _build_consumer() -> Consumer:
    from heap_forwarder.edge.consumer import BackoffPolicy, Consumer, Pace
    from heap_forwarder.edge.letters import DeadLetterWriter
    from heap_forwarder.edge.runtime import build_runtime

    runtime = _warm.runtime = build_runtime()
    settings = runtime.settings
    sqs = runtime.sqs()
    return Consumer(
        pipeline_factory=runtime.pipeline,
        sqs_client=sqs,
        queue_url=settings.retry_queue_url,
        dead_letters=DeadLetterWriter(sqs, settings.dead_letter_queue_url or ""),
        backoff=BackoffPolicy(settings.backoff_base_seconds, settings.backoff_cap_seconds),
        max_receive_count=settings.max_receive_count,
        pace=Pace(settings.rate_limit_events_per_minute / 60, settings.rate_limit_burst),
    )


def reset() -> None:
    """Forget the warm state (tests and local invoke change the environment between runs)."""
    _warm.runtime = _warm.consumer = None


@logger.inject_lambda_context(correlation_id_path="Records[0].messageId", clear_state=True)
@metered
@traced
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    worker = consumer()
    margin = _warm.runtime.settings.deadline_margin_seconds if _warm.runtime else 3.0
    remaining = max(0.0, context.get_remaining_time_in_millis() / 1000 - margin)
    # Dead letters may use part of the margin (the rest is for the response and Lambda itself).
    return worker.handle(event, remaining, letter_grace_seconds=margin / 2)


if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") in AHEAD_OF_REQUESTS:
    preload()
