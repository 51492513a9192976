"""A file's lines into the events they hold, each with its position, or the reason it is unreadable.

What a file may hold, as the storage destinations write it:

- JSON lines: one event per line (Segment's S3 archive, MetaRouter's storage destinations), or
  one ``{"batch": [...]}`` per line; blank lines are skipped;
- one JSON document, pretty-printed or not: ``{"batch": [...]}``, one event, or an array of
  events. It is recognised by a first line that is only ``{`` or ``[`` (a one-line document is a
  JSON line already), and read whole, up to ``MAX_DOCUMENT_BYTES``.

A position is (line, item): the line number (1-based; a document is line 1) and the event's
index in its batch (0 for a line that is one event).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from heap_forwarder.inbound import InvalidEvent, InvalidJson, decode_json, events_of
from heap_forwarder_tools.backfill.sources import MAX_LINE_BYTES, Line, lines

# A document larger than this is refused: it is read and decoded whole (a Segment batch is at
# most 500 KB), and the run must stay within its memory bound. JSON lines stream.
MAX_DOCUMENT_BYTES = 8 << 20
_DOCUMENT_OPENERS = (b"{", b"[")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    line: int
    item: int = 0


@dataclass(frozen=True, slots=True)
class Item:
    """One event of a file as decoded, or why the line holding it could not be read."""

    position: Position
    in_batch: bool  # one of several events of a line (or of a document)
    event: Any = None
    line_text: bytes | None = None  # the line, when it is exactly this one event
    problem: str | None = None

    def location(self, label: str) -> str:
        where = f"{label}:{self.position.line}"
        return f"{where}[{self.position.item}]" if self.in_batch else where


def read_items(stream: BinaryIO, after: Position | None = None) -> Iterator[Item]:
    """The items of one file's content (already gunzipped), in order; with ``after``, only the
    items after that position (the lines before it are skipped without being decoded)."""
    skip_below = after.line if after is not None else 0
    numbered = lines(stream)
    found: Iterator[Item] = iter(())
    for line in numbered:
        if not line.too_long and not line.data.strip():
            continue  # blank lines before the first one that says what the file is
        if line.data.strip() in _DOCUMENT_OPENERS:
            found = _document(line, stream)
        else:
            found = _rest(line, numbered, skip_below)
        break
    for item in found:
        if after is None or item.position > after:
            yield item


def _rest(first: Line, numbered: Iterator[Line], skip_below: int) -> Iterator[Item]:
    """The items of the JSON lines from ``first`` on."""
    if first.number >= skip_below:
        yield from _line_items(first)
    for line in numbered:
        if line.number >= skip_below:
            yield from _line_items(line)


def _line_items(line: Line) -> Iterator[Item]:
    if line.too_long:
        yield Item(Position(line.number), False, problem=f"line longer than {MAX_LINE_BYTES:,} bytes")
        return
    if not line.data.strip():
        return
    try:
        # As the consumer reads a record: no walk over every value for a number too large for a
        # float (1e400; it took half the reading time). Heap's rules refuse one in the stack.
        document = decode_json(line.data, finite_numbers=False)
        events, batch = events_of(document)
    except InvalidJson as error:
        yield Item(Position(line.number), False, problem=_json_problem(error))
        return
    except InvalidEvent as error:
        yield Item(Position(line.number), False, problem=str(error.problems[0].message))
        return
    if not batch:
        yield Item(Position(line.number), False, events[0], line_text=line.data)
        return
    for index, event in enumerate(events):
        yield Item(Position(line.number, index), True, event)


def _document(first: Line, stream: BinaryIO) -> Iterator[Item]:
    text = first.data + b"\n" + stream.read(MAX_DOCUMENT_BYTES + 1)
    if len(text) > MAX_DOCUMENT_BYTES:
        yield Item(
            Position(first.number),
            False,
            problem=f"a JSON document over {MAX_DOCUMENT_BYTES >> 20} MB: write it as JSON lines, "
            "one event per line",
        )
        return
    try:
        document = decode_json(text)
        events = document if isinstance(document, list) else events_of(document)[0]
    except InvalidJson as error:
        yield Item(Position(first.number), False, problem=_json_problem(error))
        return
    except InvalidEvent as error:
        yield Item(Position(first.number), False, problem=str(error.problems[0].message))
        return
    for index, event in enumerate(events):
        yield Item(Position(first.number, index), True, event)


def _json_problem(error: InvalidJson) -> str:
    return str(error).removeprefix("body is ")
