"""The SQS consumer: records in, partial batch response out. Thin: the pipeline decides fates.

- Each record body is one event or ``{"batch": [...]}``; all events of the invocation are
  delivered together (bulk).
- Once the caps let a record's events in, they are completed by the API's rule
  (``inbound.fill``), from what every receive of the record shows alike: ``receivedAt`` from
  its ``SentTimestamp``, a missing ``messageId`` as ``<record messageId>:<position>``.
- Permanent problems go to the DLQ per event, with the reason; the record is not failed.
- A record with a retryable event is listed in ``batchItemFailures`` and its visibility
  timeout grows with its receive count, so a Heap outage is ridden out for hours. Its
  rejected events wait until the record settles, so the DLQ gets each of them once.
- On the last receive before the redrive limit the consumer parks the still-failing events
  in the DLQ itself ("retries exhausted: <cause>"), so nothing reaches the DLQ without a reason.
- A configuration fault (SSM unreadable, Heap 401/403/404...) fails every record: nothing lost.
- An invocation takes on no more events than its pace can deliver in the time it has; the
  records past that are sent back to the queue as new messages (``Redelivery.requeue``), so a
  dense backlog never spends their receives (or dead-letters them as "retries exhausted").
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from heap_forwarder.edge.letters import SQS, DeadLetterWriter, Refusal, settle
from heap_forwarder.edge.observability import count, logger
from heap_forwarder.inbound import InvalidEvent, InvalidJson, decode_json, events_of, fill, received_at_of
from heap_forwarder.outcome import ErrorClass, Fate, Outcome, rejected
from heap_forwarder.pipeline import Pipeline, collector_paused

# Events in one record. Past it the record is refused whole, as one dead letter holding its
# body: reading 85,000 ``{}`` from one 256 KB message would otherwise be 85,000 letters (and as
# many log lines and DLQ writes) for one bad message. Equal to the API's
# ``api_contract.MAX_EVENTS_PER_REQUEST`` (same reasoning: SDK batches hold a few hundred events at
# most), and never lower: the API parks a request it could not deliver as one record.
MAX_EVENTS_PER_RECORD = 2_500
# Events one invocation takes on. Lambda hands over up to 6 MB, which can hold two million
# ``{}`` across records each under the per-record cap (1.25 GB of Python objects, a million
# dead letters); past this many events the remaining records are not decoded but handed back
# for another invocation. 50,000 is more than 6 MB of any real event holds (120 bytes each).
# The pace lowers it further (``Pace.events_within``): what the invocation cannot deliver in its
# time is not taken on. Records on their last receive are always read: they have no receive
# left to lose.
MAX_EVENTS_PER_INVOCATION = 50_000
# The message attributes a record sent back to the queue carries (``Redelivery.requeue``): the
# first message's id and sent time, from which its events are completed, as on every receive.
ORIGINAL_MESSAGE_ID = "HfOriginalMessageId"
ORIGINAL_SENT_TIMESTAMP = "HfOriginalSentTimestamp"
# ... and the receives it had spent before the one that sent it back (which was not an attempt):
# SQS counts the new message's receives from 1, so without them a record sent back whenever the
# cap bites would never reach its last receive (retried for ever, never parked with its reason).
RECEIVES_SPENT = "HfReceivesSpent"
# What one SendMessageBatch of records sent back may hold (bodies and attributes): SQS's own
# message size, the smallest a queue's batch limit has been, so a chunk never fails whole.
SEND_BACK_BYTES = 262_144
# Dead letters always get this long, even when delivery used up the time: they are how an event
# on its last receive keeps its reason. Bounded all the same (at most the invocation's events).
LETTER_MIN_SECONDS = 1.0


@dataclass
class _Record:
    message_id: str
    receipt_handle: str
    receive_count: int
    attributes: Mapping[str, Any]
    body: str
    events: list[Any] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # index of each event in the invocation
    unreadable: Outcome | None = None  # the body itself could not be read as events
    deferred: bool = False  # not read: the invocation had its fill of events (see read_records)

    origin_id: str = ""  # the first message's id: this one's, unless it was sent back
    origin_sent: Any = None  # the first message's SentTimestamp

    @property
    def first_seen(self) -> str:
        """When SQS first handed the record over (only dead letters need it: off the hot path)."""
        return _first_seen(self.attributes)


class Pace(NamedTuple):
    """The consumer's pace (its rate limiter's settings): how many events it can deliver."""

    events_per_second: float
    burst: int

    def events_within(self, seconds: float) -> int:
        return int(self.burst + self.events_per_second * max(seconds, 0.0))


class BackoffPolicy(NamedTuple):
    base_seconds: float
    cap_seconds: float

    def visibility_timeout(self, receive_count: int, rng: random.Random) -> int:
        """Exponential in the receive count, capped, with a little jitter so retries spread out."""
        exponent = min(max(receive_count - 1, 0), 30)
        ceiling = min(self.cap_seconds, self.base_seconds * (2**exponent))
        return int(min(43200, ceiling * rng.uniform(0.8, 1.0)))


class Redelivery(NamedTuple):
    """The queue's side of a retry (the API's is ``RetryQueue``, parking): a failed record's
    next delivery pushed out by its visibility timeout, growing with its receives. Without a
    queue URL nothing is changed: the queue's own visibility timeout brings the record back."""

    sqs_client: Any
    queue_url: str | None
    backoff: BackoffPolicy
    rng: random.Random

    def back_off(self, records: Sequence[_Record]) -> None:
        if not self.queue_url or not records:
            return
        entries = [
            {
                "Id": str(i),
                "ReceiptHandle": r.receipt_handle,
                "VisibilityTimeout": self.backoff.visibility_timeout(r.receive_count, self.rng),
            }
            for i, r in enumerate(records)
        ]
        for start in range(0, len(entries), 10):
            try:
                self.sqs_client.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries[start : start + 10]
                )
            except (BotoCoreError, ClientError) as error:
                # The queue's own visibility timeout still brings the records back: log, go on.
                logger.warning("could not extend visibility timeouts", extra={"cause": type(error).__name__})

    def requeue(self, records: Sequence[_Record]) -> set[str]:
        """Records an invocation did not take on, sent back to the queue as new messages (their
        first id and sent time in attributes, so their events complete as before): they are
        not failed, so Lambda deletes them, and waiting costs them no receive. The ids of those
        SQS took; any other stays failed, as before (its visibility unchanged)."""
        if not self.queue_url or not records:
            return set()
        taken: set[str] = set()
        for chunk in _send_back_chunks([r for r in records if r.origin_id and r.origin_sent is not None]):
            entries = [
                {"Id": str(i), "MessageBody": r.body, "MessageAttributes": _send_back_attributes(r)}
                for i, r in enumerate(chunk)
            ]
            try:
                answer = self.sqs_client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except (BotoCoreError, ClientError) as error:
                logger.warning("could not send deferred records back", extra={"cause": type(error).__name__})
                continue
            taken.update(chunk[int(ok["Id"])].message_id for ok in answer.get("Successful") or [])
        return taken


