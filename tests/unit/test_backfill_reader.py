"""Files into events with positions: JSON lines, batch lines, documents, and what cannot be read
(tools/heap_forwarder_tools/backfill/reader.py and sources.py's line reading)."""

from __future__ import annotations

import gzip
import io
import json

from heap_forwarder_tools.backfill.reader import MAX_DOCUMENT_BYTES, Item, Position, read_items
from heap_forwarder_tools.backfill.sources import CountingReader, decoded, lines

TRACK = {"type": "track", "event": "A", "userId": "u", "timestamp": "2023-01-01T00:00:00Z"}


def items(text: str | bytes, after: Position | None = None) -> list[Item]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_items(io.BytesIO(data), after))


def test_json_lines_give_one_event_per_line_with_its_line_number_and_text() -> None:
    found = items(f"{json.dumps(TRACK)}\n\n{json.dumps({**TRACK, 'event': 'B'})}\r\n")
    assert [(i.position, i.in_batch, i.event["event"]) for i in found] == [
        (Position(1), False, "A"),
        (Position(3), False, "B"),
    ]
    assert found[0].line_text == json.dumps(TRACK).encode()
    assert found[0].location("f.gz") == "f.gz:1"


def test_a_batch_line_gives_its_events_numbered_within_the_line() -> None:
    found = items(json.dumps(TRACK) + "\n" + json.dumps({"batch": [TRACK, {**TRACK, "event": "C"}]}) + "\n")
    assert [i.position for i in found] == [Position(1), Position(2, 0), Position(2, 1)]
    assert found[2].location("f") == "f:2[1]"
    assert found[2].line_text is None  # the line is not this one event: it will be re-encoded


def test_unreadable_lines_are_items_with_a_reason_and_reading_goes_on() -> None:
    found = items('{"type": "track", \n{"batch": 3}\n' + json.dumps(TRACK) + "\n")
    assert found[0].problem is not None and found[0].problem.startswith("not valid JSON")
    assert found[1].problem == "must be an array of events"
    assert found[2].event == TRACK


def test_a_line_too_long_is_skipped_to_its_end_without_being_held() -> None:
    long_line = b"x" * 3000 + b"\n"
    read = list(lines(io.BytesIO(b"a\n" + long_line + b"b\n"), max_bytes=1000))
    assert [(line.number, line.data, line.too_long) for line in read] == [
        (1, b"a", False),
        (2, b"", True),
        (3, b"b", False),
    ]


def test_a_pretty_printed_batch_document_is_read_whole() -> None:
    document = json.dumps({"batch": [TRACK, {**TRACK, "event": "B"}]}, indent=2)
    found = items("\n" + document + "\n")
    assert [(i.position, i.in_batch, i.event["event"]) for i in found] == [
        (Position(2, 0), True, "A"),
        (Position(2, 1), True, "B"),
    ]


def test_a_document_may_be_an_array_of_events() -> None:
    assert [i.event["event"] for i in items(json.dumps([TRACK, TRACK], indent=1))] == ["A", "A"]


def test_a_document_too_large_is_refused_whole() -> None:
    text = "[\n" + " " * (MAX_DOCUMENT_BYTES + 10) + "]"
    [only] = items(text)
    assert only.problem is not None and "write it as JSON lines" in only.problem


def test_after_skips_what_a_checkpoint_covers() -> None:
    text = "\n".join([json.dumps(TRACK), json.dumps({"batch": [TRACK, TRACK, TRACK]}), json.dumps(TRACK)])
    assert [i.position for i in items(text, after=Position(2, 1))] == [Position(2, 2), Position(3)]
    assert [i.position for i in items(text, after=Position(3))] == []


def test_gzip_is_recognised_by_its_magic_bytes_and_members_are_read_whole() -> None:
    data = gzip.compress(b'{"a": 1}\n') + gzip.compress(b'{"a": 2}\n')  # two members, as cat a.gz b.gz
    counter = CountingReader(io.BytesIO(data))
    with decoded(counter) as stream:
        assert stream.read() == b'{"a": 1}\n{"a": 2}\n'
    assert counter.count == len(data)
    with decoded(CountingReader(io.BytesIO(b'{"a": 1}\n'))) as plain:
        assert plain.read() == b'{"a": 1}\n'
