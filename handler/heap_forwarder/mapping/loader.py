"""Loading playbooks: the bundled default, then overrides from a file and from SSM text.

Overrides merge onto the default section by section and event by event: ``params`` and
``rules`` key by key, ``global`` rows by output key (same key replaces, new keys are added),
``events`` by event name (matched ignoring case and separators; ``null`` removes a mapping),
``default`` as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from copy import deepcopy
from importlib import resources
from pathlib import Path
from typing import Any

from heap_forwarder.mapping.playbook import (
    Playbook,
    PlaybookError,
    compile_playbook,
    event_key,
    validate_document,
)

DEFAULT_PLAYBOOK_NAME = "default_playbook.yaml"


def parse_text(text: str, source: str) -> Any:
    """YAML or JSON text (JSON is YAML, but JSON's own parser gives clearer errors for it)."""
    import yaml  # imported when a playbook is read, not when a function starts

    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise PlaybookError(source, [f"cannot parse: {error}"]) from None


def default_document() -> dict[str, Any]:
    text = resources.files("heap_forwarder.mapping").joinpath(DEFAULT_PLAYBOOK_NAME).read_text("utf-8")
    document = parse_text(text, DEFAULT_PLAYBOOK_NAME)
    assert isinstance(document, dict)
    return document


def read_document(path: Path) -> Any:
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise PlaybookError(str(path), [f"cannot read: {error.strerror or error}"]) from None
    return parse_text(text, str(path))


def _merge_rows(base: list[Any], override: list[Any]) -> list[Any]:
    merged = list(base)
    positions = {row.get("key"): i for i, row in enumerate(merged) if isinstance(row, dict)}
    for row in override:
        key = row.get("key") if isinstance(row, dict) else None
        if key in positions:
            merged[positions[key]] = row
        else:
            positions[key] = len(merged)
            merged.append(row)
    return merged


def merge(base: dict[str, Any], override: Any, source: str) -> dict[str, Any]:
    """Merge an override document onto ``base`` (a copy is returned; inputs are not changed)."""
    if not isinstance(override, dict):
        raise PlaybookError(
            source, [f"an override is a mapping at the top level, not {type(override).__name__}"]
        )
    merged = deepcopy(base)
    for section, value in override.items():
        current = merged.get(section)
        if section in ("params", "rules") and isinstance(value, dict) and isinstance(current, dict):
            current.update(value)
        elif section == "global" and isinstance(value, dict) and isinstance(current, dict):
            for part, rows in value.items():
                existing = current.get(part)
                if isinstance(rows, list) and isinstance(existing, list):
                    current[part] = _merge_rows(existing, rows)
                else:
                    current[part] = rows
        elif section == "events" and isinstance(value, dict) and isinstance(current, dict):
            by_key = {event_key(name): name for name in current}
            for name, mapping in value.items():
                current.pop(by_key.get(event_key(name), name), None)
                current[name] = mapping
        else:
            merged[section] = deepcopy(value)
    return merged


def build_playbook(
    file: Path | None = None,
    parameter_text: str | None = None,
    parameter_name: str = "MAPPING_PARAMETER",
) -> Playbook:
    """The default playbook with the file's and then the SSM parameter's overrides merged on."""
    document = default_document()
    sources = [DEFAULT_PLAYBOOK_NAME]
    if file is not None:
        document = merge(document, read_document(file), str(file))
        sources.append(str(file))
    if parameter_text is not None and parameter_text.strip():
        source = f"SSM parameter {parameter_name}"
        document = merge(document, parse_text(parameter_text, source), source)
        sources.append(source)
    source = " + ".join(sources)
    return compile_playbook(validate_document(document, source), source)


class PlaybookHolder:
    """Keeps the last good playbook: a refresh that loads a bad one reports it and changes nothing."""

    def __init__(self, playbook: Playbook, on_error: Callable[[PlaybookError], None]) -> None:
        self.playbook = playbook
        self._on_error = on_error
        self._last_text: str | None = None

    def refresh(self, file: Path | None, parameter_text: str | None) -> Playbook:
        if parameter_text == self._last_text:
            return self.playbook
        try:
            self.playbook = build_playbook(file, parameter_text)
        except PlaybookError as error:
            self._on_error(error)
        else:
            self._last_text = parameter_text
        return self.playbook
