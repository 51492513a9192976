"""``heap-forwarder redrive``: move dead letters back to the main queue once the cause is fixed.

Each dead letter's body is the original event (or the raw body when it was not JSON), so it is
sent back unchanged: its ``messageId`` still gives Heap the same ``idempotency_key`` and Heap
drops any event it already holds. The DLQ writer's message attributes (``ErrorClass``,
``Reason``) drive the filters. A message leaves the DLQ only after the main queue took it;
the ones filtered out, left beyond ``--max`` or that failed are made visible again at the end.

The same event can be in the DLQ twice: when the DLQ refused one letter of a record, the
record is redelivered and its other letters are written again. Such twins share their
``LetterId``; a run moves one letter per id and deletes the twins it meets once that one is in
the main queue. Letters without a ``LetterId`` (written before it existed, or moved by SQS
itself) are each moved, as before.

This uses ReceiveMessage / SendMessage / DeleteMessage rather than SQS's own message-move
tasks, so that it can filter by reason, show what it does, and run against moto.

Only the standard library is imported here: the CLI builds every parser at start-up, and
boto3 is loaded when a redrive actually runs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from heap_forwarder.outcome import ErrorClass

# The DLQ writer's attribute names (heap_forwarder.edge.letters; not imported: it needs botocore).
ATTR_ERROR_CLASS = "ErrorClass"
ATTR_REASON = "Reason"
ATTR_LETTER_ID = "LetterId"
# Added to every redriven message (the consumer ignores message attributes).
ATTR_REDRIVEN_FROM = "RedrivenFrom"
ATTR_REDRIVE_COUNT = "RedriveCount"

# A letter without an ErrorClass: SQS moved it itself after maxReceiveCount receives (the
# consumer crashed or timed out every time), or someone sent it by hand.
UNKNOWN_CLASS = "unknown"
REASON_CLASSES: tuple[str, ...] = (*(str(c) for c in ErrorClass if c is not ErrorClass.NONE), UNKNOWN_CLASS)

# Letters that return to the DLQ when redriven unless something was changed first.
COMES_BACK = {
    "invalid_json": "comes back unless the forwarder was changed to read these bodies",
    "invalid_event": "comes back unless the producer's bug is handled by the forwarder now",
    "unsupported": "comes back unless the playbook now maps this type or event",
    "heap_rule": "comes back unless the playbook was fixed",
    "heap_rejected": "comes back unless the playbook was fixed",
    "too_large": "comes back: split the batch into messages of at most 2,500 events instead",
}

DEFAULT_VISIBILITY_TIMEOUT = 300
DEFAULT_WAIT_SECONDS = 1
SAMPLES_PER_CLASS = 3
_SAMPLE_CHARS = 200
_BATCH = 10  # SQS's maximum per receive / send / delete / change-visibility batch

Progress = Callable[[str], None]


class RedriveError(RuntimeError):
    """The command cannot start: a queue URL is missing, the stack cannot be read..."""


@dataclass
class RedriveReport:
    """What a run did (or, in a dry run, would do). Counts are of distinct DLQ messages."""

    dry_run: bool
    moved: int = 0  # sent to the main queue and deleted from the DLQ (dry run: would be)
    twins: int = 0  # deleted from the DLQ: another letter with their LetterId was moved (dry run: would be)
    skipped: int = 0  # filtered out by --reason / --match
    failed: int = 0  # the main queue refused them (or their twin): still in the DLQ
    left: int = 0  # selected, but beyond --max: still in the DLQ
    not_deleted: int = 0  # sent, but the DLQ delete failed: they will be redriven again (harmless)
    by_reason: Counter[str] = field(default_factory=Counter)  # moved (would move) per ErrorClass
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)  # first distinct Reason texts per class
    errors: list[str] = field(default_factory=list)
    aborted: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_deleted and self.aborted is None

    def progress_line(self) -> str:
        verb = "would move" if self.dry_run else "moved"
        parts = [f"{verb} {self.moved}", f"skipped {self.skipped}"]
        if self.twins:
            parts.append(f"{'would delete' if self.dry_run else 'deleted'} {self.twins} twin(s)")
        if self.failed:
            parts.append(f"failed {self.failed}")
        if self.left:
            parts.append(f"left {self.left} (--max)")
        line = " / ".join(parts)
        if self.by_reason:
            line += f" ({_counts(self.by_reason)})"
        return line

    def summary(self) -> str:
        if self.dry_run:
            lines = [f"dry run: would move {self.moved} message(s); nothing was changed"]
        else:
            lines = [f"redrive finished: moved {self.moved} message(s) to the main queue"]
        for error_class, number in sorted(self.by_reason.items()):
            hint = f"  ({COMES_BACK[error_class]})" if self.dry_run and error_class in COMES_BACK else ""
            lines.append(f"  {error_class}: {number}{hint}")
            lines.extend(f"      e.g. {sample}" for sample in self.samples.get(error_class, []))
        if self.twins:
            verb = "would delete" if self.dry_run else "deleted"
            lines.append(
                f"{verb} {self.twins} twin(s): second copies of letters moved in this run (same LetterId)"
            )
        if self.skipped:
            lines.append(
                f"skipped (filtered out, still in the DLQ): {self.skipped} "
                f"({_counts(self.skipped_by_reason)})"
            )
        if self.left:
            lines.append(f"left in the DLQ beyond --max: {self.left}")
        if self.failed:
            lines.append(f"FAILED (still in the DLQ, run again): {self.failed}")
        if self.not_deleted:
            lines.append(
                f"sent but not deleted from the DLQ: {self.not_deleted} (a later run sends them again; "
                "Heap ignores the repeats)"
            )
        if self.aborted:
            lines.append(f"stopped early: {self.aborted}")
        lines.extend(f"error: {error}" for error in self.errors[:5])
        return "\n".join(lines)


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {number}" for name, number in sorted(counter.items()))


@dataclass(frozen=True)
class _Letter:
    message_id: str
    receipt_handle: str
    body: str
    error_class: str
    reason: str
    redrive_count: int
    letter_id: str = ""  # empty: no LetterId, never anyone's twin

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> _Letter:
        attributes = message.get("MessageAttributes") or {}

        def text(name: str) -> str:
            value = attributes.get(name) or {}
            return str(value.get("StringValue") or "")

        error_class = text(ATTR_ERROR_CLASS).strip()
        reason = text(ATTR_REASON)
        letter_id = text(ATTR_LETTER_ID).strip()
        try:
            count = max(0, int(text(ATTR_REDRIVE_COUNT) or 0))
        except ValueError:
            count = 0
        return cls(
            message_id=str(message["MessageId"]),
            receipt_handle=str(message["ReceiptHandle"]),
            body=str(message.get("Body", "")),
            error_class=error_class if error_class not in ("", "-") else UNKNOWN_CLASS,
            reason="" if reason == "-" else reason,
            redrive_count=count,
            letter_id="" if letter_id == "-" else letter_id,
        )

    def attributes(self) -> dict[str, dict[str, str]]:
        return {
            ATTR_REDRIVEN_FROM: {"DataType": "String", "StringValue": self.error_class},
            ATTR_REDRIVE_COUNT: {"DataType": "Number", "StringValue": str(self.redrive_count + 1)},
        }


def redrive(
    sqs_client: Any,
    dlq_url: str,
    queue_url: str,
    *,
    dry_run: bool = False,
    reasons: Collection[str] = (),
    match: str | None = None,
    max_messages: int | None = None,
    progress: Progress | None = None,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
    wait_seconds: int = DEFAULT_WAIT_SECONDS,
) -> RedriveReport:
    """Move the DLQ messages that pass the filters to ``queue_url``, bodies unchanged.

    ``reasons``: ErrorClass values to take (empty: all); ``match``: a case-insensitive
    substring of the Reason attribute; ``max_messages``: stop after moving this many.
    ``progress`` gets one line per batch received (``report.summary()`` tells the end).
    Messages are held invisible for ``visibility_timeout`` seconds while the run lasts; the
    ones not moved are made visible again at the end, also when the run is interrupted.
    """
    return _Redrive(
        sqs_client,
        dlq_url,
        queue_url,
        dry_run=dry_run,
        reasons=frozenset(reasons),
        match=match.casefold() if match else None,
        max_messages=max_messages,
        progress=progress or (lambda line: None),
        visibility_timeout=visibility_timeout,
        wait_seconds=wait_seconds,
    ).run()


@dataclass
class _Redrive:
    sqs: Any
    dlq_url: str
    queue_url: str
    dry_run: bool
    reasons: frozenset[str]
    match: str | None
    max_messages: int | None
    progress: Progress
    visibility_timeout: int
    wait_seconds: int
    report: RedriveReport = field(init=False)
    seen: set[str] = field(default_factory=set)
    # message id -> its latest receipt handle: made visible again at the end
    held: dict[str, str] = field(default_factory=dict)
    # LetterIds of the letters moved in this run (dry run: that would be): the next with one is a twin
    moved_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.report = RedriveReport(dry_run=self.dry_run)

    def run(self) -> RedriveReport:
        try:
            self._loop()
        finally:
            self._release()
        return self.report

    def _full(self) -> bool:
        return self.max_messages is not None and self.report.moved >= self.max_messages

    def _loop(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._full():
            try:
                response = self.sqs.receive_message(
                    QueueUrl=self.dlq_url,
                    MaxNumberOfMessages=_BATCH,
                    VisibilityTimeout=self.visibility_timeout,
                    WaitTimeSeconds=self.wait_seconds,
                    MessageAttributeNames=["All"],
                )
            except (BotoCoreError, ClientError) as error:
                self.report.aborted = f"cannot receive from the DLQ: {_describe(error)}"
                return
            messages = response.get("Messages") or []
            if not messages:
                return  # nothing (left) visible
            fresh: list[_Letter] = []
            for message in messages:
                letter = _Letter.of(message)
                if letter.message_id in self.seen:
                    # SQS handed it out again (its visibility ran out, or a delete failed):
                    # never twice in a run. One held back keeps its newest handle to release.
                    if letter.message_id in self.held:
                        self.held[letter.message_id] = letter.receipt_handle
                    continue
                self.seen.add(letter.message_id)
                fresh.append(letter)
            if not fresh:
                return  # every message SQS returns has been handled in this run
            self._batch(fresh)
            self.progress(self.report.progress_line())
            if self.report.aborted:
                return

    def _selected(self, letter: _Letter) -> bool:
        if self.reasons and letter.error_class not in self.reasons:
            return False
        return self.match is None or self.match in letter.reason.casefold()

    def _batch(self, letters: Sequence[_Letter]) -> None:
        report = self.report
        chosen: list[_Letter] = []
        chosen_ids: set[str] = set()
        twins: list[_Letter] = []
        for letter in letters:
            if not self._selected(letter):
                report.skipped += 1
                report.skipped_by_reason[letter.error_class] += 1
                self.held[letter.message_id] = letter.receipt_handle
            elif letter.letter_id and (letter.letter_id in self.moved_ids or letter.letter_id in chosen_ids):
                twins.append(letter)  # not counted against --max: it moves nothing
            elif self.max_messages is not None and report.moved + len(chosen) >= self.max_messages:
                report.left += 1
                self.held[letter.message_id] = letter.receipt_handle
            else:
                chosen.append(letter)
                if letter.letter_id:
                    chosen_ids.add(letter.letter_id)
        if self.dry_run:
            self.moved_ids.update(chosen_ids)
            for letter in chosen:
                self._count_moved(letter)
                self.held[letter.message_id] = letter.receipt_handle
            for twin in twins:
                report.twins += 1
                self.held[twin.message_id] = twin.receipt_handle
            return
        sent = self._send(chosen) if chosen else set()
        for letter in chosen:
            if letter.message_id in sent:
                if letter.letter_id:
                    self.moved_ids.add(letter.letter_id)
            else:
                report.failed += 1
                self.held[letter.message_id] = letter.receipt_handle
        # A twin goes only once its event is in the main queue: if that letter was refused, the
        # twin stays for the next run, which moves one of them.
        redundant = [twin for twin in twins if twin.letter_id in self.moved_ids]
        for twin in twins:
            if twin.letter_id not in self.moved_ids:
                report.failed += 1
                self.held[twin.message_id] = twin.receipt_handle
        not_deleted = self._delete([letter for letter in chosen if letter.message_id in sent] + redundant)
        report.twins += sum(1 for twin in redundant if twin.message_id not in not_deleted)

    def _count_moved(self, letter: _Letter) -> None:
        report = self.report
        report.moved += 1
        report.by_reason[letter.error_class] += 1
        samples = report.samples.setdefault(letter.error_class, [])
        text = letter.reason[:_SAMPLE_CHARS] or "(no reason given)"
        if len(samples) < SAMPLES_PER_CLASS and text not in samples:
            samples.append(text)

    def _send(self, letters: Sequence[_Letter]) -> set[str]:
        """Send to the main queue; the ids of the letters it took."""
        from botocore.exceptions import BotoCoreError, ClientError

        entries = [
            {"Id": str(i), "MessageBody": letter.body, "MessageAttributes": letter.attributes()}
            for i, letter in enumerate(letters)
        ]
        try:
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except ClientError as error:
            if _code(error) not in ("AWS.SimpleQueueService.BatchRequestTooLong", "BatchRequestTooLong"):
                self._fatal(f"the main queue refused the messages: {_describe(error)}")
                return set()
            return self._send_one_by_one(letters)  # too big together: each on its own
        except BotoCoreError as error:
            self._fatal(f"cannot send to the main queue: {_describe(error)}")
            return set()
        sent = {letters[int(entry["Id"])].message_id for entry in response.get("Successful") or []}
        for entry in response.get("Failed") or []:
            self._error(
                f"{letters[int(entry['Id'])].message_id}: {entry.get('Code')}: {entry.get('Message')}"
            )
        for letter in letters:
            if letter.message_id in sent:
                self._count_moved(letter)
        return sent

    def _send_one_by_one(self, letters: Sequence[_Letter]) -> set[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        sent: set[str] = set()
        for letter in letters:
            try:
                self.sqs.send_message(
                    QueueUrl=self.queue_url, MessageBody=letter.body, MessageAttributes=letter.attributes()
                )
            except (BotoCoreError, ClientError) as error:
                self._error(f"{letter.message_id}: {_describe(error)}")
                continue
            sent.add(letter.message_id)
            self._count_moved(letter)
        return sent

    def _delete(self, letters: Sequence[_Letter]) -> set[str]:
        """Delete from the DLQ; the message ids of the letters that could not be deleted."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not letters:
            return set()
        entries = [{"Id": str(i), "ReceiptHandle": letter.receipt_handle} for i, letter in enumerate(letters)]
        try:
            response = self.sqs.delete_message_batch(QueueUrl=self.dlq_url, Entries=entries)
        except (BotoCoreError, ClientError) as error:
            self.report.not_deleted += len(letters)
            self._error(f"cannot delete redriven messages from the DLQ: {_describe(error)}")
            return {letter.message_id for letter in letters}
        failed: set[str] = set()
        for entry in response.get("Failed") or []:
            self.report.not_deleted += 1
            failed.add(letters[int(entry["Id"])].message_id)
            self._error(f"{letters[int(entry['Id'])].message_id}: DLQ delete failed: {entry.get('Code')}")
        return failed

    def _release(self) -> None:
        """Make every message held but not moved visible again (best effort)."""
        from botocore.exceptions import BotoCoreError, ClientError

        handles = list(self.held.values())
        self.held.clear()
        for start in range(0, len(handles), _BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(handles[start : start + _BATCH])
            ]
            try:
                response = self.sqs.change_message_visibility_batch(QueueUrl=self.dlq_url, Entries=entries)
            except (BotoCoreError, ClientError) as error:
                self._error(
                    f"could not make {len(entries)} message(s) visible again (they reappear after "
                    f"{self.visibility_timeout} s): {_describe(error)}"
                )
                continue
            failed = response.get("Failed") or []
            if failed:
                self._error(
                    f"could not make {len(failed)} message(s) visible again (they reappear after "
                    f"{self.visibility_timeout} s)"
                )

    def _fatal(self, message: str) -> None:
        self.report.aborted = message

    def _error(self, message: str) -> None:
        if len(self.report.errors) < 20:
            self.report.errors.append(message)


