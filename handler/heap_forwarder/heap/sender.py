"""Sending one request to Heap until it is answered: retries within the limiter, budget and deadline.

A :class:`Sender` is how a client sends; each ``deliver`` call opens a :class:`Window` on it:
its retry budget starts then, and after a configuration fault (Heap refusing the app ID, the
URL...) it sends nothing more. Each attempt goes through the transport (``Transport.post``:
one HTTP attempt with its hard limit); the
same bytes are resent on transient failures, with jittered backoff and ``Retry-After``. What
Heap's final answer means is read in ``heap/answers.py``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NamedTuple, Protocol

import pydantic_core

from heap_forwarder.heap.answers import (
    OK,
    TRANSIENT_STATUSES,
    Answer,
    classify,
    give_up,
    snippet,
    status_cause,
)
from heap_forwarder.heap.items import Endpoint
from heap_forwarder.heap.limiter import RateLimiter
from heap_forwarder.heap.transport import MAX_ANSWER_BYTES, Response
from heap_forwarder.outcome import ErrorClass

__all__ = ["RetryPolicy", "Sender", "Transport", "Window", "parse_retry_after"]

logger = logging.getLogger(__name__)


class Transport(Protocol):
    """One HTTP attempt (``heap.transport.Transport``)."""

    def post(
        self, endpoint: Endpoint, body: bytes, n_items: int, limit_s: float, *, isolating: bool = False
    ) -> Response: ...


class RetryPolicy(NamedTuple):
    request_time_s: float  # the hard limit on one attempt (connect + read timeouts)
    retry_budget_s: float  # no retry wait reaches past the window's start + this
    backoff_base_s: float
    backoff_cap_s: float


@dataclass(frozen=True)
class Sender:
    """How a client sends: its transport, retry policy, time, jitter, pace and redaction."""

    transport: Transport
    policy: RetryPolicy
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    limiter: RateLimiter | None = None
    redact: Callable[[str], str] = str  # Heap's texts may echo the app ID

    def window(self, deadline: float | None = None) -> Window:
        """A window for one ``deliver`` call: its retry budget starts now.

        ``deadline``: an absolute time on ``clock``; None: only the retry budget applies.
        """
        return Window(self, deadline)


class Window:
    """One ``deliver`` call's sending: its budget and deadline; closed by a configuration fault."""

    def __init__(self, sender: Sender, deadline: float | None) -> None:
        self.sender = sender
        self.deadline = deadline
        self.budget_end = sender.clock() + sender.policy.retry_budget_s
        self.config_cause: str | None = None  # set by the first configuration fault

    def send(self, endpoint: Endpoint, body: bytes, n_items: int, *, isolating: bool = False) -> Answer:
        """Send one request, retrying transient failures with the same bytes within the limits."""
        if self.config_cause is not None:
            return give_up(
                ErrorClass.CONFIG_FAULT, f"not sent after a configuration fault: {self.config_cause}"
            )
        answer = self._attempts(endpoint, body, n_items, isolating)
        if answer.config_fault and self.config_cause is None:
            # Heap is misconfigured for this app: the rest of this call is not sent either.
            self.config_cause = answer.outcome.reason
        return answer

    def _attempts(self, endpoint: Endpoint, body: bytes, n_items: int, isolating: bool) -> Answer:
        sender = self.sender
        request_time = sender.policy.request_time_s
        deadline = self.deadline
        # The latest time a request may start and still end (hard limit) before the deadline.
        start_by = None if deadline is None else deadline - request_time
        tokens = n_items if endpoint.bulk_key is not None else 1
        attempt = 0
        last_cause = last_detail = ""
        while True:
            if start_by is not None and sender.clock() > start_by:
                if attempt == 0:
                    reason = f"deadline: no time left to send (a request may take {request_time:g}s)"
                    return give_up(ErrorClass.DEADLINE, reason)
                return _deadline_before_retry(last_cause, last_detail)
            if sender.limiter is not None:
                wait_until = self.budget_end if start_by is None else min(start_by, self.budget_end)
                if not sender.limiter.acquire(tokens, wait_until):
                    return give_up(ErrorClass.DEADLINE, "rate limit budget exhausted before deadline")
            limit = request_time
            if deadline is not None:
                limit = max(0.001, min(limit, deadline - sender.clock()))
            response = sender.transport.post(endpoint, body, n_items, limit, isolating=isolating)
            status = response.status
            if response.config_fault:
                return give_up(ErrorClass.CONFIG_FAULT, response.cause)
            if status is not None and 200 <= status < 300:
                ok = not response.cut and _is_success_body(response.data)
                return OK if ok else _unexpected_success(response)
            text = sender.redact(response.text) if status is not None else ""
            if status is not None and status not in TRANSIENT_STATUSES:
                return classify(status, text)
            last_cause = response.cause or status_cause(status, text)
            last_detail = "" if response.cause else f"{last_cause}: {snippet(text)}"
            wait = self._backoff(attempt)
            retry_after = parse_retry_after(response.retry_after)
            if retry_after is not None:
                wait = max(wait, retry_after)
            resume_at = sender.clock() + wait
            if start_by is not None and start_by < self.budget_end and resume_at > start_by:
                return _deadline_before_retry(last_cause, last_detail)
            if resume_at > self.budget_end:
                return give_up(ErrorClass.TRANSIENT, last_cause, last_detail)
            logger.info("retrying %s in %.3fs after: %s", endpoint.value, wait, last_cause)
            sender.sleep(wait)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        policy = self.sender.policy
        ceiling = min(policy.backoff_cap_s, policy.backoff_base_s * 2.0 ** min(attempt, 60))
        return self.sender.rng.uniform(0.0, ceiling)


def _deadline_before_retry(last_cause: str, last_detail: str) -> Answer:
    reason = f"deadline reached before retrying; last: {last_cause}"
    return give_up(ErrorClass.DEADLINE, reason, last_detail and f"{reason} ({last_detail})")


def _unexpected_success(response: Response) -> Answer:
    # A 2xx that is neither empty nor JSON did not come from Heap's API as documented: a
    # proxy, a captive portal or a wrong HEAP_API_URL answered. Not "delivered": left to the
    # queue's redelivery (idempotency keys make a resend harmless if Heap did store it).
    kind = response.content_type.split(";")[0].strip() or "no content type"
    what = (
        f"a body over {MAX_ANSWER_BYTES} bytes ({kind})"
        if response.cut
        else f"a body that is not JSON ({kind}, {len(response.data)} bytes)"
    )
    return give_up(
        ErrorClass.TRANSIENT,
        f"HTTP {response.status} with {what}: something other than Heap's API may have answered",
    )


def _is_success_body(data: bytes) -> bool:
    if not data.strip():
        return True
    try:
        pydantic_core.from_json(data)
    except ValueError:
        return False
    return True


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds, fractional allowed, or HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
