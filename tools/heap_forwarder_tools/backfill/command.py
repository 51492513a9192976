"""``heap-forwarder backfill SOURCE... --stack NAME``: the command's options, and what it prints.

Only the standard library is imported at start: the CLI builds every parser at start-up; the
run's modules (and boto3) are loaded when a backfill actually runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from heap_forwarder import defaults
from heap_forwarder.inbound import EVENT_TYPES

if TYPE_CHECKING:
    from heap_forwarder_tools.backfill.pacing import DrainRate
    from heap_forwarder_tools.backfill.run import Summary

DEFAULT_CHECKPOINT = Path("backfill.checkpoint.json")
DEFAULT_REPORT = Path("backfill-invalid.tsv")
# The template's defaults, for a stack whose parameters say nothing and for --queue-url.
TEMPLATE_RATE_LIMIT = defaults.RATE_LIMIT_EVENTS_PER_MINUTE  # RateLimitEventsPerMinute
TEMPLATE_MAX_CONCURRENCY = 2  # MaxConcurrency
STATUS_OK, STATUS_INVALID, STATUS_FAILED, STATUS_STOPPED = 0, 1, 2, 130


class CommandError(RuntimeError):
    """The backfill cannot start."""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _moment(text: str) -> Any:
    from heap_forwarder_tools.backfill.events import parse_moment

    try:
        return parse_moment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Replay historical events into Heap through the deployed stack: read JSON lines (gzipped or "
        "not; Segment's S3 archive, MetaRouter's storage destinations) or {\"batch\": [...]} files, "
        "and put them in the stack's main queue at the pace the stack drains. Resumable "
        "(--checkpoint), and a re-run puts no duplicate into Heap. See docs/backfill.md."
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="a local file, a local folder, or s3://bucket/prefix"
    )
    where = parser.add_argument_group("the stack")
    where.add_argument(
        "--stack", metavar="NAME", help="the deployed stack: its main queue and its rate settings"
    )
    where.add_argument(
        "--queue-url",
        metavar="URL",
        help="the main queue, instead of the stack's (a local stack); rates from the options below",
    )
    where.add_argument("--region", help="the stack's AWS region (default: your AWS configuration)")
    where.add_argument(
        "--rate-limit",
        type=_positive_float,
        metavar="EVENTS_PER_MINUTE",
        help="each consumer instance's rate (default: the stack's RateLimitEventsPerMinute, or "
        f"{TEMPLATE_RATE_LIMIT:,.0f}); lower it to leave room for live traffic",
    )
    where.add_argument(
        "--max-concurrency",
        type=_positive_int,
        metavar="N",
        help=f"consumer instances (default: the stack's MaxConcurrency, or {TEMPLATE_MAX_CONCURRENCY})",
    )
    where.add_argument(
        "--max-backlog",
        type=_positive_int,
        metavar="EVENTS",
        help="most events waiting in the main queue (default: 10 minutes of draining)",
    )
    where.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        metavar="K",
        help="pace K times faster, for a local stack whose consumer runs K times faster (tests, "
        "benchmarks); default 1",
    )
    chosen = parser.add_argument_group("which events")
    chosen.add_argument(
        "--since", type=_moment, help="events at or after this time (ISO 8601, UTC unless said)"
    )
    chosen.add_argument("--until", type=_moment, help="events before this time")
    chosen.add_argument(
        "--type",
        action="append",
        choices=EVENT_TYPES,
        default=[],
        help="only events of this type (repeatable)",
    )
    chosen.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="NAME",
        help="only track events of this name, matched as the playbook matches names: ignoring case "
        "and separators (repeatable)",
    )
    run = parser.add_argument_group("the run")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing: print the counts per type and event name, the time range, invalid lines, "
        "and how long it would take",
    )
    run.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        metavar="PATH",
        help="where the run stands; a re-run with it continues (default %(default)s)",
    )
    run.add_argument(
        "--restart", action="store_true", help="ignore the checkpoint and start from the beginning"
    )
    run.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT,
        metavar="PATH",
        help="invalid lines, one per line: file:line, a tab, the reason (default %(default)s)",
    )
    run.add_argument("--allow-invalid", action="store_true", help="exit 0 even when some lines were invalid")


def run_backfill_command(args: argparse.Namespace) -> int:
    """0: done; 1: done, but some lines were invalid (and not --allow-invalid); 2: could not start
    or could not go on (the checkpoint keeps the place); 130: stopped by Ctrl+C (same)."""
    from heap_forwarder_tools.backfill.sources import SourceError
    from heap_forwarder_tools.stacks import StackError

    def note(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        return _run(args, note)
    except (CommandError, StackError, SourceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return STATUS_FAILED
    except KeyboardInterrupt:  # the second Ctrl+C: the checkpoint is the last one written
        print(f"\nstopped at once: the checkpoint {args.checkpoint} keeps the place", file=sys.stderr)
        return STATUS_STOPPED


def _run(args: argparse.Namespace, note: Callable[[str], None]) -> int:
    import time

    from heap_forwarder_tools.backfill.events import Selection
    from heap_forwarder_tools.backfill.pacing import DrainRate
    from heap_forwarder_tools.backfill.progress import Progress
    from heap_forwarder_tools.backfill.run import Backfill, Plan
    from heap_forwarder_tools.backfill.sources import list_files

    if not args.dry_run and not (args.stack or args.queue_url):
        raise CommandError("give --stack NAME (the deployed stack) or --queue-url URL; or --dry-run")
    settings = _stack_settings(args) if args.stack else {}
    drain = DrainRate(
        args.rate_limit or float(settings.get("RateLimitEventsPerMinute") or TEMPLATE_RATE_LIMIT),
        args.max_concurrency or int(settings.get("MaxConcurrency") or TEMPLATE_MAX_CONCURRENCY),
    )
    queue_url = args.queue_url or settings.get("MainQueueUrl")
    plan = Plan(
        sources=list(args.sources),
        selection=Selection.of(args.since, args.until, args.type, args.event),
        drain=drain,
        max_backlog=args.max_backlog or drain.default_backlog(),
        report_path=args.report,
        checkpoint_path=None if args.dry_run else args.checkpoint,
        restart=args.restart,
        time_scale=args.time_scale,
    )
    files = list(list_files(plan.sources, lambda: _client("s3", args.region)))
    queue = None if args.dry_run else _queue(str(queue_url), args.region)
    stop = threading.Event()
    progress = Progress(sys.stderr, time.monotonic)
    backfill = Backfill(
        plan,
        files,
        queue,
        progress=progress,
        stop_requested=stop.is_set,
        wait=stop.wait,
        clock=time.monotonic,
    )
    note(_opening(plan, files, queue_url if queue else None))
    with _stop_on_signals(stop, note):
        summary = backfill.run()
    for line in _report(summary, plan, args):
        print(line)
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)
        return STATUS_FAILED
    if summary.stopped:
        return STATUS_STOPPED
    if summary.totals.invalid and not args.allow_invalid:
        return STATUS_INVALID
    return STATUS_OK


def _stack_settings(args: argparse.Namespace) -> dict[str, str]:
    """The stack's main queue URL (output) and rate settings (parameters)."""
    from heap_forwarder_tools.stacks import cloudformation_client, describe_stack

    cloudformation = cloudformation_client(args.region)
    described = describe_stack(cloudformation, args.stack)
    queue_url = described.outputs.get("MainQueueUrl")
    if not queue_url and not args.queue_url:
        raise CommandError(f"stack {args.stack!r} has no MainQueueUrl output: is it a Heap forwarder stack?")
    args.region = args.region or cloudformation.meta.region_name  # the queue is in the stack's region
    found = {key: described.parameters.get(key, "") for key in ("RateLimitEventsPerMinute", "MaxConcurrency")}
    return {"MainQueueUrl": queue_url or "", **found}