def _code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", ""))


def _describe(error: Exception) -> str:
    code = _code(error)
    return f"{code}: {error}" if code else f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------------------------- the CLI


def _reason_class(value: str) -> str:
    name = value.strip().lower()
    if name not in REASON_CLASSES:
        raise argparse.ArgumentTypeError(
            f"unknown error class {value!r}; one of: {', '.join(REASON_CLASSES)}"
        )
    return name


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return number

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``redrive`` subcommand's options."""
    parser.description = (
        "Move dead letters back to the main queue after the cause is fixed. Bodies are sent "
        "unchanged, so each event keeps its idempotency key and Heap keeps it once. Queues come "
        "from --dlq-url/--queue-url, else the --stack outputs, else $DEAD_LETTER_QUEUE_URL and "
        "$RETRY_QUEUE_URL."
    )
    parser.epilog = (
        "Start with --dry-run: it lists what is in the DLQ, by error class, and changes nothing. "
        "Error classes: " + ", ".join(REASON_CLASSES) + "."
    )
    where = parser.add_argument_group("queues")
    where.add_argument("--stack", metavar="NAME", help="read the queue URLs from this stack's outputs")
    where.add_argument(
        "--dlq-url", metavar="URL", help="the dead-letter queue (default $DEAD_LETTER_QUEUE_URL)"
    )
    where.add_argument("--queue-url", metavar="URL", help="the main queue (default $RETRY_QUEUE_URL)")
    where.add_argument(
        "--region", help="AWS region (default: from the queue URL, else your AWS configuration)"
    )
    what = parser.add_argument_group("what to move")
    what.add_argument(
        "--dry-run", action="store_true", help="only report what would move, by error class; change nothing"
    )
    what.add_argument(
        "--reason",
        metavar="CLASS",
        action="append",
        type=_reason_class,
        default=[],
        help="only letters with this ErrorClass (repeatable), e.g. retries_exhausted, config_fault",
    )
    what.add_argument("--match", metavar="TEXT", help="only letters whose Reason contains TEXT (any case)")
    what.add_argument("--max", metavar="N", type=_positive, help="move at most N messages")
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument(
        "--visibility-timeout",
        metavar="SECONDS",
        type=_bounded(30, 43200),
        default=DEFAULT_VISIBILITY_TIMEOUT,
        help="how long letters stay hidden while the run lasts (default %(default)s)",
    )
    tuning.add_argument(
        "--wait-seconds",
        metavar="SECONDS",
        type=_bounded(0, 20),
        default=DEFAULT_WAIT_SECONDS,
        help="long-poll time of each receive (default %(default)s)",
    )


