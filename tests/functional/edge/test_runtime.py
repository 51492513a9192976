"""The warm runtime (edge/runtime.py): the Heap client is bound to the app ID read from SSM, and
built again (with its pipeline) only when that value changes. On moto and the emulator."""

from __future__ import annotations

from heap_forwarder.edge.config import Settings
from heap_forwarder.edge.runtime import build_runtime
from heap_forwarder.outcome import ErrorClass, Fate

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


# ---------------------------------------------------------------------------------------------
# The hash key: a SecureString named by HASH_KEY_PARAMETER, read only when the playbook hashes

HASH_KEY_NAME = "/heap-forwarder/hash-key"
HASH_KEY = "s3cret-hash-key-never-logged"
HASHING = "global: {edit: {properties: {hash: [email]}}}\n"


def _hashing_settings(emulator, tmp_path, hash_key_parameter: str | None) -> Settings:
    override = tmp_path / "hashing.yaml"
    override.write_text(HASHING)
    return Settings(
        HEAP_APP_ID_PARAMETER=NAME,
        HEAP_API_URL=emulator.url,
        MAPPING_FILE=str(override),
        HASH_KEY_PARAMETER=hash_key_parameter,
    )


def test_the_hash_key_is_read_from_its_secure_string(
    aws, emulator, make_consumer, *, kit, tmp_path, logs
) -> None:
    import hashlib
    import hmac

    aws.ssm.put_parameter(Name=HASH_KEY_NAME, Value=HASH_KEY, Type="SecureString")
    runtime = build_runtime(_hashing_settings(emulator, tmp_path, HASH_KEY_NAME))
    consumer = make_consumer(pipeline_factory=runtime.pipeline)
    event = kit.track(1)
    event["properties"] = {"email": "ada@example.com", "plan": "pro"}
    assert consumer.handle(aws.lambda_event(kit.body(event)), 30.0) == {"batchItemFailures": []}
    [stored] = emulator.tracked_events()
    expected = hmac.new(HASH_KEY.encode(), b"ada@example.com", hashlib.sha256).hexdigest()
    assert stored["properties"]["email"] == expected
    assert stored["properties"]["plan"] == "pro"
    assert HASH_KEY not in logs.text()


def test_a_playbook_that_hashes_without_a_hash_key_parameter_retries_every_record(
    aws, emulator, make_consumer, *, kit, tmp_path, logs
) -> None:
    runtime = build_runtime(_hashing_settings(emulator, tmp_path, None))
    consumer = make_consumer(pipeline_factory=runtime.pipeline)
    event = kit.track(1)
    response = consumer.handle(aws.lambda_event(kit.body(event)), 30.0)
    assert len(response["batchItemFailures"]) == 1  # retried, not dropped, not sent unhashed
    assert emulator.tracked_events() == []
    assert "HASH_KEY_PARAMETER is not set" in logs.text()


def test_a_hash_key_that_cannot_be_read_retries_every_record(
    aws, emulator, make_consumer, kit, tmp_path
) -> None:
    runtime = build_runtime(_hashing_settings(emulator, tmp_path, "/heap-forwarder/missing-key"))
    consumer = make_consumer(pipeline_factory=runtime.pipeline)
    response = consumer.handle(aws.lambda_event(kit.body(kit.track(1))), 30.0)
    assert len(response["batchItemFailures"]) == 1
    assert emulator.tracked_events() == []


def test_no_hash_key_is_read_when_the_playbook_does_not_hash(aws, emulator, kit) -> None:
    settings = Settings(
        HEAP_APP_ID_PARAMETER=NAME,
        HEAP_API_URL=emulator.url,
        HASH_KEY_PARAMETER="/heap-forwarder/missing-key",
    )
    pipeline = build_runtime(settings).pipeline()  # the missing parameter is never asked for
    [outcome] = pipeline.deliver(pipeline.prepare([kit.track(1)]))
    assert outcome.fate is Fate.DELIVERED


def test_a_bad_mapping_parameter_keeps_the_last_good_playbook_and_says_where(
    aws, emulator, kit, logs
) -> None:
    aws.ssm.put_parameter(Name="/heap-forwarder/mapping", Value="rules:\n  arrays: glue\n", Type="String")
    settings = Settings(
        HEAP_APP_ID_PARAMETER=NAME,
        HEAP_API_URL=emulator.url,
        MAPPING_PARAMETER="/heap-forwarder/mapping",
        POWERTOOLS_PARAMETERS_MAX_AGE=0,
    )
    pipeline = build_runtime(settings).pipeline()
    assert pipeline.mapper.playbook.source == "default_playbook.yaml"  # the last good one
    [outcome] = pipeline.deliver(pipeline.prepare([kit.track(1)]))
    assert outcome.fate is Fate.DELIVERED
    [record] = [r for r in logs.records() if r["message"].startswith("mapping override refused")]
    assert record["problems"] == [
        "SSM parameter /heap-forwarder/mapping:2:3: rules.arrays: Input should be 'join' or 'stringify'"
    ]
    assert "MappingErrors" in kit.metric_names()
