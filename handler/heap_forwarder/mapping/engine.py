"""The engine that runs a compiled playbook: one validated event in, Heap items out.

Knows nothing of HTTP or AWS. Heap's value rules are applied afterwards, in one place
(``heap_forwarder.heap.rules``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from heap_forwarder.heap.items import HeapItem
from heap_forwarder.inbound import EVENT_TYPES
from heap_forwarder.mapping.playbook import (
    EventView,
    Mode,
    Playbook,
    RequestMapping,
    Row,
    Step,
    bind_params,
    event_key,
)
from heap_forwarder.mapping.transforms import TransformError
from heap_forwarder.outcome import ErrorClass

# (reader, transforms, single output key or None, output key path, how it writes, the row)
_Step = tuple[
    Callable[[EventView], Any], tuple[Callable[[Any], Any], ...], str | None, tuple[str, ...], Mode, Row
]
_TYPE_KEYS = frozenset(t for t in EVENT_TYPES if t != "track")


class MappingError(ValueError):
    """An event the playbook cannot map: unsupported, or a required value missing or unconvertible."""

    def __init__(self, error_class: ErrorClass, message: str, field: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.error_class = error_class
        self.field = field
        self.detail = detail  # the message with the event's own value: never logged


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


def _remove(body: dict[str, Any], key: tuple[str, ...]) -> bool:
    """Remove ``key`` from the body; the objects on the way are copied first (they may still
    be the event's own). False when there was nothing to remove."""
    if not _has(body, key):
        return False
    node = body
    for part in key[:-1]:
        node[part] = dict(node[part])
        node = node[part]
    del node[key[-1]]
    return True


def _has(body: dict[str, Any], key: tuple[str, ...]) -> bool:
    node: Any = body
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class Mapper:
    """A playbook bound to its connection parameters (and hash key), ready to map events."""

    def __init__(
        self, playbook: Playbook, params: Mapping[str, str | None], hash_key: bytes | None = None
    ) -> None:
        # A parameter given as None is not given: the playbook's fixed value (if any) stands.
        values = {
            name: given if (given := params.get(name)) is not None else spec.value
            for name, spec in playbook.spec.params.items()
        }
        missing = [
            name for name, spec in playbook.spec.params.items() if spec.required and _is_missing(values[name])
        ]
        if missing:
            raise MissingParameter(f"connection parameter(s) without a value: {', '.join(missing)}")
        if playbook.uses_hash and not hash_key:
            raise MissingParameter(
                "the playbook hashes values (an edit's hash:) but no hash key is configured: "
                "name a SecureString parameter in HASH_KEY_PARAMETER (template: HashKeyParameterName)"
            )
        self.playbook = playbook
        self._hash_key = hash_key
        self.request_fields: dict[str, Any] = {}
        for row in playbook.request_rows:
            # Request-level rows read no event data (the compiler enforces it): an empty event.
            value = bind_params(row, values).evaluate(EventView({}))
            if not _is_missing(value):
                _assign(self.request_fields, row.key, value)
        # Each request mapping's steps (see playbook.RequestMapping), unpacked into plain tuples:
        # the per-event loop then does no attribute lookups.
        self._steps: dict[int, tuple[_Step, ...]] = {}
        for mappings in (*playbook.events.values(), playbook.default):
            for mapping in mappings:
                self._steps[id(mapping)] = tuple(
                    (
                        (row := bind_params(step.row, values)).read,
                        row.transforms,
                        row.key[0] if len(row.key) == 1 else None,
                        row.key,
                        step.mode,
                        row,
                    )
                    for step in mapping.steps
                )

    def mappings_for(self, event_type: str, event_name: str | None) -> tuple[RequestMapping, ...] | None:
        events = self.playbook.events
        if event_type == "track" and event_name is not None:
            key = event_key(event_name)
            # A track event named "Page" or "Identify" is still a track event: the mappings of
            # the other event types are not for it.
            specific = None if key in _TYPE_KEYS else events.get(key)
            return specific or self.playbook.default or None
        return events.get(event_key(event_type))

    @property
    def hash_key(self) -> bytes | None:
        return self._hash_key

    def bound_steps(self, mapping: RequestMapping) -> tuple[Step, ...]:
        """The mapping's steps with their params bound: what ``map`` runs for it."""
        return tuple(Step(row, mode) for *_, mode, row in self._steps[id(mapping)])

    def map(
        self,
        event: dict[str, Any],
        raw: Mapping[str, Any] | None = None,
        index: int = 0,
        trace: list[dict[str, str]] | None = None,
    ) -> list[HeapItem]:
        """``event``: the plain dict ``quick_validate`` vouched for, or ``models.as_plain`` made
        of the validated model (the same shape); ``raw``: the event as it came. ``trace``, when
        given, gets one dict per item: each key written, and by which row or edit."""
        event_type = event.get("type", "")
        event_name = event.get("event") if event_type == "track" else None
        mappings = self.mappings_for(event_type, event_name)
        if mappings is None:
            what = f"track event {event_name!r}" if event_name else f"{event_type!r} events"
            raise MappingError(
                ErrorClass.UNSUPPORTED,
                f"the playbook has no mapping for {what}"
                + (" (Heap's server-side API cannot merge identities)" if event_type == "alias" else ""),
                "event" if event_name else "type",
            )
        view = EventView(event, raw)
        items = []
        for mapping in mappings:
            if mapping.when is not None and _is_missing(mapping.when(view)):
                continue
            body: dict[str, Any] = {}
            written: dict[str, str] | None = {} if trace is not None else None
            for read, transforms, top, key, mode, row in self._steps[id(mapping)]:
                if mode is Mode.REMOVE:
                    if _remove(body, key) and written is not None:
                        written[".".join(key)] = f"removed by {_explain(row)}"
                    continue
                if mode is Mode.FILL and (top in body if top is not None else _has(body, key)):
                    continue  # a global row only fills what the mapping's own rows left unset
                try:
                    value = read(view)
                    for transform in transforms:
                        value = transform(value)
                except TransformError as error:
                    name = ".".join(key)
                    raise MappingError(
                        ErrorClass.INVALID_EVENT, f"{name}: {error}", name, f"{name}: {error.detail}"
                    ) from None
                if value is None or (value.__class__ is str and not value.strip()):
                    if row.required and not _has(body, key):
                        name = ".".join(key)
                        raise MappingError(
                            ErrorClass.INVALID_EVENT, f"{name}: required, but {row.source} is missing", name
                        )
                    continue
                if top is not None:
                    # Copy objects taken from the event: later rows and edits change them.
                    body[top] = dict(value) if value.__class__ is dict else value
                else:
                    _assign(body, key, value)
                if written is not None:
                    written[".".join(key)] = _explain(row)
            for edit in mapping.edits:
                edit(body, self._hash_key, written)
            items.append(HeapItem(mapping.endpoint, body, index))
            if trace is not None and written is not None:
                trace.append(written)
        return items


def _explain(row: Row) -> str:
    return f"{row.label} <- {row.source} [{row.origin}]"
