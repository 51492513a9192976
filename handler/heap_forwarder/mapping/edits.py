"""Property operations: a playbook's ``edit`` entries, compiled into functions over a Heap body.

An edit names an object the rows produced (``properties``, or a deeper one such as
``properties.address``) and lists operations on its keys, applied in a fixed order:

1. ``rename``: move keys, all at once (``{coupon_id: coupon}``; ``{a: b, b: a}`` swaps); a missing
   key is left missing;
2. ``drop``: remove keys, by name or pattern (``internal_*``, ``?`` and ``[...]`` as in shells);
3. ``keep``: remove every key that matches none of the names or patterns (an allow-list);
4. ``set``: put a static value, replacing what is there;
5. ``default``: put a static value only where the key is missing (or blank);
6. ``hash``: replace values by HMAC-SHA-256 (hex) keyed by the deployment's hash key.

The object is copied before it is changed: it may still be the event's own dict.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# (body, hash key or None, trace or None) -> None. The trace, when given, learns which output
# keys the edit wrote or removed (``preview --explain``).
Edit = Callable[[dict[str, Any], bytes | None, dict[str, str] | None], None]

_WILDCARDS = frozenset("*?[")


class HashKeyMissing(ValueError):
    """A playbook that hashes values, run without a hash key: a configuration fault."""


def _matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    names = frozenset(p for p in patterns if not _WILDCARDS & set(p))
    globs = [p for p in patterns if _WILDCARDS & set(p)]
    if not globs:
        return names.__contains__
    regex = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))
    return lambda key: key in names or regex.match(key) is not None


def hash_value(value: Any, key: bytes) -> str:
    """HMAC-SHA-256 of the value's text (JSON, keys sorted, for anything but a string)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _writable(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The object at ``path``, copied (with its parents) into ``body``; None when there is none."""
    node = body
    for part in path:
        child = node.get(part)
        if not isinstance(child, dict):
            return None
        child = dict(child)
        node[part] = child
        node = child
    return node


def compile_edit(
    target: tuple[str, ...],
    *,
    rename: Mapping[str, str],
    drop: Iterable[str],
    keep: Iterable[str] | None,
    set_: Mapping[str, Any],
    default: Mapping[str, Any],
    hash_: Iterable[str],
    label: str,
) -> Edit:
    """One edit entry as a function. ``label`` names it in ``preview --explain``."""
    renames = tuple(rename.items())
    dropped = _matcher(drop) if drop else None
    kept = _matcher(keep) if keep is not None else None
    sets = tuple(set_.items())
    defaults = tuple(default.items())
    hashed = _matcher(hash_) if hash_ else None
    prefix = ".".join(target) + "."

    def apply(body: dict[str, Any], hash_key: bytes | None, trace: dict[str, str] | None) -> None:
        obj = _writable(body, target)
        if obj is None:
            return  # nothing produced the object for this event: nothing to edit
        changed: list[tuple[str, str]] = []
        # All at once, so that a swap ({a: b, b: a}) or a chain ({a: b, b: c}) moves each value
        # once, whatever order the keys were written in.
        moved = [(old, new, obj.pop(old)) for old, new in renames if old in obj]
        changed += [(old, "removed (renamed)") for old, _new, _value in moved]
        for old, new, value in moved:
            obj[new] = value
            changed.append((new, f"renamed from {old}"))
        if dropped is not None:
            for key in [k for k in obj if dropped(k)]:
                del obj[key]
                changed.append((key, "dropped"))
        if kept is not None:
            for key in [k for k in obj if not kept(k)]:
                del obj[key]
                changed.append((key, "dropped (not kept)"))
        for key, value in sets:
            obj[key] = value
            changed.append((key, "set"))
        for key, value in defaults:
            current = obj.get(key)
            if current is None or (isinstance(current, str) and not current.strip()):
                obj[key] = value
                changed.append((key, "default"))
        if hashed is not None:
            names = [k for k, v in obj.items() if v is not None and hashed(k)]
            if names and hash_key is None:
                raise HashKeyMissing(f"{label}: hashes values, but no hash key was given")
            for key in names:
                obj[key] = hash_value(obj[key], hash_key)  # type: ignore[arg-type]
                changed.append((key, "hashed"))
        if trace is not None:
            for key, what in changed:
                trace[prefix + key] = f"{label}: {what}"

    return apply
