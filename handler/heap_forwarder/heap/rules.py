"""Heap's documented rules, applied in one place to every mapped item before it is sent.

What can be made valid is (nested objects flattened to dot keys, arrays of scalars joined
with ``||``, booleans spelled ``"true"``/``"false"``, long string values cut to 1023
characters, ``email`` lowercased, ``id`` removed from user properties); what cannot is
rejected with the rule it broke, so that Heap never refuses a whole bulk request for it. A
key that flattening gives twice with different values (``{"a.b": 1, "a": {"b": 2}}``) is
such a rejection: keeping either value would silently lose the other.
See docs/mapping.md ("Heap rules") for the decisions and their reasons.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, NamedTuple

from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.inbound import format_timestamp, normalise_timestamp

MAX_STRING = 1023  # Heap: keys and values "fewer than 1024 characters"
MAX_IDENTITY = 255
MAX_EVENT_NAME = 1024
MAX_IDEMPOTENCY_KEY = 1024
PLACEHOLDER_IDENTITIES = frozenset({"", "null", "undefined", "none", "nil", "nan", "[object object]"})


class HeapRuleError(ValueError):
    """The item breaks one of Heap's rules and cannot be made valid; the message names the rule."""

    @property
    def field(self) -> str:
        """The field at fault: every message here starts with it ("identity: ...")."""
        return str(self).partition(": ")[0]


class _KeyGivenTwice(Exception):
    """Two paths of a properties object flatten to one key with different values (``key``)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class RuleSettings(NamedTuple):
    nested: Literal["flatten", "stringify", "drop"] = "flatten"
    arrays: Literal["join", "stringify"] = "join"


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def check_identity(value: Any, field: str = "identity") -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise HeapRuleError(f"{field}: must be a string, not {type(value).__name__}")
    if value.strip().lower() in PLACEHOLDER_IDENTITIES:
        raise HeapRuleError(f"{field}: {value!r} is a placeholder; Heap would merge unrelated users under it")
    if len(value) > MAX_IDENTITY:
        raise HeapRuleError(f"{field}: {len(value)} characters, Heap allows at most {MAX_IDENTITY}")
    return value


def _plain_identity(value: Any) -> bool:
    """``check_identity`` would take ``value`` as it is: a string, not too long, no placeholder."""
    return (
        value.__class__ is str
        and len(value) <= MAX_IDENTITY
        and value.strip().lower() not in PLACEHOLDER_IDENTITIES
    )


def _list_value(key: str, value: list[Any], settings: RuleSettings) -> str:
    """An array of scalars as Heap stores it (``a||b||c``) or, in stringify mode, as JSON text."""
    if settings.arrays == "join":
        parts = []
        for v in value:
            scalar = _leaf(key, v, settings)
            if scalar is not None:
                parts.append(str(scalar))
        return "||".join(parts)[:MAX_STRING]
    return _compact_json(value)[:MAX_STRING]


def _leaf(key: str, value: Any, settings: RuleSettings) -> str | int | float | None:
    """A property value as Heap takes it (string or number), or None to leave the key out."""
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING else value[:MAX_STRING]
    if isinstance(value, bool):  # before int: bool is an int to Python, not to Heap
        return "true" if value else "false"
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HeapRuleError(f"properties.{key}: {value} is not a finite number")
        return float(value)
    if value is None:
        return None  # a null has no meaning to Heap: the property is simply not set
    if isinstance(value, list):
        return _list_value(key, value, settings)
    if isinstance(value, dict):
        return _compact_json(value)[:MAX_STRING]  # stringify mode: flatten never gets here
    if isinstance(value, datetime):
        try:
            return format_timestamp(value)  # a time mapped into a property: ISO 8601, as Heap reads it
        except ValueError as error:
            raise HeapRuleError(f"properties.{key}: {error}") from None
    return str(value)[:MAX_STRING]


def _is_nested(value: Any) -> bool:
    kind = type(value)
    return kind is dict or (kind is list and any(type(v) is dict or type(v) is list for v in value))


def _put(cleaned: dict[str, Any], key: str, value: Any, settings: RuleSettings) -> None:
    if len(key) > MAX_STRING:
        raise HeapRuleError(
            f"properties: key {key[:40]!r}... has {len(key)} characters, Heap allows fewer than 1024"
        )
    scalar = _leaf(key, value, settings)
    if scalar is not None:
        if key in cleaned:
            _same_value(cleaned, key, scalar)
        cleaned[key] = scalar


def _same_value(cleaned: dict[str, Any], key: str, value: Any) -> None:
    """A key flattening gives again may only repeat what it already holds: anything else would
    silently overwrite one of the producer's values."""
    held = cleaned[key]
    if type(held) is not type(value) or held != value:
        raise _KeyGivenTwice(key)


