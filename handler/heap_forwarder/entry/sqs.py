"""Lambda handler of the SQS consumer: ``heap_forwarder.entry.sqs.lambda_handler``."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from heap_forwarder.edge.consumer import BackoffPolicy, Consumer
from heap_forwarder.edge.letters import DeadLetterWriter
from heap_forwarder.edge.observability import logger, metered, traced
from heap_forwarder.edge.runtime import Runtime, build_runtime


class _Warm:
    """What a warm process keeps: built on the first invocation (pool, SSM cache, playbook)."""

    runtime: Runtime | None = None
    consumer: Consumer | None = None


_warm = _Warm()


def consumer() -> Consumer:
    if _warm.consumer is None:
        runtime = _warm.runtime = build_runtime()
        settings = runtime.settings
        sqs = runtime.sqs()
        _warm.consumer = Consumer(
            pipeline_factory=runtime.pipeline,
            sqs_client=sqs,
            queue_url=settings.retry_queue_url,
            dead_letters=DeadLetterWriter(sqs, settings.dead_letter_queue_url or ""),
            backoff=BackoffPolicy(settings.backoff_base_seconds, settings.backoff_cap_seconds),
            max_receive_count=settings.max_receive_count,
        )
    return _warm.consumer


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