_QUEUE_URL_REGION = (
    re.compile(r"^https?://sqs(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com"),
    re.compile(r"^https?://([a-z0-9-]+)\.queue\.amazonaws\.com"),
)


def region_of(queue_url: str) -> str | None:
    """The region named in an SQS queue URL, if it names one."""
    for pattern in _QUEUE_URL_REGION:
        found = pattern.match(queue_url)
        if found:
            return found.group(1)
    return None


def stack_queue_urls(cloudformation: Any, stack: str) -> tuple[str | None, str | None]:
    """(DeadLetterQueueUrl, MainQueueUrl) from the stack's outputs."""
    stacks = cloudformation.describe_stacks(StackName=stack).get("Stacks") or []
    outputs = (
        {o.get("OutputKey"): o.get("OutputValue") for o in (stacks[0].get("Outputs") or [])} if stacks else {}
    )
    return outputs.get("DeadLetterQueueUrl"), outputs.get("MainQueueUrl")


def resolve_queue_urls(
    args: argparse.Namespace, environ: Mapping[str, str], cloudformation: Callable[[], Any]
) -> tuple[str, str]:
    """The DLQ and main queue URLs: flags first, then the stack's outputs, then the environment.

    With --stack, the environment is not consulted (it may describe another stack).
    """
    dlq_url, queue_url = args.dlq_url, args.queue_url
    if args.stack and not (dlq_url and queue_url):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            stack_dlq, stack_queue = stack_queue_urls(cloudformation(), args.stack)
        except (BotoCoreError, ClientError) as error:
            raise RedriveError(
                f"cannot read the outputs of stack {args.stack!r}: {_describe(error)}"
            ) from None
        dlq_url, queue_url = dlq_url or stack_dlq, queue_url or stack_queue
        if not (dlq_url and queue_url):
            raise RedriveError(f"stack {args.stack!r} has no DeadLetterQueueUrl / MainQueueUrl output")
    elif not args.stack:
        dlq_url = dlq_url or environ.get("DEAD_LETTER_QUEUE_URL", "").strip() or None
        queue_url = queue_url or environ.get("RETRY_QUEUE_URL", "").strip() or None
    if not dlq_url:
        raise RedriveError("no dead-letter queue: give --dlq-url, --stack or $DEAD_LETTER_QUEUE_URL")
    if not queue_url:
        raise RedriveError("no main queue: give --queue-url, --stack or $RETRY_QUEUE_URL")
    if dlq_url.rstrip("/") == queue_url.rstrip("/"):
        raise RedriveError("the dead-letter queue and the main queue are the same queue")
    return dlq_url, queue_url


