"""Delivery of Heap items over HTTP: batching, retries, isolation of bad items. No AWS here.

``HeapClient.deliver`` turns a list of :class:`HeapItem` into the fewest requests Heap allows,
sends them, and returns one :class:`Outcome` per item. It never raises for HTTP trouble:
every item ends delivered, rejected (Heap refused that very item, sent alone) or retryable
(with the error class and cause), and the caller's queue does the long-haul retrying.
Every request has a hard time limit (a watchdog cuts its socket), so a stalled or trickling
answer cannot outlive the caller's deadline. See docs/heap-delivery.md for the response-code
table and the policies.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import random
import re
import socket
import threading
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

from heap_forwarder import __version__, defaults
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.limiter import RateLimiter
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate, Outcome, rejected, retryable

__all__ = [
    "DeliverySettings",
    "HeapClient",
    "PlannedRequest",
    "RequestRecord",
    "new_pool",
    "parse_retry_after",
    "plan_requests",
    "shared_pool",
]

logger = logging.getLogger(__name__)

HEAP_BULK_CAP = defaults.HEAP_BULK_CAP  # Heap's most events / users / accounts per bulk request
_SNIPPET = 200  # characters of a response body quoted in a retryable cause
_REJECTION_TEXT = 1000  # characters of Heap's text kept in a rejection reason
_TRANSIENT_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600)) - {501}
_CONFIG_STATUSES = frozenset({401, 403, 404, 501})
_SPLIT_STATUSES = frozenset({400, 413})
# Heap's 400 texts start with the path of the field at fault: ``postBody.events[12].event: ...``.
# Only that head is read (never a word anywhere in the text, which may quote the event itself).
_FIELD_PATH = re.compile(r"\s*(postBody(?:\.[A-Za-z_][A-Za-z0-9_]{0,63}|\[\d{1,7}\]){0,12})")
_ITEM_PATH = re.compile(r"postBody\.([a-z_]+)\[(\d{1,7})\]")
_APP_ID_PATH = "postBody.app_id"
# The emulator's (and, as far as is known, Heap's) answer to an unknown app_id, read at the head only.
_APP_ID_REFUSAL = re.compile(r"\s*invalid app_id\b", re.IGNORECASE)
_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": f"heap-forwarder/{__version__}",
}


@dataclass(frozen=True)
class DeliverySettings:
    base_url: str = defaults.HEAP_API_URL  # EU: defaults.HEAP_BASE_URLS["eu"]
    connect_timeout_s: float = defaults.HEAP_CONNECT_TIMEOUT_SECONDS
    read_timeout_s: float = defaults.HEAP_READ_TIMEOUT_SECONDS
    max_items_per_request: int = HEAP_BULK_CAP  # Heap's bulk cap; configurable lower
    max_request_bytes: int = 3_000_000  # lets 1000 events of ~1 KB travel in one request
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


DEFAULT_SETTINGS = DeliverySettings()


class RequestRecord(NamedTuple):
    """One HTTP attempt, handed to the client's observer (for metrics)."""

    endpoint: Endpoint
    status: int | None  # None: no response (timeout, connection error)
    items: int
    seconds: float
    error: str | None  # None on 2xx; never Heap's free text
    isolating: bool = False  # sent to isolate refused items (items re-sent)


# One pool per process: Lambda keeps module globals between invocations, so TLS sessions and
# keep-alive connections survive. urllib3 must not retry on its own: the client owns the policy
# (and the deadline), and a silent urllib3 retry would be invisible to it.
SINGLE_REQUEST_CONCURRENCY = 4  # requests of endpoints without a bulk form sent at once
# Connections kept per host: the pipeline's streamed bulk requests (up to 4 in flight, one of
# them the last delivery, whose identify calls then go 4 at a time) never need more than 8.
# block: a thread past that waits for a free connection (at most the connect timeout, see
# _post) rather than open one only to throw it away.
POOL_CONNECTIONS = 8
# The most of an answer's body the client reads: Heap answers a few hundred bytes, and no more
# than a snippet is ever quoted. A larger body (a proxy's page, say) is cut and its connection
# dropped, so an answer cannot fill the function's memory.
MAX_ANSWER_BYTES = 65_536


