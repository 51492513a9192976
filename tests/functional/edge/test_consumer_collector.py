"""The consumer pauses the cyclic garbage collector for a whole batch, reading and settling
included (the decoded events live that long: collections would only re-scan them), and turns it
on again only once the batch's objects are freed, so that no collection scans them afterwards
either. On moto and the emulator."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from dlq_faults import RefusingSqs

from heap_forwarder.pipeline import Pipeline

EVENTS = 5_000
PER_RECORD = 100


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    """On, with the functions' thresholds (``edge/runtime.py``)."""
    was, thresholds = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(10_000, 20, 20)
    yield
    gc.set_threshold(*thresholds)
    (gc.enable if was else gc.disable)()


def _batch(aws: Any, kit: Any, size: int = EVENTS) -> dict[str, Any]:
    bad = kit.track(999_999)
    bad["timestamp"] = "the day after tomorrow"  # refused: a dead letter, written in the batch
    events = [kit.track(n) for n in range(size)]
    events[size // 2] = bad
    return aws.lambda_event(*[kit.body(*events[i : i + PER_RECORD]) for i in range(0, size, PER_RECORD)])


def test_no_collection_runs_from_the_first_record_read_to_the_last_settled(
    aws, emulator, make_consumer, kit
) -> None:
    collections: list[int] = []
    seen: dict[str, Any] = {}

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    consumer = make_consumer()
    # A first batch builds what is built once (the models a refused event needs, the SQS
    # client's shapes for the dead letter): the measured batch leaves only its own objects.
    assert consumer.handle(_batch(aws, kit, 200), 30.0) == {"batchItemFailures": []}
    emulator.reset()
    build, handle = consumer.pipeline_factory, consumer._handle

    def factory() -> Pipeline:
        # Called after the records were read: the collector is off already, and the decoded
        # events are young objects no collection has looked at.
        seen["enabled"], seen["young"] = gc.isenabled(), len(gc.get_objects(0))
        return build()

    def handled(*args: Any) -> dict[str, Any]:
        response = handle(*args)
        # The batch's frame is gone, the collector not yet back on.
        seen["during"] = list(collections)
        seen["stored"] = len(emulator.tracked_events())
        emulator.reset()  # the emulator runs in this process: what it stored is not the batch's
        seen["left"] = len(gc.get_objects(0))
        return response

    consumer.pipeline_factory, consumer._handle = factory, handled  # type: ignore[method-assign]
    event = _batch(aws, kit)
    gc.collect()
    gc.callbacks.append(note)
    try:
        response = consumer.handle(event, 30.0)
    finally:
        gc.callbacks.remove(note)
    assert response == {"batchItemFailures": []}
    assert seen["stored"] == EVENTS - 1
    # The refused event of each batch, dead-lettered in the batch.
    assert [letter.error_class for letter in aws.dead_letters()] == ["invalid_event"] * 2
    assert seen["enabled"] is False
    assert seen["young"] > gc.get_threshold()[0]  # past the threshold, and none ran
    assert seen["during"] == []
    assert gc.isenabled()
    # The batch's objects were freed with its frame: nothing of it is left for the next
    # collection to scan (it held about 4 young objects an event).
    assert seen["left"] < EVENTS // 10, seen["left"]


def test_the_collector_is_on_again_when_a_batch_fails_part_way(aws, emulator, make_consumer, kit) -> None:
    def broken() -> Pipeline:
        raise RuntimeError("SSM is down")

    consumer = make_consumer(pipeline_factory=broken, sqs_client=RefusingSqs(aws.sqs))
    response = consumer.handle(_batch(aws, kit), 30.0)
    # A configuration fault: every record retried.
    assert len(response["batchItemFailures"]) == EVENTS // PER_RECORD
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(aws, emulator, make_consumer, kit) -> None:
    gc.disable()
    assert make_consumer().handle(_batch(aws, kit), 30.0) == {"batchItemFailures": []}
    assert not gc.isenabled()


def test_bad_events_anywhere_with_the_dlq_down_are_retried_and_the_collector_comes_back(
    aws, emulator, make_consumer, kit
) -> None:
    """The hard way, with the collector paused: bad events at the first, last and middle
    positions, with hostile text, and the dead-letter queue itself failing (it does not
    exist). Nothing is lost: their records are left for the queue to redeliver, every good
    event is delivered once, and the collector is on again afterwards."""
    bad_values = ["\u202etomorrow", "'; DROP TABLE events; --", "nul\x00byte"]
    events = [kit.track(n) for n in range(EVENTS)]
    for position, value in zip((0, EVENTS // 2, EVENTS - 1), bad_values, strict=True):
        events[position]["timestamp"] = value
    records = [kit.body(*events[i : i + PER_RECORD]) for i in range(0, EVENTS, PER_RECORD)]
    event = aws.lambda_event(*records)
    consumer = make_consumer(dlq_url=aws.dlq_url.replace("edge-dlq", "no-such-queue"))

    response = consumer.handle(event, 30.0)

    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    holding_bad = {event["Records"][i]["messageId"] for i in (0, len(records) // 2, len(records) - 1)}
    assert failed == holding_bad
    good = EVENTS - len(bad_values)
    assert len({e["idempotency_key"] for e in emulator.tracked_events()}) == good
    assert aws.dead_letters() == []
    assert gc.isenabled()
