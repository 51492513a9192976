"""The ingest API's contract, as the function runs it: limits, the request and answer models,
the error answers, each status and what it means, and each route's metadata.

The routes in ``heap_forwarder.entry.api`` are declared from it, so it ships with the function;
the OpenAPI document built from those routes (``heap_forwarder_tools.openapi``) reads the same
names. docs/api.md is the contract in prose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple, get_args

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, Field, create_model

from heap_forwarder.models import (
    AliasEvent,
    Batch,
    GroupEvent,
    IdentifyEvent,
    InvalidEvent,
    PageEvent,
    Problem,
    ScreenEvent,
    TrackEvent,
    validate_event,
)

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


def _call(event: type[BaseModel]) -> type[BaseModel]:
    """A single-event route's body: the event's model, with ``type`` implied by the route."""
    name = event.__name__.removesuffix("Event")
    implied: Any = event.model_fields["type"].annotation  # Literal["track"], ...
    article = "An" if name[0] in "AEIOU" else "A"
    return create_model(
        f"{name}Call",
        __base__=event,
        __doc__=f"{article} {name.lower()} call; ``type`` may be left out (the route implies it).",
        __module__=__name__,
        type=(implied, get_args(implied)[0]),
    )


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
            problems=[ProblemDetail(index=p.index, field=p.field, message=p.full_message) for p in problems],
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


def problems_in(events: Sequence[Any]) -> list[Problem]:
    """The ``problems`` of a 400 ``invalid_events`` for events that break the event spec: the
    wording of ``models.validate_event``, the validator the pipeline uses too."""
    problems: list[Problem] = []
    for index, raw in enumerate(events):
        try:
            validate_event(raw, index)
        except InvalidEvent as error:
            problems.extend(error.problems)
    return problems


# --------------------------------------------------------------------------- the routes

TAG = "tracking"
SECURITY_SCHEME = "writeKey"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
JSON = "application/json"


def _json(model: type[Any], description: str, headers: dict[str, Any] | None = None) -> OpenAPIResponse:
    response: OpenAPIResponse = {"description": description, "content": {JSON: {"model": model}}}
    if headers:
        response["headers"] = headers
    return response


RESPONSES: dict[int, OpenAPIResponse] = {
    200: _json(
        Accepted,
        "Delivered to Heap. Events Heap refused after delivery began are listed in `rejected`, with the"
        " reason, and written to the dead-letter queue.",
    ),
    202: _json(
        Accepted,
        "Heap is unavailable (or the time ran out): the events not delivered are parked in the retry"
        " queue and the queue consumer delivers them later.",
    ),
    400: _json(
        ErrorBody,
        "The body is not JSON, is not shaped as the route expects, or at least one event is invalid"
        " (spec, mapping or Heap rules): the whole request is refused and nothing is sent."
        " `problems` names each event's index, field and reason.",
    ),
    401: _json(
        ErrorBody,
        "Missing or wrong write key.",
        {"WWW-Authenticate": {"description": "The Basic auth challenge.", "schema": {"type": "string"}}},
    ),
    413: _json(
        ErrorBody,
        f"Too large: more than {MAX_RAW_BYTES} bytes as sent, {MAX_BODY_BYTES} bytes decompressed,"
        f" more than {MAX_EVENTS_PER_REQUEST} events (checked first, before any event is read),"
        f" or an event over {MAX_EVENT_BYTES} bytes (listed in `problems`).",
    ),
    503: _json(
        ErrorBody,
        "The events could be neither delivered nor parked (or the write key cannot be verified now,"
        " or the API is in WriteKey mode with no write key configured): resend the request later."
        " Events already delivered are deduplicated by `messageId`.",
        {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
}


class Route(NamedTuple):
    """What one route declares: its operation, its summary, its body's model and description."""

    operation_id: str
    summary: str
    call: type[BaseModel]
    body: str

    def options(self) -> dict[str, Any]:
        """The keyword arguments of the resolver's ``post`` for this route."""
        return {
            "operation_id": self.operation_id,
            "summary": self.summary,
            "responses": RESPONSES,
            "security": SECURITY,
            "tags": [TAG],
        }


ROUTES: dict[str, Route] = {
    "/v1/track": Route("track", "Record an action a user performed", _call(TrackEvent), "One track call."),
    "/v1/page": Route("page", "Record a page view", _call(PageEvent), "One page call."),
    "/v1/screen": Route("screen", "Record a mobile screen view", _call(ScreenEvent), "One screen call."),
    "/v1/identify": Route(
        "identify", "Record who a user is (traits)", _call(IdentifyEvent), "One identify call."
    ),
    "/v1/group": Route(
        "group", "Record a user's account (group traits)", _call(GroupEvent), "One group call."
    ),
    "/v1/alias": Route(
        "alias",
        "Merge two identities (refused: Heap's server-side API cannot merge identities)",
        _call(AliasEvent),
        "One alias call.",
    ),
    "/v1/batch": Route(
        "batch",
        "Send many calls of any type at once",
        BatchCall,
        '{"batch": [calls...]}, each call with its type.',
    ),
}