NO_REGION = (
    "no AWS region: pass --region REGION (e.g. --region us-east-1), or set AWS_DEFAULT_REGION"
    " or a region in your AWS configuration"
)


def run_redrive_command(args: argparse.Namespace) -> int:
    """0: done (or dry run); 1: some messages failed and stay in the DLQ; 2: could not start."""
    import boto3

    configured_region = args.region or boto3.session.Session().region_name

    def cloudformation() -> Any:
        if not configured_region:
            raise RedriveError(f"cannot read the outputs of stack {args.stack!r}: {NO_REGION}")
        return boto3.client("cloudformation", region_name=configured_region)

    try:
        dlq_url, queue_url = resolve_queue_urls(args, os.environ, cloudformation)
    except RedriveError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    region = args.region or region_of(dlq_url) or configured_region
    if not region:
        print(f"error: {NO_REGION}", file=sys.stderr)
        return 2
    sqs = boto3.client("sqs", region_name=region)

    def show(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    filters = []
    if args.reason:
        filters.append(f"error class in {', '.join(sorted(set(args.reason)))}")
    if args.match:
        filters.append(f"reason contains {args.match!r}")
    if args.max:
        filters.append(f"at most {args.max}")
    show(
        f"{'dry run: ' if args.dry_run else ''}redrive {dlq_url} -> {queue_url}"
        + (f" ({'; '.join(filters)})" if filters else "")
    )
    report = redrive(
        sqs,
        dlq_url,
        queue_url,
        dry_run=args.dry_run,
        reasons=args.reason,
        match=args.match,
        max_messages=args.max,
        progress=show,
        visibility_timeout=args.visibility_timeout,
        wait_seconds=args.wait_seconds,
    )
    print(report.summary(), flush=True)
    if report.aborted and not report.moved and not report.skipped and not report.failed:
        return 2
    return 0 if report.ok else 1
