"""The engine that runs a compiled playbook: one validated event in, Heap items out.

Knows nothing of HTTP or AWS. Heap's value rules are applied afterwards, in one place
(``heap_forwarder.heap.rules``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import BaseModel

from heap_forwarder.heap.items import HeapItem
from heap_forwarder.mapping.playbook import EventView, Playbook, RequestMapping, Row, bind_params, event_key
from heap_forwarder.mapping.transforms import TransformError
from heap_forwarder.models import EVENT_TYPES
from heap_forwarder.outcome import ErrorClass

_TYPE_KEYS = frozenset(t for t in EVENT_TYPES if t != "track")


class MappingError(ValueError):
    """An event the playbook cannot map: unsupported, or a required value missing or unconvertible."""

    def __init__(self, error_class: ErrorClass, message: str, field: str = "") -> None:
        super().__init__(message)
        self.error_class = error_class
        self.field = field


class MissingParameter(ValueError):
    """A required connection parameter (e.g. MY_APP_ID) has no value: a configuration fault."""


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _assign(body: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    node = body
    for depth, part in enumerate(key[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
        elif depth > 0:
            child = dict(child)  # deeper objects may still be the event's own: copy before writing
        node[part] = child
        node = child
    # Copy objects taken from the event: later rows add keys to them (properties.user_agent).
    node[key[-1]] = dict(value) if isinstance(value, dict) else value


def _has(body: dict[str, Any], key: tuple[str, ...]) -> bool:
    node: Any = body
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class Mapper:
    """A playbook bound to its connection parameters, ready to map events."""

    def __init__(self, playbook: Playbook, params: Mapping[str, str | None]) -> None:
        missing = [
            name
            for name, spec in playbook.spec.params.items()
            if spec.required and _is_missing(params.get(name, spec.value))
        ]
        if missing:
            raise MissingParameter(f"connection parameter(s) without a value: {', '.join(missing)}")
        values = {name: params.get(name, spec.value) for name, spec in playbook.spec.params.items()}
        self.playbook = playbook
        self.request_fields: dict[str, Any] = {}
        for row in playbook.request_rows:
            value = bind_params(row, values).evaluate(EventView(_NO_EVENT))
            if not _is_missing(value):
                _assign(self.request_fields, row.key, value)
        self._item_rows = tuple(replace(g, row=bind_params(g.row, values)) for g in playbook.item_rows)

        def bind(mappings: tuple[RequestMapping, ...]) -> tuple[RequestMapping, ...]:
            return tuple(replace(m, rows=tuple(bind_params(r, values) for r in m.rows)) for m in mappings)

        self._events = {key: bind(m) for key, m in playbook.events.items()}
        self._default = bind(playbook.default)

    def _mapping_for(self, event_type: str, event_name: str | None) -> tuple[RequestMapping, ...] | None:
        if event_type == "track" and event_name is not None:
            key = event_key(event_name)
            # A track event named "Page" or "Identify" is still a track event: the mappings of
            # the other event types are not for it.
            specific = None if key in _TYPE_KEYS else self._events.get(key)
            return specific or self._default or None
        return self._events.get(event_key(event_type))

    def map(self, event: BaseModel, raw: Mapping[str, Any] | None = None, index: int = 0) -> list[HeapItem]:
        event_type = getattr(event, "type", "")
        event_name = getattr(event, "event", None) if event_type == "track" else None
        mappings = self._mapping_for(event_type, event_name)
        if mappings is None:
            what = f"track event {event_name!r}" if event_name else f"{event_type!r} events"
            raise MappingError(
                ErrorClass.UNSUPPORTED,
                f"unsupported: the playbook has no mapping for {what}"
                + (" (Heap's server-side API cannot merge identities)" if event_type == "alias" else ""),
                "event" if event_name else "type",
            )
        view = EventView(event, raw)
        items = []
        for mapping in mappings:
            if mapping.when is not None and _is_missing(mapping.when(view)):
                continue
            body: dict[str, Any] = {}
            for row in mapping.rows:
                self._apply(row, view, body, only_if_unset=False)
            for global_row in self._item_rows:
                if mapping.endpoint in global_row.endpoints:
                    self._apply(global_row.row, view, body, only_if_unset=True)
            items.append(HeapItem(mapping.endpoint, body, index))
        return items

    @staticmethod
    def _apply(row: Row, view: EventView, body: dict[str, Any], *, only_if_unset: bool) -> None:
        if only_if_unset and _has(body, row.key):
            return
        try:
            value = row.evaluate(view)
        except TransformError as error:
            key = ".".join(row.key)
            raise MappingError(ErrorClass.INVALID_EVENT, f"{key}: {error}", key) from None
        if _is_missing(value):
            if row.required and not _has(body, row.key):
                key = ".".join(row.key)
                raise MappingError(
                    ErrorClass.INVALID_EVENT, f"{key}: required, but {row.source} is missing", key
                )
            return
        _assign(body, row.key, value)


class _NoEvent(BaseModel):
    """Request-level rows read no event data (the compiler enforces it)."""


_NO_EVENT = _NoEvent()
