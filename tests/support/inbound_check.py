"""The check of the hot path's shortcut (``quick_validate``) against the models, shared by its
unit tests (``tests/unit/test_inbound.py``) and its property
(``tests/property/test_inbound_properties.py``)."""

from __future__ import annotations

import copy
from typing import Any

from heap_forwarder.heap.rules import HeapRuleError, apply_rules
from heap_forwarder.mapping.engine import Mapper, MappingError
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import EventView
from heap_forwarder.models import as_plain, format_timestamp, quick_validate, validate_event
from heap_forwarder.pipeline import Pipeline
from sample_events import RAW_EVENTS, raw

RAW_FILES = sorted(RAW_EVENTS.glob("*.json"))
MAPPER = Mapper(build_playbook(), {"MY_APP_ID": "demo-app-id"})
RULES = Pipeline(MAPPER, deliverer=None).rule_settings  # type: ignore[arg-type]
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")


def sample(name: str) -> dict[str, Any]:
    return raw(name.removesuffix(".json"))


def mapped(event: Any, raw: dict[str, Any]) -> Any:
    """What the default playbook and Heap's rules make of it: items, or the error's words."""
    try:
        return [(i.endpoint, apply_rules(i, RULES).body) for i in MAPPER.map(event, raw)]
    except (MappingError, HeapRuleError) as error:
        return (type(error).__name__, str(error))


def without_absent_context_fields(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with its ``context``'s None-valued keys dropped: what ``as_plain`` makes of a
    typed part (``model_dump(exclude_none=True)``, as the engine dumped a model's context)."""
    context = event.get("context")
    if context.__class__ is not dict:
        return event
    return {**event, "context": {k: v for k, v in context.items() if v is not None}}


def assert_same_as_models(raw: dict[str, Any]) -> bool:
    """True when the shortcut vouched for ``raw`` (and agreed with the models in every respect)."""
    before = copy.deepcopy(raw)
    quick = quick_validate(raw)
    assert raw == before, "the shortcut must not change the event it reads"
    if quick is None:
        return False
    model = validate_event(raw)  # raises if the shortcut vouched for an invalid event
    for name in TIME_FIELDS:
        if getattr(model, name) is None:
            assert quick.get(name) is None
        else:
            assert quick[name] == getattr(model, name)
            assert format_timestamp(quick[name]) == format_timestamp(getattr(model, name))
    # The one shape the engine reads: the models' event made plain is the shortcut's dict (its
    # context without the keys that hold None, which read as absent either way).
    plain = as_plain(model)
    assert plain == without_absent_context_fields(quick)
    assert [(k, type(v)) for k, v in plain.items()] == [(k, type(quick[k])) for k in plain]
    assert mapped(quick, raw) == mapped(plain, raw)
    # What JMESPath rows read: the same plain data from either.
    dumped = model.model_dump(mode="json", exclude_none=True)
    assert (
        EventView(quick, raw).plain() == EventView(plain, raw).plain() == EventView(plain).plain() == dumped
    )
    return True
