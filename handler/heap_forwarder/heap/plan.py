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
    # Each item's JSON (identify: the whole body); None for an item of a batch encoded as a whole
    # (see ``together``) until a part of that batch is sent on its own.
    encoded: list[bytes | None] = field(default_factory=list)
    envelopes: dict[Endpoint, tuple[bytes, bytes]] = field(default_factory=dict)  # bulk prefix, suffix
    # Batches whose items were encoded in one call (one array, brackets cut): first index -> the
    # batch's indices and their JSON joined by commas, byte for byte what the items joined give.
    together: dict[int, tuple[list[int], bytes]] = field(default_factory=dict)
    items: Sequence[HeapItem] = ()

    def body(self, endpoint: Endpoint, indices: Sequence[int]) -> bytes:
        """The exact body of a request holding these items (a planned batch or any part of one)."""
        # Identify has no envelope: its one encoded item is the whole body.
        prefix, suffix = self.envelopes.get(endpoint, (b"", b""))
        if indices:
            whole = self.together.get(indices[0])
            if whole is not None and whole[0] == indices:
                return prefix + whole[1] + suffix
        return prefix + b",".join(self._encoded(i) for i in indices) + suffix

    def _encoded(self, i: int) -> bytes:
        data = self.encoded[i]
        if data is None:
            # Encoded once already, as part of its batch: it encodes now as it did then.
            data = self.encoded[i] = pydantic_core.to_json(self.items[i].body)
        return data


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
        self.result = DeliveryPlan(encoded=[b""] * len(items), items=items)

    def plan(self) -> DeliveryPlan:
        groups: dict[Endpoint, list[int]] = {}
        for i, item in enumerate(self.items):
            groups.setdefault(item.endpoint, []).append(i)
        batches = self.result.batches
        for endpoint, indices in groups.items():
            key = endpoint.bulk_key
            if key is None:
                # No bulk form: one request per item, body = {**request_fields, **item.body}.
                sent: dict[bytes, int] = {}
                for i in indices:
                    data = self._encode(i, {**self.fields, **self.items[i].body})
                    if data is not None and not self._too_big(i, len(data)):
                        first = sent.setdefault(data, i)
                        if first != i:
                            self.result.twins.setdefault(first, []).append(i)
                        else:
                            batches.append(Batch(endpoint, [i]))
            else:
                prefix, suffix = self.result.envelopes[endpoint] = self._envelope(key)
                if self._together(indices, len(prefix) + len(suffix)):
                    batches.append(Batch(endpoint, indices))
                    continue
                batches.extend(
                    Batch(endpoint, chunk) for chunk in self._chunks(indices, len(prefix) + len(suffix))
                )
        return self.result

    def _refuse(self, i: int, reason: str) -> None:
        self.result.refused.setdefault(i, rejected(ErrorClass.HEAP_RULE, reason))

    def _encode(self, i: int, body: Mapping[str, Any]) -> bytes | None:
        """The item's JSON (kept in the plan), or None: refused, not serialisable."""
        try:
            data = self.result.encoded[i] = pydantic_core.to_json(body)
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            self._refuse(i, f"item body is not JSON-serialisable: {exc}")
            return None
        return data

    def _together(self, indices: list[int], overhead: int) -> bool:
        """One request's worth of items (the usual streamed batch) encoded in one call: one
        array, its brackets cut, is the items' JSON joined by commas. Anything else (too many,
        too large, an item that does not encode) is packed item by item."""
        if len(indices) > self.max_items:
            return False
        try:
            data = pydantic_core.to_json([self.items[i].body for i in indices])
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError):
            return False
        if overhead + len(data) - 2 > self.max_bytes:
            return False
        self.result.together[indices[0]] = (indices, data[1:-1])
        for i in indices:
            self.result.encoded[i] = None
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
        for i in indices:
            data = self._encode(i, self.items[i].body)
            if data is None:
                continue
            item_size = len(data)
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
