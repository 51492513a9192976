"""One event validated, completed and filtered for a backfill
(tools/heap_forwarder_tools/backfill/events.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from heap_forwarder_tools.backfill.events import NO_TIME, Ready, Refused, Selection, parse_moment, prepare
from heap_forwarder_tools.backfill.reader import Item, Position

TRACK = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u",
    "messageId": "m-1",
    "timestamp": "2023-01-01T10:00:00Z",
}


def item(event: Any, line: int = 7, index: int = 0, *, text: bool = True) -> Item:
    line_text = json.dumps(event).encode() if text and index == 0 else None
    return Item(Position(line, index), index > 0, event, line_text=line_text)


def test_a_complete_event_is_sent_as_its_line_was_written() -> None:
    ready = prepare(item(dict(TRACK)), "f")
    assert isinstance(ready, Ready)
    assert (ready.kind, ready.name) == ("track", "Order Completed")
    assert ready.moment == datetime(2023, 1, 1, 10, tzinfo=UTC)
    assert ready.text == json.dumps(TRACK)


def test_an_event_without_message_id_gets_a_stable_one_from_its_file_and_position() -> None:
    event = {k: v for k, v in TRACK.items() if k != "messageId"}
    first = prepare(item(dict(event)), "s3://b/k.gz")
    again = prepare(item(dict(event)), "s3://b/k.gz")
    other_line = prepare(item(dict(event), line=8), "s3://b/k.gz")
    other_file = prepare(item(dict(event)), "s3://b/other.gz")
    assert isinstance(first, Ready) and isinstance(again, Ready)
    assert isinstance(other_line, Ready) and isinstance(other_file, Ready)
    ids = [json.loads(r.text)["messageId"] for r in (first, again, other_line, other_file)]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 3


def test_a_missing_timestamp_comes_from_original_timestamp_never_from_now() -> None:
    event = {k: v for k, v in TRACK.items() if k != "timestamp"} | {
        "originalTimestamp": "2022-05-01T00:00:00Z"
    }
    ready = prepare(item(event), "f")
    assert isinstance(ready, Ready)
    assert ready.moment == datetime(2022, 5, 1, tzinfo=UTC)
    assert json.loads(ready.text)["timestamp"].startswith("2022-05-01T00:00:00")


def test_an_event_with_no_time_at_all_is_refused() -> None:
    refused = prepare(item({k: v for k, v in TRACK.items() if k != "timestamp"}), "f")
    assert refused == Refused(NO_TIME, NO_TIME)


def test_the_models_word_the_reason_and_only_the_detail_shows_the_value() -> None:
    refused = prepare(item({**TRACK, "timestamp": "last tuesday"}), "f")
    assert isinstance(refused, Refused)
    assert refused.reason.startswith("timestamp: not a valid timestamp")
    assert "last tuesday" not in refused.reason
    assert "last tuesday" in refused.detail


def test_what_is_not_an_event_is_refused() -> None:
    assert isinstance(prepare(item([1, 2]), "f"), Refused)
    refused = prepare(item({**TRACK, "type": "purchase"}), "f")
    assert isinstance(refused, Refused) and "unsupported type 'purchase'" in refused.reason


def test_an_event_the_models_accept_but_the_shortcut_declines_is_ready() -> None:
    ready = prepare(item({**TRACK, "userId": 42, "timestamp": 1672567200000}), "f")  # number id, epoch ms
    assert isinstance(ready, Ready)
    assert ready.moment == datetime(2023, 1, 1, 10, tzinfo=UTC)


def ready(kind: str = "track", name: str = "Order Completed", day: int = 1) -> Ready:
    return Ready(kind, name, datetime(2023, 1, day, tzinfo=UTC), "{}")


def test_selection_by_time_since_inclusive_until_exclusive() -> None:
    selection = Selection.of(
        since=parse_moment("2023-01-02"), until=parse_moment("2023-01-04T00:00:00+00:00")
    )
    assert [selection.admits(ready(day=d)) for d in (1, 2, 3, 4)] == [False, True, True, False]


def test_selection_by_type_and_by_event_name_as_the_playbook_matches_names() -> None:
    assert Selection.of(types=["page"]).admits(ready("page", "Home"))
    assert not Selection.of(types=["page"]).admits(ready())
    by_name = Selection.of(events=["order_completed"])
    assert by_name.admits(ready(name="Order Completed"))
    assert by_name.admits(ready(name="ORDER-COMPLETED"))
    assert not by_name.admits(ready(name="Order Refunded"))
    assert not by_name.admits(ready("page", "Order Completed"))  # names select track events
    assert Selection().admits(ready("identify", ""))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-01-02", datetime(2023, 1, 2, tzinfo=UTC)),
        ("2023-01-02T03:00:00+02:00", datetime(2023, 1, 2, 1, tzinfo=UTC)),
        ("1672531200000", datetime(2023, 1, 1, tzinfo=UTC)),
    ],
)
def test_since_and_until_take_dates_times_and_epoch_milliseconds(text: str, expected: datetime) -> None:
    assert parse_moment(text) == expected


def test_a_number_too_large_for_a_float_in_a_batch_item_is_refused() -> None:
    # The line is read as the consumer reads a record (1e400 decodes to infinity); an event that
    # must be re-encoded (a batch item) cannot be: refused here. (One sent as its own line goes
    # as written, and the stack's Heap rules refuse it, as they would from any producer.)
    refused = prepare(item({**TRACK, "properties": {"x": float("inf")}}, index=1), "f")
    assert isinstance(refused, Refused) and "too large for a float" in refused.reason


def test_a_lone_surrogate_is_sent_escaped_as_sqs_takes_only_utf_8() -> None:
    ready = prepare(item({**TRACK, "properties": {"name": "caf\ud800"}}, index=1), "f")
    assert isinstance(ready, Ready)
    ready.text.encode("utf-8")  # would raise with the surrogate itself
    assert json.loads(ready.text)["properties"]["name"] == "caf\ud800"
