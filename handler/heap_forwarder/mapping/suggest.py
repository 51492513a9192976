""" "Did you mean" for a playbook: the closest known name to a misspelt one, and the names a
schema model accepts at a document path (read from the model, so new fields count at once)."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel

# Close enough to be a slip (`requird`, `identfy`, `pages`), not merely another word.
_CUTOFF = 0.75


def close_match(word: str, known: Iterable[str]) -> str | None:
    """The known name ``word`` most likely misspells (case aside), or None."""
    by_folded = {name.lower(): name for name in known}
    found = difflib.get_close_matches(word.lower(), list(by_folded), n=1, cutoff=_CUTOFF)
    return by_folded[found[0]] if found else None


def did_you_mean(word: Any, known: Iterable[str]) -> str:
    """``"; did you mean 'required'?"``, or ``"; known: a, b, c"`` when nothing is close."""
    names = list(known)
    match = close_match(word, names) if isinstance(word, str) else None
    if match is not None:
        return f"; did you mean {match!r}?"
    return f"; known: {', '.join(names)}" if names else ""


def near_reserved(
    names: Iterable[str], reserved: Sequence[str], normalise: Callable[[str], str]
) -> list[tuple[str, str]]:
    """(name, reserved name) for each name close to, but not, a reserved one (``pages``)."""
    found = []
    for name in names:
        key = normalise(name)
        if key in reserved:
            continue
        match = close_match(key, reserved)
        if match is not None:
            found.append((name, match))
    return found


def field_names_at(model: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The keys the schema accepts in the mapping at ``path`` (aliases as written), or []."""
    current: Any = model
    for part in path:
        current = _child_type(current, part)
        if current is None:
            return []
    found = _model_in(current)
    if found is None:
        return []
    return [info.alias or name for name, info in found.model_fields.items()]


def _options(annotation: Any) -> list[Any]:
    """The types an annotation may hold: Annotated and unions unwrapped, None left out."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _options(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [t for arg in typing.get_args(annotation) for t in _options(arg)]
    return [] if annotation is type(None) else [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for option in _options(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
        if typing.get_origin(option) is list:
            # A single mapping may stand for a list of one (``events.X`` without ``[0]``).
            found = _model_in(typing.get_args(option)[0])
            if found is not None:
                return found
    return None


def _child_type(annotation: Any, part: str | int) -> Any:
    for option in _options(annotation):
        origin = typing.get_origin(option)
        if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(part, str):
            for name, info in option.model_fields.items():
                if part in (name, info.alias):
                    return info.annotation
        elif origin is list:
            item = typing.get_args(option)[0]
            if isinstance(part, int):
                return item
            found = _child_type(item, part)  # a list of one written as its only item
            if found is not None:
                return found
        elif origin is dict:
            return typing.get_args(option)[1]
    return None
