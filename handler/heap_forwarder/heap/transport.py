"""One HTTP attempt at Heap, with a hard time limit: the watched connection pool and its watchdog.

urllib3's read timeout bounds each socket read, not the request: an answer trickling a byte a
second never times out. So every attempt is watched: its connection registers itself (on the
sending thread) when the request starts, and one watchdog thread shuts the socket down if the
attempt is still running at its limit; the blocked read then fails at once. At most
MAX_ANSWER_BYTES of an answer is read. Retries, and what an answer means, are the sender's
(``heap/sender.py``).

Two ways out, one pool. A bulk request goes through urllib3's ``PoolManager.request``. A
request of an endpoint without a bulk form (identify: one request per event, hundreds in a
batch) takes a connection from the same urllib3 pool and is sent with ``http.client``'s own
``request``/``getresponse`` on it (urllib3's connection classes are ``http.client``
connections): about 60% less CPU a request than the whole urllib3 stack (URL handling, its
response object, header checks), with the same TLS setup, the same pool limit and wait, and the
same watchdog limit. A thread sending a series of them keeps one connection for the series
(``Transport.holding``).
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import urllib3
from urllib3.util.connection import is_connection_dropped

from heap_forwarder import __version__
from heap_forwarder.heap.items import Endpoint

__all__ = [
    "MAX_ANSWER_BYTES",
    "POOL_CONNECTIONS",
    "RequestRecord",
    "Response",
    "Transport",
    "new_pool",
    "shared_pool",
]

logger = logging.getLogger(__name__)

_HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": f"heap-forwarder/{__version__}",
}


class RequestRecord(NamedTuple):
    """One HTTP attempt, handed to the client's observer (for metrics)."""

    endpoint: Endpoint
    status: int | None  # None: no response (timeout, connection error)
    items: int
    seconds: float
    error: str | None  # None on 2xx; never Heap's free text
    isolating: bool = False  # sent to isolate refused items (items re-sent)


# One pool per process: Lambda keeps module globals between invocations, so TLS sessions and
# keep-alive connections survive. urllib3 must not retry on its own: the sender owns the policy
# (and the deadline), and a silent urllib3 retry would be invisible to it.
# Connections kept per host: the pipeline's streamed bulk requests (up to 4 in flight, one of
# them the last delivery, whose identify calls then go 4 at a time) never need more than 8.
# block: a thread past that waits for a free connection (at most the connect timeout, see
# Transport.post) rather than open one only to throw it away.
POOL_CONNECTIONS = 8
# The most of an answer's body the client reads: Heap answers a few hundred bytes, and no more
# than a snippet is ever quoted. A larger body (a proxy's page, say) is cut and its connection
# dropped, so an answer cannot fill the function's memory.
MAX_ANSWER_BYTES = 65_536
# A held connection idle for longer than this is checked (a poll of its socket, as the pool does
# for every connection it hands out) before it is used again; back-to-back calls skip the check,
# which under a few sending threads cost about a fifth of a call (docs/performance.md).
HELD_IDLE_CHECK_S = 0.05


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


class _Held:
    """The connection a thread keeps for a series of one transport's direct requests
    (``Transport.holding``)."""

    __slots__ = ("connection", "owner", "pool", "used")

    def __init__(self, owner: Transport) -> None:
        self.owner = owner
        self.pool: Any = None
        self.connection: Any = None
        self.used = 0.0  # monotonic time its last request ended


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
            if self._due[0][2] is watch:
                # Woken only when this limit comes first: the thread already sleeps until the
                # earlier ones, and waking it for every request costs a thread switch each.
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


class Response(NamedTuple):
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


