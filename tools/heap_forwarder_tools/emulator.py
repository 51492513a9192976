"""A local Heap: a real HTTP server that speaks Heap's server-side API and can be made to misbehave.

It enforces Heap's documented field rules and limits the way Heap does (one bad item fails the
whole request with a short 400 text, nothing from it is kept), stores what it accepts, and can
inject faults: failures with ``Retry-After``, latency, dropped connections, answers trickled a byte
at a time, rejected event names (with Heap's text or one given, with or without the field path)
and rate limits on an accelerated clock. Tests, the README demo and the benchmarks use it, in
process (:class:`HeapEmulator`) or out of process (``python -m heap_forwarder_tools.emulator``,
driven through the ``/_emulator/...`` control API). docs/emulator.md lists every control.

Standard library only (plus ``pydantic_core`` for fast JSON parsing); no AWS.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import FrameType, MappingProxyType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import pydantic_core

from heap_forwarder.heap.items import Endpoint
from heap_forwarder_tools.service import Service

DEFAULT_APP_IDS: Final = ("demo-app-id",)
DEFAULT_MAX_BODY_BYTES: Final = 5_000_000
MAX_BULK_ITEMS: Final = 1000
MAX_IDENTITY_CHARS: Final = 255
MAX_EVENT_NAME_CHARS: Final = 1024
MAX_IDEMPOTENCY_KEY_CHARS: Final = 1024
MAX_SESSION_ID_CHARS: Final = 1024
# Property names and string values must be *shorter* than this.
PROPERTY_CHARS_LIMIT: Final = 1024
# Identities Heap warns merge unrelated users irreversibly (compared after strip + casefold).
PLACEHOLDER_IDENTITIES: Final = frozenset({"", "null", "undefined"})
INVALID_APP_ID: Final = "Invalid app_id"
CONTROL_PREFIX: Final = "/_emulator/"
# What a trickled answer sends when Heap's own answer has no body (a 200 has none): a trickle
# needs bytes to be slow with.
TRICKLE_FILLER: Final = b"OK"

# Past this, a too-large body is not drained (the connection is closed instead).
_MAX_DRAIN_BYTES: Final = 64 * 1024 * 1024
_ENDPOINTS: Final = {endpoint.value: endpoint for endpoint in Endpoint}
_NO_REFUSALS: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Heap's published caps; windows are in Heap seconds (divided by ``time_scale`` in real time)."""

    events_per_app: int = 15_000
    events_per_identity: int = 1_000
    events_window: float = 60.0
    single_requests_per_identity: int = 30
    single_requests_window: float = 30.0


class _Rejected(Exception):
    """A request Heap would answer with 400: the field at fault (None for the request as a whole)
    and what is wrong with it, kept apart so that an anonymous answer can leave the field out."""

    def __init__(self, where: str | None, text: str, *, joiner: str = ": ") -> None:
        super().__init__(text if where is None else f"{where}{joiner}{text}")
        self.text = text


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, text: str, *headers: tuple[str, str]) -> _Response:
        return cls(status, text.encode(), headers=headers)

    @classmethod
    def json(cls, payload: Any) -> _Response:
        return cls(200, json.dumps(payload).encode(), content_type="application/json")


@dataclass(slots=True)
class _FailurePlan:
    remaining: int
    status: int
    retry_after: float | None
    body: str


@dataclass(slots=True)
class _DropPlan:
    remaining: int
    after_store: bool


@dataclass(slots=True)
class _TricklePlan:
    remaining: int
    interval: float  # real seconds between two bytes of the body
    status: int | None  # None: Heap's own answer
    body: bytes | None  # None: Heap's own answer text, or TRICKLE_FILLER when it has none


_Plan = TypeVar("_Plan", _FailurePlan, _DropPlan, _TricklePlan)


@dataclass(slots=True)
class _Request:
    """A request that passed validation: what to count against rate limits and what to store."""

    endpoint: Endpoint
    app_id: str
    items: list[dict[str, Any]]
    bulk: bool


@dataclass(slots=True)
class _Stats:
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    requests_total: int = 0
    bytes_received: int = 0
    events_accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rate_limited: int = 0
    faults_injected: int = 0
    connections_dropped: int = 0
    users_updated: int = 0
    accounts_updated: int = 0
    identifies_accepted: int = 0

    def count(self, path: str, outcome: str) -> None:
        by_outcome = self.requests.setdefault(path, {})
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        self.requests_total += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": {path: dict(by_outcome) for path, by_outcome in self.requests.items()},
            "requests_total": self.requests_total,
            "bytes_received": self.bytes_received,
            "events_accepted": self.events_accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rate_limited": self.rate_limited,
            "faults_injected": self.faults_injected,
            "connections_dropped": self.connections_dropped,
            "users_updated": self.users_updated,
            "accounts_updated": self.accounts_updated,
            "identifies_accepted": self.identifies_accepted,
        }


