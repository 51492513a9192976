"""``preview --explain``: for each key of each Heap item an event makes, the row or edit that
wrote it and the file it came from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from heap_forwarder.heap.rules import RuleSettings, apply_rules
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.pipeline import plain_event


def _written_by(trace: dict[str, str], key: str) -> str:
    """The trace entry of ``key`` or of the nearest object it is in (``properties.a.b`` ->
    ``properties.a`` -> ``properties``)."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = trace.get(".".join(parts[:end]))
        if found is not None:
            return found
    return "(no row: added by Heap's rules)"


def _keys(body: dict[str, Any]) -> Iterator[str]:
    for key, value in body.items():
        if isinstance(value, dict):
            # After Heap's rules an object holds flat keys ("products.0.sku"): one line each.
            yield from (f"{key}.{inner}" for inner in value)
        else:
            yield key


def explain(mapper: Mapper, raw: Any, rules: RuleSettings, label: str) -> list[str]:
    """Lines saying where each output key of the event's Heap items came from."""
    trace: list[dict[str, str]] = []
    items = mapper.map(plain_event(raw), raw, trace=trace)
    lines = []
    for item, written in zip(items, trace, strict=True):
        body = apply_rules(item, rules).body
        lines.append(f"  explain {label} -> {item.endpoint}:")
        keys = list(_keys(body))
        width = max((len(k) for k in keys), default=0)
        lines += [f"    {key:<{width}}  {_written_by(written, key)}" for key in keys]
        removed = sorted(k for k, v in written.items() if "removed" in v or "dropped" in v)
        lines += [f"    {key:<{width}}  {written[key]}" for key in removed if key not in keys]
    return lines
