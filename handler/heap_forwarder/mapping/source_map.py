"""Where each part of a playbook was written: YAML and JSON read keeping file, line and column.

``parse`` returns the document built of located containers (``dict`` and ``list`` subclasses
remembering where each of their entries was written). They travel through ``loader.merge`` by
reference or deep copy, so after the merge a node still knows its file: an override's row
points at the override, the default's rows at the default. ``SourceMap.of`` then reads the
merged document once and gives back plain data (what validation sees) and a map from each
document path, such as ``("events", "page", "rows", 2, "key")``, to its ``Location``.

Values come from ``yaml.safe_load`` or ``json.loads`` exactly as before; the positions come
from the YAML node tree composed alongside (JSON is YAML). Where the two disagree (duplicate
keys, YAML merge keys), the entries concerned simply have no position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from copy import deepcopy
from typing import Any, NamedTuple

DocumentPath = tuple[str | int, ...]


class Location(NamedTuple):
    source: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}"


class SyntaxProblem(ValueError):
    """Text that is not YAML or JSON, with where the parser stopped (when it says)."""

    def __init__(self, message: str, location: Location | None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


class LocatedDict(dict[Any, Any]):
    """A mapping from a parsed document: ``here`` is where it starts, ``entries`` where each key
    was written. A key assigned later (by a merge) forgets its old position unless the value
    comes with one from another located mapping (``update``)."""

    def __init__(self, here: Location | None = None) -> None:
        super().__init__()
        self.here = here
        self.entries: dict[Any, Location] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries.pop(key, None)
        super().__setitem__(key, value)

    def update(self, *others: Any, **named: Any) -> None:
        for other in (*others, named):
            pairs = other.items() if isinstance(other, Mapping) else other
            for key, value in pairs:
                self[key] = value
                if isinstance(other, LocatedDict) and key in other.entries:
                    self.entries[key] = other.entries[key]

    def __deepcopy__(self, memo: dict[int, Any]) -> LocatedDict:
        copy = LocatedDict(self.here)
        memo[id(self)] = copy
        for key, value in self.items():
            dict.__setitem__(copy, key, deepcopy(value, memo))
        copy.entries = dict(self.entries)
        return copy


class LocatedList(list[Any]):
    """A sequence from a parsed document: ``here`` is where it starts, ``entries`` each item."""

    def __init__(self, items: Iterable[Any] = (), here: Location | None = None) -> None:
        super().__init__(items)
        self.here = here
        self.entries: list[Location] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> LocatedList:
        copy = LocatedList(here=self.here)
        memo[id(self)] = copy
        copy.extend(deepcopy(item, memo) for item in self)
        copy.entries = list(self.entries)
        return copy


def parse(text: str, source: str) -> Any:
    """YAML or JSON text as located containers; raises ``SyntaxProblem`` naming line and column.

    JSON goes through JSON's own parser (its messages are clearer, and YAML 1.1 reads some JSON
    numbers differently); YAML through the C-accelerated safe loader when installed."""
    import yaml  # imported when a playbook is read, not when a function starts

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    if text.lstrip().startswith(("{", "[")):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise SyntaxProblem(
                f"not valid JSON: {error.msg}", Location(source, error.lineno, error.colno)
            ) from None
        try:
            node = yaml.compose(text, Loader=loader_class)
        except yaml.YAMLError:
            return document  # valid JSON that YAML cannot read: no positions, same values
        _refuse_duplicate_keys(node, source)
        return _attach(document, node, source)
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        raise SyntaxProblem(_yaml_message(error), _mark(error.problem_mark, source)) from None
    except yaml.YAMLError as error:
        raise SyntaxProblem(str(error), None) from None
    finally:
        loader.dispose()
    if node is None:
        return document
    _refuse_duplicate_keys(node, source)
    return _attach(document, node, source)


def _refuse_duplicate_keys(root: Any, source: str) -> None:
    """YAML and JSON parsers keep the last of a key written twice in one mapping: the first
    (a whole event mapping, an edit that hashes) would be ignored without a word. Refused at
    the second place, naming the first."""
    import yaml

    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], Any] = {}
            for key_node, value_node in node.value:
                stack.append(value_node)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                first = seen.setdefault((key_node.tag, key_node.value), key_node)
                if first is not key_node:
                    line, column = first.start_mark.line + 1, first.start_mark.column + 1
                    raise SyntaxProblem(
                        f"duplicate key {key_node.value!r} (first written at line {line} column {column}):"
                        " only one of the two would be used; merge them into one",
                        _mark(key_node.start_mark, source),
                    )
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _yaml_message(error: Any) -> str:
    message = str(error.problem or "not valid YAML")
    if error.context:
        mark = error.context_mark
        where = f" that starts at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        message += f" ({error.context}{where})"
    return message


def _mark(mark: Any, source: str) -> Location | None:
    return None if mark is None else Location(source, mark.line + 1, mark.column + 1)


def _attach(value: Any, node: Any, source: str) -> Any:
    """The value rebuilt of located containers, walking the YAML node tree alongside it."""
    import yaml

    if isinstance(value, dict) and isinstance(node, yaml.MappingNode) and len(value) == len(node.value):
        mapping = LocatedDict(_mark(node.start_mark, source))
        for (key, item), (key_node, item_node) in zip(value.items(), node.value, strict=True):
            if isinstance(key_node, yaml.ScalarNode) and str(key) == key_node.value:
                dict.__setitem__(mapping, key, _attach(item, item_node, source))
                mapping.entries[key] = _mark(key_node.start_mark, source)  # type: ignore[assignment]
            else:
                dict.__setitem__(mapping, key, item)  # a key YAML wrote differently: no position
        return mapping
    if isinstance(value, list) and isinstance(node, yaml.SequenceNode) and len(value) == len(node.value):
        sequence = LocatedList(
            (_attach(item, item_node, source) for item, item_node in zip(value, node.value, strict=True)),
            _mark(node.start_mark, source),
        )
        sequence.entries = [_mark(n.start_mark, source) for n in node.value]  # type: ignore[misc]
        return sequence
    return value


class SourceMap:
    """Document paths to where they were written, for a merged document."""

    def __init__(self, positions: dict[DocumentPath, Location | None]) -> None:
        # None: known to have no position (a value a merge put there); stops the search upward.
        self._positions = positions

    @classmethod
    def of(cls, document: Any, sources: Sequence[Any] = ()) -> tuple[Any, SourceMap]:
        """Plain data for ``document`` (a merge of located documents) and its map.

        ``sources`` are the parsed documents merged, latest first: a key a merge assigned (its
        position forgotten) is looked up at the same path in them, the latest that has it."""
        positions: dict[DocumentPath, Location | None] = {}
        if isinstance(document, LocatedDict | LocatedList):
            positions[()] = document.here
        plain = _walk(document, (), positions, sources)
        return plain, cls(positions)

    def locate(self, path: DocumentPath) -> Location | None:
        """Where the node at ``path`` was written, else its nearest ancestor's position."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self._positions:
                return self._positions[prefix]
        return None


