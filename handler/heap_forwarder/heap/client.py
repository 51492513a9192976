"""Delivery of Heap items over HTTP, bound to one app: planning, sending, isolating. No AWS here.

``HeapClient.deliver`` turns a list of :class:`HeapItem` into the fewest requests Heap allows
(``heap/plan.py``), sends them with retries within the limiter, budget and deadline
(``heap/sender.py``, each attempt over ``heap/transport.py`` with its hard time limit), isolates
the items Heap refused (``heap/isolation.py``), and returns one :class:`Outcome` per item. It
never raises for HTTP trouble: every item ends delivered, rejected (Heap refused that very item,
sent alone) or retryable (with the error class and cause), and the caller's queue does the
long-haul retrying. The client is bound to its request fields (the app ID) when built. See
docs/heap-delivery.md for the response-code table and the policies.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3

from heap_forwarder import defaults
from heap_forwarder.heap.answers import Answer, Kind
from heap_forwarder.heap.isolation import Isolator
from heap_forwarder.heap.items import HeapItem
from heap_forwarder.heap.limiter import RateLimiter
from heap_forwarder.heap.plan import MAX_REQUEST_BYTES, Batch, DeliveryPlan, plan_delivery
from heap_forwarder.heap.sender import RetryPolicy, Sender, Window
from heap_forwarder.heap.transport import RequestRecord, Transport
from heap_forwarder.outcome import DELIVERED, ErrorClass, Outcome, retryable

__all__ = ["DeliverySettings", "HeapClient"]

logger = logging.getLogger(__name__)

HEAP_BULK_CAP = defaults.HEAP_BULK_CAP  # Heap's most events / users / accounts per bulk request
SINGLE_REQUEST_CONCURRENCY = 4  # requests of endpoints without a bulk form sent at once


@dataclass(frozen=True)
class DeliverySettings:
    base_url: str = defaults.HEAP_API_URL  # EU: defaults.HEAP_BASE_URLS["eu"]
    connect_timeout_s: float = defaults.HEAP_CONNECT_TIMEOUT_SECONDS
    read_timeout_s: float = defaults.HEAP_READ_TIMEOUT_SECONDS
    max_items_per_request: int = HEAP_BULK_CAP  # Heap's bulk cap; configurable lower
    max_request_bytes: int = MAX_REQUEST_BYTES  # lets 1000 events of ~1 KB travel in one request
    # In-process retries never wait past this (SQS redelivery is the long haul).
    retry_budget_s: float = defaults.RETRY_BUDGET_SECONDS
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 2.0
    # Requests one ``deliver`` call may spend isolating refused items (beyond the first send of
    # each request). Past it the undecided items are retryable ("isolation unfinished").
    max_isolation_requests: int = 1000

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if not 1 <= self.max_items_per_request <= HEAP_BULK_CAP:
            raise ValueError(f"max_items_per_request must be in 1..{HEAP_BULK_CAP}")
        if self.max_request_bytes < 64:
            raise ValueError("max_request_bytes is too small to hold any request")
        for name in ("connect_timeout_s", "read_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in ("retry_budget_s", "backoff_base_s", "backoff_cap_s", "max_isolation_requests"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def request_time_s(self) -> float:
        """The hard limit on one request, connection to last byte (the watchdog enforces it)."""
        return self.connect_timeout_s + self.read_timeout_s

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.request_time_s, self.retry_budget_s, self.backoff_base_s, self.backoff_cap_s)


DEFAULT_SETTINGS = DeliverySettings()


class HeapClient:
    """Heap for one app: ``request_fields`` (``{"app_id": ...}``) go into every request body."""

    def __init__(
        self,
        settings: DeliverySettings = DEFAULT_SETTINGS,
        *,
        request_fields: Mapping[str, Any],
        limiter: RateLimiter | None = None,
        pool: urllib3.PoolManager | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        observer: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.settings = settings
        self.request_fields: Mapping[str, Any] = dict(request_fields)
        self.limiter = limiter
        self.transport = Transport(
            settings.base_url,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            pool=pool,
            observer=observer,
        )
        app_id = self.request_fields.get("app_id")
        # Heap's texts may echo the app ID, which must stay out of logs and DLQ attributes.
        self._secret = app_id if isinstance(app_id, str) and len(app_id) >= 4 else None
        rng = rng if rng is not None else random.Random()
        self.sender = Sender(self.transport, settings.retry_policy, clock, sleep, rng, limiter, self._redact)

    def deliver(self, items: Sequence[HeapItem], *, deadline: float | None = None) -> list[Outcome]:
        """Send ``items``; return one outcome per item, aligned by index.

        ``deadline`` is an absolute time on the client's clock; None: only the retry budget applies.
        """
        outcomes = _Outcomes(len(items))
        window = self.sender.window(deadline)
        plan: DeliveryPlan | None = None
        try:
            plan = plan_delivery(items, self.request_fields, self.settings)
            for i, refusal in plan.refused.items():
                outcomes.settle([i], refusal)
            _Run(
                plan,
                window,
                Isolator(self.settings.max_isolation_requests, outcomes.settle),
                outcomes,
                self.transport,
            ).run()
        except Exception as exc:  # a bug must not lose events: what is unsettled goes back to retry
            logger.exception("heap delivery failed unexpectedly")
            outcomes.settle(
                range(len(items)), retryable(ErrorClass.TRANSIENT, f"internal error in Heap client: {exc!r}")
            )
        return outcomes.finish(plan.twins if plan is not None else {})

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "<app_id>") if self._secret else text


class _Outcomes:
    """One ``deliver`` call's outcomes so far: the first settled for an item stands."""

    def __init__(self, size: int) -> None:
        self.outcomes: list[Outcome | None] = [None] * size

    def settle(self, indices: Sequence[int], outcome: Outcome) -> None:
        for i in indices:
            if self.outcomes[i] is None:
                self.outcomes[i] = outcome

    def finish(self, twins: Mapping[int, list[int]]) -> list[Outcome]:
        for first, repeats in twins.items():
            for i in repeats:
                self.outcomes[i] = self.outcomes[first]
        lost = retryable(ErrorClass.TRANSIENT, "internal error in Heap client: item left without outcome")
        return [o if o is not None else lost for o in self.outcomes]


