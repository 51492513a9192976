"""Planning a delivery: Heap items to the fewest requests Heap allows. Pure: no I/O, no clock.

Items are grouped by endpoint (groups in order of first appearance, order kept inside each),
each item is JSON-encoded once, and bulk endpoints are packed greedily within the item and
byte caps; identify (no bulk form) is one request per item, and identify calls repeated word
for word are planned once (their twins share its outcome). Items that cannot go (too large
alone, not JSON-encodable) are refused here, before anything is sent. Request bodies are
assembled by byte concatenation, so retries and isolation resend the very same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import pydantic_core

from heap_forwarder import defaults
from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.outcome import ErrorClass, Outcome, rejected

__all__ = ["Batch", "Caps", "DeliveryPlan", "PlannedRequest", "RequestCaps", "plan_delivery", "plan_requests"]

MAX_REQUEST_BYTES = 3_000_000  # lets 1000 events of ~1 KB travel in one request


class Caps(Protocol):
    """What planning needs of the settings (``DeliverySettings`` has both)."""

    @property
    def max_items_per_request(self) -> int: ...

    @property
    def max_request_bytes(self) -> int: ...


class RequestCaps(NamedTuple):
    max_items_per_request: int = defaults.HEAP_BULK_CAP
    max_request_bytes: int = MAX_REQUEST_BYTES


DEFAULT_CAPS = RequestCaps()


class Batch(NamedTuple):
    """One planned request: its endpoint and the positions of its items in the input."""

    endpoint: Endpoint
    indices: list[int]


@dataclass
class DeliveryPlan:
    """The requests to send (in order), the items refused before sending, and identify twins."""

    batches: list[Batch] = field(default_factory=list)
    refused: dict[int, Outcome] = field(default_factory=dict)
    # Identify calls repeated word for word are sent once (linking a Heap user to an identity
    # is repeat-safe): first position -> the positions of its repeats.
    twins: dict[int, list[int]] = field(default_factory=dict)
    encoded: list[bytes] = field(default_factory=list)  # each item's JSON (identify: the whole body)
    envelopes: dict[Endpoint, tuple[bytes, bytes]] = field(default_factory=dict)  # bulk prefix, suffix

    def body(self, endpoint: Endpoint, indices: Sequence[int]) -> bytes:
        """The exact body of a request holding these items (a planned batch or any part of one)."""
        # Identify has no envelope: its one encoded item is the whole body.
        prefix, suffix = self.envelopes.get(endpoint, (b"", b""))
        return prefix + b",".join(self.encoded[i] for i in indices) + suffix


class PlannedRequest(NamedTuple):
    """A request as the client first sends it (before any retry or split), for previews."""

    endpoint: Endpoint
    indices: tuple[int, ...]  # positions of its items in the input
    data: bytes  # the exact body

    def body(self) -> dict[str, Any]:
        document: dict[str, Any] = pydantic_core.from_json(self.data)
        return document


def plan_requests(
    items: Sequence[HeapItem], request_fields: Mapping[str, Any], caps: Caps = DEFAULT_CAPS
) -> list[PlannedRequest]:
    """The requests ``HeapClient.deliver`` would start with, without sending anything.

    Items that would be refused before sending (too large alone, not JSON-encodable) are in none.
    """
    plan = plan_delivery(items, request_fields, caps)
    return [
        PlannedRequest(b.endpoint, tuple(b.indices), plan.body(b.endpoint, b.indices)) for b in plan.batches
    ]


def plan_delivery(items: Sequence[HeapItem], request_fields: Mapping[str, Any], caps: Caps) -> DeliveryPlan:
    """Encode every item once and pack the requests; items that cannot go are refused here."""
    return _Planner(items, request_fields, caps).plan()


class _Planner:
    def __init__(self, items: Sequence[HeapItem], request_fields: Mapping[str, Any], caps: Caps) -> None:
        self.items = items
        self.fields = dict(request_fields)
        self.max_items = caps.max_items_per_request
        self.max_bytes = caps.max_request_bytes
        self.result = DeliveryPlan(encoded=[b""] * len(items))

    def plan(self) -> DeliveryPlan:
        groups: dict[Endpoint, list[int]] = {}
        for i, item in enumerate(self.items):
            groups.setdefault(item.endpoint, []).append(i)
        batches = self.result.batches
        for endpoint, indices in groups.items():
            key = endpoint.bulk_key
            if key is None:
                # No bulk form: one request per item, body = {**request_fields, **item.body}.
                encoded = self.result.encoded
                sent: dict[bytes, int] = {}
                for i in indices:
                    if self._encode(i, {**self.fields, **self.items[i].body}) and not self._too_big(
                        i, len(encoded[i])
                    ):
                        first = sent.setdefault(encoded[i], i)
                        if first != i:
                            self.result.twins.setdefault(first, []).append(i)
                        else:
                            batches.append(Batch(endpoint, [i]))
            else:
                prefix, suffix = self.result.envelopes[endpoint] = self._envelope(key)
                batches.extend(
                    Batch(endpoint, chunk) for chunk in self._chunks(indices, len(prefix) + len(suffix))
                )
        return self.result

    def _refuse(self, i: int, reason: str) -> None:
        self.result.refused.setdefault(i, rejected(ErrorClass.HEAP_RULE, reason))

    def _encode(self, i: int, body: Mapping[str, Any]) -> bool:
        try:
            self.result.encoded[i] = pydantic_core.to_json(body)
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            self._refuse(i, f"item body is not JSON-serialisable: {exc}")
            return False
        return True

    def _envelope(self, key: str) -> tuple[bytes, bytes]:
        # {**request_fields, key: [...]}, built so that item bytes can be spliced in as they are.
        fields = {k: v for k, v in self.fields.items() if k != key}
        head = pydantic_core.to_json(fields)[:-1]
        prefix = head + (b"," if fields else b"") + pydantic_core.to_json(key) + b":["
        return prefix, b"]}"

    def _too_big(self, i: int, size: int) -> bool:
        if size <= self.max_bytes:
            return False
        self._refuse(i, f"item makes a {size}-byte request; the cap is {self.max_bytes} bytes")
        return True

    def _chunks(self, indices: list[int], overhead: int) -> list[list[int]]:
        """Greedy, order-keeping packing: the fewest contiguous requests within both caps."""
        chunks: list[list[int]] = []
        current: list[int] = []
        size = overhead
        encoded = self.result.encoded
        for i in indices:
            if not self._encode(i, self.items[i].body):
                continue
            item_size = len(encoded[i])
            if self._too_big(i, overhead + item_size):
                continue
            added = item_size + (1 if current else 0)
            if current and (len(current) >= self.max_items or size + added > self.max_bytes):
                chunks.append(current)
                current, size, added = [], overhead, item_size
            current.append(i)
            size += added
        if current:
            chunks.append(current)
        return chunks
