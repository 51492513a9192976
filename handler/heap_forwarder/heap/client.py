"""Delivery of Heap items over HTTP: batching, retries, isolation of bad items. No AWS here.

``HeapClient.deliver`` turns a list of :class:`HeapItem` into the fewest requests Heap allows,
sends them, and returns one :class:`Outcome` per item. It never raises for HTTP trouble:
every item ends delivered, rejected (Heap refused that very item) or retryable (with the
error class and cause), and the caller's queue does the long-haul retrying.
See docs/heap-delivery.md for the response-code table and the policies.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, NamedTuple

import pydantic_core
import urllib3

from heap_forwarder import __version__
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.limiter import RateLimiter
from heap_forwarder.outcome import DELIVERED, ErrorClass, Outcome, rejected, retryable

__all__ = [
    "DeliverySettings",
    "HeapClient",
    "PlannedRequest",
    "RequestRecord",
    "parse_retry_after",
    "plan_requests",
    "shared_pool",
]

logger = logging.getLogger(__name__)

HEAP_BULK_CAP = 1000  # Heap's documented maximum of events / users / accounts per bulk request
_SNIPPET = 200  # characters of a response body quoted in a retryable cause
_REJECTION_TEXT = 1000  # characters of Heap's text kept in a rejection reason
_TRANSIENT_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600)) - {501}
_CONFIG_STATUSES = frozenset({401, 403, 404, 501})
_SPLIT_STATUSES = frozenset({400, 413})
_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": f"heap-forwarder/{__version__}",
}


@dataclass(frozen=True)
class DeliverySettings:
    base_url: str = "https://heapanalytics.com"  # EU: https://c.eu.heap-api.com
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 5.0
    max_items_per_request: int = HEAP_BULK_CAP  # Heap's bulk cap; configurable lower
    max_request_bytes: int = 3_000_000  # lets 1000 events of ~1 KB travel in one request
    retry_budget_s: float = 10.0  # in-process retries never wait past this (SQS redelivery is the long haul)
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 2.0

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
        for name in ("retry_budget_s", "backoff_base_s", "backoff_cap_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


DEFAULT_SETTINGS = DeliverySettings()


class RequestRecord(NamedTuple):
    """One HTTP attempt, handed to the client's observer (for metrics)."""

    endpoint: Endpoint
    status: int | None  # None: no response (timeout, connection error)
    items: int
    seconds: float
    error: str | None  # None on 2xx


# One pool per process: Lambda keeps module globals between invocations, so TLS sessions and
# keep-alive connections survive. urllib3 must not retry on its own: the client owns the policy
# (and the deadline), and a silent urllib3 retry would be invisible to it.
SINGLE_REQUEST_CONCURRENCY = 4  # requests of endpoints without a bulk form sent at once
# Connections kept per host: the pipeline's streamed bulk requests (up to 4 in flight, one of
# them the last delivery, whose identify calls then go 4 at a time) never need more than 8.
# block: a thread past that waits for a free connection (at most the connect timeout, see
# _post) rather than open one only to throw it away.
POOL_CONNECTIONS = 8
_POOL = urllib3.PoolManager(
    num_pools=4, maxsize=POOL_CONNECTIONS, block=True, cert_reqs="CERT_REQUIRED", retries=False
)


def shared_pool() -> urllib3.PoolManager:
    return _POOL


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


class PlannedRequest(NamedTuple):
    """A request as the client first sends it (before any retry or split), for previews."""

    endpoint: Endpoint
    indices: tuple[int, ...]  # positions of its items in the input
    data: bytes  # the exact body

    def body(self) -> dict[str, Any]:
        document: dict[str, Any] = pydantic_core.from_json(self.data)
        return document


def plan_requests(
    items: Sequence[HeapItem],
    request_fields: Mapping[str, Any],
    settings: DeliverySettings = DEFAULT_SETTINGS,
) -> list[PlannedRequest]:
    """The requests ``deliver`` would start with, without sending anything.

    Items that would be rejected before sending (too large alone, not JSON-encodable) are in none.
    """
    call = _Delivery(HeapClient(settings), items, request_fields, None)
    return [
        PlannedRequest(plan.endpoint, tuple(plan.indices), call.body(plan.indices, plan.prefix, plan.suffix))
        for plan in call.plan()
    ]