# -- hard time limits ---------------------------------------------------------------------------
# urllib3's read timeout bounds each socket read, not the request: an answer trickling a byte a
# second never times out. So every request is watched: its connection registers itself (on the
# sending thread) when the request starts, and one watchdog thread shuts the socket down if the
# request is still running at its limit; the blocked read then fails at once.


class _Watch:
    __slots__ = ("connection", "cut")

    def __init__(self) -> None:
        self.connection: Any = None
        self.cut = False

    def take(self, connection: Any) -> None:
        # The connection remembers which request it serves: a limit that expires after the
        # connection went back to the pool (and on to another request) must not cut that one.
        self.connection = connection
        connection.heap_watch = self


_current = threading.local()


class _Watchdog:
    """One daemon thread, a heap of (limit, watch): cheap enough for every identify call."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._due: list[tuple[float, int, _Watch]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, until: float, watch: _Watch) -> None:
        with self._lock:
            heapq.heappush(self._due, (until, next(self._ids), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="heap-watchdog", daemon=True)
                self._thread.start()
            self._lock.notify()

    def release(self, watch: _Watch) -> None:
        with self._lock:
            watch.connection = None  # the entry stays in the heap and expires as a no-op

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    _, _, watch = heapq.heappop(self._due)
                    connection = watch.connection
                    if connection is not None and getattr(connection, "heap_watch", None) is watch:
                        watch.cut = True
                        _cut(connection)
                self._lock.wait(None if not self._due else self._due[0][0] - now)


def _cut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    # The plain socket's shutdown (not SSLSocket's, which would touch TLS state another thread
    # is reading): the blocked read returns at once and urllib3 drops the connection. Whatever
    # it raises, the watchdog thread must live on.
    with contextlib.suppress(Exception):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


class _WatchedConnectionMixin:
    heap_watch: _Watch | None = None

    def request(self, *args: Any, **kwargs: Any) -> Any:
        watch: _Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.take(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def new_pool(**kwargs: Any) -> urllib3.PoolManager:
    """A PoolManager whose requests the client can cut off at their time limit.

    A plain PoolManager still works with :class:`HeapClient`, but then only urllib3's
    per-read timeouts bound a request.
    """
    pool = urllib3.PoolManager(**{"retries": False, **kwargs})
    pool.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    return pool


_POOL = new_pool(num_pools=4, maxsize=POOL_CONNECTIONS, block=True, cert_reqs="CERT_REQUIRED")


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
    data: bytes = b""
    retry_after: str | None = None
    content_type: str = ""
    cause: str = ""  # filled when no answer came; never holds Heap's text
    config_fault: bool = False  # the URL itself is unusable
    cut: bool = False  # the body was longer than MAX_ANSWER_BYTES: only its head was read

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


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

    def _post(
        self, endpoint: Endpoint, body: bytes, n_items: int, limit_s: float, *, isolating: bool = False
    ) -> _Response:
        """One attempt, cut off after ``limit_s`` seconds whatever the answer does."""
        started = time.perf_counter()
        watch = _Watch()
        _current.watch = watch
        _WATCHDOG.watch(time.monotonic() + limit_s, watch)
        try:
            raw = self._pool.request(
                "POST",
                self._base_url + endpoint.value,
                body=body,
                headers=_HEADERS,
                timeout=urllib3.Timeout(
                    connect=min(self.settings.connect_timeout_s, limit_s),
                    read=min(self.settings.read_timeout_s, limit_s),
                ),
                # Waiting for a pooled connection counts against the deadline too: bounded, and
                # a full pool is then a transient error like a refused connection.
                pool_timeout=min(self.settings.connect_timeout_s, limit_s),
                retries=False,
                redirect=False,
                preload_content=False,
            )
            data, cut = _read_bounded(raw)
        except urllib3.exceptions.LocationValueError as exc:
            response = _Response(None, cause=f"invalid HEAP_API_URL: {exc}", config_fault=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            response = _Response(None, cause=self._failure_cause(exc, watch, limit_s))
        else:
            response = _Response(
                raw.status, data, raw.headers.get("Retry-After"), raw.headers.get("Content-Type", ""), cut=cut
            )
        finally:
            _WATCHDOG.release(watch)
            _current.watch = None
        seconds = time.perf_counter() - started
        if self._observer is not None:
            ok = response.status is not None and 200 <= response.status < 300
            error = None if ok else (response.cause or f"HTTP {response.status}")
            try:
                self._observer(RequestRecord(endpoint, response.status, n_items, seconds, error, isolating))
            except Exception:  # metrics must never cost an event
                logger.exception("heap client observer failed")
        return response

    def _failure_cause(self, exc: BaseException, watch: _Watch, limit_s: float) -> str:
        if watch.cut:
            return f"timeout: Heap's answer was not complete after {limit_s:g}s (cut off)"
        if isinstance(exc, urllib3.exceptions.NewConnectionError):  # subclasses ConnectTimeoutError
            return _connection_cause(exc)
        if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
            return f"connect timeout after {min(self.settings.connect_timeout_s, limit_s):g}s"
        if isinstance(exc, urllib3.exceptions.TimeoutError):
            return f"timeout after {min(self.settings.read_timeout_s, limit_s):g}s"
        return _connection_cause(exc)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.settings.backoff_cap_s, self.settings.backoff_base_s * 2.0 ** min(attempt, 60))
        return self._rng.uniform(0.0, ceiling)


def _read_bounded(raw: Any) -> tuple[bytes, bool]:
    """At most MAX_ANSWER_BYTES of the body; the connection goes back to the pool only when the
    whole body was read (a cut one is closed first, so its leftovers cannot reach the next use)."""
    try:
        data: bytes = raw.read(MAX_ANSWER_BYTES + 1)
        if len(data) > MAX_ANSWER_BYTES:
            raw.close()
            return data[:MAX_ANSWER_BYTES], True
        raw.drain_conn()  # nothing left to read; marks the response complete
        return data, False
    finally:
        raw.release_conn()


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
        self.request_time = self.settings.request_time_s
        # What isolating refused items cost (requests and items sent again), for the observer.
        self.isolation_requests = 0
        self.items_resent = 0
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
        self._settle_result(plan.endpoint, plan.indices, result, plan.prefix, plan.suffix)

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
        self, endpoint: Endpoint, indices: list[int], result: _Result, prefix: bytes, suffix: bytes
    ) -> None:
        if result.kind is _Kind.OK:
            self.settle(indices, DELIVERED)
        elif result.kind is _Kind.SETTLED:
            self.settle(indices, result.outcome)
        else:
            self._isolate(endpoint, indices, result, prefix, suffix)

    # -- isolating refused items --------------------------------------------------------------

    def _isolate(
        self, endpoint: Endpoint, indices: list[int], refusal: _Result, prefix: bytes, suffix: bytes
    ) -> None:
        """Split a refused request until every refused item stands alone; deliver the rest now.

        Heap fails a whole bulk request (400, or 413) for one bad item, and names the first bad
        item's index at the head of its text. That index is a hint, verified by sending the item
        alone; the rest is sent in two halves (so several offenders are found in parallel
        branches, and no event is re-sent once per offender). Without a usable hint, halves.
        Only an item refused when sent alone is rejected, with its own answer as the reason.
        """
        todo = [(indices, refusal)]
        while todo:
            group, answer = todo.pop()
            if len(group) == 1:
                self.settle(group, self._refused(answer))
                continue
            for piece in _pieces(group, _hinted_position(answer.text, endpoint.bulk_key, len(group))):
                if self.isolation_requests >= self.settings.max_isolation_requests:
                    cause = f"isolation request budget ({self.settings.max_isolation_requests}) used up"
                    self.settle(piece, retryable(ErrorClass.DEADLINE, f"isolation unfinished: {cause}"))
                    continue
                self.isolation_requests += 1
                self.items_resent += len(piece)
                result = self._send(endpoint, self.body(piece, prefix, suffix), len(piece), isolating=True)
                if result.kind is _Kind.OK:
                    self.settle(piece, DELIVERED)
                elif result.kind is _Kind.SPLIT:
                    todo.append((piece, result))
                else:
                    self.settle(piece, _unfinished(result.outcome))

    def _refused(self, answer: _Result) -> Outcome:
        path = _loggable_path(answer.text)
        reason = f"HTTP {answer.status} from Heap" + (f" at {path}" if path else "")
        detail = f"HTTP {answer.status} from Heap: {_snippet(answer.text, _REJECTION_TEXT)}"
        return rejected(ErrorClass.HEAP_REJECTED, reason, detail)

    def _give_up(self, error_class: ErrorClass, reason: str, detail: str = "") -> _Result:
        return _Result(_Kind.SETTLED, outcome=retryable(error_class, reason, detail))

    def _config_fault(self, cause: str, detail: str = "") -> _Result:
        # Heap is misconfigured for this app: the rest of this call is not sent either.
        self.config_cause = self.config_cause or cause
        return self._give_up(ErrorClass.CONFIG_FAULT, cause, detail)

    def _send(self, endpoint: Endpoint, body: bytes, n_items: int, *, isolating: bool = False) -> _Result:
        """Send one request, retrying transient failures with the same bytes within the limits."""
        if self.config_cause is not None:
            return self._give_up(
                ErrorClass.CONFIG_FAULT, f"not sent after a configuration fault: {self.config_cause}"
            )
        client = self.client
        # The latest time a request may start and still end (hard limit) before the deadline.
        start_by = None if self.deadline is None else self.deadline - self.request_time
        tokens = n_items if endpoint.bulk_key is not None else 1
        attempt = 0
        last_cause = last_detail = ""
        while True:
            if start_by is not None and client._clock() > start_by:
                if attempt == 0:
                    reason = f"deadline: no time left to send (a request may take {self.request_time:g}s)"
                    return self._give_up(ErrorClass.DEADLINE, reason)
                reason = f"deadline reached before retrying; last: {last_cause}"
                return self._give_up(ErrorClass.DEADLINE, reason, last_detail and f"{reason} ({last_detail})")
            if client.limiter is not None:
                wait_until = self.budget_end if start_by is None else min(start_by, self.budget_end)
                if not client.limiter.acquire(tokens, wait_until):
                    return self._give_up(ErrorClass.DEADLINE, "rate limit budget exhausted before deadline")
            limit = self.request_time
            if self.deadline is not None:
                limit = max(0.001, min(limit, self.deadline - client._clock()))
            response = client._post(endpoint, body, n_items, limit, isolating=isolating)
            status = response.status
            if response.config_fault:
                return self._config_fault(response.cause)
            if status is not None and 200 <= status < 300:
                ok = not response.cut and _is_success_body(response.data)
                return _OK if ok else self._unexpected_success(response)
            text = self.redact(response.text) if status is not None else ""
            if status is not None and status not in _TRANSIENT_STATUSES:
                return self._classify(status, text)
            last_cause = response.cause or _status_cause(status, text)
            last_detail = "" if response.cause else f"{last_cause}: {_snippet(text)}"
            wait = client._backoff(attempt)
            retry_after = parse_retry_after(response.retry_after)
            if retry_after is not None:
                wait = max(wait, retry_after)
            resume_at = client._clock() + wait
            if start_by is not None and start_by < self.budget_end and resume_at > start_by:
                reason = f"deadline reached before retrying; last: {last_cause}"
                return self._give_up(ErrorClass.DEADLINE, reason, last_detail and f"{reason} ({last_detail})")
            if resume_at > self.budget_end:
                return self._give_up(ErrorClass.TRANSIENT, last_cause, last_detail)
            logger.info("retrying %s in %.3fs after: %s", endpoint.value, wait, last_cause)
            client._sleep(wait)
            attempt += 1

    def _unexpected_success(self, response: _Response) -> _Result:
        # A 2xx that is neither empty nor JSON did not come from Heap's API as documented: a
        # proxy, a captive portal or a wrong HEAP_API_URL answered. Not "delivered": left to the
        # queue's redelivery (idempotency keys make a resend harmless if Heap did store it).
        kind = response.content_type.split(";")[0].strip() or "no content type"
        what = (
            f"a body over {MAX_ANSWER_BYTES} bytes ({kind})"
            if response.cut
            else f"a body that is not JSON ({kind}, {len(response.data)} bytes)"
        )
        return self._give_up(
            ErrorClass.TRANSIENT,
            f"HTTP {response.status} with {what}: something other than Heap's API may have answered",
        )

    def _classify(self, status: int, text: str) -> _Result:
        """A final, non-2xx, non-transient status. ``text`` (redacted) only goes into details."""
        path = _field_path(text)
        if status == 400 and (path == _APP_ID_PATH or _APP_ID_REFUSAL.match(text)):
            return self._config_fault(*_with_text("HTTP 400 from Heap refusing the app ID", text))
        if status in _SPLIT_STATUSES:
            return _Result(_Kind.SPLIT, status, text)
        if status in _CONFIG_STATUSES:
            return self._config_fault(
                *_with_text(f"HTTP {status} from Heap: check HEAP_API_URL and the app ID", text)
            )
        if 400 <= status < 500:
            return self._config_fault(*_with_text(f"HTTP {status} from Heap (unexpected client error)", text))
        # 3xx and anything else unforeseen: not retried in place (a redirect will not go away
        # in ten seconds), left to the queue's redelivery.
        return self._give_up(ErrorClass.TRANSIENT, *_with_text(f"HTTP {status} from Heap (unexpected)", text))


def _with_text(reason: str, text: str) -> tuple[str, str]:
    """(reason for logs, detail for letters): the detail is the reason followed by Heap's text."""
    return reason, f"{reason}: {_snippet(text)}"


