"""The ingest API's service: an API Gateway request in, the answer out. No Lambda context, no router.

``entry/api.py`` routes each request: ``Ingest.open`` (``open_request`` below) -> the route's model
validates the body -> ``Ingest.accept``.

Opening a request, in order: the route -> 404; the write key (HTTP Basic user name, constant-time
compare) -> 401 (503 when it cannot be read); the body as sent (base64 undone, gzip/deflate
decompressed, size-bounded: ``envelopes.py``) -> 413 / 400; JSON -> 400; the events the route
carries, at most 2,500 of them (counted before any per-event work) -> 413, each at most 32 KB ->
413; a ``type`` that contradicts the route -> 400; then each event is completed
(``inbound.complete_event``). What does not pass is an ``ApiError``; the rest an ``IngestRequest``.

Accepting it: the pipeline prepares every event (validation, mapping, Heap rules); any problem
refuses the whole request (400, nothing sent). Otherwise deliver within the deadline, then
settle: retryable -> parked in the main queue (``edge/parking.py``) as ``{"batch": [...]}``
messages (202) for the SQS consumer; rejected by Heap -> DLQ through the shared settle step
(``edge/letters.py``) and listed in the 200/202 body; neither delivered, dead-lettered nor parked
-> 503 (the client retries). docs/api.md has the contract.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from heap_forwarder.edge.api_contract import (
    AUTH_REALM,
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_EVENTS_PER_REQUEST,
    MAX_RAW_BYTES,
    MAX_REASON_CHARS,
    MAX_REJECTED_LISTED,
    Accepted,
    ApiError,
    ApiResponse,
    ErrorCode,
    RejectedEvent,
    invalid_events,
    unavailable,
)
from heap_forwarder.edge.letters import API, DeadLetterWriter, Refusal, settle
from heap_forwarder.edge.observability import count, logger
from heap_forwarder.edge.parking import RetryQueue, compact_json
from heap_forwarder.envelopes import ROUTE_TYPES, BodyError, header, http_body_bytes
from heap_forwarder.inbound import InvalidJson, Problem, complete_event, decode_json, missing, now_iso
from heap_forwarder.outcome import ErrorClass, Fate, Outcome
from heap_forwarder.pipeline import Pipeline

# ---------------------------------------------------------------------------------------------
# Opening a request: route, write key, body, limits, completion


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


def open_request(
    event: Mapping[str, Any], write_key: Callable[[], str] | None, now: Callable[[], str]
) -> IngestRequest:
    """Authenticate and read the request; raise ApiError (404/401/503/413/400) when it cannot go on."""
    method, path = route_of(event)
    if method != "POST" or path not in ROUTE_TYPES:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no route {method} {path}")
    authenticate(write_key, header(event, "authorization"))
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
        if not missing(events[0], "type") and declared != event_type:
            message = f"{declared!r} contradicts the route {path}, which takes {event_type} events"
            raise invalid_events([Problem(0, "type", message)])
    received_at = now()
    completed = [
        complete_event(e, event_type, batch_fields, received_at) if isinstance(e, dict) else e for e in events
    ]
    context = event.get("requestContext") or {}
    request_id = str(context.get("requestId") or uuid.uuid4())
    return IngestRequest(request_id, path, completed, received_at)


def authenticate(write_key: Callable[[], str] | None, authorization: str | None) -> None:
    """Nothing to check without a write key (IAM mode); 503 when it cannot be read, 401 when wrong."""
    if write_key is None:
        return  # no write key configured: API Gateway authenticates (IAM) or nobody does
    try:
        expected = write_key()
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


# ---------------------------------------------------------------------------------------------
# The service: open, then accept (prepare, deliver, settle)


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
        now: Callable[[], str] = now_iso,
    ) -> None:
        self.pipeline_factory = pipeline_factory
        self.retry_queue = retry_queue
        self.dead_letters = dead_letters
        self.write_key = write_key
        self.clock = clock
        self.now = now

    def refuse(self, error: ApiError) -> ApiResponse:
        count(f"ApiResponses.{error.status}", 1)
        return error.response()

    def open(self, event: Mapping[str, Any]) -> IngestRequest:
        """Authenticate and read the request; raise ApiError (404/401/503/413/400) when it cannot go on."""
        return open_request(event, self.write_key, self.now)

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
        """Without a pipeline: park every event for the consumer. The route's model has already
        held each event to the event spec (the same models as ``models.validate_event``)."""
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
        refusals = [
            Refusal(
                compact_json(events[i]),
                o,
                f"{request.request_id}:{i}",
                request.request_id,
                request.received_at,
                _message_id(events[i]),
            )
            for i, o in refused
        ]
        written = settle(self.dead_letters, refusals, API)
        rejected = [(i, o) for (i, o), ok in zip(refused, written, strict=True) if ok]
        # A letter the DLQ refused: the consumer will meet the same refusal and dead-letter it.
        # It is answered as parked, not as rejected: it is not in the DLQ (yet).
        unwritten = [i for (i, _), ok in zip(refused, written, strict=True) if not ok]
        if unwritten:
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


def _message_id(event: Any) -> str | None:
    value = event.get("messageId") if isinstance(event, dict) else None
    return None if value is None else str(value)
