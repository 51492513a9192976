"""Loading playbooks: the bundled default, then overrides from a file and from SSM text.

Overrides merge onto the default section by section and event by event: ``params`` and
``rules`` key by key; ``global`` request rows by output key, item rows by output key and
endpoint (``_merge_item_rows``), edits by the object they edit (``null`` removes one);
``events`` by event name (matched ignoring case and separators; ``null`` removes a mapping);
``default`` as a whole. Removing what is not there is refused: it would change nothing.

Documents are read keeping where each node was written (``source_map``), so that a problem in
the merged playbook names the file, line and column of the node it is about, override or default.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from heap_forwarder.inbound import EVENT_TYPES
from heap_forwarder.mapping.playbook import (
    ENDPOINTS_BY_NAME,
    Origins,
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


def _removes(row: dict[str, Any]) -> bool:
    return "value" in row and row["value"] is None and not any(k in row for k in ("from", "param", "expr"))


def _merge_request_rows(base: list[Any], origins: list[str], override: list[Any], source: str) -> None:
    """Request rows: a row replaces the row with the same key; new keys are added."""
    positions = {row.get("key"): i for i, row in enumerate(base) if isinstance(row, dict)}
    for row in override:
        key = row.get("key") if isinstance(row, dict) else None
        if key in positions:
            base[positions[key]] = deepcopy(row)
            origins[positions[key]] = source
        else:
            positions[key] = len(base)
            base.append(deepcopy(row))
            origins.append(source)


def _merge_item_rows(base: list[Any], origins: list[str], override: list[Any], source: str) -> None:
    """Global item rows: a row replaces the rows with the same key on its endpoints; a row
    that names no endpoints applies where the rows it replaces applied (everywhere when it
    replaces none). A ``value: null`` row that replaced a row has done its job; one that
    replaced none stays, to remove the key from the objects rows produce."""
    for row in override:
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            base.append(deepcopy(row))
            origins.append(source)
            continue
        given = row.get("endpoints")
        given_set = set(given) if isinstance(given, list) else None
        replaced: set[str] = set()
        kept_rows: list[Any] = []
        kept_origins: list[str] = []
        for existing, origin in zip(base, origins, strict=True):
            if isinstance(existing, dict) and existing.get("key") == row["key"]:
                had = existing.get("endpoints")
                had_list = list(had) if isinstance(had, list) else list(ENDPOINTS_BY_NAME)
                left = [] if given_set is None else [e for e in had_list if e not in given_set]
                replaced.update(e for e in had_list if e not in left)
                if not left:
                    continue
                if len(left) != len(had_list):
                    kept_rows.append({**existing, "endpoints": left})
                    kept_origins.append(origin)
                    continue
            kept_rows.append(existing)
            kept_origins.append(origin)
        base[:] = kept_rows
        origins[:] = kept_origins
        if replaced and _removes(row):
            continue
        added = deepcopy(row)
        if given is None and replaced and replaced != set(ENDPOINTS_BY_NAME):
            added["endpoints"] = [e for e in ENDPOINTS_BY_NAME if e in replaced]
        base.append(added)
        origins.append(source)


def merge(base: dict[str, Any], override: Any, source: str, origins: Origins | None = None) -> dict[str, Any]:
    """Merge an override document onto ``base`` (a copy is returned; inputs are not changed).
    ``origins``, when given, is updated to say which source each part now comes from."""
    if not isinstance(override, dict):
        raise PlaybookError(
            source,
            [
                "an override is a mapping at the top level, not "
                + ("list" if isinstance(override, list) else type(override).__name__)
            ],
        )
    origins = origins if origins is not None else Origins()
    problems: list[str] = []
    merged = deepcopy(base)
    for section, value in override.items():
        current = merged.get(section)
        if section in ("params", "rules") and isinstance(value, dict) and isinstance(current, dict):
            current.update(value)
        elif section == "global" and isinstance(value, dict) and isinstance(current, dict):
            for part, rows in value.items():
                if part in ("request", "item") and isinstance(rows, list):
                    current.setdefault(part, [])
                elif part == "edit" and isinstance(rows, dict):
                    current.setdefault(part, {})
                existing = current.get(part)
                if part == "request" and isinstance(rows, list) and isinstance(existing, list):
                    _merge_request_rows(existing, _fit(origins.request, existing), rows, source)
                elif part == "item" and isinstance(rows, list) and isinstance(existing, list):
                    _merge_item_rows(existing, _fit(origins.item, existing), rows, source)
                elif part == "edit" and isinstance(rows, dict) and isinstance(existing, dict):
                    problems += _merge_edits(existing, origins.edit, rows, source)
                else:
                    current[part] = deepcopy(rows)
                    _claim(origins, part, rows, source)
        elif section == "events" and isinstance(value, dict) and isinstance(current, dict):
            by_key = {event_key(name): name for name in current}
            for name, mapping in value.items():
                old: str = by_key.get(event_key(name)) or name
                if mapping is None and current.get(old) is None:
                    problems.append(f"events.{name}: null removes a mapping, but there is none for {name}")
                    continue
                current.pop(old, None)
                origins.events.pop(old, None)
                if mapping is None:
                    continue
                current[name] = deepcopy(mapping)
                origins.events[name] = source
        else:
            merged[section] = deepcopy(value)
            if section == "default":
                origins.default = source
            elif section == "global" and isinstance(value, dict):
                for part, rows in value.items():
                    _claim(origins, part, rows, source)
            elif section == "events" and isinstance(value, dict):
                origins.events = dict.fromkeys(value, source)
    if problems:
        raise PlaybookError(source, problems)
    return merged


def _merge_edits(
    base: dict[str, Any], origins: dict[str, str], override: dict[str, Any], source: str
) -> list[str]:
    """Global edits: an edit replaces the one of the same object; ``null`` removes it. The
    problems: removing what is not there, and a replacement that would stop hashing."""
    problems = []
    for target, edit in override.items():
        if edit is None:
            if base.pop(target, None) is None:
                problems.append(f"global.edit.{target}: null removes an edit, but there is none")
            origins.pop(target, None)
            continue
        unhashed = _hashes_dropped(base.get(target), edit)
        if unhashed:
            problems.append(
                f"global.edit.{target}: replaces the edit of {origins.get(target)}, which hashes "
                f"{', '.join(unhashed)}: this one would send them in clear; add them to its hash "
                f"(to stop hashing them, change {origins.get(target)} itself)"
            )
        base[target] = deepcopy(edit)
        origins[target] = source
    return problems


def _hashes_dropped(replaced: Any, edit: Any) -> list[str]:
    """The names a replaced edit hashed that the edit replacing it does not: personal data an
    override would otherwise let through in clear without a word."""
    if not isinstance(replaced, dict) or not isinstance(edit, dict):
        return []
    before, after = replaced.get("hash"), edit.get("hash")
    if not isinstance(before, list):
        return []
    kept = {str(n).casefold() for n in after} if isinstance(after, list) else set()
    return [str(n) for n in before if str(n).casefold() not in kept]


def _fit(origins: list[str], rows: list[Any]) -> list[str]:
    # Origins not tracked so far (a document merged without them) came from the base.
    origins.extend([DEFAULT_PLAYBOOK_NAME] * (len(rows) - len(origins)))
    return origins


def _claim(origins: Origins, part: str, rows: Any, source: str) -> None:
    if part == "request" and isinstance(rows, list):
        origins.request[:] = [source] * len(rows)
    elif part == "item" and isinstance(rows, list):
        origins.item[:] = [source] * len(rows)
    elif part == "edit" and isinstance(rows, dict):
        origins.edit.clear()
        origins.edit.update(dict.fromkeys(rows, source))


def default_origins(document: dict[str, Any]) -> Origins:
    """Every part of the bundled playbook comes from its file."""
    section = document.get("global") or {}
    return Origins(
        request=[DEFAULT_PLAYBOOK_NAME] * len(section.get("request") or []),
        item=[DEFAULT_PLAYBOOK_NAME] * len(section.get("item") or []),
        edit=dict.fromkeys(section.get("edit") or {}, DEFAULT_PLAYBOOK_NAME),
        events=dict.fromkeys(document.get("events") or {}, DEFAULT_PLAYBOOK_NAME),
        default=DEFAULT_PLAYBOOK_NAME,
    )


class Merged(NamedTuple):
    """The playbook document in force, before validation."""

    document: dict[str, Any]  # plain data
    source: str  # its sources: ``default_playbook.yaml + file + SSM parameter name``
    origins: Origins  # which source each part came from
    positions: SourceMap  # where each node was written


def merged_document(
    file: Path | None = None,
    parameter_text: str | None = None,
    parameter_name: str = "MAPPING_PARAMETER",
) -> Merged:
    """The default playbook with the file's and then the SSM parameter's overrides merged on."""
    document = default_document()
    origins = default_origins(document)
    sources = [DEFAULT_PLAYBOOK_NAME]
    parsed = [document]
    if file is not None:
        parsed.append(read_document(file))
        document = merge(document, parsed[-1], str(file), origins)
        sources.append(str(file))
    if parameter_text is not None and parameter_text.strip():
        source = f"SSM parameter {parameter_name}"
        parsed.append(parse_text(parameter_text, source))
        document = merge(document, parsed[-1], source, origins)
        sources.append(source)
    plain, positions = SourceMap.of(document, parsed[::-1])
    return Merged(plain, " + ".join(sources), origins, positions)


def build_playbook(
    file: Path | None = None,
    parameter_text: str | None = None,
    parameter_name: str = "MAPPING_PARAMETER",
) -> Playbook:
    """The default playbook with the file's and then the SSM parameter's overrides merged on."""
    return compile_merged(merged_document(file, parameter_text, parameter_name))


def compile_merged(merged: Merged) -> Playbook:
    """The merged document validated and compiled; its problems located in their files."""
    plain, source, origins, positions = merged
    try:
        playbook = compile_playbook(validate_document(plain, source), source, origins)
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

    def refresh(
        self, file: Path | None, parameter_text: str | None, parameter_name: str = "MAPPING_PARAMETER"
    ) -> Playbook:
        if parameter_text == self._last_text:
            return self.playbook
        try:
            self.playbook = build_playbook(file, parameter_text, parameter_name)
        except PlaybookError as error:
            self._on_error(error)
        else:
            self._last_text = parameter_text
        return self.playbook