def clean_properties(properties: Any, settings: RuleSettings, *, user: bool = False) -> dict[str, Any]:
    """A properties object as Heap accepts it: flat, string or number values, bounded lengths.

    The common case (flat strings and numbers) takes the fast path; nested values are
    flattened to dot keys (or stringified, or dropped, as the playbook's rules say).
    """
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise HeapRuleError(f"properties: must be an object, not {type(properties).__name__}")
    try:
        return _clean(properties, settings, user)
    except RecursionError:
        raise HeapRuleError("properties: nested too deeply to be made flat") from None
    except _KeyGivenTwice as clash:
        paths = _paths_flattening_to(properties, clash.key)
        given = f" (as {paths[0]} and {paths[1]})" if len(paths) >= 2 else ""
        raise HeapRuleError(
            f"properties.{clash.key}: the key is given twice{given} with different values; rename one"
        ) from None


def _clean(properties: dict[str, Any], settings: RuleSettings, user: bool) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    flatten = settings.nested == "flatten"
    join = settings.arrays == "join"
    isfinite = math.isfinite
    # Top-level keys are unique; only once something was flattened can one of them be taken.
    flattened = False
    for key, value in properties.items():
        kind = type(value)
        # The common cases first, each kept (or spelled) as _put would: a string, a number, a
        # boolean, an array of strings (joined), an object or array of objects (flattened).
        if kind is str:
            if len(value) <= MAX_STRING and len(key) <= MAX_STRING:
                if flattened and key in cleaned:
                    _same_value(cleaned, key, value)
                cleaned[key] = value
                continue
        elif kind is int or (kind is float and isfinite(value)):
            if len(key) <= MAX_STRING:
                if flattened and key in cleaned:
                    _same_value(cleaned, key, value)
                cleaned[key] = value
                continue
        elif kind is bool:
            if len(key) <= MAX_STRING:
                spelled = "true" if value else "false"
                if flattened and key in cleaned:
                    _same_value(cleaned, key, spelled)
                cleaned[key] = spelled
                continue
        elif kind is dict or kind is list:
            if kind is list and join and len(key) <= MAX_STRING:
                text = _joined_strings(value)
                if text is not None:
                    if flattened and key in cleaned:
                        _same_value(cleaned, key, text)
                    cleaned[key] = text
                    continue
            if _is_nested(value):
                if flatten:
                    _flatten_into(cleaned, str(key), value, settings)
                    flattened = True
                elif settings.nested == "stringify":
                    _put(cleaned, str(key), _compact_json(value), settings)
                # drop: nested values are left out, by the playbook's choice
                continue
        _put(cleaned, str(key), value, settings)
    if user:
        for key in [k for k in cleaned if k.lower() == "id"]:
            del cleaned[key]  # Heap refuses a user property named id; the identity already says who
        for key, value in cleaned.items():
            if key.lower() == "email" and isinstance(value, str):
                cleaned[key] = value.lower()
    return cleaned


