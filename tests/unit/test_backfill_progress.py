"""What a running backfill shows (tools/heap_forwarder_tools/backfill/progress.py)."""

from __future__ import annotations

import io

import pytest

from heap_forwarder_tools.backfill.progress import Progress, Status, duration

STATUS = Status(2, 5, 1_234_567, 1_200_000, 12_000, 40, 100, 5000.0)


@pytest.mark.parametrize(
    ("seconds", "text"), [(12, "12 s"), (250, "4 min 10 s"), (10_000_000 / 15_000 * 60, "11 h 6 min")]
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_off_a_terminal_progress_is_plain_log_lines_at_most_every_interval() -> None:
    out, now = io.StringIO(), [0.0]
    progress = Progress(out, lambda: now[0], terminal=False)
    progress.show(STATUS)
    progress.show(STATUS)  # too soon: not shown
    now[0] += progress.interval
    progress.show(STATUS)
    shown = out.getvalue().splitlines()
    assert (
        shown
        == [
            "backfill: files 2/5, lines 1,234,567, enqueued 1,200,000, backlog ~12,000, about 1 h 23 min left"
        ]
        * 2
    )


def test_on_a_terminal_it_is_one_bar_redrawn_in_place() -> None:
    out = io.StringIO()
    progress = Progress(out, lambda: 0.0, terminal=True)
    progress.show(STATUS)
    progress.show(STATUS, force=True)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[#########..............." in text and "40%" in text