class Transport:
    """POSTs to one Heap base URL over a pool; each attempt cut off at its limit, reported to the observer."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        pool: urllib3.PoolManager | None = None,
        observer: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.pool = pool if pool is not None else _POOL
        self._observer = observer
        # The direct way (endpoints without a bulk form) needs the pool's connection of this
        # host; through a proxy every request takes urllib3's way.
        parts = urlsplit(self.base_url)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = parts.path
        self._direct = not isinstance(self.pool, urllib3.ProxyManager)
        self._host_pool: urllib3.HTTPConnectionPool | None = None

    def post(
        self, endpoint: Endpoint, body: bytes, n_items: int, limit_s: float, *, isolating: bool = False
    ) -> Response:
        """One attempt, cut off after ``limit_s`` seconds whatever the answer does."""
        if endpoint.bulk_key is None and self._direct:
            return self._post_direct(endpoint, body, n_items, limit_s, isolating)
        started = time.perf_counter()
        watch = _Watch()
        _current.watch = watch
        _WATCHDOG.watch(time.monotonic() + limit_s, watch)
        try:
            raw = self.pool.request(
                "POST",
                self.base_url + endpoint.value,
                body=body,
                headers=_HEADERS,
                timeout=urllib3.Timeout(
                    connect=min(self.connect_timeout_s, limit_s),
                    read=min(self.read_timeout_s, limit_s),
                ),
                # Waiting for a pooled connection counts against the deadline too: bounded, and
                # a full pool is then a transient error like a refused connection.
                pool_timeout=min(self.connect_timeout_s, limit_s),
                retries=False,
                redirect=False,
                preload_content=False,
            )
            data, cut = _read_bounded(raw)
        except urllib3.exceptions.LocationValueError as exc:
            response = Response(None, cause=f"invalid HEAP_API_URL: {exc}", config_fault=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            response = Response(None, cause=self._failure_cause(exc, watch, limit_s))
        else:
            response = Response(
                raw.status, data, raw.headers.get("Retry-After"), raw.headers.get("Content-Type", ""), cut=cut
            )
        finally:
            _WATCHDOG.release(watch)
            _current.watch = None
        self._observe(endpoint, response, n_items, time.perf_counter() - started, isolating)
        return response

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """The direct requests this thread sends inside the block go one after another on one
        connection of the pool, taken at the first and given back at the end.

        For a thread sending a series of identify calls: the pool's queue and its liveness poll
        once per series instead of once per request. With a few threads sending hundreds of
        calls, those cost more than the requests themselves (measured: 500 calls, 4 threads,
        116-127 ms against 54-78 ms; docs/performance.md). The connection counts against the
        pool's limit all along, as any connection in use does; it serves this transport only,
        is closed after a broken or cut answer, and is checked before reuse after an idle gap
        (``HELD_IDLE_CHECK_S``)."""
        if getattr(_current, "held", None) is not None:
            # Nested: the outer block keeps its connection (another transport's calls inside it
            # take the pool's way, one connection per call).
            yield
            return
        held = _current.held = _Held(self)
        try:
            yield
        finally:
            _current.held = None
            if held.connection is not None:
                held.pool._put_conn(held.connection)

    def _post_direct(
        self, endpoint: Endpoint, body: bytes, n_items: int, limit_s: float, isolating: bool
    ) -> Response:
        """One attempt with ``http.client`` on a connection of the urllib3 pool (see the module's
        docstring): the pool's limit and wait, TLS as urllib3 sets it up, the watchdog's limit."""
        started = time.perf_counter()
        watch = _Watch()
        _WATCHDOG.watch(time.monotonic() + limit_s, watch)
        connect_s = min(self.connect_timeout_s, limit_s)
        held: _Held | None = getattr(_current, "held", None)
        if held is not None and held.owner is not self:
            held = None
        conn: Any = None
        reusable = False
        try:
            if held is not None and held.connection is not None:
                pool, conn = held.pool, held.connection
                if time.monotonic() - held.used > HELD_IDLE_CHECK_S and is_connection_dropped(conn):
                    # Heap closed it while the sender waited (a Retry-After, a backoff, the
                    # limiter): connect again below, as the pool's own check would have.
                    conn.close()
            else:
                pool = self._host_pool
                if pool is None or pool.pool is None:  # first use, or the PoolManager dropped it
                    pool = self.pool.connection_from_host(self._host, self._port, self._scheme)
                    self._host_pool = pool
                # Waiting for a pooled connection counts against the deadline: bounded, and a
                # full pool is then a transient error like a refused connection.
                conn = pool._get_conn(timeout=connect_s)
            watch.take(conn)
            try:
                if conn.sock is None:  # new, or dropped since its last use
                    conn.timeout = connect_s
                    conn.connect()
                read_s = min(self.read_timeout_s, limit_s)
                if conn.sock.gettimeout() != read_s:
                    conn.sock.settimeout(read_s)
                # http.client's own steps (urllib3's overrides of them only add checks for
                # header values it lets callers skip, which these constant headers never are).
                send = http.client.HTTPConnection
                send.putrequest(conn, "POST", self._path + endpoint.value)
                for name, value in _HEADERS.items():
                    send.putheader(conn, name, value)
                send.putheader(conn, "Content-Length", str(len(body)))
                send.endheaders(conn, body)
                raw = http.client.HTTPConnection.getresponse(conn)
                data, cut = _read_bounded_direct(raw)
                reusable = not cut
            finally:
                _WATCHDOG.release(watch)  # from here on the watchdog leaves the socket alone
                if not reusable or watch.cut:
                    # An unread or broken answer must not reach the next request, nor a socket
                    # the watchdog shut (its limit can fall just after a complete answer).
                    conn.close()
                if held is not None:
                    # Kept for the thread's next request (a closed one connects again then).
                    held.pool, held.connection, held.used = pool, conn, time.monotonic()
                else:
                    pool._put_conn(conn)
        except urllib3.exceptions.LocationValueError as exc:
            response = Response(None, cause=f"invalid HEAP_API_URL: {exc}", config_fault=True)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            response = Response(None, cause=self._failure_cause(exc, watch, limit_s))
        else:
            response = Response(
                raw.status, data, raw.getheader("Retry-After"), raw.getheader("Content-Type", ""), cut=cut
            )
        finally:
            _WATCHDOG.release(watch)
        self._observe(endpoint, response, n_items, time.perf_counter() - started, isolating)
        return response

    def _observe(
        self, endpoint: Endpoint, response: Response, n_items: int, seconds: float, isolating: bool
    ) -> None:
        if self._observer is None:
            return
        ok = response.status is not None and 200 <= response.status < 300
        error = None if ok else (response.cause or f"HTTP {response.status}")
        try:
            self._observer(RequestRecord(endpoint, response.status, n_items, seconds, error, isolating))
        except Exception:  # metrics must never cost an event
            logger.exception("heap client observer failed")

    def _failure_cause(self, exc: BaseException, watch: _Watch, limit_s: float) -> str:
        if watch.cut:
            return f"timeout: Heap's answer was not complete after {limit_s:g}s (cut off)"
        if isinstance(exc, urllib3.exceptions.NewConnectionError):  # subclasses ConnectTimeoutError
            return _connection_cause(exc)
        if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
            return f"connect timeout after {min(self.connect_timeout_s, limit_s):g}s"
        if isinstance(exc, urllib3.exceptions.TimeoutError | socket.timeout):
            return f"timeout after {min(self.read_timeout_s, limit_s):g}s"
        if isinstance(exc, urllib3.exceptions.EmptyPoolError):
            waited = min(self.connect_timeout_s, limit_s)
            return f"connection error: no free connection to Heap within {waited:g}s"
        return _connection_cause(exc)


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


def _read_bounded_direct(raw: http.client.HTTPResponse) -> tuple[bytes, bool]:
    """As :func:`_read_bounded`, for ``http.client``'s response: True when the body was cut."""
    data = raw.read(MAX_ANSWER_BYTES + 1)
    if len(data) > MAX_ANSWER_BYTES:
        return data[:MAX_ANSWER_BYTES], True
    if not raw.isclosed():
        raw.read()  # the end of a chunked body (its last chunk): nothing of the answer is left
    return data, False


def _connection_cause(exc: BaseException) -> str:
    return f"connection error: {exc}"[:300]
