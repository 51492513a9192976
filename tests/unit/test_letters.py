"""The settle step both entry points share (edge/letters.py): letters, the ones SQS did not
take, log lines."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

from heap_forwarder.edge.letters import API, SQS, DeadLetter, Refusal, settle
from heap_forwarder.outcome import ErrorClass, rejected

SECRET = "leaky.person@example.com"
REFUSED = rejected(ErrorClass.HEAP_REJECTED, "HTTP 400 from Heap", f"HTTP 400: {SECRET} refused")


class Writer:
    """Takes every letter but those whose body is ``refuse``; records the ``until`` it was given."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.until: float | None = None

    def write(self, letters: Sequence[DeadLetter], *, until: float | None = None) -> list[bool]:
        self.until = until
        taken = [letter.body != "refuse" for letter in letters]
        self.letters.extend(x for x, ok in zip(letters, taken, strict=True) if ok)
        return taken


def refusal(body: str, position: int) -> Refusal:
    return Refusal(body, REFUSED, f"src:{position}", "src", "2024-06-10T14:00:00Z", "owner-1")


def test_each_letter_is_built_from_its_refusal_and_the_entry_point() -> None:
    writer = Writer()

    written = settle(writer, [refusal("{}", 0), refusal("refuse", 1)], API, until=12.5)

    assert written == [True, False]
    assert writer.until == 12.5
    (letter,) = writer.letters
    assert letter == DeadLetter(
        "{}", ErrorClass.HEAP_REJECTED, REFUSED.full_reason, "src", "2024-06-10T14:00:00Z", "api", "src:0"
    )


def test_each_letter_written_is_logged_with_the_safe_reason_only(log_stream: io.StringIO) -> None:
    settle(Writer(), [refusal("{}", 0), refusal("refuse", 1)], SQS)

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if line.strip()]
    (line,) = [x for x in lines if x["message"] == "event parked in the DLQ"]
    assert line["sqs_message_id"] == "owner-1"
    assert line["reason"] == "HTTP 400 from Heap"
    assert SECRET not in log_stream.getvalue()


def test_unannounced_letters_are_not_logged(log_stream: io.StringIO) -> None:
    assert settle(Writer(), [refusal("{}", 0)], SQS, announce=False) == [True]

    assert "event parked in the DLQ" not in log_stream.getvalue()


def test_nothing_to_settle_writes_nothing() -> None:
    writer = Writer()

    assert settle(writer, [], SQS) == []
    assert writer.until is None and writer.letters == []
