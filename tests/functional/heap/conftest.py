"""Fixtures of the Heap client tests: a live emulator, fake time (``FakeClock``), item makers."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3

from fake_clock import FakeClock
from heap_forwarder.heap.client import DeliverySettings, HeapClient
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.limiter import RateLimiter
from heap_forwarder.heap.transport import RequestRecord, new_pool
from heap_forwarder_tools.emulator import HeapEmulator

APP_ID = "demo-app-id"
FIELDS: dict[str, Any] = {"app_id": APP_ID}


def track(n: int, name: str = "Order Completed", *, key_prefix: str = "k", pad: int = 0) -> HeapItem:
    """A valid track item whose idempotency key is ``{key_prefix}{n}``."""
    properties: dict[str, Any] = {"n": n}
    if pad:
        properties["pad"] = "x" * pad
    return HeapItem(
        Endpoint.TRACK,
        {
            "identity": f"user-{n}",
            "event": name,
            "timestamp": "2024-05-01T12:00:00+00:00",
            "properties": properties,
            "idempotency_key": f"{key_prefix}{n}",
        },
        source=n,
    )


def tracks(count: int, **kwargs: Any) -> list[HeapItem]:
    return [track(n, **kwargs) for n in range(count)]


def user(n: int) -> HeapItem:
    return HeapItem(Endpoint.ADD_USER_PROPERTIES, {"identity": f"user-{n}", "properties": {"plan": "pro"}}, n)


def account(n: int) -> HeapItem:
    return HeapItem(
        Endpoint.ADD_ACCOUNT_PROPERTIES, {"account_id": f"acct-{n}", "properties": {"seats": n}}, n
    )


def identify(n: int) -> HeapItem:
    return HeapItem(Endpoint.IDENTIFY, {"user_id": str(1_000_000 + n), "identity": f"user-{n}"}, n)


def requests_to(emulator: HeapEmulator, endpoint: Endpoint = Endpoint.TRACK) -> dict[str, int]:
    """Requests the emulator saw on one path, by outcome ("200", "400", "dropped", ...)."""
    requests: dict[str, dict[str, int]] = emulator.stats()["requests"]
    return requests.get(endpoint.value, {})


def request_count(emulator: HeapEmulator) -> int:
    total: int = emulator.stats()["requests_total"]
    return total


class Kit:
    """The helpers above, as a fixture (test modules cannot import a conftest reliably)."""

    fields = FIELDS
    app_id = APP_ID
    FakeClock = FakeClock
    track = staticmethod(track)
    tracks = staticmethod(tracks)
    user = staticmethod(user)
    account = staticmethod(account)
    identify = staticmethod(identify)
    requests_to = staticmethod(requests_to)
    request_count = staticmethod(request_count)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="session")
def heap_emulator() -> Iterator[HeapEmulator]:
    emulator = HeapEmulator(app_ids=(APP_ID,)).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator(heap_emulator: HeapEmulator) -> HeapEmulator:
    """The session's emulator, emptied and with no faults armed."""
    heap_emulator.reset()
    return heap_emulator


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    # A pool per test: a connection dropped by one test must not surface in the next.
    manager = new_pool()  # watched: requests are cut off at their time limit, as in production
    yield manager
    manager.clear()


@pytest.fixture
def client_without_free_connection(emulator: HeapEmulator) -> Iterator[HeapClient]:
    """A client whose pool's only connection is taken by someone else: every request waits for
    a free one (0.2 s at most) and is not retried."""
    busy = urllib3.PoolManager(maxsize=1, block=True, retries=False)
    held = busy.connection_from_url(emulator.url)._get_conn()  # the only connection, taken
    try:
        yield HeapClient(
            DeliverySettings(base_url=emulator.url, connect_timeout_s=0.2, retry_budget_s=0.0),
            request_fields=FIELDS,
            pool=busy,
        )
    finally:
        held.close()
        busy.clear()


ClientFactory = Callable[..., HeapClient]


@pytest.fixture
def records() -> list[RequestRecord]:
    return []


@pytest.fixture
def make_client(
    emulator: HeapEmulator, clock: FakeClock, pool: urllib3.PoolManager, records: list[RequestRecord]
) -> ClientFactory:
    """A client for the app ``request_fields`` names (the emulator's by default), aimed at the
    emulator, on fake time (HTTP stays real); settings overridable."""

    def make(
        *,
        request_fields: dict[str, Any] = FIELDS,
        limiter: RateLimiter | None = None,
        observer: Callable[[RequestRecord], None] | None = None,
        **overrides: Any,
    ) -> HeapClient:
        options: dict[str, Any] = {"base_url": emulator.url, "read_timeout_s": 2.0, **overrides}
        return HeapClient(
            DeliverySettings(**options),
            request_fields=request_fields,
            limiter=limiter,
            pool=pool,
            sleep=clock.sleep,
            clock=clock,
            rng=random.Random(7),
            observer=observer or records.append,
        )

    return make
