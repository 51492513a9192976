"""The ingest API's logic: an HTTP API (v2) request in, an answer out. No Lambda context, no router.

The path of one request (docs/api.md has the contract):

1. ``open``: the write key (HTTP Basic user name, constant-time compare) -> 401; the body as
   sent (base64 undone, gzip/deflate decompressed, size-bounded) -> 413 / 400; JSON -> 400;
   the events the route carries, at most 2,500 of them (counted before any per-event work)
   -> 413, each at most 32 KB -> 413; a ``type`` that contradicts the
   route -> 400; then each event is completed the way the Segment tracking API does it (type
   implied by the route, batch-level ``context``/``integrations``/``sentAt``, ``messageId``,
   ``receivedAt``, ``timestamp``) so that a first attempt and a parked retry are the same event.
2. ``accept``: the pipeline prepares every event (validation, mapping, Heap rules); any problem
   refuses the whole request (400, nothing sent). Otherwise deliver within the deadline:
   delivered -> counted; rejected by Heap -> DLQ (reason attached) and listed in the 200/202
   body; retryable -> parked in the retry queue as ``{"batch": [...]}`` messages (202) for the
   SQS consumer; neither delivered, dead-lettered nor parked -> 503 (the client retries).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from heap_forwarder.edge.aws import error_code
from heap_forwarder.edge.dlq import DeadLetter, DeadLetterWriter
from heap_forwarder.edge.observability import count, logger
from heap_forwarder.envelopes import ROUTE_TYPES, BodyError, header, http_body_bytes
from heap_forwarder.models import (
    AliasEvent,
    Batch,
    GroupEvent,
    IdentifyEvent,
    InvalidEvent,
    InvalidJson,
    PageEvent,
    Problem,
    ScreenEvent,
    TrackEvent,
    decode_json,
    normalise_timestamp,
    validate_event,
)
from heap_forwarder.outcome import ErrorClass, Fate, Outcome
from heap_forwarder.pipeline import Pipeline

# Limits of the order of Segment's tracking API (docs/api.md).
MAX_EVENT_BYTES = 32 * 1024  # one event, as compact JSON
MAX_BODY_BYTES = 500 * 1024  # one request body, decompressed
MAX_RAW_BYTES = 1024 * 1024  # one request body as sent (compressed or not)
# Events in one request. The byte caps alone do not bound the work: gzip makes 500 KB of
# ``{},{},...`` (170,000 events) a 550-byte request, and completing and validating every event
# took the API past 500 MB. Segment's and RudderStack's SDKs flush batches of 100 events or fewer
# by default, a few hundred at most; 2,500 still takes a full 500 KB batch of 205-byte events
# (smaller than any SDK's event with its context) and is three of Heap's 1,000-item bulk
# requests at most, while bounding what a request can make the function do. Counted before
# anything looks at a single event. The SQS consumer's cap (consumer.MAX_EVENTS_PER_RECORD)
# must not be lower: a request parked whole arrives there as one record.
MAX_EVENTS_PER_REQUEST = 2_500
# One parked SQS message: SQS takes 256 KiB; a little is kept back.
MAX_PARK_BYTES = 256_000
# Bounds on what an answer lists, so that it always fits Lambda's 6 MB response.
MAX_PROBLEMS_LISTED = 100
# Every refused event is listed (a request holds at most MAX_EVENTS_PER_REQUEST), so that the
# answer accounts for each event; 2,500 entries of at most MAX_REASON_CHARS fit Lambda's 6 MB.
MAX_REJECTED_LISTED = MAX_EVENTS_PER_REQUEST
MAX_REASON_CHARS = 300  # 2,500 reasons of control characters (escaped 6 to 1) still fit 6 MB

AUTH_REALM = 'Basic realm="heap-forwarder", charset="UTF-8"'


# --------------------------------------------------------------------------- the public shapes
class ErrorCode(StrEnum):
    """The ``error`` of every error answer: stable names clients may branch on."""

    INVALID_JSON = "invalid_json"  # 400: the body is not JSON
    INVALID_BODY = "invalid_body"  # 400: bad base64/gzip, unsupported encoding, wrong shape
    INVALID_EVENTS = "invalid_events"  # 400: one or more events break the spec, the mapping or Heap's rules
    UNAUTHORIZED = "unauthorized"  # 401
    NOT_FOUND = "not_found"  # 404: no such route
    PAYLOAD_TOO_LARGE = "payload_too_large"  # 413
    UNAVAILABLE = "unavailable"  # 503: try again later


class ProblemDetail(BaseModel):
    """One reason a request was refused."""

    index: int = Field(description="Position of the event in the request (0 on the single-event routes).")
    field: str = Field(
        description="Dotted path of the offending field; empty when the whole event is at fault."
    )
    message: str


class ErrorBody(BaseModel):
    """Every error answer (400, 401, 404, 413, 503)."""

    error: ErrorCode
    code: ErrorCode = Field(
        description="The same as `error`: Segment's and RudderStack's SDKs read `code` and `message`."
    )
    message: str = Field(description="What went wrong, for people.")
    problems: list[ProblemDetail] = Field(
        default_factory=list,
        description=f"Each invalid or oversized event (at most {MAX_PROBLEMS_LISTED} listed); else empty.",
    )


class RejectedEvent(BaseModel):
    """An event Heap refused after delivery began; it is also in the dead-letter queue."""

    index: int
    messageId: str | None
    error: str = Field(description="Error class, e.g. heap_rejected.")
    reason: str = Field(description="Why, with Heap's own answer when it gave one.")


class Accepted(BaseModel):
    """The answer of 200 (all settled) and 202 (some parked for later delivery)."""

    success: Literal[True] = True
    delivered: int = Field(description="Events Heap accepted during this request.")
    rejected: list[RejectedEvent] = Field(
        default_factory=list,
        description=f"Events Heap refused, with the reason, each kept in the dead-letter queue "
        f"(at most {MAX_REJECTED_LISTED} listed).",
    )
    parked: int = Field(
        0,
        description="Events parked in the retry queue; the consumer delivers them later. An event is "
        "counted once: delivered, rejected or parked (a refused event the dead-letter queue could not "
        "take is parked, not listed as rejected).",
    )


# Request bodies of the single-event routes: the event models with ``type`` implied by the route.


class TrackCall(TrackEvent):
    """A track call; ``type`` may be left out (the route implies it)."""

    type: Literal["track"] = "track"


class PageCall(PageEvent):
    """A page call; ``type`` may be left out (the route implies it)."""

    type: Literal["page"] = "page"


class ScreenCall(ScreenEvent):
    """A screen call; ``type`` may be left out (the route implies it)."""

    type: Literal["screen"] = "screen"


class IdentifyCall(IdentifyEvent):
    """An identify call; ``type`` may be left out (the route implies it)."""

    type: Literal["identify"] = "identify"


class GroupCall(GroupEvent):
    """A group call; ``type`` may be left out (the route implies it)."""

    type: Literal["group"] = "group"


class AliasCall(AliasEvent):
    """An alias call; ``type`` may be left out (the route implies it)."""

    type: Literal["alias"] = "alias"


class BatchCall(Batch):
    """A batch: every event names its ``type``. Batch-level ``context``, ``integrations`` and ``sentAt``
    apply to every event that does not set its own; a ``writeKey`` in the body is ignored (use Basic auth)."""

    sentAt: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


# --------------------------------------------------------------------------- answers
@dataclass
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":"))

    def as_http_api(self) -> dict[str, Any]:
        """The response in the shape an API Gateway HTTP API (payload 2.0) integration returns."""
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": "application/json", **self.headers},
            "body": self.text(),
            "isBase64Encoded": False,
        }


class ApiError(Exception):
    """A request refused before or instead of delivery; ``response()`` is the answer."""

    def __init__(
        self,
        status: int,
        error: ErrorCode,
        message: str,
        problems: Sequence[Problem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.problems = list(problems)
        self.headers = dict(headers or {})

    def response(self) -> ApiResponse:
        problems = self.problems
        message = self.message
        if len(problems) > MAX_PROBLEMS_LISTED:
            message += f" ({len(problems)} problems; the first {MAX_PROBLEMS_LISTED} are listed)"
            problems = problems[:MAX_PROBLEMS_LISTED]
        body = ErrorBody(
            error=self.error,
            code=self.error,
            message=message,
            problems=[ProblemDetail(index=p.index, field=p.field, message=p.message) for p in problems],
        )
        return ApiResponse(self.status, body.model_dump(mode="json"), self.headers)


def invalid_events(problems: Sequence[Problem]) -> ApiError:
    events = len({p.index for p in problems})
    return ApiError(
        400,
        ErrorCode.INVALID_EVENTS,
        f"{events} event(s) of the request are invalid; nothing was sent, fix them and resend the request",
        problems,
    )


def unavailable(message: str) -> ApiError:
    return ApiError(503, ErrorCode.UNAVAILABLE, message, headers={"Retry-After": "30"})


# --------------------------------------------------------------------------- the request
@dataclass
class IngestRequest:
    """A request that passed the checks of ``open``: its events, completed and ready for the pipeline."""

    request_id: str
    route: str
    events: list[Any]
    received_at: str

    def body_json(self) -> str:
        """The events as the JSON body the route's model describes (for request validation)."""
        document: Any = {"batch": self.events} if ROUTE_TYPES[self.route] is None else self.events[0]
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def route_of(event: Mapping[str, Any]) -> tuple[str, str]:
    """(method, path) of an HTTP API (v2) request; the route key wins when API Gateway matched one."""
    route_key = str(event.get("routeKey") or "")
    method, _, path = route_key.partition(" ")
    if path.startswith("/"):
        return method.upper(), path
    http = (event.get("requestContext") or {}).get("http") or {}
    return str(http.get("method") or "").upper(), str(event.get("rawPath") or http.get("path") or "")