def _joined_strings(value: list[Any]) -> str | None:
    """An array of strings only, as ``_list_value`` joins it; None for anything else. (Cutting
    the joined text alone is enough: a string cut to 1023 characters ends past the cut.)"""
    for v in value:
        if type(v) is not str:
            return None
    return "||".join(value)[:MAX_STRING]


def _flatten_into(cleaned: dict[str, Any], prefix: str, node: Any, settings: RuleSettings) -> None:
    """Nested objects (and arrays holding objects or arrays) become dot keys, in one pass:
    ``{"a": {"b": 1}}`` -> ``a.b``, ``{"items": [{"sku": "x"}]}`` -> ``items.0.sku``."""
    pairs = node.items() if type(node) is dict else enumerate(node)
    for part, value in pairs:
        key = f"{prefix}.{part}"
        kind = type(value)
        if (kind is str and len(value) <= MAX_STRING and len(key) <= MAX_STRING) or (
            (kind is int or kind is float)
            and len(key) <= MAX_STRING
            and (kind is int or math.isfinite(value))
        ):
            if key in cleaned:
                _same_value(cleaned, key, value)
            cleaned[key] = value
        elif _is_nested(value):
            _flatten_into(cleaned, key, value, settings)
        else:
            _put(cleaned, key, value, settings)


def _paths_flattening_to(properties: dict[str, Any], key: str) -> list[str]:
    """Where in ``properties`` the values flattened to ``key`` come from, as unambiguous paths
    (``properties["a.b"]``, ``properties["a"]["b"]``, ``properties["items"][0]["sku"]``).

    Only called to word an error: it walks again, without recursion, only the branches whose
    flattened prefix leads to ``key``."""
    found: list[str] = []
    stack: list[tuple[str, str, Any]] = [
        (str(part), f"properties[{_path_part(part)}]", value) for part, value in properties.items()
    ]
    stack.reverse()
    while stack:
        flat, shown, value = stack.pop()
        if _is_nested(value):
            if key.startswith(flat + "."):
                pairs = value.items() if type(value) is dict else enumerate(value)
                children = [(f"{flat}.{part}", f"{shown}[{_path_part(part)}]", v) for part, v in pairs]
                stack.extend(reversed(children))
        elif flat == key and value is not None:  # a null sets nothing, so it takes no key
            found.append(shown)
    return found


def _path_part(part: Any) -> str:
    # Keys quoted, array indexes bare: ["0"] and [0] are different paths to the same "x.0".
    return json.dumps(part, ensure_ascii=False) if isinstance(part, str) else str(part)


def _timestamp(body: dict[str, Any], stamp: str | None) -> None:
    if stamp is not None:
        body["timestamp"] = stamp  # the caller's word: this is the body's time in Heap's form
        return
    value = body.get("timestamp")
    if value is None:
        body.pop("timestamp", None)
        return
    try:
        # The usual case is the model's parsed time; anything else goes the general way.
        body["timestamp"] = format_timestamp(value) if type(value) is datetime else normalise_timestamp(value)
    except ValueError as error:
        raise HeapRuleError(f"timestamp: {error}") from None


def _optional_string(body: dict[str, Any], field: str, limit: int) -> None:
    value = body.get(field)
    if value.__class__ is str and 0 < len(value) <= limit:
        return  # the usual case, as it is
    if value is None:
        body.pop(field, None)
        return
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise HeapRuleError(f"{field}: must be a non-empty string")
    if len(value) > limit:
        raise HeapRuleError(f"{field}: {len(value)} characters, Heap allows at most {limit}")
    body[field] = value


def apply_rules(item: HeapItem, settings: RuleSettings) -> HeapItem:
    """The item made valid for Heap, or HeapRuleError naming the rule it breaks."""
    body = dict(item.body)
    rule_body(item.endpoint, body, settings)
    return HeapItem(item.endpoint, body, item.source)