class _FixedWindows:
    """Counters in fixed windows that open at a key's first use after the previous one closed."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, ...], tuple[float, int]] = {}

    def wait_needed(self, key: tuple[str, ...], amount: int, cap: int, window: float, now: float) -> float:
        """Real seconds until ``amount`` more fits under ``cap`` (0.0: it fits now)."""
        opened, used = self._windows.get(key, (now - window, 0))
        if now - opened >= window:
            return 0.0 if amount <= cap else window
        return 0.0 if used + amount <= cap else opened + window - now

    def add(self, key: tuple[str, ...], amount: int, window: float, now: float) -> None:
        opened, used = self._windows.get(key, (now - window, 0))
        if now - opened >= window:
            opened, used = now, 0
        self._windows[key] = (opened, used + amount)

    def clear(self) -> None:
        self._windows.clear()


def format_seconds(seconds: float) -> str:
    """``Retry-After`` value: seconds with at most 3 decimals, never below 0.001 unless zero."""
    if seconds <= 0:
        return "0"
    return f"{max(seconds, 0.001):.3f}".rstrip("0").rstrip(".")


# --- Heap's rules ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _identity(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_IDENTITY_CHARS:
        raise _Rejected(where, f"must be a string of 1 to {MAX_IDENTITY_CHARS} characters")
    if value.strip().casefold() in PLACEHOLDER_IDENTITIES:
        raise _Rejected(where, f"placeholder identity {value!r} is not allowed")
    return value


def _user_id(value: Any, where: str) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _identity(value, where)


def _timestamp(value: Any, where: str) -> str:
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        with suppress(ValueError):
            datetime.fromisoformat(text)
            return value
    raise _Rejected(where, "must be an ISO 8601 timestamp string")


def _properties(value: Any, where: str, *, reserved_id: bool = False) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Rejected(where, "should be object", joiner=" ")
    for key, item in value.items():
        if len(key) >= PROPERTY_CHARS_LIMIT:
            raise _Rejected(
                where,
                f"property name {key[:40]!r}... must be shorter than {PROPERTY_CHARS_LIMIT} characters",
            )
        if reserved_id and key.casefold() == "id":
            raise _Rejected(f"{where}.{key}", "property name 'id' is reserved")
        if isinstance(item, str):
            if len(item) >= PROPERTY_CHARS_LIMIT:
                raise _Rejected(
                    f"{where}.{key}", f"value must be shorter than {PROPERTY_CHARS_LIMIT} characters"
                )
        elif not _is_number(item):
            raise _Rejected(f"{where}.{key}", "value must be a string or number")
    return dict(value)


def _bounded_string(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _Rejected(where, f"must be a string of at most {limit} characters")
    return value


def _bulk_items(body: dict[str, Any], key: str) -> list[Any]:
    items = body[key]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK_ITEMS:
        raise _Rejected(f"postBody.{key}", f"must be a non-empty array of at most {MAX_BULK_ITEMS} items")
    return items


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Rejected(where, "should be object", joiner=" ")
    return value


def _who(item: dict[str, Any], where: str) -> dict[str, Any]:
    """The track event's subject: exactly one of ``identity`` and ``user_id``."""
    if "identity" in item and "user_id" in item:
        raise _Rejected(where, "identity and user_id must not be given together")
    if "identity" in item:
        return {"identity": _identity(item["identity"], f"{where}.identity")}
    if "user_id" in item:
        return {"user_id": _user_id(item["user_id"], f"{where}.user_id")}
    raise _Rejected(where, "one of identity or user_id is required")