class _Run:
    """The planned requests of one ``deliver`` call, sent; refused ones isolated."""

    def __init__(
        self,
        plan: DeliveryPlan,
        window: Window,
        isolator: Isolator,
        outcomes: _Outcomes,
        transport: Transport,
    ) -> None:
        self.plan = plan
        self.window = window
        self.isolator = isolator
        self.outcomes = outcomes
        self.transport = transport

    def run(self) -> None:
        batches = self.plan.batches
        singles = [b for b in batches if b.endpoint.bulk_key is None]
        for batch in batches:
            if batch.endpoint.bulk_key is not None:
                self._run_batch(batch)
        if len(singles) > 1:
            # Identify has no bulk form: one request per item, each a round trip to Heap. Sent a
            # few at a time so that a batch with many identify calls does not spend its Lambda
            # time waiting on them one by one: each sender takes the next request from the
            # shared queue (a stalled one holds up only its own sender) over a connection it
            # keeps for the series.
            waiting = deque(singles)
            senders = min(SINGLE_REQUEST_CONCURRENCY, len(singles))
            with ThreadPoolExecutor(max_workers=senders) as pool:
                for done in [pool.submit(self._run_singles, waiting) for _ in range(senders)]:
                    done.result()
        else:
            for batch in singles:
                self._run_batch(batch)

    def _run_singles(self, waiting: deque[Batch]) -> None:
        with self.transport.holding():
            while True:
                try:
                    batch = waiting.popleft()  # deque: safe to share between threads
                except IndexError:
                    return
                self._run_batch(batch)

    def _run_batch(self, batch: Batch) -> None:
        endpoint, indices = batch
        answer = self.window.send(endpoint, self.plan.body(endpoint, indices), len(indices))
        if answer.kind is Kind.OK:
            self.outcomes.settle(indices, DELIVERED)
        elif answer.kind is Kind.SETTLED:
            self.outcomes.settle(indices, answer.outcome)
        else:

            def send(piece: list[int]) -> Answer:
                return self.window.send(endpoint, self.plan.body(endpoint, piece), len(piece), isolating=True)

            self.isolator.isolate(indices, answer, endpoint.bulk_key, send)
