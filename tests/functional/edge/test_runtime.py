"""The warm runtime (edge/runtime.py): the Heap client is bound to the app ID read from SSM, and
built again (with its pipeline) only when that value changes. On moto and the emulator."""

from __future__ import annotations

from heap_forwarder.edge.config import Settings
from heap_forwarder.edge.runtime import build_runtime
from heap_forwarder.outcome import ErrorClass

NAME = "/heap-forwarder/app-id"


def _settings(emulator, max_age: int) -> Settings:
    return Settings(
        HEAP_APP_ID_PARAMETER=NAME, HEAP_API_URL=emulator.url, POWERTOOLS_PARAMETERS_MAX_AGE=max_age
    )


def test_a_new_app_id_in_ssm_takes_effect_at_the_next_delivery(aws, emulator, make_consumer, kit) -> None:
    runtime = build_runtime(_settings(emulator, max_age=0))  # every read goes to SSM
    consumer = make_consumer(pipeline_factory=runtime.pipeline)

    assert consumer.handle(aws.lambda_event(kit.body(kit.track(1))), 30.0) == {"batchItemFailures": []}
    first = runtime.pipeline()
    assert runtime.pipeline() is first  # the same app ID: nothing built again
    assert first.deliverer.request_fields == {"app_id": kit.APP_ID}  # type: ignore[attr-defined]

    aws.ssm.put_parameter(Name=NAME, Value=kit.SECRET_APP_ID, Type="SecureString", Overwrite=True)
    assert consumer.handle(aws.lambda_event(kit.body(kit.track(2))), 30.0) == {"batchItemFailures": []}

    assert [e["app_id"] for e in emulator.tracked_events()] == [kit.APP_ID, kit.SECRET_APP_ID]
    second = runtime.pipeline()
    assert second is not first and second.deliverer is not first.deliverer
    assert second.deliverer.request_fields == {"app_id": kit.SECRET_APP_ID}  # type: ignore[attr-defined]
    # One pace for the process: the new client keeps the old one's rate limiter.
    assert second.deliverer.limiter is first.deliverer.limiter  # type: ignore[attr-defined]


def test_the_app_id_is_kept_until_the_cache_expires(aws, emulator, make_consumer, kit) -> None:
    runtime = build_runtime(_settings(emulator, max_age=300))
    first = runtime.pipeline()
    aws.ssm.put_parameter(Name=NAME, Value=kit.SECRET_APP_ID, Type="SecureString", Overwrite=True)
    consumer = make_consumer(pipeline_factory=runtime.pipeline)
    assert consumer.handle(aws.lambda_event(kit.body(kit.track(1))), 30.0) == {"batchItemFailures": []}
    assert runtime.pipeline() is first
    assert [e["app_id"] for e in emulator.tracked_events()] == [kit.APP_ID]


def test_the_new_app_id_is_the_one_redacted_from_heaps_texts(aws, emulator, kit) -> None:
    """After a refresh, Heap's text echoing the new app ID: its value never reaches the outcome."""
    runtime = build_runtime(_settings(emulator, max_age=0))
    runtime.pipeline()
    aws.ssm.put_parameter(Name=NAME, Value=kit.SECRET_APP_ID, Type="SecureString", Overwrite=True)
    pipeline = runtime.pipeline()
    emulator.fail_next(1, 400, body=f"postBody.app_id: {kit.SECRET_APP_ID} is not enabled")
    (outcome,) = pipeline.deliver(pipeline.prepare([kit.track(1)]))
    assert outcome.error_class is ErrorClass.CONFIG_FAULT
    assert outcome.detail.endswith("postBody.app_id: <app_id> is not enabled")
    assert kit.SECRET_APP_ID not in outcome.reason + outcome.detail