def _track_event(
    raw: Any, where: str, app_id: str, received_at: str, rejected_names: Mapping[str, str]
) -> dict[str, Any]:
    item = _object(raw, where)
    event = {"app_id": app_id, **_who(item, where)}
    name = item.get("event")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_EVENT_NAME_CHARS:
        raise _Rejected(
            f"{where}.event", f"must be a non-empty string of at most {MAX_EVENT_NAME_CHARS} characters"
        )
    if name in rejected_names:
        raise _Rejected(f"{where}.event", rejected_names[name])
    event["event"] = name
    timestamp = item.get("timestamp")
    event["timestamp"] = received_at if timestamp is None else _timestamp(timestamp, f"{where}.timestamp")
    properties = item.get("properties")
    event["properties"] = {} if properties is None else _properties(properties, f"{where}.properties")
    if "idempotency_key" in item:
        event["idempotency_key"] = _bounded_string(
            item["idempotency_key"], f"{where}.idempotency_key", MAX_IDEMPOTENCY_KEY_CHARS
        )
    if "session_id" in item:
        session_id = item["session_id"]
        if not _is_number(session_id):
            _bounded_string(session_id, f"{where}.session_id", MAX_SESSION_ID_CHARS)
        event["session_id"] = session_id
    return event


def _user(raw: Any, where: str) -> dict[str, Any]:
    item = _object(raw, where)
    if "identity" not in item:
        raise _Rejected(f"{where}.identity", "is required")
    if "properties" not in item:
        raise _Rejected(f"{where}.properties", "is required")
    return {
        "identity": _identity(item["identity"], f"{where}.identity"),
        "properties": _properties(item["properties"], f"{where}.properties", reserved_id=True),
    }


def _account(raw: Any, where: str) -> dict[str, Any]:
    item = _object(raw, where)
    account_id = item.get("account_id")
    if isinstance(account_id, int) and not isinstance(account_id, bool):
        account_id = str(account_id)
    elif not isinstance(account_id, str) or not 1 <= len(account_id) <= MAX_IDENTITY_CHARS:
        raise _Rejected(f"{where}.account_id", f"must be a string of 1 to {MAX_IDENTITY_CHARS} characters")
    if "properties" not in item:
        raise _Rejected(f"{where}.properties", "is required")
    return {"account_id": account_id, "properties": _properties(item["properties"], f"{where}.properties")}


def _identify(body: dict[str, Any], app_id: str) -> dict[str, Any]:
    if "user_id" not in body:
        raise _Rejected("postBody.user_id", "is required")
    if "identity" not in body:
        raise _Rejected("postBody.identity", "is required")
    record = {
        "app_id": app_id,
        "user_id": _user_id(body["user_id"], "postBody.user_id"),
        "identity": _identity(body["identity"], "postBody.identity"),
    }
    if body.get("timestamp") is not None:
        record["timestamp"] = _timestamp(body["timestamp"], "postBody.timestamp")
    return record


def _validate(
    endpoint: Endpoint,
    body: dict[str, Any],
    app_ids: frozenset[str],
    rejected_names: Mapping[str, str] = _NO_REFUSALS,
) -> _Request:
    """The request as Heap would take it, or _Rejected at the first item that breaks a rule.

    ``rejected_names`` maps a track event name to the text Heap refuses it with."""
    app_id = body.get("app_id")
    if not isinstance(app_id, str) or app_id not in app_ids:
        raise _Rejected(None, INVALID_APP_ID)
    if endpoint is Endpoint.IDENTIFY:
        return _Request(endpoint, app_id, [_identify(body, app_id)], bulk=False)
    bulk_key = endpoint.bulk_key
    assert bulk_key is not None  # every endpoint but identify has a bulk form
    bulk = bulk_key in body
    raw_items = _bulk_items(body, bulk_key) if bulk else [body]

    def where(index: int) -> str:
        return f"postBody.{bulk_key}[{index}]" if bulk else "postBody"

    if endpoint is Endpoint.TRACK:
        received_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        items = [
            _track_event(raw, where(index), app_id, received_at, rejected_names)
            for index, raw in enumerate(raw_items)
        ]
    elif endpoint is Endpoint.ADD_USER_PROPERTIES:
        items = [_user(raw, where(index)) for index, raw in enumerate(raw_items)]
    else:
        items = [_account(raw, where(index)) for index, raw in enumerate(raw_items)]
    return _Request(endpoint, app_id, items, bulk)


def _parse_json(data: bytes) -> Any:
    try:
        return pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError:
        # pydantic_core's error messages are terse; Heap's is just as terse, so no detail needed.
        raise _Rejected("postBody", "request body must be valid JSON") from None


# --- the emulator ------------------------------------------------------------------------------


