"""Heap's documented rules, applied in one place to every mapped item before it is sent.

What can be made valid is (nested objects flattened to dot keys, arrays of scalars joined
with ``||``, booleans spelled ``"true"``/``"false"``, long string values cut to 1023
characters, ``email`` lowercased, ``id`` removed from user properties); what cannot is
rejected with the rule it broke, so that Heap never refuses a whole bulk request for it.
See docs/heap-rules.md for the decisions and their reasons.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.mapping.transforms import flatten_object

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


@dataclass(frozen=True, slots=True)
class RuleSettings:
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


def _scalar(key: str, value: Any, settings: RuleSettings) -> str | int | float | None:
    """A property value as Heap takes it (string or number), or None to leave the key out."""
    if value is None:
        return None  # a null has no meaning to Heap: the property is simply not set
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise HeapRuleError(f"properties.{key}: {value} is not a finite number")
        return value
    if isinstance(value, str):
        return value[:MAX_STRING]
    if isinstance(value, list):
        if settings.arrays == "join":
            parts = [p for p in (_scalar(key, v, settings) for v in value) if p is not None]
            return "||".join(str(p) for p in parts)[:MAX_STRING]
        return _compact_json(value)[:MAX_STRING]
    if isinstance(value, dict):
        # Only reached in stringify mode (flatten removed nested objects; drop filtered them).
        return _compact_json(value)[:MAX_STRING]
    return str(value)[:MAX_STRING]


def clean_properties(properties: Any, settings: RuleSettings, *, user: bool = False) -> dict[str, Any]:
    """A properties object as Heap accepts it: flat, string or number values, bounded lengths."""
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        raise HeapRuleError(f"properties: must be an object, not {type(properties).__name__}")
    if settings.nested == "flatten":
        source = flatten_object(properties)
    elif settings.nested == "drop":
        source = {k: v for k, v in properties.items() if not isinstance(v, dict)}
    else:
        source = properties
    cleaned: dict[str, Any] = {}
    for key, value in source.items():
        if len(key) > MAX_STRING:
            raise HeapRuleError(
                f"properties: key {key[:40]!r}... has {len(key)} characters, Heap allows fewer than 1024"
            )
        if user and key.lower() == "id":
            continue  # Heap refuses a user property named id; the identity already says who
        if settings.nested == "drop" and isinstance(value, list) and any(isinstance(v, dict) for v in value):
            continue
        scalar = _scalar(key, value, settings)
        if scalar is None:
            continue
        if user and key.lower() == "email" and isinstance(scalar, str):
            scalar = scalar.lower()
        cleaned[key] = scalar
    return cleaned


def _optional_string(body: dict[str, Any], field: str, limit: int) -> None:
    value = body.get(field)
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
    endpoint = item.endpoint
    if endpoint is Endpoint.TRACK:
        if body.get("user_id") is not None and body.get("identity") is not None:
            body.pop("user_id")  # Heap: identity and user_id are never sent together
        if body.get("identity") is not None:
            body["identity"] = check_identity(body["identity"])
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
        _optional_string(body, "timestamp", 64)
        _optional_string(body, "session_id", MAX_STRING)
        _optional_string(body, "idempotency_key", MAX_IDEMPOTENCY_KEY)
    elif endpoint is Endpoint.ADD_USER_PROPERTIES:
        if body.get("identity") is None:
            raise HeapRuleError("identity: required for user properties (no anonymousId or userId)")
        body["identity"] = check_identity(body["identity"])
        body["properties"] = clean_properties(body.get("properties"), settings, user=True)
    elif endpoint is Endpoint.ADD_ACCOUNT_PROPERTIES:
        account = body.get("account_id")
        if account is None:
            raise HeapRuleError("account_id: required for account properties")
        body["account_id"] = check_identity(account, "account_id")
        body["properties"] = clean_properties(body.get("properties"), settings)
    elif endpoint is Endpoint.IDENTIFY:
        if body.get("identity") is None:
            raise HeapRuleError("identity: required to link a Heap user id (no anonymousId or userId)")
        body["identity"] = check_identity(body["identity"])
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not user_id.isdigit():
            raise HeapRuleError(f"user_id: Heap's SDK user id is a numeric string, got {user_id!r}")
        _optional_string(body, "timestamp", 64)
    return HeapItem(endpoint, body, item.source)