class _Plan(NamedTuple):
    endpoint: Endpoint
    indices: list[int]
    prefix: bytes  # the body up to the bulk array's first item (empty for identify)
    suffix: bytes


class _Kind(Enum):
    OK = "ok"  # 2xx
    SPLIT = "split"  # 400/413 that may be narrowed to some items
    SETTLED = "settled"  # an outcome for every item of the request (give-up or config fault)


class _Result(NamedTuple):
    kind: _Kind
    status: int | None = None
    text: str = ""
    outcome: Outcome = DELIVERED


_OK = _Result(_Kind.OK)


class _Response(NamedTuple):
    status: int | None
    text: str = ""
    retry_after: str | None = None
    cause: str = ""  # filled when something went wrong
    config_fault: bool = False  # the URL itself is unusable


class HeapClient:
    def __init__(
        self,
        settings: DeliverySettings = DEFAULT_SETTINGS,
        *,
        limiter: RateLimiter | None = None,
        pool: urllib3.PoolManager | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        observer: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self._pool = pool if pool is not None else _POOL
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._observer = observer
        self._timeout = urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s)
        self._base_url = settings.base_url.rstrip("/")

    def deliver(
        self,
        items: Sequence[HeapItem],
        request_fields: Mapping[str, Any],
        *,
        deadline: float | None = None,
    ) -> list[Outcome]:
        """Send ``items``; return one outcome per item, aligned by index.

        ``request_fields`` (e.g. ``{"app_id": ...}``) go into every request body. ``deadline``
        is an absolute time on the client's clock; None: only the retry budget applies.
        """
        call = _Delivery(self, items, request_fields, deadline)
        try:
            call.run()
        except Exception as exc:  # a bug must not lose events: what is unsettled goes back to retry
            logger.exception("heap delivery failed unexpectedly")
            call.settle_rest(retryable(ErrorClass.TRANSIENT, f"internal error in Heap client: {exc!r}"))
        return call.finish()

    # -- one HTTP attempt -------------------------------------------------------------------

    def _post(self, endpoint: Endpoint, body: bytes, n_items: int) -> _Response:
        started = time.perf_counter()
        try:
            raw = self._pool.request(
                "POST",
                self._base_url + endpoint.value,
                body=body,
                headers=_HEADERS,
                timeout=self._timeout,
                # Waiting for a pooled connection counts against the deadline too: bounded, and
                # a full pool is then a transient error like a refused connection.
                pool_timeout=self.settings.connect_timeout_s,
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.LocationValueError as exc:
            response = _Response(None, cause=f"invalid HEAP_API_URL: {exc}", config_fault=True)
        except urllib3.exceptions.NewConnectionError as exc:  # subclasses ConnectTimeoutError: test first
            response = _Response(None, cause=_connection_cause(exc))
        except urllib3.exceptions.ConnectTimeoutError:
            response = _Response(None, cause=f"connect timeout after {self.settings.connect_timeout_s}s")
        except urllib3.exceptions.TimeoutError:
            response = _Response(None, cause=f"timeout after {self.settings.read_timeout_s}s")
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            response = _Response(None, cause=_connection_cause(exc))
        else:
            text = raw.data.decode("utf-8", errors="replace")
            response = _Response(raw.status, text, raw.headers.get("Retry-After"))
        seconds = time.perf_counter() - started
        if self._observer is not None:
            ok = response.status is not None and 200 <= response.status < 300
            error = None if ok else (response.cause or f"HTTP {response.status}")
            try:
                self._observer(RequestRecord(endpoint, response.status, n_items, seconds, error))
            except Exception:  # metrics must never cost an event
                logger.exception("heap client observer failed")
        return response

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.settings.backoff_cap_s, self.settings.backoff_base_s * 2.0 ** min(attempt, 60))
        return self._rng.uniform(0.0, ceiling)


def _connection_cause(exc: BaseException) -> str:
    return f"connection error: {exc}"[:300]


def _snippet(text: str, limit: int = _SNIPPET) -> str:
    text = text.strip()
    return text[:limit] if text else "(empty body)"