def is_ingest_route(event: Mapping[str, Any]) -> bool:
    method, path = route_of(event)
    return method == "POST" and path in ROUTE_TYPES


def basic_auth_user(authorization: str | None) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header; None when absent or malformed."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, _password = decoded.partition(":")
    return user if colon else None


def _digest(text: str) -> bytes:
    # Compared as digests: equal lengths, so not even the key's length shows in the timing.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _raw_size(event: Mapping[str, Any]) -> int:
    body = event.get("body") or ""
    if not isinstance(body, str):
        return len(body)
    if event.get("isBase64Encoded"):
        return len(body) // 4 * 3 - body[-2:].count("=")
    return len(body.encode("utf-8"))


def compact_json(value: Any, *, ascii_only: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=False)


# SQS message bodies take only these characters (lone surrogates, U+FFFE... are refused).
_NOT_SQS_TEXT = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_safe_json(value: Any) -> str:
    """Compact JSON that SQS accepts as a message body (escaped to ASCII only when it must be)."""
    text = compact_json(value)
    return compact_json(value, ascii_only=True) if _NOT_SQS_TEXT.search(text) else text


def _moment(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(normalise_timestamp(value))
    except ValueError:
        return None


def _iso(moment: datetime) -> str:
    return normalise_timestamp(moment.astimezone(UTC).isoformat())


def implied_timestamp(event: Mapping[str, Any]) -> str | None:
    """``timestamp`` of an event that has none, as the Segment tracking API derives it.

    With ``originalTimestamp`` and ``sentAt`` (the producer's clock), the producer's clock skew is
    corrected: ``receivedAt - (sentAt - originalTimestamp)``; with ``originalTimestamp`` alone,
    that; otherwise ``receivedAt``.
    """
    received = _moment(event.get("receivedAt"))
    original = _moment(event.get("originalTimestamp"))
    sent = _moment(event.get("sentAt"))
    if original is not None and sent is not None and received is not None:
        try:
            return _iso(received - (sent - original))
        except (OverflowError, ValueError):
            pass  # absurd clocks (year 1 or 9999): take the producer's word below
    if original is not None:
        return _iso(original)
    return _iso(received) if received is not None else None


def _missing(event: Mapping[str, Any], key: str) -> bool:
    value = event.get(key)
    return value is None or value == ""


def complete_event(
    event: dict[str, Any], event_type: str | None, batch_fields: Mapping[str, Any], received_at: str
) -> dict[str, Any]:
    """The event as the pipeline (and a parked retry) sees it; deterministic once ``open`` ran."""
    completed = dict(event)
    if event_type and _missing(completed, "type"):
        completed.pop("type", None)
        completed = {"type": event_type, **completed}  # first, as a producer would write it
    completed.pop("writeKey", None)  # a credential: never forwarded, parked or dead-lettered
    for key in ("context", "integrations"):
        shared = batch_fields.get(key)
        if isinstance(shared, dict) and shared:
            own = completed.get(key)
            if own is None:
                completed[key] = dict(shared)
            elif isinstance(own, dict):
                completed[key] = {**shared, **own}
    context = completed.get("context")
    if completed.get("type") == "identify" and completed.get("traits") is None and isinstance(context, dict):
        # RudderStack's SDKs send identify traits in context.traits only; Segment's spec has them here.
        traits = context.get("traits")
        if isinstance(traits, dict):
            completed["traits"] = dict(traits)
    if _missing(completed, "sentAt") and batch_fields.get("sentAt") is not None:
        completed["sentAt"] = batch_fields["sentAt"]
    if _missing(completed, "messageId"):
        # The idempotency key derives from it: assigned before the first attempt, so that a
        # parked retry of this event is deduplicated by Heap like any redelivery.
        completed["messageId"] = str(uuid.uuid4())
    if _missing(completed, "receivedAt"):
        completed["receivedAt"] = received_at
    if _missing(completed, "timestamp"):
        timestamp = implied_timestamp(completed)
        if timestamp is not None:
            completed["timestamp"] = timestamp
    return completed


def park_bodies(encoded: Sequence[str], limit: int = MAX_PARK_BYTES) -> list[str]:
    """Pack encoded events, in order, in the fewest ``{"batch": [...]}`` bodies of at most ``limit`` bytes."""
    head, tail = '{"batch":[', "]}"
    bodies: list[str] = []
    current: list[str] = []
    size = len(head) + len(tail)
    for text in encoded:
        added = len(text.encode("utf-8")) + (1 if current else 0)
        if current and size + added > limit:
            bodies.append(head + ",".join(current) + tail)
            current, size, added = [], len(head) + len(tail), added - 1
        current.append(text)
        size += added
    if current:
        bodies.append(head + ",".join(current) + tail)
    return bodies


class RetryQueue:
    """Parks events in the main queue, where the SQS consumer delivers them like any other."""

    def __init__(self, sqs_client: Any, queue_url: str | None) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url

    def park(self, events: Sequence[Any]) -> bool:
        """Send the events as few messages; True only when SQS took every one."""
        if not events:
            return True
        if not self.queue_url:
            logger.error("cannot park events: RETRY_QUEUE_URL is not set")
            return False
        ok = True
        for body in park_bodies([sqs_safe_json(e) for e in events]):
            try:
                self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
            except (BotoCoreError, ClientError) as error:
                logger.error("could not park events in the retry queue", extra={"cause": error_code(error)})
                ok = False
        return ok


def _now_iso() -> str:
    return _iso(datetime.now(UTC))


# --------------------------------------------------------------------------- the service
class Ingest:
    """The API's work, with its collaborators injected (the Lambda entry wires the real ones)."""

    def __init__(
        self,
        pipeline_factory: Callable[[], Pipeline],
        retry_queue: RetryQueue,
        dead_letters: DeadLetterWriter,
        write_key: Callable[[], str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], str] = _now_iso,
    ) -> None:
        self.pipeline_factory = pipeline_factory
        self.retry_queue = retry_queue
        self.dead_letters = dead_letters
        self.write_key = write_key
        self.clock = clock
        self.now = now

    def handle(self, event: Mapping[str, Any], remaining_seconds: float | None) -> ApiResponse:
        """``open`` then ``accept``, for callers without a router (tests, tools)."""
        try:
            return self.accept(self.open(event), remaining_seconds)
        except ApiError as error:
            return self.refuse(error)

    def refuse(self, error: ApiError) -> ApiResponse:
        count(f"ApiResponses.{error.status}", 1)
        return error.response()

    # -- before delivery --------------------------------------------------------------------
    def open(self, event: Mapping[str, Any]) -> IngestRequest:
        """Authenticate and read the request; raise ApiError (401/413/400/503) when it cannot go on."""
        method, path = route_of(event)
        if method != "POST" or path not in ROUTE_TYPES:
            raise ApiError(404, ErrorCode.NOT_FOUND, f"no route {method} {path}")
        self.authenticate(header(event, "authorization"))
        raw_size = _raw_size(event)
        if raw_size > MAX_RAW_BYTES:
            raise ApiError(
                413,
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the request body is {raw_size} bytes; the limit is {MAX_RAW_BYTES} bytes as sent",
            )
        try:
            body = http_body_bytes(event, max_bytes=MAX_BODY_BYTES)
        except BodyError as error:
            raise ApiError(400, ErrorCode.INVALID_BODY, str(error)) from None
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(
                413,
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the request body is over {MAX_BODY_BYTES} bytes decompressed; send smaller batches",
            )
        try:
            document = decode_json(body)
        except InvalidJson as error:
            raise ApiError(400, ErrorCode.INVALID_JSON, str(error)) from None
        event_type = ROUTE_TYPES[path]
        events, batch_fields = _events_in(document, path, event_type)
        if len(events) > MAX_EVENTS_PER_REQUEST:
            # Before the size check below: it encodes every event.
            raise ApiError(
                413,
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"the batch holds {len(events)} events; the limit is {MAX_EVENTS_PER_REQUEST} per request;"
                " send smaller batches",
            )
        oversized = [
            Problem(i, "", f"the event is {size} bytes as compact JSON; the limit is {MAX_EVENT_BYTES} bytes")
            for i, size in enumerate(len(compact_json(e).encode("utf-8", "surrogatepass")) for e in events)
            if size > MAX_EVENT_BYTES
        ]
        if oversized:
            raise ApiError(
                413, ErrorCode.PAYLOAD_TOO_LARGE, f"{len(oversized)} event(s) are too large", oversized
            )
        if event_type is not None:
            declared = events[0].get("type")
            if not _missing(events[0], "type") and declared != event_type:
                message = f"{declared!r} contradicts the route {path}, which takes {event_type} events"
                raise invalid_events([Problem(0, "type", message)])
        received_at = self.now()
        completed = [
            complete_event(e, event_type, batch_fields, received_at) if isinstance(e, dict) else e
            for e in events
        ]
        context = event.get("requestContext") or {}
        request_id = str(context.get("requestId") or uuid.uuid4())
        return IngestRequest(request_id, path, completed, received_at)

    def authenticate(self, authorization: str | None) -> None:
        if self.write_key is None:
            return  # no write key configured: API Gateway authenticates (IAM) or nobody does
        try:
            expected = self.write_key()
        except Exception as error:
            logger.error("cannot read the write key; answering 503", extra={"cause": type(error).__name__})
            count("ConfigurationFaults", 1)
            raise unavailable("the write key cannot be verified right now; retry later") from None
        user = basic_auth_user(authorization)
        if user is None or not hmac.compare_digest(_digest(user), _digest(expected)):
            reason = "missing" if not authorization else "invalid"
            raise ApiError(
                401,
                ErrorCode.UNAUTHORIZED,
                f"{reason} credentials: send HTTP Basic auth with the write key as the user name",
                headers={"WWW-Authenticate": AUTH_REALM},
            )

    # -- delivery ---------------------------------------------------------------------------
    def accept(self, request: IngestRequest, remaining_seconds: float | None) -> ApiResponse:
        """Prepare, deliver within the time left, and translate the outcomes into the answer."""
        events = request.events
        count("EventsReceived", len(events))
        try:
            pipeline = self.pipeline_factory()
        except Exception as error:  # SSM down, app ID missing, playbook unusable
            logger.error(
                "configuration fault: events are parked for the consumer", extra={"cause": str(error)}
            )
            count("ConfigurationFaults", 1)
            return self._park_unchecked(request, f"configuration fault: {error}")
        try:
            prepared = pipeline.prepare(events)
            # Invalid events refuse the request whole (the producer holds them and can fix them).
            # An event the playbook has no mapping for (alias) is valid: it must not sink its
            # batch, so it is answered as rejected, with its reason, and kept in the DLQ.
            invalid = {
                i
                for i, o in enumerate(prepared.decided)
                if o is not None and o.error_class is not ErrorClass.UNSUPPORTED
            }
            if invalid:
                return self.refuse(invalid_events([p for p in prepared.problems if p.index in invalid]))
            deadline = None if remaining_seconds is None else self.clock() + max(0.0, remaining_seconds)
            outcomes = pipeline.deliver(prepared, deadline=deadline)
        except Exception:  # a bug must not lose events: the consumer will try them again
            logger.exception("preparing or delivering the events failed unexpectedly; parking them")
            return self._park_unchecked(request, "internal error while preparing or delivering the events")
        return self._settle(request, outcomes)

    def _park_unchecked(self, request: IngestRequest, cause: str) -> ApiResponse:
        """Without a pipeline: refuse what breaks the event spec, park the rest for the consumer."""
        problems = problems_in(request.events)
        if problems:
            return self.refuse(invalid_events(problems))
        if not self.retry_queue.park(request.events):
            return self.refuse(unavailable(f"events could be neither delivered nor parked ({cause})"))
        logger.warning("events parked", extra={"events": len(request.events), "first_cause": cause})
        count("EventsParked", len(request.events))
        count("ApiResponses.202", 1)
        return ApiResponse(202, Accepted(delivered=0, parked=len(request.events)).model_dump(mode="json"))

    def _unavailable(self, events: int, first_cause: str, delivered: int) -> ApiResponse:
        logger.error(
            "events could be neither delivered nor parked; answering 503",
            extra={"events": events, "first_cause": first_cause},
        )
        count("EventsDelivered", delivered)
        return self.refuse(
            unavailable(
                f"{events} event(s) could be neither delivered nor parked ({first_cause});"
                " resend the request (events already delivered are deduplicated by messageId)"
            )
        )

    def _settle(self, request: IngestRequest, outcomes: Sequence[Outcome]) -> ApiResponse:
        """Each event counted once: delivered, or rejected (its letter is in the DLQ), or parked."""
        events = request.events
        delivered = sum(1 for o in outcomes if o.fate is Fate.DELIVERED)
        refused = [(i, o) for i, o in enumerate(outcomes) if o.fate is Fate.REJECTED]
        to_park = [i for i, o in enumerate(outcomes) if o.fate is Fate.RETRYABLE]
        # Log lines and the 503 message take the outcome's reason: its detail (Heap's own text)
        # may echo event data, and goes only to the letter and the ``rejected`` listing.
        first_cause = next((outcomes[i].reason for i in to_park), "")

        # Park first: if that fails the answer is 503 and the client resends the whole request,
        # so no letter may have been written yet (a resend would write it again, under the new
        # request's id, where redrive could not tell the twins apart).
        if to_park and not self.retry_queue.park([events[i] for i in to_park]):
            return self._unavailable(len(to_park), first_cause, delivered)
        letters = [
            DeadLetter(
                compact_json(events[i]),
                o.error_class,
                o.full_reason,
                request.request_id,
                request.received_at,
                "api",
                letter_id=f"{request.request_id}:{i}",
            )
            for i, o in refused
        ]
        written = self.dead_letters.write(letters) if letters else []
        rejected: list[tuple[int, Outcome]] = []
        unwritten: list[int] = []
        for (i, o), ok in zip(refused, written, strict=True):
            if ok:
                rejected.append((i, o))
                logger.warning(
                    "event parked in the DLQ",
                    extra={
                        "message_id": _message_id(events[i]),
                        "error_class": str(o.error_class),
                        "reason": o.reason,
                    },
                )
                count(f"EventsRejected.{o.error_class}", 1)
            else:
                # The DLQ refused it: the consumer will meet the same refusal and dead-letter it.
                # It is answered as parked, not as rejected: it is not in the DLQ (yet).
                unwritten.append(i)
                first_cause = first_cause or "dead-letter queue write failed"
        if unwritten and not self.retry_queue.park([events[i] for i in unwritten]):
            # Both queues failing within one request: the resend may write some letters twice
            # (with the new request's LetterId); every event still ends somewhere.
            return self._unavailable(len(to_park) + len(unwritten), first_cause, delivered)
        to_park = sorted(to_park + unwritten)
        if to_park:
            logger.warning(
                "events parked for later delivery", extra={"events": len(to_park), "first_cause": first_cause}
            )
        status = 202 if to_park else 200
        count("EventsDelivered", delivered)
        count("EventsRejected", len(rejected))
        count("DlqWrites", len(rejected))
        count("EventsParked", len(to_park))
        count(f"ApiResponses.{status}", 1)
        answer = Accepted(
            delivered=delivered,
            rejected=[
                RejectedEvent(
                    index=i,
                    messageId=_message_id(events[i]),
                    error=str(o.error_class),
                    reason=o.full_reason[:MAX_REASON_CHARS],
                )
                for i, o in rejected[:MAX_REJECTED_LISTED]
            ],
            parked=len(to_park),
        )
        return ApiResponse(status, answer.model_dump(mode="json"))


def problems_in(events: Sequence[Any]) -> list[Problem]:
    """Spec problems of the events (the messages the rest of the product uses)."""
    problems: list[Problem] = []
    for index, raw in enumerate(events):
        try:
            validate_event(raw, index)
        except InvalidEvent as error:
            problems.extend(error.problems)
    return problems


def _message_id(event: Any) -> str | None:
    value = event.get("messageId") if isinstance(event, dict) else None
    return None if value is None else str(value)


def _events_in(document: Any, path: str, event_type: str | None) -> tuple[list[Any], dict[str, Any]]:
    """The events a route's body carries, and the batch-level fields that apply to them."""
    if event_type is not None:
        if not isinstance(document, dict):
            raise ApiError(
                400,
                ErrorCode.INVALID_BODY,
                f"the body of {path} must be a JSON object (one {event_type} call), not {_kind(document)}",
            )
        return [document], {}
    if not isinstance(document, dict) or not isinstance(document.get("batch"), list):
        raise ApiError(
            400, ErrorCode.INVALID_BODY, 'the body of /v1/batch must be a JSON object {"batch": [events...]}'
        )
    batch_fields = {k: document[k] for k in ("context", "integrations", "sentAt") if k in document}
    return list(document["batch"]), batch_fields


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
