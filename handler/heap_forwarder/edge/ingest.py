"""The ingest API's service: an opened request in, the answer out. No Lambda context, no router.

``entry/api.py`` routes each request: ``Ingest.open`` (``edge/api_request.py``: route, write key,
body, limits, Segment completion) -> the route's model validates the body -> ``Ingest.accept``:
the pipeline prepares every event (validation, mapping, Heap rules); any problem refuses the
whole request (400, nothing sent). Otherwise deliver within the deadline, then settle: retryable
-> parked in the main queue (``edge/parking.py``) as ``{"batch": [...]}`` messages (202) for the
SQS consumer; rejected by Heap -> DLQ through the shared settle step (``edge/letters.py``) and
listed in the 200/202 body; neither delivered, dead-lettered nor parked -> 503 (the client
retries). docs/api.md has the contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from heap_forwarder.edge.api_contract import (
    MAX_REASON_CHARS,
    MAX_REJECTED_LISTED,
    Accepted,
    ApiError,
    ApiResponse,
    RejectedEvent,
    invalid_events,
    unavailable,
)
from heap_forwarder.edge.api_request import IngestRequest, open_request
from heap_forwarder.edge.letters import API, DeadLetterWriter, Refusal, settle
from heap_forwarder.edge.observability import count, logger
from heap_forwarder.edge.parking import RetryQueue, compact_json
from heap_forwarder.inbound import now_iso
from heap_forwarder.outcome import ErrorClass, Fate, Outcome
from heap_forwarder.pipeline import Pipeline


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