def listening_url(address: Any) -> str:
    """``http://host:port`` of a listening socket's address (IPv6 hosts in brackets)."""
    host, port = address[:2]
    assert isinstance(host, str)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class HeapEmulator(Service):
    """Heap's server-side API on 127.0.0.1, with a store to inspect and faults to inject.

    ``time_scale`` k makes Heap's clock run k times faster for rate limits (a 60 s window lasts
    60/k real seconds). All methods are thread-safe.
    """

    def __init__(
        self,
        app_ids: Iterable[str] = DEFAULT_APP_IDS,
        *,
        time_scale: float = 1.0,
        enforce_rate_limits: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.app_ids = frozenset(app_ids)
        if not self.app_ids:
            raise ValueError("at least one app_id is required")
        _check_time_scale(time_scale)
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.rate_limits = rate_limits or RateLimits()
        self._initial_time_scale = time_scale
        self._initial_enforce = enforce_rate_limits
        # A Condition so that waiters (wait_for_events) wake up when something is stored.
        self._lock = threading.Condition(threading.Lock())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._clear()

    def _clear(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._seen_keys: set[tuple[str, str]] = set()
        self._users: dict[tuple[str, str], dict[str, Any]] = {}
        self._accounts: dict[tuple[str, str], dict[str, Any]] = {}
        self._identifies: list[dict[str, Any]] = []
        self._stats = _Stats()
        self._failures: deque[_FailurePlan] = deque()
        # An outage answers every request until it ends; fail_next plans are used first.
        self._outage: _FailurePlan | None = None
        self._drops: deque[_DropPlan] = deque()
        self._trickles: deque[_TricklePlan] = deque()
        self._latency = 0.0
        # Replaced whole, never changed in place: request threads read it without the lock.
        self._rejected_names: Mapping[str, str] = _NO_REFUSALS
        self._anonymous_refusals = False
        self._enforce_rate_limits = self._initial_enforce
        self._time_scale = self._initial_time_scale
        self._windows = _FixedWindows()

    # --- lifecycle

    def start(self) -> HeapEmulator:
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="heap-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        # Wakes answers being trickled, so that their threads end with the server.
        server.stopping.set()
        server.shutdown()
        server.server_close()
        # Idle keep-alive connections would otherwise keep their handler threads alive.
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return listening_url(self._server.server_address)

    # --- what was accepted

    def tracked_events(self) -> list[dict[str, Any]]:
        """Accepted track events in arrival order, each stored once per idempotency key."""
        with self._lock:
            return [{**event, "properties": dict(event["properties"])} for event in self._events]

    def user_properties(self, app_id: str | None = None) -> dict[str, dict[str, Any]]:
        """identity -> its merged properties (of one app, or of all apps merged)."""
        return self._merged(self._users, app_id)

    def account_properties(self, app_id: str | None = None) -> dict[str, dict[str, Any]]:
        """account_id -> its merged properties (of one app, or of all apps merged)."""
        return self._merged(self._accounts, app_id)

    def _merged(
        self, store: dict[tuple[str, str], dict[str, Any]], app_id: str | None
    ) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (owner, subject), properties in store.items():
                if app_id is None or owner == app_id:
                    merged.setdefault(subject, {}).update(properties)
        return merged

    def identifies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(record) for record in self._identifies]

    def stats(self) -> dict[str, Any]:
        """Counters. ``requests`` maps path -> outcome -> count; outcomes are status codes as
        strings ("200", "429", ...) or "dropped". Control API calls are not counted."""
        with self._lock:
            return self._stats.snapshot()

    def state(self) -> dict[str, Any]:
        """Everything ``GET /_emulator/state`` answers."""
        return {
            "tracked_events": self.tracked_events(),
            "user_properties": self.user_properties(),
            "account_properties": self.account_properties(),
            "identifies": self.identifies(),
            "stats": self.stats(),
        }

    def wait_for_events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` events are stored; raise TimeoutError otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._events) >= count, timeout):
                raise TimeoutError(f"{len(self._events)} of {count} events arrived within {timeout} s")
        return self.tracked_events()

    def reset(self) -> None:
        """Back to the just-constructed state: store, stats, faults, rate-limit setting and windows."""
        with self._lock:
            self._clear()

    # --- misbehaviour

    def fail_next(self, count: int, status: int, *, retry_after: float | None = None, body: str = "") -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After`` when given)."""
        if count < 0 or not 100 <= status <= 599:
            raise ValueError("count must be >= 0 and status an HTTP status code")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        with self._lock:
            if count:
                self._failures.append(_FailurePlan(count, status, retry_after, body))

    def set_outage(self, status: int | None, *, retry_after: float | None = None, body: str = "") -> None:
        """Answer every request with ``status`` (and ``Retry-After`` when given) until
        ``set_outage(None)``; nothing is stored meanwhile. Unlike ``fail_next`` it lasts as long
        as the outage does, however many requests the clients make; the store is kept, so ending
        the outage (rather than ``reset()``) shows what arrived after it."""
        if status is not None and not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        with self._lock:
            self._outage = None if status is None else _FailurePlan(0, status, retry_after, body)

    def set_latency(self, seconds: float) -> None:
        """Every request waits this long before it is answered (0 turns it off)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = seconds

    def drop_connections(self, count: int, *, after_store: bool = False) -> None:
        """Reset the connection of the next ``count`` requests without answering, before storing
        anything or (``after_store``) after storing, so the data is kept but the client never knows."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            if count:
                self._drops.append(_DropPlan(count, after_store))

    def trickle_next(
        self,
        count: int,
        *,
        bytes_per_second: float = 1.0,
        status: int | None = None,
        body: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests slowly: status line and headers (with the whole
        body's Content-Length) at once, then the body one byte every ``1 / bytes_per_second``
        seconds, so that a client whose read timeout bounds each socket read never times out.

        The request itself is handled as usual first (Heap's rules, rate limits, storing): Heap
        got it, only its answer is slow. ``status`` and ``body`` replace Heap's own answer when
        given; a body-less answer (a 200) sends ``OK``, so that there is something to trickle.
        """
        if count < 0 or (status is not None and not 100 <= status <= 599):
            raise ValueError("count must be >= 0 and status an HTTP status code")
        if not bytes_per_second > 0 or not math.isfinite(bytes_per_second):
            raise ValueError("bytes_per_second must be a positive number")
        with self._lock:
            if count:
                self._trickles.append(
                    _TricklePlan(count, 1 / bytes_per_second, status, None if body is None else body.encode())
                )

    def reject_event_names(self, names: Iterable[str] | Mapping[str, str]) -> None:
        """Track events with these names fail their whole request with 400 (replaces the set).

        Names alone are refused with ``postBody.events[i].event: event name 'X' is not accepted``;
        a mapping name -> text is refused with ``postBody.events[i].event: <text>``, to replay
        what Heap really answered (``Signup app_id mismatch 401``, say)."""
        if isinstance(names, str):
            raise TypeError("names must be a collection of names or a mapping name -> text, not a string")
        if isinstance(names, Mapping):
            refusals = dict(names)
        else:
            refusals = {name: f"event name {name!r} is not accepted" for name in names}
        with self._lock:
            self._rejected_names = refusals

    def set_anonymous_refusals(self, on: bool) -> None:
        """Answer a request that breaks a rule with the text alone, without the field path that
        names the item (``event name 'X' is not accepted``, not ``postBody.events[3].event: ...``):
        a Heap whose answer does not say which item it refused, so clients must bisect to find it."""
        with self._lock:
            self._anonymous_refusals = on

    def set_enforce_rate_limits(self, on: bool, *, time_scale: float | None = None) -> None:
        """Turn rate limits on or off; every window restarts empty."""
        if time_scale is not None:
            _check_time_scale(time_scale)
        with self._lock:
            self._enforce_rate_limits = on
            if time_scale is not None:
                self._time_scale = time_scale
            self._windows.clear()

    # --- serving (called on the server's handler threads)

    def _handle(self, handler: _Handler) -> None:
        path = urlsplit(handler.path).path
        body, too_large = _read_body(handler, self.max_body_bytes)
        if path.startswith(CONTROL_PREFIX):
            _send(handler, self._control(handler.command, path, body, too_large))
            return
        with self._lock:
            self._stats.bytes_received += len(body)
            failure = _take(self._failures) or self._outage
            drop = None if failure else _take(self._drops)
            trickle = None if failure or drop else _take(self._trickles)
            latency = self._latency
            if failure or drop or trickle:
                self._stats.faults_injected += 1
        if latency:
            time.sleep(latency)
        if failure is not None:
            headers = (
                () if failure.retry_after is None else (("Retry-After", format_seconds(failure.retry_after)),)
            )
            response = _Response(failure.status, failure.body.encode(), headers=headers)
            self._count(path, response.status)
            _send(handler, response)
            return
        if drop is not None and not drop.after_store:
            self._count(path, "dropped")
            _reset_connection(handler)
            return
        response = self._process(handler.command, path, body, too_large)
        if drop is not None:
            self._count(path, "dropped")
            _reset_connection(handler)
            return
        if trickle is not None:
            response = _Response(
                response.status if trickle.status is None else trickle.status,
                trickle.body if trickle.body is not None else response.body or TRICKLE_FILLER,
                content_type=response.content_type,
                headers=response.headers,
            )
            # Counted before the first byte: the answer may take longer than anyone waits.
            self._count(path, response.status)
            _send_trickled(handler, response, trickle.interval)
            return
        self._count(path, response.status)
        _send(handler, response)

    def _count(self, path: str, outcome: int | str) -> None:
        with self._lock:
            self._stats.count(path, outcome if isinstance(outcome, str) else str(int(outcome)))
            if outcome == HTTPStatus.TOO_MANY_REQUESTS:
                self._stats.rate_limited += 1
            elif outcome == HTTPStatus.BAD_REQUEST:
                self._stats.rejected += 1
            elif outcome == "dropped":
                self._stats.connections_dropped += 1

    def _process(self, method: str, path: str, body: bytes, too_large: bool) -> _Response:
        endpoint = _ENDPOINTS.get(path)
        if endpoint is None:
            return _Response.text(HTTPStatus.NOT_FOUND, f"Not found: {path}")
        if method != "POST":
            return _Response.text(HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed", ("Allow", "POST"))
        if too_large:
            return _Response.text(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Request body larger than {self.max_body_bytes} bytes"
            )
        try:
            payload = _parse_json(body)
            request = _validate(endpoint, _object(payload, "postBody"), self.app_ids, self._rejected_names)
        except _Rejected as rejection:
            text = rejection.text if self._anonymous_refusals else str(rejection)
            return _Response.text(HTTPStatus.BAD_REQUEST, text)
        with self._lock:
            if self._enforce_rate_limits:
                wait = self._admit(request)
                if wait > 0:
                    return _Response.text(
                        HTTPStatus.TOO_MANY_REQUESTS,
                        "Too many requests",
                        ("Retry-After", format_seconds(wait)),
                    )
            self._store(request)
            self._lock.notify_all()
        return _Response(HTTPStatus.OK)

    def _admit(self, request: _Request) -> float:
        """Count the request against every cap it falls under; the real seconds to wait if over one."""
        limits, scale, now = self.rate_limits, self._time_scale, time.monotonic()
        # (key, amount, cap, real window)
        charges: list[tuple[tuple[str, ...], int, int, float]] = []
        subjects = [
            f"identity:{item['identity']}" if "identity" in item else f"user_id:{item.get('user_id')}"
            for item in request.items
        ]
        if request.endpoint is Endpoint.TRACK:
            events_window = limits.events_window / scale
            charges.append((("events", request.app_id), len(subjects), limits.events_per_app, events_window))
            per_subject: dict[str, int] = {}
            for subject in subjects:
                per_subject[subject] = per_subject.get(subject, 0) + 1
            charges.extend(
                (("events", request.app_id, subject), amount, limits.events_per_identity, events_window)
                for subject, amount in per_subject.items()
            )
        if not request.bulk and request.endpoint in (Endpoint.TRACK, Endpoint.ADD_USER_PROPERTIES):
            charges.append(
                (
                    ("single", request.endpoint.value, request.app_id, subjects[0]),
                    1,
                    limits.single_requests_per_identity,
                    limits.single_requests_window / scale,
                )
            )
        wait = max(
            (
                self._windows.wait_needed(key, amount, cap, window, now)
                for key, amount, cap, window in charges
            ),
            default=0.0,
        )
        if wait == 0:
            for key, amount, _cap, window in charges:
                self._windows.add(key, amount, window, now)
        return wait

    def _store(self, request: _Request) -> None:
        stats, app_id = self._stats, request.app_id
        if request.endpoint is Endpoint.TRACK:
            for event in request.items:
                key = event.get("idempotency_key")
                if key is not None:
                    if (app_id, key) in self._seen_keys:
                        stats.duplicates += 1
                        continue
                    self._seen_keys.add((app_id, key))
                self._events.append(event)
                stats.events_accepted += 1
        elif request.endpoint is Endpoint.ADD_USER_PROPERTIES:
            for user in request.items:
                self._users.setdefault((app_id, user["identity"]), {}).update(user["properties"])
            stats.users_updated += len(request.items)
        elif request.endpoint is Endpoint.ADD_ACCOUNT_PROPERTIES:
            for account in request.items:
                self._accounts.setdefault((app_id, account["account_id"]), {}).update(account["properties"])
            stats.accounts_updated += len(request.items)
        else:
            self._identifies.extend(request.items)
            stats.identifies_accepted += len(request.items)

    # --- control API

    def _control(self, method: str, path: str, body: bytes, too_large: bool) -> _Response:
        action = path.removeprefix(CONTROL_PREFIX).rstrip("/")
        expected = {"state": "GET", "reset": "POST", "faults": "POST"}.get(action)
        if expected is None:
            return _Response.text(HTTPStatus.NOT_FOUND, f"Not found: {path}")
        if method != expected:
            return _Response.text(HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed", ("Allow", expected))
        if action == "state":
            return _Response.json(self.state())
        if action == "reset":
            self.reset()
            return _Response.json({"ok": True})
        if too_large:
            return _Response.text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large")
        try:
            self._apply_faults(pydantic_core.from_json(body or b"{}", allow_inf_nan=False))
        except (ValueError, TypeError, KeyError) as error:
            return _Response.text(HTTPStatus.BAD_REQUEST, f"Invalid faults: {error}")
        return _Response.json({"ok": True})

    def _apply_faults(self, faults: Any) -> None:
        """Apply a ``POST /_emulator/faults`` body (every key optional)."""
        if not isinstance(faults, dict):
            raise TypeError("expected a JSON object")
        unknown = set(faults) - {
            "fail_next",
            "outage",
            "latency",
            "drop_connections",
            "trickle",
            "reject_event_names",
            "anonymous_refusals",
            "rate_limits",
        }
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        if (fail := faults.get("fail_next")) is not None:
            self.fail_next(
                int(fail["count"]),
                int(fail["status"]),
                retry_after=None if fail.get("retry_after") is None else float(fail["retry_after"]),
                body=str(fail.get("body", "")),
            )
        if (outage := faults.get("outage")) is not None:
            if outage is False:
                self.set_outage(None)
            elif isinstance(outage, dict):
                self.set_outage(
                    int(outage["status"]),
                    retry_after=None if outage.get("retry_after") is None else float(outage["retry_after"]),
                    body=str(outage.get("body", "")),
                )
            else:
                raise TypeError('outage must be an object like {"status": 503} or false (the outage ends)')
        if (latency := faults.get("latency")) is not None:
            self.set_latency(float(latency))
        if (drop := faults.get("drop_connections")) is not None:
            self.drop_connections(int(drop["count"]), after_store=bool(drop.get("after_store", False)))
        if (trickle := faults.get("trickle")) is not None:
            status, body = trickle.get("status"), trickle.get("body")
            self.trickle_next(
                int(trickle["count"]),
                bytes_per_second=float(trickle.get("bytes_per_second", 1.0)),
                status=None if status is None else int(status),
                body=None if body is None else str(body),
            )
        if (names := faults.get("reject_event_names")) is not None:
            texts = names.values() if isinstance(names, dict) else names
            if not isinstance(names, list | dict) or not all(isinstance(text, str) for text in texts):
                raise TypeError(
                    "reject_event_names must be a list of names or an object mapping names to texts"
                )
            self.reject_event_names(names)
        if (anonymous := faults.get("anonymous_refusals")) is not None:
            if not isinstance(anonymous, bool):
                raise TypeError("anonymous_refusals must be true or false")
            self.set_anonymous_refusals(anonymous)
        if (limits := faults.get("rate_limits")) is not None:
            scale = limits.get("time_scale")
            self.set_enforce_rate_limits(
                bool(limits["enforce"]), time_scale=None if scale is None else float(scale)
            )

    def _track_connection(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


def _check_time_scale(time_scale: float) -> None:
    if not time_scale > 0 or not math.isfinite(time_scale):
        raise ValueError("time_scale must be a positive number")


def _take(plans: deque[_Plan]) -> _Plan | None:
    """Consume one use of the oldest plan (call with the lock held)."""
    if not plans:
        return None
    plan = plans[0]
    plan.remaining -= 1
    if plan.remaining == 0:
        plans.popleft()
    return plan


# --- HTTP plumbing -----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() must not wait for handler threads sleeping in injected latency.
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: HeapEmulator) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.emulator = emulator
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without DNS.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up are part of the game, not errors worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HeapEmulator/1"
    # Buffered writes: status line, headers and body leave in one send.
    wbufsize = 64 * 1024
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track_connection(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track_connection(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: per-request logging would swamp benchmarks."""

    def _dispatch(self) -> None:
        self.server.emulator._handle(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


def _read_body(handler: _Handler, max_bytes: int) -> tuple[bytes, bool]:
    """The request body and whether it exceeded ``max_bytes`` (then it is drained, not kept)."""
    try:
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(handler, max_bytes)
        length = int(handler.headers.get("Content-Length", "0"))
        if length < 0:
            raise ValueError("negative Content-Length")
    except ValueError:
        # Framing is lost: answer (the empty body fails as invalid JSON) and hang up.
        handler.close_connection = True
        return b"", False
    if length <= max_bytes:
        return handler.rfile.read(length), False
    if length > _MAX_DRAIN_BYTES:
        handler.close_connection = True
        return b"", True
    remaining = length
    while remaining > 0:
        chunk = handler.rfile.read(min(remaining, 1 << 20))
        if not chunk:
            break
        remaining -= len(chunk)
    return b"", True


def _read_chunked(handler: _Handler, max_bytes: int) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    total = 0
    while True:
        size = int(handler.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            # Trailers (if any) end with an empty line.
            while handler.rfile.readline(1024).strip():
                pass
            break
        total += size
        chunk = handler.rfile.read(size)
        handler.rfile.readline(16)
        if total <= max_bytes:
            parts.append(chunk)
        elif total > _MAX_DRAIN_BYTES:
            handler.close_connection = True
            return b"", True
    return (b"", True) if total > max_bytes else (b"".join(parts), False)


def _send(handler: _Handler, response: _Response) -> None:
    _send_head(handler, response)
    if handler.command != "HEAD":
        handler.wfile.write(response.body)


def _send_trickled(handler: _Handler, response: _Response, interval: float) -> None:
    """``response`` with its head at once and its body one byte per ``interval``.

    Gives up, closing the connection (the answer is cut off), as soon as the client hangs up or
    the emulator stops, so that a trickle never outlives either."""
    stopping = handler.server.stopping
    try:
        _send_head(handler, response)
        handler.wfile.flush()
        if handler.command == "HEAD":
            return
        for index in range(len(response.body)):
            if stopping.wait(interval) or _peer_gone(handler.connection):
                handler.close_connection = True
                return
            handler.wfile.write(response.body[index : index + 1])
            handler.wfile.flush()
    except OSError:
        handler.close_connection = True


def _peer_gone(connection: socket.socket) -> bool:
    """Whether the client closed its end (without blocking: a peek at what it sent since)."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # nothing to read: the client is still there, waiting
    except OSError:
        return True


def _send_head(handler: _Handler, response: _Response) -> None:
    """Status line and headers; Content-Length is the whole body's."""
    handler.send_response(response.status)
    if response.body:
        handler.send_header("Content-Type", response.content_type)
    handler.send_header("Content-Length", str(len(response.body)))
    for name, value in response.headers:
        handler.send_header(name, value)
    if handler.close_connection:
        handler.send_header("Connection", "close")
    handler.end_headers()


def _reset_connection(handler: _Handler) -> None:
    """Close the socket with an RST and no response, like a load balancer losing the request."""
    handler.close_connection = True
    connection = handler.connection
    with suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The file objects hold references to the socket, which only really closes once they are
    # closed; a stand-in writer absorbs the flush the request loop still does afterwards.
    for stream in (handler.rfile, handler.wfile):
        with suppress(OSError):
            stream.close()
    handler.wfile = io.BytesIO()
    connection.close()


# --- command line ------------------------------------------------------------------------------


def serve(host: str, port: int, app_ids: list[str], time_scale: float, enforce_rate_limits: bool) -> None:
    """Run an emulator until SIGINT or SIGTERM, announcing its URL on stdout first."""
    # A plain flag: a signal handler must not take a lock the code it interrupted may hold.
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    emulator = HeapEmulator(
        app_ids or DEFAULT_APP_IDS,
        time_scale=time_scale,
        enforce_rate_limits=enforce_rate_limits,
        host=host,
        port=port,
    )
    try:
        with emulator:
            print(f"Heap emulator listening on {emulator.url}", flush=True)
            while not stop_requested:
                time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m heap_forwarder_tools.emulator",
        description="Run a local Heap server-side API emulator.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--app-id",
        dest="app_ids",
        action="append",
        default=[],
        help=f"accepted app_id (repeatable; default {DEFAULT_APP_IDS[0]})",
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="Heap seconds per real second for rate limits"
    )
    parser.add_argument("--enforce-rate-limits", action="store_true")
    args = parser.parse_args(argv)
    serve(
        args.host, args.port, args.app_ids or list(DEFAULT_APP_IDS), args.time_scale, args.enforce_rate_limits
    )


if __name__ == "__main__":
    main()