def _walk(
    node: Any, path: DocumentPath, positions: dict[DocumentPath, Location | None], sources: Sequence[Any]
) -> Any:
    if isinstance(node, dict):
        plain: dict[Any, Any] = {}
        for key, value in node.items():
            where = node.entries.get(key) if isinstance(node, LocatedDict) else None
            if where is None:
                where = _in_sources(path, key, sources) or _here(value)
            positions[(*path, key)] = where
            plain[key] = _walk(value, (*path, key), positions, sources)
        return plain
    if isinstance(node, list):
        items = []
        for index, value in enumerate(node):
            where = (
                node.entries[index] if isinstance(node, LocatedList) and index < len(node.entries) else None
            )
            positions[(*path, index)] = where or _here(value)
            items.append(_walk(value, (*path, index), positions, sources))
        return items
    return node


def _here(value: Any) -> Location | None:
    return value.here if isinstance(value, LocatedDict | LocatedList) else None


def _in_sources(path: DocumentPath, key: Any, sources: Sequence[Any]) -> Location | None:
    # Only along keys: an index in a merged list need not be the same index in its source.
    if any(isinstance(part, int) for part in path):
        return None
    for source in sources:
        node = source
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, LocatedDict) and key in node.entries:
            return node.entries[key]
    return None


_LABEL_STOP = re.compile(r"\s*(\([^)]*\))?\s*:\s")


def path_of_label(text: str, document: Any) -> tuple[DocumentPath, str, str]:
    """A problem's text ``events.Cart Viewed.rows[2] (key): message`` read against the document:
    (the document path, the label, the message). Keys are matched against the document's own
    keys (event names may hold dots); a single request written as a list of one is entered
    without its ``[0]``. Text that does not start with a path gives ``((), "", text)``."""
    path: list[str | int] = []
    node = document
    position = 0
    while True:
        if text.startswith("[", position) and isinstance(node, list):
            end = text.find("]", position)
            number = text[position + 1 : end] if end > 0 else ""
            if not number.isdigit() or int(number) >= len(node):
                break
            path.append(int(number))
            node = node[int(number)]
            position = end + 1
            continue
        if isinstance(node, list) and len(node) == 1:
            path.append(0)  # a label leaves out the index of a one-request list
            node = node[0]
            continue
        separator = "" if position == 0 else "."
        if not isinstance(node, dict) or not text.startswith(separator, position):
            break
        start = position + len(separator)
        matches = [k for k in node if isinstance(k, str) and k and _key_ends_at(text, start, k)]
        if not matches:
            break
        key = max(matches, key=len)
        path.append(key)
        node = node[key]
        position = start + len(key)
    stop = _LABEL_STOP.match(text, position)
    if not path or stop is None:
        return (), "", text
    return tuple(path), text[: stop.end()].rstrip(": \t"), text[stop.end() :]


def _key_ends_at(text: str, start: int, key: str) -> bool:
    end = start + len(key)
    return text.startswith(key, start) and (end == len(text) or text[end] in ".[ :")
