"""Reading Heap's answer (heap/answers.py, and Retry-After in heap/sender.py): pure, no Heap needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from heap_forwarder.heap.answers import Kind, classify, loggable_path
from heap_forwarder.heap.sender import parse_retry_after
from heap_forwarder.outcome import ErrorClass


def test_parse_retry_after_forms() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0.0
    for junk in (None, "", "soon", "-1", "nan", "inf"):
        assert parse_retry_after(junk) is None


@pytest.mark.parametrize(
    ("heads", "logged"),
    [
        ("postBody.events[3].properties.jane_doe: x", "postBody.events[3].properties"),
        ("postBody.properties.patient_ssn_123: x", "postBody.properties"),
        ("postBody.events[3]: x", "postBody.events[3]"),
        ("postBody: x", "postBody"),
    ],
)
def test_the_logged_path_stops_at_the_items_field(heads: str, logged: str) -> None:
    assert loggable_path(heads) == logged


@pytest.mark.parametrize(
    ("status", "text", "kind", "error_class"),
    [
        (400, "postBody.app_id: unknown", Kind.SETTLED, ErrorClass.CONFIG_FAULT),
        (400, "Invalid app_id 'x'", Kind.SETTLED, ErrorClass.CONFIG_FAULT),
        # Heap quotes the event: a word further in is never taken for a wrong app ID.
        (400, "postBody.events[3].event: event name 'Signup app_id mismatch'", Kind.SPLIT, None),
        (413, "too large", Kind.SPLIT, None),
        (401, "", Kind.SETTLED, ErrorClass.CONFIG_FAULT),
        (418, "", Kind.SETTLED, ErrorClass.CONFIG_FAULT),
        (301, "", Kind.SETTLED, ErrorClass.TRANSIENT),
    ],
)
def test_classify_reads_the_status_and_the_head_of_the_text(
    status: int, text: str, kind: Kind, error_class: ErrorClass | None
) -> None:
    answer = classify(status, text)
    assert answer.kind is kind
    if error_class is not None:
        assert answer.outcome.error_class is error_class
        assert answer.config_fault is (error_class is ErrorClass.CONFIG_FAULT)
