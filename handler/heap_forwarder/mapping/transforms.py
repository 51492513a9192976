"""The transforms a playbook row may apply to its input, by name.

Each transform is built once at load time (``build_transform``) from its name and optional
argument, and then called per event. A transform given ``None`` returns ``None`` (the value
stays missing) except ``default``, whose job is to fill it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from heap_forwarder.inbound import ISO8601_ACCEPTS, normalise_timestamp
from heap_forwarder.mapping.suggest import did_you_mean

Transform = Callable[[Any], Any]


class TransformError(ValueError):
    """A value the transform cannot convert. The message names the transform and the value's
    type (it is logged); ``detail`` adds the value itself, for the event's dead letter and its
    sender, never a log line."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


def _to_string(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return normalise_timestamp(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _to_number(value: Any) -> Any:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise TransformError(
                "to_number: the text is not a number", f"to_number: {value[:40]!r} is not a number"
            ) from None
        if not math.isfinite(number):
            raise TransformError(
                "to_number: the text is not a finite number",
                f"to_number: {value[:40]!r} is not a finite number",
            )
        return number
    raise TransformError(f"to_number: cannot convert a {type(value).__name__}")


def _lowercase(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")


def snake_case(text: str) -> str:
    """``Cart Viewed``, ``cart-viewed``, ``cartViewed`` -> ``cart_viewed``."""
    return _NON_WORD.sub("_", _CAMEL_BOUNDARY.sub("_", text)).strip("_").lower()


def _snake_case(value: Any) -> Any:
    return snake_case(value) if isinstance(value, str) else value


def _iso8601(value: Any) -> Any:
    if value is None:
        return None
    try:
        return normalise_timestamp(value)
    except ValueError as error:
        raise TransformError(f"iso8601: not a timestamp; {ISO8601_ACCEPTS}", f"iso8601: {error}") from None


def flatten_object(value: dict[str, Any], separator: str = ".") -> dict[str, Any]:
    """Nested objects (and arrays of objects) become dot keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    Iterative, so a hostile 10,000-level nesting cannot exhaust the interpreter's stack.
    """
    flat: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        prefix, node = stack.pop()
        children: list[tuple[str, Any]]
        if isinstance(node, dict):
            children = [(f"{prefix}{separator}{k}" if prefix else str(k), v) for k, v in node.items()]
        elif isinstance(node, list) and any(isinstance(v, dict | list) for v in node):
            children = [(f"{prefix}{separator}{i}" if prefix else str(i), v) for i, v in enumerate(node)]
        else:
            flat[prefix] = node
            continue
        # Reversed so that keys come out in their original order.
        stack.extend(reversed(children))
    return flat


def _flatten(value: Any) -> Any:
    return flatten_object(value) if isinstance(value, dict) else value


def _join(separator: str) -> Transform:
    def join(value: Any) -> Any:
        if isinstance(value, list):
            return separator.join(_to_string(v) for v in value if v is not None)
        return value

    return join


def _truncate(length: int) -> Transform:
    def truncate(value: Any) -> Any:
        return value[:length] if isinstance(value, str) else value

    return truncate


def _default(fallback: Any) -> Transform:
    def default(value: Any) -> Any:
        return fallback if value is None or value == "" else value

    return default


_SIMPLE: dict[str, Transform] = {
    "to_string": _to_string,
    "to_number": _to_number,
    "lowercase": _lowercase,
    "snake_case": _snake_case,
    "iso8601": _iso8601,
    "flatten": _flatten,
}


def _positive_int(name: str, argument: Any) -> int:
    if isinstance(argument, bool) or not isinstance(argument, int) or argument < 1:
        raise ValueError(f"{name} needs a positive whole number, got {argument!r}")
    return argument


def build_transform(spec: str | dict[str, Any]) -> Transform:
    """``"lowercase"``, ``{"truncate": 255}``, ``{"join": "||"}``, ``{"default": "unknown"}``."""
    if isinstance(spec, str):
        if spec in _SIMPLE:
            return _SIMPLE[spec]
        if spec == "join":
            return _join("||")
        raise ValueError(f"unknown transform {spec!r}{did_you_mean(spec, TRANSFORM_NAMES)}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"a transform is a name or a one-key mapping like {{truncate: 255}}, got {spec!r}")
    ((name, argument),) = spec.items()
    if name == "truncate":
        return _truncate(_positive_int(name, argument))
    if name == "join":
        if not isinstance(argument, str):
            raise ValueError(f"join needs a separator string, got {argument!r}")
        return _join(argument)
    if name == "default":
        return _default(argument)
    if name in _SIMPLE:
        raise ValueError(f"transform {name!r} takes no argument")
    raise ValueError(f"unknown transform {name!r}{did_you_mean(name, TRANSFORM_NAMES)}")


TRANSFORM_NAMES = (*_SIMPLE, "truncate", "join", "default")
