"""The hot path's shortcut (``quick_validate``) against the models.

The shortcut may decline anything (the models then decide), but what it vouches for the models
must accept, with the same values: the playbook maps the quick dict and the model to the same
Heap items. Realistic events must take the shortcut, or the hot path loses its point.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heap_forwarder.heap.rules import HeapRuleError, apply_rules
from heap_forwarder.mapping.engine import Mapper, MappingError
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import EventView
from heap_forwarder.models import InvalidEvent, format_timestamp, quick_validate, validate_event
from heap_forwarder.pipeline import Pipeline
from sample_events import RAW_EVENTS, raw

RAW_FILES = sorted(RAW_EVENTS.glob("*.json"))
MAPPER = Mapper(build_playbook(), {"MY_APP_ID": "demo-app-id"})
RULES = Pipeline(MAPPER, deliverer=None).rule_settings  # type: ignore[arg-type]
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")
EXAMPLES = 5000 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 400


def _sample(name: str) -> dict[str, Any]:
    return raw(name.removesuffix(".json"))


def _mapped(event: Any, raw: dict[str, Any]) -> Any:
    """What the default playbook and Heap's rules make of it: items, or the error's words."""
    try:
        return [(i.endpoint, apply_rules(i, RULES).body) for i in MAPPER.map(event, raw)]
    except (MappingError, HeapRuleError) as error:
        return (type(error).__name__, str(error))


def assert_same_as_models(raw: dict[str, Any]) -> bool:
    """True when the shortcut vouched for ``raw`` (and agreed with the models in every respect)."""
    before = copy.deepcopy(raw)
    quick = quick_validate(raw)
    assert raw == before, "the shortcut must not change the event it reads"
    if quick is None:
        return False
    model = validate_event(raw)  # raises if the shortcut vouched for an invalid event
    for name in TIME_FIELDS:
        if getattr(model, name) is None:
            assert quick.get(name) is None
        else:
            assert quick[name] == getattr(model, name)
            assert format_timestamp(quick[name]) == format_timestamp(getattr(model, name))
    assert _mapped(quick, raw) == _mapped(model, raw)
    # What JMESPath rows read: the same plain data from either.
    assert EventView(quick, raw).plain() == EventView(model, raw).plain()
    return True


@pytest.mark.parametrize("path", RAW_FILES, ids=lambda p: p.stem)
def test_every_realistic_sample_takes_the_shortcut(path: Path) -> None:
    assert assert_same_as_models(json.loads(path.read_text()))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"userId": 42}, "a number id is turned into a string by the model"),
        ({"anonymousId": 4.5}, "same, for a float"),
        ({"timestamp": 1718028000}, "epoch seconds: the models tell them from milliseconds"),
        ({"timestamp": 1718028000000.5}, "a float of milliseconds"),
        ({"timestamp": True}, "a boolean"),
        ({"timestamp": "2024-06-10 14:03:11Z"}, "a space for the T"),
        ({"timestamp": "2024-06-10T14:03:11.1234567Z"}, "more than microseconds"),
        ({"timestamp": "2024-06-10T14:03:11"}, "no offset"),
        ({"timestamp": "2024-02-30T14:03:11Z"}, "no such day"),
        ({"timestamp": "2024-01-01T00:00:00+00:60"}, "offset minutes of 60: fromisoformat takes them"),
        ({"timestamp": "2024-01-01T00:00:00+05:99"}, "offset minutes of 99"),
        ({"timestamp": "2024-01-01T24:00:00Z"}, "24:00:00, which newer Pythons take"),
        ({"timestamp": "0001-01-01T00:30:00+01:00"}, "before year 1 in UTC"),
        ({"sentAt": "yesterday"}, "not a time at all"),
        ({"timestamp": "٢٠٢٤-06-10T14:03:11Z"}, "digits that are not ASCII"),
        ({"type": "Track"}, "the type is exact"),
        ({"type": None}, "no type"),
        ({"event": ""}, "an empty event name"),
        ({"event": 7}, "a number for a name"),
        ({"properties": None}, "null properties"),
        ({"properties": ["a"]}, "properties that are not an object"),
        ({"context": "web"}, "a context that is not an object"),
        ({"context": {"userAgent": 1}}, "a number for the user agent"),
        ({"context": {"page": "home"}}, "a page that is not an object"),
        ({"integrations": []}, "integrations that are not an object"),
    ],
)
def test_the_unusual_is_left_to_the_models(change: dict[str, Any], why: str) -> None:
    event = {**_sample("product_viewed.json"), **change}
    assert quick_validate(event) is None, why


@pytest.mark.parametrize("millis", [20_000_000_001, 1_718_028_195_123, 99_999_999_999_999])
def test_epoch_milliseconds_read_as_the_models_read_them(millis: int) -> None:
    assert assert_same_as_models({**_sample("product_viewed.json"), "timestamp": millis})


def test_absent_objects_get_the_models_default() -> None:
    event = _sample("identify.json")
    del event["traits"]
    quick = quick_validate(event)
    assert quick is not None and quick["traits"] == {}
    assert "traits" not in event  # a copy, not the caller's dict


def test_group_alias_and_screen_shapes() -> None:
    for name in ("group.json", "alias.json", "screen.json", "page.json"):
        assert assert_same_as_models(_sample(name))
    assert quick_validate({**_sample("group.json"), "groupId": ""}) is None
    assert quick_validate({**_sample("alias.json"), "previousId": None}) is None
    assert quick_validate({**_sample("page.json"), "name": 3}) is None


# --------------------------------------------------------------------------------- properties
DIGITS = st.integers(0, 9999)
TIMES = st.one_of(
    st.builds(
        lambda y, mo, d, h, mi, s, frac, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{off}",
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["", ".1", ".12", ".123", ".123456", ".1234567", ".", ".x"]),
        st.one_of(
            st.sampled_from(["Z", "z", "+00:00", "-05:30", "+14:00", "+23:59", "-24:00", "+0530", "", " Z"]),
            st.builds(
                lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
                st.sampled_from("+-"),
                st.integers(0, 25),
                st.integers(0, 99),
            ),
        ),
    ),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.none(),
    st.booleans(),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELD_VALUES = st.one_of(VALUES, TIMES)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A realistic sample with some of its fields replaced or removed, or odd ones added."""
    name = draw(st.sampled_from([p.name for p in RAW_FILES]))
    event = _sample(name)
    fields = [
        "type", "event", "messageId", "anonymousId", "userId", "properties", "traits", "context",
        "integrations", "name", "category", "groupId", "previousId", *TIME_FIELDS,
    ]  # fmt: skip
    for field in draw(st.lists(st.sampled_from(fields), max_size=4, unique=True)):
        if draw(st.booleans()):
            event.pop(field, None)
        elif field == "type":
            event[field] = draw(
                st.one_of(st.sampled_from(["track", "page", "screen", "identify", "group", "alias"]), VALUES)
            )
        elif field in TIME_FIELDS:
            event[field] = draw(TIMES)
        elif field == "context":
            context = dict(event.get("context") or {})
            keys = st.lists(st.sampled_from(["userAgent", "ip", "page", "traits", "x"]), max_size=3)
            for key in draw(keys):
                context[key] = draw(VALUES)
            event[field] = draw(st.one_of(st.just(context), VALUES))
        else:
            event[field] = draw(FIELD_VALUES)
    return event


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_what_the_shortcut_vouches_for_the_models_accept_alike(event: dict[str, Any]) -> None:
    if not assert_same_as_models(event):
        # Declined: fine whatever the models say, but they must say it in their own words.
        with contextlib.suppress(InvalidEvent):
            validate_event(event)


def test_a_custom_row_reading_context_whole_maps_alike() -> None:
    """``context`` is a typed model on the models' path and a dict on the quick one: a playbook
    row that reads it whole gets the same plain data either way."""
    override = (
        '{"events": {"product_viewed": {"endpoint": "track", "rows": ['
        '{"key": "identity", "from": "anonymousId"}, {"key": "event", "from": "event"},'
        '{"key": "properties", "from": "context"}]}}}'
    )
    mapper = Mapper(build_playbook(parameter_text=override), {"MY_APP_ID": "demo-app-id"})
    raw = _sample("product_viewed.json")
    quick = quick_validate(raw)
    assert quick is not None

    def mapped(event: Any) -> Any:
        return [apply_rules(i, RULES).body for i in mapper.map(event, raw)]

    from_quick = mapped(quick)
    assert from_quick == mapped(validate_event(raw))
    assert from_quick[0]["properties"]["userAgent"] == raw["context"]["userAgent"]