def _status_cause(status: int | None, text: str) -> str:
    path = _loggable_path(text)
    return f"HTTP {status} from Heap" + (f" at {path}" if path else "")


# What of Heap's field path may be logged: up to the item and its field (``postBody.events[3]
# .properties``); the keys below it are the event's own property names.
_LOGGABLE_PATH = re.compile(r"postBody(?:\.[A-Za-z_]\w*\[\d+\](?:\.[A-Za-z_]\w*)?|\.[A-Za-z_]\w*)?")


def _loggable_path(text: str) -> str:
    match = _LOGGABLE_PATH.match(_field_path(text))
    return match.group(0) if match else ""


def _field_path(text: str) -> str:
    """The field path heading Heap's text (``postBody.events[3].event``), or ""."""
    match = _FIELD_PATH.match(text)
    return match.group(1) if match else ""


def _hinted_position(text: str, bulk_key: str | None, size: int) -> int | None:
    """The position, within its request, of the item Heap's text names first; None if none or
    out of range (a hint only: it is verified by sending that item alone)."""
    match = _ITEM_PATH.match(_field_path(text))
    if match is None or match.group(1) != bulk_key:
        return None
    position = int(match.group(2))
    return position if position < size else None


def _pieces(group: list[int], hint: int | None) -> list[list[int]]:
    if hint is None:
        half = len(group) // 2
        return [group[:half], group[half:]]
    rest = group[:hint] + group[hint + 1 :]
    half = len(rest) // 2
    return [[group[hint]], *(piece for piece in (rest[:half], rest[half:]) if piece)]


def _unfinished(outcome: Outcome) -> Outcome:
    """An isolation step that could not be made: retried later, never taken for Heap's refusal."""
    if outcome.fate is not Fate.RETRYABLE or outcome.error_class is ErrorClass.CONFIG_FAULT:
        return outcome
    detail = outcome.detail and f"isolation unfinished: {outcome.detail}"
    return retryable(outcome.error_class, f"isolation unfinished: {outcome.reason}", detail)


def _is_success_body(data: bytes) -> bool:
    if not data.strip():
        return True
    try:
        pydantic_core.from_json(data)
    except ValueError:
        return False
    return True
