"""A backfill run: files read in order, events prepared and filtered, packed, paced, enqueued,
and the checkpoint moved after every request SQS acknowledged. A dry run reads the same way and
sends nothing.

What a checkpoint covers is exact. Everything read since the last message was closed is held
in a ``Ledger`` (its counts, its invalid lines, the last position handled) and travels with the
next message; when SQS acknowledges that message, its ledger is committed: counted, its invalid
lines written to the report, the checkpoint moved to its last position. So the report and the
checkpoint always agree, and a resumed run reports no line twice and skips none.
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from heap_forwarder_tools.backfill.checkpoint import Checkpoint, CheckpointError, Totals
from heap_forwarder_tools.backfill.enqueue import EnqueueError, Enqueuer
from heap_forwarder_tools.backfill.events import Ready, Refused, Selection, prepare
from heap_forwarder_tools.backfill.pacing import DrainRate, Pacer
from heap_forwarder_tools.backfill.packing import (
    SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_MESSAGE_BYTES,
    Body,
    InvocationFit,
    Packer,
    utf8_length,
)
from heap_forwarder_tools.backfill.progress import Progress, Status
from heap_forwarder_tools.backfill.reader import Item, Position, read_items
from heap_forwarder_tools.backfill.sources import CountingReader, DataFile, SourceError, decoded

# What a broken gzip stream raises: the file's remaining lines are reported, the run goes on.
_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile)


class Stopped(Exception):
    """Ctrl+C (or SIGTERM): the run stops at its last checkpoint."""


@dataclass(frozen=True)
class Plan:
    sources: list[str]
    selection: Selection
    drain: DrainRate
    max_backlog: int
    report_path: Path
    checkpoint_path: Path | None = None  # None: no checkpoint (a dry run)
    restart: bool = False
    time_scale: float = 1.0


@dataclass(frozen=True)
class Queue:
    """Where the events go: the main queue, and its largest message."""

    sqs: Any
    url: str
    max_message_bytes: int = SQS_MAX_MESSAGE_BYTES


@dataclass
class Ledger:
    """What was handled since the last message closed (see the module's docstring)."""

    totals: Totals = field(default_factory=Totals)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (file:line, reason with detail)
    mark: tuple[str, Position] | None = None

    @property
    def empty(self) -> bool:
        return self.mark is None and not self.totals.files


@dataclass
class Summary:
    """The end of a run (or a dry run)."""

    dry_run: bool
    totals: Totals
    drain: DrainRate
    requests: int = 0  # SQS requests: sends and depth readings
    depth_reads: int = 0
    seconds: float = 0.0
    stopped: bool = False
    already_done: bool = False
    error: str | None = None
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None
    invalid_shown: list[tuple[str, str]] = field(default_factory=list)  # dry run: the first ones
    max_backlog_seen: int = 0


DRY_RUN_INVALID_SHOWN = 100


class Backfill:
    def __init__(
        self,
        plan: Plan,
        files: list[DataFile],
        queue: Queue | None,
        *,
        progress: Progress | None = None,
        stop_requested: Callable[[], bool] = lambda: False,
        wait: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``queue`` None: a dry run. ``wait(seconds)`` pauses (and may return early on a stop)."""
        self.plan = plan
        self.files = files
        self.queue = queue
        self.dry_run = queue is None
        self.progress = progress
        self.stop_requested = stop_requested
        self.clock = clock
        self.summary = Summary(self.dry_run, Totals(), plan.drain)
        self.ledger = Ledger()
        self.checkpoint: Checkpoint | None = None
        self.report: IO[str] | None = None
        self._group: list[tuple[Body, Ledger]] = []
        self._bytes_before = 0  # stored bytes of the files already read
        self._reading: CountingReader | None = None
        self._files_read = 0  # for the display: files and lines read, sent or not yet
        self._lines_read = 0
        max_bytes = queue.max_message_bytes if queue else SQS_MAX_MESSAGE_BYTES
        # The consumer's pace in the stack's time: a local stack at --time-scale K delivers K times
        # as many events in one invocation.
        fit = InvocationFit.of(plan.drain.events_per_minute_per_instance * plan.time_scale)
        self.packer = Packer(max_bytes, fit=fit)
        self.packer.max_events = min(self.packer.max_events, max(1, plan.max_backlog))
        self.max_batch_bytes = max_bytes  # SendMessageBatch's total is bounded like one message
        self.enqueuer: Enqueuer | None = None
        self.pacer: Pacer | None = None
        if queue is not None:
            self.enqueuer = Enqueuer(queue.sqs, queue.url, sleep=wait)
            self.pacer = Pacer(
                plan.drain.events_per_minute * plan.time_scale / 60.0,
                plan.max_backlog,
                self._depth,
                clock=clock,
                wait=wait,
                stopped=stop_requested,
                time_scale=plan.time_scale,
            )

    # ------------------------------------------------------------------------------ the run
    def run(self) -> Summary:
        started = self.clock()
        try:
            start = self._start()
            if start is not None:
                self._read_all(*start)
                self._finish()
        except Stopped:
            self.summary.stopped = True
        except (EnqueueError, SourceError, CheckpointError) as error:
            self.summary.error = str(error)
        finally:
            if self.report is not None:
                self.report.close()
            if self.progress is not None:
                self.progress.close()
            self.summary.seconds = self.clock() - started
            if self.enqueuer is not None and self.pacer is not None:
                self.summary.requests = self.enqueuer.requests + self.pacer.depth_reads
                self.summary.depth_reads = self.pacer.depth_reads
        return self.summary

    def _start(self) -> tuple[int, Position | None] | None:
        """Where to begin: (file index, last position handled in it), or None when done already."""
        path = self.plan.checkpoint_path
        filters = self.plan.selection.describe()
        if self.dry_run or path is None:
            return 0, None
        found = None if self.plan.restart else Checkpoint.load(path)
        if found is None:
            self.checkpoint = Checkpoint(list(self.plan.sources), filters)
            self.plan.report_path.write_text("", "utf-8")  # a new run: a new report
            return 0, None
        found.check_same_run(list(self.plan.sources), filters, path)
        self.checkpoint = found
        self.summary.totals = found.totals
        if found.done:
            self.summary.already_done = True
            return None
        if found.file is None:
            return 0, None
        labels = [f.label for f in self.files]
        if found.file not in labels:
            raise CheckpointError(
                f"the checkpoint's file {found.file} is no longer in the SOURCEs: give --restart to start "
                "again from the beginning (Heap drops the events it already has)"
            )
        index = labels.index(found.file)
        self._bytes_before = sum(f.size for f in self.files[:index])
        self._files_read, self._lines_read = found.totals.files, found.totals.lines
        return index, Position(found.line, found.item)

    def _read_all(self, first_index: int, after: Position | None) -> None:
        for index in range(first_index, len(self.files)):
            data_file = self.files[index]
            for item in self._items(data_file, after if index == first_index else None):
                if self.stop_requested():
                    raise Stopped
                self._handle(data_file.label, item)
            self._bytes_before += data_file.size
            self._reading = None
            self.ledger.totals.files += 1
            self._files_read += 1
            self._show()

    def _items(self, data_file: DataFile, after: Position | None) -> Iterator[Item]:
        """The file's items; a broken gzip stream ends them with one item saying so."""
        raw = data_file.open()
        counter = CountingReader(raw)
        self._reading = counter
        last = after or Position(0)
        try:
            with decoded(counter) as stream:
                for item in read_items(stream, after):
                    last = item.position
                    yield item
        except _CORRUPT as error:
            yield Item(Position(last.line + 1), False, problem=f"the file is damaged from here on ({error})")
        except OSError as error:
            raise SourceError(f"reading {data_file.label} failed after line {last.line}: {error}") from None
        except Exception as error:
            from botocore.exceptions import BotoCoreError

            if isinstance(error, BotoCoreError):
                raise SourceError(
                    f"reading {data_file.label} failed after line {last.line}: {error}"
                ) from None
            raise
        finally:
            counter.close()

    def _handle(self, label: str, item: Item) -> None:
        prepared = prepare(item, label)
        if isinstance(prepared, Refused):
            self._invalid(item.location(label), prepared)
        elif not self.plan.selection.admits(prepared):
            self.ledger.totals.filtered += 1
        else:
            size = utf8_length(prepared.text)
            if not self.packer.fits_alone(size):
                reason = (
                    f"the event is {size:,} bytes: more than an SQS message of the main queue holds "
                    f"({self.packer.max_bytes:,} bytes with its batch)"
                )
                self._invalid(item.location(label), Refused(reason, reason))
            else:
                closed = self.packer.add(prepared.text, size)
                if closed is not None:
                    self._close(closed)
                self._count(prepared)
        if item.position.item == 0:
            self.ledger.totals.lines += 1
            self._lines_read += 1
        self.ledger.mark = (label, item.position)

    def _invalid(self, location: str, refused: Refused) -> None:
        self.ledger.totals.invalid += 1
        self.ledger.invalid.append((location, refused.detail))
        if self.dry_run and len(self.summary.invalid_shown) < DRY_RUN_INVALID_SHOWN:
            self.summary.invalid_shown.append((location, refused.reason))

    def _count(self, event: Ready) -> None:
        self.ledger.totals.enqueued += 1
        summary = self.summary
        if self.dry_run:
            summary.by_kind[(event.kind, event.name)] += 1
        if summary.first is None or event.moment < summary.first:
            summary.first = event.moment
        if summary.last is None or event.moment > summary.last:
            summary.last = event.moment

    # ------------------------------------------------------------------------------ sending
    def _close(self, body: Body) -> None:
        """A full message: it takes the ledger of everything handled before its last event's
        successor; it goes out with the messages grouped before it when the group is full."""
        ledger, self.ledger = self.ledger, Ledger()
        ledger.totals.messages += 1
        if self.dry_run:
            self._commit([ledger])
            return
        group_bytes = sum(b.size for b, _ in self._group)
        group_events = sum(b.events for b, _ in self._group)
        if self._group and (
            len(self._group) >= SQS_MAX_BATCH_ENTRIES
            or group_bytes + body.size > self.max_batch_bytes
            or group_events + body.events > self.plan.max_backlog
        ):
            self._send_group()
        self._group.append((body, ledger))

    def _send_group(self) -> None:
        assert self.enqueuer is not None and self.pacer is not None
        bodies = [body for body, _ in self._group]
        events = sum(body.events for body in bodies)
        if not self.pacer.admit(events, len(bodies)):
            raise Stopped
        self.enqueuer.send(bodies)
        self.pacer.sent(events)
        self.summary.max_backlog_seen = max(self.summary.max_backlog_seen, self.pacer.backlog)
        ledgers = [ledger for _, ledger in self._group]
        self._group = []
        self._commit(ledgers)
        self._show()
        if self.stop_requested():
            raise Stopped

    def _commit(self, ledgers: list[Ledger]) -> None:
        """What SQS acknowledged (or, in a dry run, what was read) counted, reported, checkpointed."""
        for ledger in ledgers:
            self.summary.totals.add(ledger.totals)
            if ledger.invalid and not self.dry_run:
                if self.report is None:
                    self.report = self.plan.report_path.open("a", encoding="utf-8")
                self.report.writelines(f"{location}\t{reason}\n" for location, reason in ledger.invalid)
        if self.report is not None:
            self.report.flush()  # before the checkpoint moves past these lines
        marks = [ledger.mark for ledger in ledgers if ledger.mark is not None]
        if self.checkpoint is not None and self.plan.checkpoint_path is not None:
            if marks:
                self.checkpoint.file, position = marks[-1][0], marks[-1][1]
                self.checkpoint.line, self.checkpoint.item = position.line, position.item
            self.checkpoint.totals = self.summary.totals
            self.checkpoint.save(self.plan.checkpoint_path)

    def _finish(self) -> None:
        body = self.packer.flush()
        if body is not None:
            self._close(body)
        if self._group:
            self._send_group()
        if not self.ledger.empty:
            ledger, self.ledger = self.ledger, Ledger()
            self._commit([ledger])
        if self.checkpoint is not None and self.plan.checkpoint_path is not None:
            self.checkpoint.done = True
            self.checkpoint.totals = self.summary.totals
            self.checkpoint.save(self.plan.checkpoint_path)
        self._show(force=True)

    def _depth(self) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        from heap_forwarder_tools.backfill.pacing import queue_depth
        from heap_forwarder_tools.stacks import describe_error

        assert self.queue is not None
        try:
            return queue_depth(self.queue.sqs, self.queue.url)
        except (BotoCoreError, ClientError) as error:
            raise EnqueueError(f"cannot read the main queue's depth: {describe_error(error)}") from None

    # ------------------------------------------------------------------------------ progress
    def _show(self, *, force: bool = False) -> None:
        if self.progress is None:
            return
        totals = self.summary.totals
        reading = self._reading.count if self._reading is not None else 0
        done = self._bytes_before + reading
        total = sum(f.size for f in self.files)
        backlog = self.pacer.backlog if self.pacer is not None else 0
        self.progress.show(
            Status(
                files_done=self._files_read,
                files_total=len(self.files),
                lines=self._lines_read,
                enqueued=totals.enqueued,
                backlog=backlog,
                bytes_done=done,
                bytes_total=total,
                seconds_left=self._seconds_left(done, total, backlog),
            ),
            force=force,
        )

    def _seconds_left(self, done: int, total: int, backlog: int) -> float | None:
        """The events still to read (at the rate per stored byte seen so far) and the backlog,
        at the stack's drain rate."""
        enqueued = self.summary.totals.enqueued
        if not enqueued or not done:
            return None
        per_byte = enqueued / done
        rate = self.plan.drain.events_per_minute * self.plan.time_scale / 60.0
        return (per_byte * max(0, total - done) + backlog) / rate
