"""What the mapping hands to delivery: Heap request items, one endpoint each."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple


class Endpoint(StrEnum):
    TRACK = "/api/track"
    ADD_USER_PROPERTIES = "/api/add_user_properties"
    ADD_ACCOUNT_PROPERTIES = "/api/add_account_properties"
    IDENTIFY = "/api/v1/identify"

    @property
    def bulk_key(self) -> str | None:
        """The array a bulk request of this endpoint carries its items in (None: no bulk form)."""
        return _BULK_KEYS[self]


_BULK_KEYS: dict[Endpoint, str | None] = {
    Endpoint.TRACK: "events",
    Endpoint.ADD_USER_PROPERTIES: "users",
    Endpoint.ADD_ACCOUNT_PROPERTIES: "accounts",
    Endpoint.IDENTIFY: None,
}


class HeapItem(NamedTuple):
    """One item of a Heap request, without the request-level fields (``app_id``).

    ``body`` is what goes into the bulk array (or, for ``/api/v1/identify``, the whole
    request body less ``app_id``). ``source`` is the index of the input event it came from,
    so that outcomes can be folded back per event.
    """

    endpoint: Endpoint
    body: dict[str, Any]
    source: int = 0