def _send_back_attributes(record: _Record) -> dict[str, Any]:
    return {
        ORIGINAL_MESSAGE_ID: {"DataType": "String", "StringValue": record.origin_id},
        ORIGINAL_SENT_TIMESTAMP: {"DataType": "String", "StringValue": str(record.origin_sent)},
        RECEIVES_SPENT: {"DataType": "Number", "StringValue": str(max(record.receive_count - 1, 0))},
    }


def _send_back_chunks(records: Sequence[_Record]) -> list[list[_Record]]:
    """The records in order, in chunks of at most 10 and ``SEND_BACK_BYTES`` (a record larger
    than that alone in its chunk: SQS takes it or refuses it alone)."""
    chunks: list[list[_Record]] = []
    size = 0
    for record in records:
        # The attributes: their names, types and values; 100 bytes is more than the values take.
        added = len(record.body.encode("utf-8")) + 100
        if not chunks or len(chunks[-1]) == 10 or size + added > SEND_BACK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(record)
        size += added
    return chunks


def _first_seen(attributes: Mapping[str, Any]) -> str:
    stamp = attributes.get("ApproximateFirstReceiveTimestamp") or attributes.get("SentTimestamp")
    try:
        moment = datetime.fromtimestamp(int(str(stamp)) / 1000, tz=UTC)
    except (TypeError, ValueError):
        moment = datetime.now(tz=UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def read_records(
    sqs_event: Mapping[str, Any],
    max_events: int = MAX_EVENTS_PER_INVOCATION,
    last_receive: int | None = None,
) -> list[_Record]:
    """The records in the order Lambda gave them; once ``max_events`` events were read, the rest
    are left unread (``deferred``). The first record is always read, and so is every record on
    its ``last_receive`` (or later); records with more receives are read first. The events of a
    record the caps let in are completed (``_complete``), and only those."""
    records = [_record(raw) for raw in sqs_event.get("Records") or []]
    taken = 0
    for record in sorted(records, key=lambda r: -r.receive_count):
        final = last_receive is not None and record.receive_count >= last_receive
        if taken >= max_events and not final:
            record.deferred = True
            continue
        _read(record)
        if taken and taken + len(record.events) > max_events and not final:
            record.events, record.deferred = [], True  # read, but it does not fit: next time
            continue
        taken += len(record.events)
        _complete(record)
    return records


def _record(raw: Mapping[str, Any]) -> _Record:
    attributes = raw.get("attributes") or {}
    try:
        receive_count = int(attributes.get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        receive_count = 1
    message_id = str(raw.get("messageId", ""))
    # A record an earlier invocation sent back carries its first self's id and sent time (a
    # producer setting them only chooses its own events' messageIds, which it can anyway), and
    # the receives it had spent (a producer setting them only parks its own records sooner).
    origin_id, origin_sent = message_id, attributes.get("SentTimestamp")
    originals = raw.get("messageAttributes")
    if originals:  # most records carry none: nothing more to look up on the hot path
        with contextlib.suppress(ValueError):
            receive_count += max(int(_attribute(originals, RECEIVES_SPENT) or 0), 0)
        origin_id = _attribute(originals, ORIGINAL_MESSAGE_ID) or origin_id
        origin_sent = _attribute(originals, ORIGINAL_SENT_TIMESTAMP) or origin_sent
    return _Record(
        message_id=message_id,
        receipt_handle=str(raw.get("receiptHandle", "")),
        receive_count=receive_count,
        attributes=attributes,
        body=str(raw.get("body", "")),
        origin_id=origin_id,
        origin_sent=origin_sent,
    )


def _attribute(attributes: Mapping[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    text = value.get("stringValue") if isinstance(value, Mapping) else None
    return str(text) if text else None


def _read(record: _Record) -> None:
    try:
        # No walk for numbers too large for a float: the rules refuse them where they matter.
        events = events_of(decode_json(record.body, finite_numbers=False))[0]
        if len(events) > MAX_EVENTS_PER_RECORD:
            record.unreadable = rejected(
                ErrorClass.TOO_LARGE,
                f"the record holds {len(events)} events; the limit is {MAX_EVENTS_PER_RECORD} per record;"
                " split it into smaller messages",
            )
        else:
            record.events = events
    except InvalidJson as error:
        record.unreadable = rejected(ErrorClass.INVALID_JSON, str(error))
    except InvalidEvent as error:
        record.unreadable = rejected(ErrorClass.INVALID_EVENT, str(error))


def _complete(record: _Record) -> None:
    """The record's events completed by the rule the API applies (``inbound.fill``), from
    values every receive of the record shows alike, so a redelivery is the same event (and
    Heap's idempotency key, which derives from ``messageId``, the same key)."""
    if not record.events:
        return
    received_at: str | None = _UNREAD
    for position, event in enumerate(record.events):
        if not isinstance(event, dict):
            continue  # anything else is the pipeline's to refuse
        if _whole(event):
            continue  # the usual case: nothing to fill
        if received_at is _UNREAD:
            received_at = received_at_of(record.origin_sent)
        fill(event, received_at, _position_id(record.origin_id, position) if record.origin_id else None)


_UNREAD: Any = object()


def _whole(event: dict[str, Any]) -> bool:
    """Nothing for ``fill`` to do: ``messageId``, ``receivedAt`` and ``timestamp`` all given."""
    for key in ("messageId", "receivedAt", "timestamp"):
        value = event.get(key)
        if value is None or value == "":
            return False
    return True


def _position_id(message_id: str, position: int) -> Callable[[], str]:
    return lambda: f"{message_id}:{position}"


class Consumer:
    def __init__(
        self,
        pipeline_factory: Callable[[], Pipeline],
        sqs_client: Any,
        queue_url: str | None,
        dead_letters: DeadLetterWriter,
        backoff: BackoffPolicy,
        *,
        max_receive_count: int,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        pace: Pace | None = None,
    ) -> None:
        self.pipeline_factory = pipeline_factory
        self.pace = pace
        self.redelivery = Redelivery(sqs_client, queue_url, backoff, rng or random.Random())
        self.dead_letters = dead_letters
        self.max_receive_count = max_receive_count
        self.clock = clock
        self.max_events_per_invocation = MAX_EVENTS_PER_INVOCATION

    def handle(
        self,
        sqs_event: Mapping[str, Any],
        remaining_seconds: float | None,
        *,
        letter_grace_seconds: float = 0.0,
    ) -> dict[str, Any]:
        """``remaining_seconds``: until delivery must end; dead letters may take up to
        ``letter_grace_seconds`` more (a part of the margin kept back from Lambda's deadline).

        The cyclic collector is paused from the first record read to the last settled (see
        ``pipeline.collector_paused``): the decoded events live that long, and with it on
        while they were read, each young-generation collection re-scanned all of them (about
        10 collections, 9-10 ms a batch of 10,000 events). It comes back on only once the
        batch's objects are gone (freed with ``_handle``'s frame), so no collection scans them
        afterwards either."""
        with collector_paused():
            return self._handle(sqs_event, remaining_seconds, letter_grace_seconds)

    def _handle(
        self, sqs_event: Mapping[str, Any], remaining_seconds: float | None, letter_grace_seconds: float
    ) -> dict[str, Any]:
        started = self.clock()
        all_records = read_records(sqs_event, self.events_to_take(remaining_seconds), self.max_receive_count)
        count("BatchSize", len(all_records))
        deferred = [r for r in all_records if r.deferred]
        records = [r for r in all_records if not r.deferred]
        letters_until = (
            None if remaining_seconds is None else started + remaining_seconds + letter_grace_seconds
        )
        try:
            pipeline = self.pipeline_factory()
        except Exception as error:  # SSM down, app ID missing, playbook unusable: retry all
            logger.error("configuration fault: every record will be retried", extra={"cause": str(error)})
            count("ConfigurationFaults", 1)
            unprocessed = self._settle_unprocessed(records, f"configuration fault: {error}", letters_until)
            return self._merge(unprocessed, deferred)

        raws: list[Any] = []
        for record in records:
            for event in record.events:
                record.positions.append(len(raws))
                raws.append(event)
        count("EventsReceived", len(raws) + sum(1 for r in records if r.unreadable))
        deadline = started + remaining_seconds if remaining_seconds is not None else None
        outcomes = pipeline.process(raws, deadline=deadline) if raws else []
        return self._merge(self._settle(records, outcomes, letters_until), deferred)

    def events_to_take(self, remaining_seconds: float | None) -> int:
        """At most what the pace can deliver in the time left (never below one record: the
        first is always read)."""
        if self.pace is None or remaining_seconds is None:
            return self.max_events_per_invocation
        return min(self.max_events_per_invocation, self.pace.events_within(remaining_seconds))

    def _merge(self, response: dict[str, Any], deferred: Sequence[_Record]) -> dict[str, Any]:
        """The records the invocation did not take on go back to the queue as new messages
        (``Redelivery.requeue``); one SQS did not take stays failed, as it is (its visibility
        timeout unchanged), for another invocation. None is on its last receive."""
        if deferred:
            count("RecordsDeferred", len(deferred))
            requeued = self.redelivery.requeue(deferred)
            if requeued:
                count("RecordsRequeued", len(requeued))
            response["batchItemFailures"].extend(
                {"itemIdentifier": r.message_id} for r in deferred if r.message_id not in requeued
            )
        return response

    def _settle(
        self, records: Sequence[_Record], outcomes: Sequence[Outcome], letters_until: float | None
    ) -> dict[str, Any]:
        refusals: list[Refusal] = []
        to_retry: dict[str, str] = {}
        delivered = retried = 0
        config_faults = 0
        for record in records:
            if record.unreadable is not None:
                refusals.append(_refusal(record, record.body, record.unreadable, WHOLE_RECORD))
                continue
            positions = record.positions
            if len(positions) == 1 and outcomes[positions[0]].fate is Fate.DELIVERED:
                delivered += 1  # the usual record: one event, delivered
                continue
            mine = [outcomes[p] for p in positions]
            retryable = [o for o in mine if o.fate is Fate.RETRYABLE]
            delivered += sum(1 for o in mine if o.fate is Fate.DELIVERED)
            config_faults += sum(1 for o in retryable if o.error_class is ErrorClass.CONFIG_FAULT)
            last_receive = record.receive_count >= self.max_receive_count
            if retryable and not last_receive:
                retried += len(retryable)
                to_retry[record.message_id] = retryable[0].reason
                continue  # rejected siblings wait until the record settles: one DLQ letter each
            for position, (event, outcome) in enumerate(zip(record.events, mine, strict=True)):
                if outcome.fate is Fate.DELIVERED:
                    continue
                final = _exhausted(outcome) if outcome.fate is Fate.RETRYABLE else outcome
                refusals.append(_refusal(record, _event_text(event), final, str(position)))

        if config_faults:
            logger.error(
                "Heap refused the configuration; records will be retried", extra={"events": config_faults}
            )
            count("ConfigurationFaults", 1)
        written = settle(self.dead_letters, refusals, SQS, until=self._letters_until(letters_until))
        for refusal, ok in zip(refusals, written, strict=True):
            if not ok:
                # The DLQ refused it even after the writer's own retries: keep the record in the
                # queue rather than lose the event. Its letters SQS did take are written again
                # on the redelivery, with the same LetterId: redrive moves one per id.
                to_retry.setdefault(refusal.source, "dead-letter queue write failed")
        count("EventsDelivered", delivered)
        count("EventsRetried", retried)
        return self._retry([r for r in records if r.message_id in to_retry], to_retry)

    def _settle_unprocessed(
        self, records: Sequence[_Record], cause: str, letters_until: float | None
    ) -> dict[str, Any]:
        """Records the pipeline never saw: retried, except on their last receive, where they go
        to the DLQ whole, with the cause, rather than be moved there by SQS without a reason."""
        exhausted = [r for r in records if r.receive_count >= self.max_receive_count]
        outcome = Outcome(Fate.REJECTED, ErrorClass.RETRIES_EXHAUSTED, f"retries exhausted: {cause}")
        refusals = [_refusal(r, r.body, outcome, WHOLE_RECORD) for r in exhausted]
        until = self._letters_until(letters_until)
        written = settle(self.dead_letters, refusals, SQS, until=until, announce=False)
        parked = {r.message_id for r, ok in zip(exhausted, written, strict=True) if ok}
        retry = [r for r in records if r.message_id not in parked]
        return self._retry(retry, {r.message_id: cause for r in retry})

    def _letters_until(self, letters_until: float | None) -> float | None:
        """Letters always get LETTER_MIN_SECONDS from when they are written, deadline or not."""
        if letters_until is None:
            return None
        return max(letters_until, self.clock() + LETTER_MIN_SECONDS)

    def _retry(self, records: Sequence[_Record], causes: Mapping[str, str]) -> dict[str, Any]:
        """List the records as failures and push their next delivery out (growing backoff)."""
        if records:
            logger.info(
                "records left for retry",
                extra={"records": len(records), "first_cause": next(iter(causes.values()))},
            )
            self.redelivery.back_off(records)
        return {"batchItemFailures": [{"itemIdentifier": r.message_id} for r in records]}


# The position part of the LetterId of a letter that holds a whole record (its body could not be
# read as events, or the pipeline never saw it): ``<messageId>:record``. A letter of one event
# has the event's index in the record's body instead (``<messageId>:0``, ``:1``...).
WHOLE_RECORD = "record"


def _refusal(record: _Record, body: str, outcome: Outcome, position: str) -> Refusal:
    """The refusal of one event of ``record`` (``position``: its index in the record's body) or
    of the whole record (``WHOLE_RECORD``); its log line names the record."""
    return Refusal(
        body,
        outcome,
        # From the first message's id: a record sent back writes the same letters (twins).
        f"{record.origin_id or record.message_id}:{position}",
        record.message_id,
        record.first_seen,
        record.message_id,
    )


def _exhausted(outcome: Outcome) -> Outcome:
    """A still-retryable outcome on the record's last receive, as its letter says it: the safe
    reason for the logs, and Heap's own text (when there is one) for the letter."""
    detail = f"retries exhausted: {outcome.detail}" if outcome.detail else ""
    return Outcome(
        Fate.REJECTED, ErrorClass.RETRIES_EXHAUSTED, f"retries exhausted: {outcome.reason}", detail
    )


def _event_text(event: Any) -> str:
    try:
        return json.dumps(event, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(event, ensure_ascii=False, default=str)