def _client(service: str, region: str | None) -> Any:
    import boto3

    return boto3.client(service, region_name=region)


def _queue(url: str, region: str | None) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

    from heap_forwarder_tools.backfill.packing import SQS_MAX_MESSAGE_BYTES
    from heap_forwarder_tools.backfill.run import Queue
    from heap_forwarder_tools.redrive import region_of
    from heap_forwarder_tools.stacks import describe_error

    try:
        sqs = _client("sqs", region or region_of(url))
    except NoRegionError:
        raise CommandError("no AWS region: give --region, or set AWS_REGION / AWS_DEFAULT_REGION") from None
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MaximumMessageSize"])
    except (BotoCoreError, ClientError) as error:
        raise CommandError(f"cannot read the main queue {url}: {describe_error(error)}") from None
    size = int(attributes.get("Attributes", {}).get("MaximumMessageSize", SQS_MAX_MESSAGE_BYTES))
    # Never larger than SQS's classic size: one SendMessageBatch request holds at most that in total.
    return Queue(sqs, url, min(size, SQS_MAX_MESSAGE_BYTES))


class _stop_on_signals:
    """Ctrl+C (and SIGTERM) ask the run to stop at its next checkpoint; a second Ctrl+C stops
    at once (the checkpoint still holds: it only moves after SQS acknowledged)."""

    def __init__(self, stop: threading.Event, note: Callable[[str], None]) -> None:
        self.stop = stop
        self.note = note
        self.saved: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        self.note("\nstopping at the next checkpoint (Ctrl+C again to stop at once)")

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.saved[signum] = signal.signal(signum, self._handler)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)


