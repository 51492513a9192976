"""``heap-forwarder backfill`` end to end on the local stack: a gzipped Segment-style archive of
50,000 events in moto's S3, the CLI in its own process (as a user runs it), interrupted with
Ctrl+C midway and resumed, the stack's real consumer draining the main queue into the emulator.

The stack and the backfill run at the same time scale (the consumer's pace, and the backfill's,
x60), so the 50,000 events take seconds. Its own module: moto's server state is per process,
and the stack empties it at start.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from heap_forwarder_tools.local.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
TIME_SCALE = 60  # the consumer paces at 6,000 events a Heap minute: 6,000 a real second
EVENTS = 50_000
FILES = 5
MAX_BACKLOG = 4_000  # events: a few messages, so that the bound is what holds the backfill back
BUCKET = "segment-archive"
PREFIX = "segment-logs/src_1a2b3c/"
# Segment's archive: one folder per day (epoch milliseconds), gzipped JSON lines in each.
DAYS = ("1672531200000", "1672617600000", "1672704000000", "1672790400000", "1672876800000")
INVALID_LINES = {
    "not json": "{not json",
    "no event name": json.dumps({"type": "track", "userId": "u-1", "timestamp": "2023-01-01T00:00:00Z"}),
    "no time": json.dumps({"type": "track", "event": "Order Completed", "userId": "u-1"}),
    "bad time": json.dumps({"type": "track", "event": "X", "userId": "u-1", "timestamp": "yesterday"}),
    "bad type": json.dumps({"type": "purchase", "userId": "u-1", "timestamp": "2023-01-01T00:00:00Z"}),
}
DEADLINE_SECONDS = 90


def event(n: int) -> dict[str, Any]:
    """A track event of day ``n % 5``; one in ten without a messageId (the backfill gives it one)."""
    day = n % FILES
    body: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed" if n % 3 else "Product Viewed",
        "userId": f"user-{n % 997}",
        "timestamp": f"2023-01-0{day + 1}T{n % 24:02d}:{n % 60:02d}:00.000Z",
        "properties": {"n": n, "order_id": f"o-{n}", "total": n % 500 + 0.5},
        "context": {"library": {"name": "analytics-node", "version": "6.0.0"}},
    }
    if n % 10:
        body["messageId"] = f"ajs-{n:08d}"
    return body


@dataclass
class Archive:
    keys: list[str]
    invalid: set[str]  # file:line of every invalid line


def write_archive(s3: Any) -> Archive:
    s3.create_bucket(Bucket=BUCKET)
    lines: dict[int, list[str]] = {day: [] for day in range(FILES)}
    for n in range(EVENTS):
        lines[n % FILES].append(json.dumps(event(n)))
    keys, invalid = [], set()
    for day, texts in lines.items():
        for i, bad in enumerate(INVALID_LINES.values()):
            texts.insert(1000 * (i + 1) + day, bad)  # spread through the file
        key = f"{PREFIX}{DAYS[day]}/1672531200000.{day:04x}abcd.gz"
        s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(("\n".join(texts) + "\n").encode()))
        keys.append(key)
        invalid.update(
            f"s3://{BUCKET}/{key}:{number}"
            for number, text in enumerate(texts, start=1)
            if text in INVALID_LINES.values()
        )
    return Archive(keys, invalid)


@dataclass
class BacklogWatch:
    """Samples the backlog from the outside while the backfill runs: events the backfill
    reports enqueued (its checkpoint, written after SQS acknowledged them) less the events the
    emulator received. The bound is on that difference."""

    stack: LocalStack
    checkpoint: Path
    peak: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> BacklogWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                enqueued = json.loads(self.checkpoint.read_text("utf-8"))["totals"]["enqueued"]
            except (OSError, ValueError, KeyError):
                continue
            stats = self.stack.emulator.stats()
            delivered = stats["events_accepted"] + stats["duplicates"]
            self.peak = max(self.peak, enqueued - delivered)
            self.samples += 1


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(
        ROOT / "template.yaml", time_scale=TIME_SCALE, log_path=tmp_path / "logs.jsonl"
    ) as running:
        yield running


def backfill(
    stack: LocalStack, tmp_path: Path, *options: str, source: str = f"s3://{BUCKET}/{PREFIX}"
) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        **stack.aws_environment(),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),  # this worktree's code
    }
    command = [
        sys.executable,
        "-m",
        "heap_forwarder_tools.cli",
        "backfill",
        source,
        "--queue-url",
        stack.main_queue_url,
        # The local stack runs one consumer; the backfill is told four drain the queue. Its pace
        # alone would let the queue grow: the backlog bound is what holds it.
        "--max-concurrency",
        "4",
        "--time-scale",
        str(TIME_SCALE),
        "--max-backlog",
        str(MAX_BACKLOG),
        "--checkpoint",
        str(tmp_path / "checkpoint.json"),
        "--report",
        str(tmp_path / "invalid.tsv"),
        *options,
    ]
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )


def until(what: str, condition: Callable[[], bool], seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def enqueued(checkpoint: Path) -> int:
    try:
        return int(json.loads(checkpoint.read_text("utf-8"))["totals"]["enqueued"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_an_interrupted_and_resumed_backfill_puts_every_valid_event_into_heap_once(
    stack: LocalStack, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=stack.aws_endpoint_url, region_name=stack.region)
    archive = write_archive(s3)
    checkpoint = tmp_path / "checkpoint.json"
    watch = BacklogWatch(stack, checkpoint).start()
    try:
        # 1. Started, then Ctrl+C midway: it stops at its last checkpoint.
        first = backfill(stack, tmp_path)
        until("the first run midway", lambda: enqueued(checkpoint) >= EVENTS // 3 or first.poll() is not None)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=DEADLINE_SECONDS)
        assert first.returncode == 130, err
        assert "stopped: the checkpoint" in out
        stopped_at = enqueued(checkpoint)
        assert 0 < stopped_at < EVENTS

        # 2. The same command again: it continues, and says the archive had invalid lines.
        second = backfill(stack, tmp_path)
        out, err = second.communicate(timeout=DEADLINE_SECONDS)
        assert second.returncode == 1, err  # invalid lines, and no --allow-invalid
        valid = EVENTS
        assert f"{valid:,} event(s) enqueued" in out
        until("every event delivered", lambda: stack.emulator.stats()["events_accepted"] >= valid)
    finally:
        watch.stop()

    # Every valid event once in Heap; none twice (the interruption lost nothing, resent nothing).
    numbers = Counter(e["properties"]["n"] for e in stack.emulator.tracked_events())
    assert set(numbers) == set(range(EVENTS))
    assert max(numbers.values()) == 1
    assert stack.emulator.stats()["duplicates"] == 0
    # Every invalid line in the report, once, with its reason.
    reported = [line.split("\t") for line in (tmp_path / "invalid.tsv").read_text("utf-8").splitlines()]
    assert sorted(location for location, _ in reported) == sorted(archive.invalid)
    assert all(reason for _, reason in reported)
    # The backlog stayed within its bound all along (and the bound was reached: it did the work).
    assert watch.samples > 10
    assert watch.peak <= MAX_BACKLOG
    assert watch.peak > MAX_BACKLOG // 2
    assert stack.dead_letters() == []

    # 3. A re-run from scratch of one file puts no duplicate into Heap: its events keep their ids.
    again = backfill(
        stack, tmp_path, "--restart", "--allow-invalid", source=f"s3://{BUCKET}/{archive.keys[0]}"
    )
    out, err = again.communicate(timeout=DEADLINE_SECONDS)
    assert again.returncode == 0, err
    resent = EVENTS // FILES
    assert f"{resent:,} event(s) enqueued" in out
    until("the resent events answered", lambda: stack.emulator.stats()["duplicates"] >= resent)
    assert stack.emulator.stats()["events_accepted"] == EVENTS  # Heap dropped every one of them
    assert len(stack.emulator.tracked_events()) == EVENTS
