"""Loading playbooks: the bundled default, then overrides from a file and from SSM text.

Overrides merge onto the default section by section and event by event: ``params`` and
``rules`` key by key, ``global`` rows by output key (same key replaces, new keys are added),
``events`` by event name (matched ignoring case and separators; ``null`` removes a mapping),
``default`` as a whole.

Documents are read keeping where each node was written (``source_map``), so that a problem in
the merged playbook names the file, line and column of the node it is about, override or default.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from heap_forwarder.inbound import EVENT_TYPES
from heap_forwarder.mapping.playbook import (
    Playbook,
    PlaybookError,
    PlaybookProblem,
    compile_playbook,
    event_key,
    validate_document,
)
from heap_forwarder.mapping.source_map import SourceMap, SyntaxProblem, parse, path_of_label
from heap_forwarder.mapping.suggest import near_reserved

DEFAULT_PLAYBOOK_NAME = "default_playbook.yaml"


def parse_text(text: str, source: str) -> Any:
    """YAML or JSON text (JSON is YAML, but JSON's own parser gives clearer errors for it), its
    containers remembering where each entry was written."""
    try:
        return parse(text, source)
    except SyntaxProblem as error:
        raise PlaybookError(
            source, [PlaybookProblem("", f"cannot parse: {error}", (), error.location)]
        ) from None


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
            source,
            [
                "an override is a mapping at the top level, not "
                + ("list" if isinstance(override, list) else type(override).__name__)
            ],
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
    parsed = [document]
    if file is not None:
        parsed.append(read_document(file))
        document = merge(document, parsed[-1], str(file))
        sources.append(str(file))
    if parameter_text is not None and parameter_text.strip():
        source = f"SSM parameter {parameter_name}"
        parsed.append(parse_text(parameter_text, source))
        document = merge(document, parsed[-1], source)
        sources.append(source)
    source = " + ".join(sources)
    plain, positions = SourceMap.of(document, parsed[::-1])
    try:
        playbook = compile_playbook(validate_document(plain, source), source)
    except PlaybookError as error:
        raise PlaybookError(error.source, [_located(p, plain, positions) for p in error.details]) from None
    return replace(playbook, warnings=tuple(_warnings(playbook, plain, positions)))


def _located(problem: PlaybookProblem, document: Any, positions: SourceMap) -> PlaybookProblem:
    """The problem with its file, line and column: from its path, else from the label its text
    starts with (``events.X.rows[2] (key): ...``, as the compiler words problems)."""
    if problem.location is not None:
        return problem
    if problem.path:
        return replace(problem, location=positions.locate(problem.path))
    path, where, message = path_of_label(problem.text, document)
    if not path:
        return problem
    return PlaybookProblem(where, message, path, positions.locate(path))


def _warnings(playbook: Playbook, document: Any, positions: SourceMap) -> list[PlaybookProblem]:
    """Mapping names a slip away from an event type (``pages``, ``identfy``): valid (a custom
    track event by that name), but most likely meant to map that type."""
    warnings = []
    for name, reserved in near_reserved(playbook.spec.events, EVENT_TYPES, event_key):
        path = ("events", name)
        message = (
            f"{name!r} is not the event type {reserved!r}: it maps track events named {name!r}"
            f" (did you mean {reserved!r}?)"
        )
        warnings.append(PlaybookProblem(f"events.{name}", message, path, positions.locate(path)))
    return warnings


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