def _opening(plan: Any, files: list[Any], queue_url: str | None) -> str:
    stored = sum(f.size for f in files)
    where = f"into {queue_url}" if queue_url else "dry run: nothing is sent"
    return (
        f"backfill: {len(files):,} file(s), {_size(stored)} stored, {where}; pace "
        f"{_pace(plan.drain)}, backlog at most {plan.max_backlog:,} events"
    )


def _pace(drain: DrainRate) -> str:
    text = (
        f"{drain.events_per_minute_per_instance:,.0f} a minute x {drain.max_concurrency} instance(s)"
        f" = {drain.events_per_minute:,.0f} events a minute"
    )
    return text + (" (Heap's cap per app ID)" if drain.capped_by_heap else "")


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:,} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


def _report(summary: Summary, plan: Any, args: argparse.Namespace) -> list[str]:
    from heap_forwarder_tools.backfill.progress import duration

    totals = summary.totals
    lines: list[str] = []
    if summary.already_done:
        lines.append(
            f"the checkpoint {args.checkpoint} says this backfill is complete: nothing to do "
            "(--restart to run it again; Heap drops the events it already has)"
        )
    if summary.dry_run:
        lines.append("dry run: nothing was sent")
        lines.append(
            f"{totals.files:,} file(s), {totals.lines:,} line(s): {totals.enqueued:,} event(s) to send, "
            f"{totals.filtered:,} filtered out, {totals.invalid:,} invalid"
        )
        if summary.first and summary.last:
            lines.append(f"time range: {_iso(summary.first)} to {_iso(summary.last)}")
        if summary.by_kind:
            lines.append("by type and event name:")
            width = max(len(name) for _, name in summary.by_kind) + 2
            for (kind, name), number in sorted(summary.by_kind.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"  {kind:<9}{(name or '-'):<{width}}{number:>12,}")
        if totals.invalid:
            lines.append(f"invalid lines ({totals.invalid:,}; they would not be sent):")
            lines.extend(f"  {location}: {reason}" for location, reason in summary.invalid_shown)
            if totals.invalid > len(summary.invalid_shown):
                lines.append(f"  ... and {totals.invalid - len(summary.invalid_shown):,} more")
        minutes = totals.enqueued / summary.drain.events_per_minute
        lines.append(
            f"estimated time: {totals.enqueued:,} events at {summary.drain.events_per_minute:,.0f} a minute "
            f"is about {duration(minutes * 60)}"
        )
        return lines
    if summary.stopped:
        lines.append(
            f"stopped: the checkpoint {args.checkpoint} keeps the place; run the same command to continue"
        )
    elif summary.error:
        lines.append(f"the checkpoint {args.checkpoint} keeps the place; run the same command to continue")
    elif not summary.already_done:
        lines.append("backfill finished: every event read is in the main queue; the stack delivers them")
    lines.append(
        f"{totals.enqueued:,} event(s) enqueued in {totals.messages:,} message(s); {totals.filtered:,} "
        f"filtered out; {totals.invalid:,} invalid line(s)"
        + (f" (listed in {args.report})" if totals.invalid else "")
    )
    if summary.requests:
        lines.append(
            f"this run: {summary.requests:,} SQS request(s) ({summary.depth_reads:,} depth readings) "
            f"in {duration(summary.seconds)}"
        )
    return lines


def _iso(moment: Any) -> str:
    from heap_forwarder.inbound import format_timestamp

    return format_timestamp(moment)
