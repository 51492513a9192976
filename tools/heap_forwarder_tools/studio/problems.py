"""A playbook's problems placed at their line of the override the page edits.

Where a problem says it is, in order: a position the error carries itself (a ``details`` entry
with a ``location`` of ``line`` and ``column``), a ``line N, column M`` in the parser's message,
else the path it names (``events.page.rows[2] (key): ...``) looked up in the override's YAML
nodes, as deep as the override holds it (a missing key is placed at the mapping that lacks it).
A problem whose section is not in the override (about the default playbook) has no line and is
listed under the editor only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from heap_forwarder.mapping.playbook import PlaybookError, event_key

_PARSER_POSITION = re.compile(r"line (\d+),? column (\d+)")
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class LocatedProblem:
    text: str
    line: int | None = None  # 1-based, in the override's text
    column: int | None = None


def locate_problems(error: PlaybookError, override_text: str, override_source: str) -> list[LocatedProblem]:
    """Each problem of ``error`` with its line and column in ``override_text`` when known.

    ``override_source`` is the name the override was loaded under: a position the error gives
    for another source (the default playbook) is not a line of this text."""
    details = getattr(error, "details", None)
    entries: list[Any] = list(details) if details is not None else list(error.problems)
    root = _compose(override_text)
    located = []
    for entry in entries:
        text = str(entry)
        line, column = _carried_position(entry, override_source)
        if line is None:
            line, column = _parser_position(text)
        if line is None and root is not None:
            path = getattr(entry, "path", None) or _path_in(text)
            line, column = _node_position(root, path)
        located.append(LocatedProblem(text, line, column))
    return located


def _carried_position(entry: Any, override_source: str) -> tuple[int | None, int | None]:
    location = getattr(entry, "location", None)
    line = getattr(location, "line", None)
    if not isinstance(line, int):
        return None, None
    source = getattr(location, "source", override_source)
    if source != override_source:
        return None, None
    column = getattr(location, "column", None)
    return line, column if isinstance(column, int) else None


def _parser_position(text: str) -> tuple[int | None, int | None]:
    if not text.startswith("cannot parse"):
        return None, None
    # YAML names the construct it was in, then where it stopped: the last position is the problem.
    found = _PARSER_POSITION.findall(text)
    return (int(found[-1][0]), int(found[-1][1])) if found else (None, None)


def _path_in(text: str) -> tuple[str | int, ...]:
    """The path a problem names before its first ``": "`` (``events.Order Completed[0].rows[1].key``)."""
    where = text.split(": ", 1)[0].split(" (", 1)[0]
    if where in (text, "(top)"):
        return ()
    return tuple(name if name else int(index) for name, index in _SEGMENT.findall(where))


def _compose(text: str) -> Any:
    import yaml

    try:
        return yaml.compose(text)
    except yaml.YAMLError:
        return None


def _node_position(root: Any, path: tuple[str | int, ...]) -> tuple[int | None, int | None]:
    """Where the deepest node of ``path`` that the override holds starts; None when not even the
    path's first step is in it (the problem is about the default playbook)."""
    import yaml

    node, mark = root, None
    for depth, step in enumerate(path):
        child = child_mark = None
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            section = path[0] if depth == 1 else None
            for key, value in node.value:
                name = str(key.value)
                if name == step or (section == "events" and event_key(name) == event_key(step)):
                    child, child_mark = value, key.start_mark  # the line the key is written on
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if 0 <= step < len(node.value) and not _merged_list(path, depth):
                child = node.value[step]
                child_mark = child.start_mark
        elif isinstance(step, int) and step == 0 and isinstance(node, yaml.MappingNode):
            continue  # one request written as a mapping stands for a list of one
        if child is None:
            break
        node, mark = child, child_mark
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


def _merged_list(path: tuple[str | int, ...], depth: int) -> bool:
    """``global`` rows merge onto the default's by key, so an index there counts the default's
    rows too: it is not a position in the override."""
    return bool(path) and path[0] == "global" and depth == 2