class _Delivery:
    """The state of one ``deliver`` call: encoded items, outcomes so far, time limits."""

    def __init__(
        self,
        client: HeapClient,
        items: Sequence[HeapItem],
        request_fields: Mapping[str, Any],
        deadline: float | None,
    ) -> None:
        self.client = client
        self.settings = client.settings
        self.items = items
        self.fields = dict(request_fields)
        self.outcomes: list[Outcome | None] = [None] * len(items)
        self.encoded: list[bytes] = [b""] * len(items)
        self.deadline = deadline
        self.budget_end = client._clock() + self.settings.retry_budget_s
        # A request is only started if it can time out before the deadline.
        self.request_time = self.settings.connect_timeout_s + self.settings.read_timeout_s
        self.config_cause: str | None = None
        # Identify calls repeated word for word in one delivery are sent once (linking a Heap
        # user to an identity is repeat-safe); the repeats share the first one's outcome.
        self.twins: dict[int, list[int]] = {}
        app_id = self.fields.get("app_id")
        self._secret = app_id if isinstance(app_id, str) and len(app_id) >= 4 else None

    # -- bookkeeping ------------------------------------------------------------------------

    def settle(self, indices: Sequence[int], outcome: Outcome) -> None:
        for i in indices:
            if self.outcomes[i] is None:
                self.outcomes[i] = outcome

    def settle_rest(self, outcome: Outcome) -> None:
        self.settle(range(len(self.items)), outcome)

    def finish(self) -> list[Outcome]:
        for first, repeats in self.twins.items():
            for i in repeats:
                self.outcomes[i] = self.outcomes[first]
        lost = retryable(ErrorClass.TRANSIENT, "internal error in Heap client: item left without outcome")
        return [o if o is not None else lost for o in self.outcomes]

    def redact(self, text: str) -> str:
        # Heap's texts may echo the app ID, which must stay out of logs and DLQ attributes.
        return text.replace(self._secret, "<app_id>") if self._secret else text

    # -- planning ---------------------------------------------------------------------------

    def run(self) -> None:
        plans = self.plan()
        singles = [p for p in plans if p.endpoint.bulk_key is None]
        for plan in plans:
            if plan.endpoint.bulk_key is not None:
                self._run_plan(plan)
        if len(singles) > 1:
            # Identify has no bulk form: one request per item, each a round trip to Heap. Sent a
            # few at a time (the pool keeps that many connections) so that a batch with many
            # identify calls does not spend its Lambda time waiting on them one by one.
            with ThreadPoolExecutor(max_workers=SINGLE_REQUEST_CONCURRENCY) as pool:
                list(pool.map(self._run_plan, singles))
        else:
            for plan in singles:
                self._run_plan(plan)

    def _run_plan(self, plan: _Plan) -> None:
        result = self._send_bulk(plan.endpoint, plan.indices, plan.prefix, plan.suffix)
        self._settle_result(
            plan.endpoint, plan.indices, result, plan.prefix, plan.suffix, alike_checked=False
        )

    def plan(self) -> list[_Plan]:
        """Encode every item once and pack the requests; items that cannot go are settled here."""
        groups: dict[Endpoint, list[int]] = {}
        for i, item in enumerate(self.items):
            groups.setdefault(item.endpoint, []).append(i)
        plans: list[_Plan] = []
        for endpoint, indices in groups.items():
            key = endpoint.bulk_key
            if key is None:
                # No bulk form: one request per item, body = {**request_fields, **item.body}.
                sent: dict[bytes, int] = {}
                for i in indices:
                    if self._encode(i, {**self.fields, **self.items[i].body}) and not self._too_big(
                        i, len(self.encoded[i])
                    ):
                        first = sent.setdefault(self.encoded[i], i)
                        if first != i:
                            self.twins.setdefault(first, []).append(i)
                        else:
                            plans.append(_Plan(endpoint, [i], b"", b""))
            else:
                prefix, suffix = self._envelope(key)
                plans.extend(
                    _Plan(endpoint, chunk, prefix, suffix)
                    for chunk in self._chunks(indices, len(prefix) + len(suffix))
                )
        return plans

    def _encode(self, i: int, body: Mapping[str, Any]) -> bool:
        try:
            self.encoded[i] = pydantic_core.to_json(body)
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            self.settle([i], rejected(ErrorClass.HEAP_RULE, f"item body is not JSON-serialisable: {exc}"))
            return False
        return True

    def _envelope(self, key: str) -> tuple[bytes, bytes]:
        # {**request_fields, key: [...]}, built so that item bytes can be spliced in as they are.
        fields = {k: v for k, v in self.fields.items() if k != key}
        head = pydantic_core.to_json(fields)[:-1]
        prefix = head + (b"," if fields else b"") + pydantic_core.to_json(key) + b":["
        return prefix, b"]}"

    def _too_big(self, i: int, size: int) -> bool:
        if size <= self.settings.max_request_bytes:
            return False
        reason = f"item makes a {size}-byte request; the cap is {self.settings.max_request_bytes} bytes"
        self.settle([i], rejected(ErrorClass.HEAP_RULE, reason))
        return True

    def _chunks(self, indices: list[int], overhead: int) -> list[list[int]]:
        """Greedy, order-keeping packing: the fewest contiguous requests within both caps."""
        chunks: list[list[int]] = []
        current: list[int] = []
        size = overhead
        for i in indices:
            if not self._encode(i, self.items[i].body):
                continue
            item_size = len(self.encoded[i])
            if self._too_big(i, overhead + item_size):
                continue
            added = item_size + (1 if current else 0)
            if current and (
                len(current) >= self.settings.max_items_per_request
                or size + added > self.settings.max_request_bytes
            ):
                chunks.append(current)
                current, size, added = [], overhead, item_size
            current.append(i)
            size += added
        if current:
            chunks.append(current)
        return chunks

    # -- sending ----------------------------------------------------------------------------

    def body(self, indices: list[int], prefix: bytes, suffix: bytes) -> bytes:
        # Identify plans have an empty envelope: their one encoded item is the whole body.
        return prefix + b",".join(self.encoded[i] for i in indices) + suffix

    def _send_bulk(self, endpoint: Endpoint, indices: list[int], prefix: bytes, suffix: bytes) -> _Result:
        return self._send(endpoint, self.body(indices, prefix, suffix), len(indices))

    def _settle_result(
        self,
        endpoint: Endpoint,
        indices: list[int],
        result: _Result,
        prefix: bytes,
        suffix: bytes,
        *,
        alike_checked: bool,
    ) -> None:
        if result.kind is _Kind.OK:
            self.settle(indices, DELIVERED)
            return
        if result.kind is _Kind.SETTLED:
            self.settle(indices, result.outcome)
            return
        # 400/413: Heap fails the whole request for one bad item, so narrow it down.
        if len(indices) == 1:
            reason = f"HTTP {result.status} from Heap: {_snippet(result.text, _REJECTION_TEXT)}"
            self.settle(indices, rejected(ErrorClass.HEAP_REJECTED, reason))
            return
        half = len(indices) // 2
        left, right = indices[:half], indices[half:]
        left_result = self._send_bulk(endpoint, left, prefix, suffix)
        right_result = self._send_bulk(endpoint, right, prefix, suffix)
        if result.status == 400 and not alike_checked and len(indices) >= 3:
            # "Heap refused every event alike" (a 400 that is really a configuration problem) must
            # not become N rejections. Evidence: both halves, then the first and the last item on
            # their own, all fail with the parent's very text. Checked once per lineage, and not
            # for two items: there the halves are the items, each refused on its own.
            alike_checked = True
            if _same_refusal(left_result, result) and _same_refusal(right_result, result):
                first = left_result if len(left) == 1 else self._send_bulk(endpoint, left[:1], prefix, suffix)
                if _same_refusal(first, result):
                    last = self._send_bulk(endpoint, right[-1:], prefix, suffix)
                    if _same_refusal(last, result):
                        cause = f"Heap refused every event alike: {_snippet(result.text)}"
                        self.config_cause = self.config_cause or cause
                        self.settle(indices, retryable(ErrorClass.CONFIG_FAULT, cause))
                        return
                    self._settle_result(endpoint, right[-1:], last, prefix, suffix, alike_checked=True)
                    right = right[:-1]
                    right_result = self._send_bulk(endpoint, right, prefix, suffix)
                if len(left) > 1:
                    self._settle_result(endpoint, left[:1], first, prefix, suffix, alike_checked=True)
                    left = left[1:]
                    left_result = self._send_bulk(endpoint, left, prefix, suffix)
        self._settle_result(endpoint, left, left_result, prefix, suffix, alike_checked=alike_checked)
        self._settle_result(endpoint, right, right_result, prefix, suffix, alike_checked=alike_checked)

    def _give_up(self, error_class: ErrorClass, reason: str) -> _Result:
        return _Result(_Kind.SETTLED, outcome=retryable(error_class, reason))

    def _config_fault(self, cause: str) -> _Result:
        # Heap is misconfigured for this app: the rest of this call is not sent either.
        self.config_cause = self.config_cause or cause
        return self._give_up(ErrorClass.CONFIG_FAULT, cause)

    def _send(self, endpoint: Endpoint, body: bytes, n_items: int) -> _Result:
        """Send one request, retrying transient failures with the same bytes within the limits."""
        if self.config_cause is not None:
            return self._give_up(
                ErrorClass.CONFIG_FAULT, f"not sent after a configuration fault: {self.config_cause}"
            )
        client = self.client
        # The latest time a request may start and still time out before the deadline.
        start_by = None if self.deadline is None else self.deadline - self.request_time
        tokens = n_items if endpoint.bulk_key is not None else 1
        attempt = 0
        last_cause = ""
        while True:
            if start_by is not None and client._clock() > start_by:
                if attempt == 0:
                    reason = f"deadline: no time left to send (a request may take {self.request_time:g}s)"
                else:
                    reason = f"deadline reached before retrying; last: {last_cause}"
                return self._give_up(ErrorClass.DEADLINE, reason)
            if client.limiter is not None:
                wait_until = self.budget_end if start_by is None else min(start_by, self.budget_end)
                if not client.limiter.acquire(tokens, wait_until):
                    return self._give_up(ErrorClass.DEADLINE, "rate limit budget exhausted before deadline")
            response = client._post(endpoint, body, n_items)
            status = response.status
            if response.config_fault:
                return self._config_fault(response.cause)
            if status is not None and 200 <= status < 300:
                return _OK
            if status is not None and status not in _TRANSIENT_STATUSES:
                return self._classify(status, self.redact(response.text))
            last_cause = response.cause or f"HTTP {status} from Heap: {_snippet(self.redact(response.text))}"
            wait = client._backoff(attempt)
            retry_after = parse_retry_after(response.retry_after)
            if retry_after is not None:
                wait = max(wait, retry_after)
            resume_at = client._clock() + wait
            if start_by is not None and start_by < self.budget_end and resume_at > start_by:
                return self._give_up(
                    ErrorClass.DEADLINE, f"deadline reached before retrying; last: {last_cause}"
                )
            if resume_at > self.budget_end:
                return self._give_up(ErrorClass.TRANSIENT, last_cause)
            logger.info("retrying %s in %.3fs after: %s", endpoint.value, wait, last_cause)
            client._sleep(wait)
            attempt += 1

    def _classify(self, status: int, text: str) -> _Result:
        """A final, non-2xx, non-transient status."""
        if status == 400 and "app_id" in text.lower():
            return self._config_fault(f"HTTP 400 from Heap refusing the app ID: {_snippet(text)}")
        if status in _SPLIT_STATUSES:
            return _Result(_Kind.SPLIT, status, text)
        if status in _CONFIG_STATUSES:
            return self._config_fault(
                f"HTTP {status} from Heap: check HEAP_API_URL and the app ID ({_snippet(text)})"
            )
        if 400 <= status < 500:
            return self._config_fault(f"HTTP {status} from Heap (unexpected client error): {_snippet(text)}")
        # 3xx and anything else unforeseen: not retried in place (a redirect will not go away
        # in ten seconds), left to the queue's redelivery.
        return self._give_up(ErrorClass.TRANSIENT, f"HTTP {status} from Heap (unexpected): {_snippet(text)}")


def _same_refusal(result: _Result, parent: _Result) -> bool:
    return result.kind is _Kind.SPLIT and result.status == 400 and result.text == parent.text
