"""Properties (hypothesis) of the models, the mapper and Heap's rules, checked against the emulator.

1. For any event the models accept, every Heap request item the default playbook maps it to and
   the rules let through is one Heap (the emulator's validation, called directly, on the bytes
   the client would send) accepts.
2. For any input at all, the pipeline decides: it never raises; each event is either mapped to
   items Heap accepts or rejected with an error class and a reason.
3. The rules, on any item body and under every rule setting, return an item Heap accepts or raise
   their own HeapRuleError; the models raise only InvalidEvent; JSON decoding only InvalidJson.

Examples are capped for CI by the ``ci`` profile (200 per property); ``HYPOTHESIS_PROFILE=long``
runs 5,000 (docs/proof.md).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pydantic_core
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.rules import HeapRuleError, RuleSettings, apply_rules
from heap_forwarder.mapping.engine import Mapper, MappingError
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.models import InvalidEvent, InvalidJson, as_plain, decode_json, validate_event
from heap_forwarder.outcome import ErrorClass, Fate
from heap_forwarder.pipeline import Pipeline
from heap_forwarder_tools.emulator import _Rejected, _validate

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

APP_ID = "demo-app-id"
MAPPER = Mapper(build_playbook(), {"MY_APP_ID": APP_ID})
PIPELINE = Pipeline(MAPPER, deliverer=None)  # type: ignore[arg-type]  # prepare() delivers nothing
DEFAULT_RULES = PIPELINE.rule_settings
ALL_RULES = [RuleSettings(n, a) for n in ("flatten", "stringify", "drop") for a in ("join", "stringify")]
TYPED = (InvalidEvent, MappingError, HeapRuleError)
SEEN: Counter[str] = Counter()  # how far the generated events went (a guard against vacuity)

# ------------------------------------------------------------------------------------ strategies
SPECIAL_TEXT = [
    "", " ", "null", "undefined", "NULL ", " None", "nan", "NaN", "[object Object]", "nil",
    "id", "ID", "Id", "email", "EMAIL", "session_id", "a.b", "__proto__", "0", "-1", "1e999",
    "\x00", "\ufeff", "\u202e", "ß", "İ", "\U0001f600", "2024-06-10T14:07:05Z", "x" * 1023,
    "y" * 1024, "z" * 1100, "w" * 256,
]  # fmt: skip
TEXT = st.one_of(st.text(max_size=24), st.sampled_from(SPECIAL_TEXT))
KEYS = st.one_of(st.text(max_size=12), st.sampled_from(SPECIAL_TEXT))
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)
BLOB = st.dictionaries(KEYS, JSON, max_size=6)
IDENTITY = st.one_of(st.uuids().map(str), st.uuids().map(str), TEXT, st.integers(), st.none())
ZONES = st.one_of(
    st.just(UTC),
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)).map(
        lambda d: timezone(timedelta(minutes=d // timedelta(minutes=1)))
    ),
)
MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES)
TIMESTAMP = st.one_of(
    MOMENTS.map(lambda m: m.isoformat()),
    MOMENTS.map(lambda m: m.isoformat().replace("+00:00", "Z")),
    st.integers(min_value=0, max_value=253_402_300_799_000),  # epoch milliseconds up to 9999
    st.datetimes(timezones=st.none()).map(lambda m: m.isoformat()),
    TEXT,
)
# Heap's SDK user ids are numbers (as text or not); the emulator takes at most 255 characters
# (test_a_heap_user_id_longer_than_heap_takes_is_refused_before_sending is the longer case).
HEAP_USER_ID = st.one_of(
    st.integers(min_value=0, max_value=10**30), st.from_regex(r"[0-9]{1,40}", fullmatch=True), TEXT
)
CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "userAgent": TEXT,
        "ip": TEXT,
        "page": BLOB,
        "traits": BLOB,
        "sessionId": st.one_of(TEXT, st.integers()),
        "heap": st.fixed_dictionaries({}, optional={"user_id": HEAP_USER_ID}),
        "locale": TEXT,
    },
)
COMMON = {
    "messageId": st.one_of(st.uuids().map(str), TEXT, st.integers()),
    "anonymousId": IDENTITY,
    "userId": IDENTITY,
    "timestamp": TIMESTAMP,
    "originalTimestamp": TIMESTAMP,
    "context": CONTEXT,
    "integrations": BLOB,
    "channel": TEXT,
}


def _event(kind: str, required: dict[str, Any], **optional: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(kind), **required}, optional={**COMMON, **optional})


EVENTS = st.one_of(
    _event("track", {"event": st.one_of(st.text(min_size=1, max_size=30), TEXT)}, properties=BLOB),
    _event("page", {}, name=TEXT, category=TEXT, properties=BLOB),
    _event("screen", {}, name=TEXT, properties=BLOB),
    _event("identify", {}, traits=BLOB),
    _event("group", {"groupId": st.one_of(st.text(min_size=1, max_size=20), st.integers())}, traits=BLOB),
    _event("alias", {"previousId": st.text(min_size=1, max_size=20)}),
)
ANYTHING = st.one_of(EVENTS, BLOB, JSON)
# Item bodies as the mapper makes them: a key is set or absent, never None (a row whose value is
# missing sets nothing); any value JSON can carry behind a key (non-finite numbers: see
# test_no_request_carries_a_number_json_cannot_hold).
SOME_JSON = JSON.filter(lambda value: value is not None)
FINITE = st.floats(allow_nan=False, allow_infinity=False)  # all JSON can carry
SOME_IDENTITY = st.one_of(st.uuids().map(str), TEXT, st.integers(), FINITE, st.booleans())
ITEM_FIELDS = {
    "identity": SOME_IDENTITY,
    "user_id": st.one_of(SOME_IDENTITY, HEAP_USER_ID),
    "event": st.one_of(st.text(min_size=1, max_size=30), TEXT, st.integers(), SOME_JSON),
    "timestamp": st.one_of(TIMESTAMP, MOMENTS, FINITE, SOME_JSON),
    "properties": st.one_of(BLOB, SOME_JSON),
    "idempotency_key": st.one_of(st.uuids().map(str), TEXT, st.integers(), st.booleans(), SOME_JSON),
    "session_id": st.one_of(TEXT, st.integers(), FINITE, st.booleans(), SOME_JSON),
    "account_id": st.one_of(SOME_IDENTITY, SOME_JSON),
}
ITEMS = st.builds(
    HeapItem,
    st.sampled_from(list(Endpoint)),
    st.fixed_dictionaries({}, optional=ITEM_FIELDS),
)


# ------------------------------------------------------------------------------------ helpers
def heap_payload(item: HeapItem) -> dict[str, Any]:
    """The request body the client builds for one item, as the bytes Heap receives decode."""
    key = item.endpoint.bulk_key
    body = (
        {**MAPPER.request_fields, **item.body} if key is None else {**MAPPER.request_fields, key: [item.body]}
    )
    payload: dict[str, Any] = pydantic_core.from_json(pydantic_core.to_json(body), allow_inf_nan=False)
    return payload


def assert_heap_accepts(item: HeapItem) -> None:
    payload = heap_payload(item)
    try:
        _validate(item.endpoint, payload, frozenset({APP_ID}), frozenset())
    except _Rejected as rejection:
        raise AssertionError(f"Heap would refuse {item.endpoint.value}: {rejection}\n{payload!r}") from None


def only_typed(call: Callable[[], Any]) -> Any:
    """The call's result, or None when it raised one of the product's own typed errors."""
    try:
        return call()
    except TYPED:
        return None


# ------------------------------------------------------------------------------------ properties
@PROFILE
@given(raw=EVENTS)
def test_every_accepted_event_maps_to_items_heap_accepts(raw: dict[str, Any]) -> None:
    SEEN["generated"] += 1
    event = only_typed(lambda: validate_event(raw))
    if event is None:
        return
    SEEN["accepted by the models"] += 1
    items = only_typed(lambda: [apply_rules(i, DEFAULT_RULES) for i in MAPPER.map(as_plain(event), raw)])
    if items is None:
        return
    SEEN["mapped and within Heap's rules"] += 1
    for item in items:
        assert_heap_accepts(item)


@PROFILE
@given(raws=st.lists(ANYTHING, max_size=6))
def test_the_pipeline_decides_every_input_without_raising(raws: list[Any]) -> None:
    prepared = PIPELINE.prepare(raws)

    assert len(prepared.decided) == len(raws)
    sources = {item.source for item in prepared.items}
    for index, outcome in enumerate(prepared.decided):
        if outcome is None:
            assert index in sources  # to be delivered: it has items
            continue
        assert index not in sources  # refused: nothing of it is sent
        assert outcome.fate is Fate.REJECTED and outcome.reason
        assert outcome.error_class in (ErrorClass.INVALID_EVENT, ErrorClass.HEAP_RULE, ErrorClass.UNSUPPORTED)
        assert any(p.index == index for p in prepared.problems)
    for item in prepared.items:
        assert_heap_accepts(item)


@PROFILE
@given(item=ITEMS, rules=st.sampled_from(ALL_RULES))
def test_the_rules_pass_only_items_heap_accepts(item: HeapItem, rules: RuleSettings) -> None:
    try:
        cleaned = apply_rules(item, rules)
    except HeapRuleError as error:
        assert error.field and str(error).startswith(f"{error.field}")
        return
    assert_heap_accepts(cleaned)


@PROFILE
@given(raw=st.one_of(ANYTHING, st.dictionaries(st.text(max_size=10), JSON)))
def test_the_models_raise_only_invalid_event(raw: Any) -> None:
    try:
        validate_event(raw, index=3)
    except InvalidEvent as error:
        assert error.problems and all(p.index == 3 and p.message for p in error.problems)


@PROFILE
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200), JSON.map(pydantic_core.to_json)))
def test_json_decoding_raises_only_invalid_json(data: bytes | str) -> None:
    try:
        decode_json(data)
    except InvalidJson as error:
        assert str(error).startswith("body is not valid JSON")


def test_the_properties_were_not_vacuous() -> None:
    """Most generated events reached the emulator's validation (run with the module)."""
    if not SEEN["generated"]:
        pytest.skip("run with test_every_accepted_event_maps_to_items_heap_accepts")
    assert SEEN["accepted by the models"] >= SEEN["generated"] * 0.3, SEEN
    assert SEEN["mapped and within Heap's rules"] >= SEEN["generated"] * 0.1, SEEN


# ------------------------------------------------------------------------------------ found
def test_a_heap_user_id_longer_than_heap_takes_is_refused_before_sending() -> None:
    item = HeapItem(Endpoint.IDENTIFY, {"user_id": "7" * 300, "identity": "user-7"})
    try:
        cleaned = apply_rules(item, DEFAULT_RULES)
    except HeapRuleError:
        return
    assert_heap_accepts(cleaned)


def test_a_number_overflowing_to_infinity_is_refused_as_invalid_json() -> None:
    with pytest.raises(InvalidJson):
        decode_json(b'{"properties": {"total": 1e400}}')


def test_no_request_carries_a_number_json_cannot_hold() -> None:
    """A key a custom row adds may hold anything JSON can, but never infinity: refused by rule."""
    item = HeapItem(Endpoint.IDENTIFY, {"user_id": "7", "identity": "user-7", "score": float("inf")})
    with pytest.raises(HeapRuleError, match="score"):
        apply_rules(item, DEFAULT_RULES)