def rule_body(
    endpoint: Endpoint, body: dict[str, Any], settings: RuleSettings, stamp: str | None = None
) -> None:
    """``apply_rules`` on a body the caller owns, in place (the compiled path's own bodies).

    ``stamp``: the Heap text of ``body["timestamp"]`` when the caller already has it (the
    compiled path keeps an event time that is already in Heap's form, so that it need not be
    formatted again: ``isoformat`` of an aware time costs about 1 µs)."""
    rules_for(endpoint)(body, settings, stamp)


BodyRules = Callable[[dict[str, Any], RuleSettings, str | None], None]


def rules_for(endpoint: Endpoint) -> BodyRules:
    """``rule_body`` for one endpoint, looked up once (the compiled functions bind it)."""
    return _BY_ENDPOINT[endpoint]


def _finite_fields(body: dict[str, Any]) -> None:
    for key, value in body.items():
        # Keys a custom playbook row adds pass as they are, but never as a number JSON cannot hold.
        if isinstance(value, float) and not math.isfinite(value):
            raise HeapRuleError(f"{key}: {value} is not a finite number")


def _track(body: dict[str, Any], settings: RuleSettings, stamp: str | None = None) -> None:
    identity = body.get("identity")
    if identity is not None:
        if body.get("user_id") is not None:
            body.pop("user_id")  # Heap: identity and user_id are never sent together
        if not _plain_identity(identity):
            body["identity"] = check_identity(identity)
    elif body.get("user_id") is not None:
        body["user_id"] = check_identity(body["user_id"], "user_id")
    else:
        raise HeapRuleError("identity: required (no anonymousId or userId to identify the user)")
    name = body.get("event")
    if not isinstance(name, str) or not name.strip():
        raise HeapRuleError("event: a non-empty event name is required")
    if len(name) > MAX_EVENT_NAME:
        raise HeapRuleError(f"event: {len(name)} characters, Heap allows at most {MAX_EVENT_NAME}")
    body["properties"] = clean_properties(body.get("properties"), settings)
    _timestamp(body, stamp)
    _optional_string(body, "session_id", MAX_STRING)
    _optional_string(body, "idempotency_key", MAX_IDEMPOTENCY_KEY)
    _finite_fields(body)


def _user_properties(body: dict[str, Any], settings: RuleSettings, stamp: str | None = None) -> None:
    if body.get("identity") is None:
        raise HeapRuleError("identity: required for user properties (no anonymousId or userId)")
    body["identity"] = check_identity(body["identity"])
    body["properties"] = clean_properties(body.get("properties"), settings, user=True)
    _finite_fields(body)


def _account_properties(body: dict[str, Any], settings: RuleSettings, stamp: str | None = None) -> None:
    account = body.get("account_id")
    if account is None:
        raise HeapRuleError("account_id: required for account properties")
    body["account_id"] = check_identity(account, "account_id")
    body["properties"] = clean_properties(body.get("properties"), settings)
    _finite_fields(body)


def _identify(body: dict[str, Any], settings: RuleSettings, stamp: str | None = None) -> None:
    if body.get("identity") is None:
        raise HeapRuleError("identity: required to link a Heap user id (no anonymousId or userId)")
    body["identity"] = check_identity(body["identity"])
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not user_id.isdigit():
        raise HeapRuleError(f"user_id: Heap's SDK user id is a numeric string, got {user_id!r}")
    if len(user_id) > MAX_IDENTITY:
        raise HeapRuleError(f"user_id: {len(user_id)} characters, Heap allows at most {MAX_IDENTITY}")
    _timestamp(body, stamp)
    _finite_fields(body)


_BY_ENDPOINT: dict[Endpoint, BodyRules] = {
    Endpoint.TRACK: _track,
    Endpoint.ADD_USER_PROPERTIES: _user_properties,
    Endpoint.ADD_ACCOUNT_PROPERTIES: _account_properties,
    Endpoint.IDENTIFY: _identify,
}
