"""The hot path's shortcut (``quick_validate``) against the models.

The shortcut may decline anything (the models then decide), but what it vouches for the models
must accept, with the same values: the playbook maps the quick dict and the model to the same
Heap items. Realistic events must take the shortcut, or the hot path loses its point.

The check itself: ``tests/support/inbound_check.py``; its property (random events):
``tests/property/test_inbound_properties.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_forwarder.heap.rules import apply_rules
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.models import as_plain, quick_validate, validate_event
from inbound_check import RAW_FILES, RULES, assert_same_as_models, sample


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
    event = {**sample("product_viewed.json"), **change}
    assert quick_validate(event) is None, why


@pytest.mark.parametrize("millis", [20_000_000_001, 1_718_028_195_123, 99_999_999_999_999])
def test_epoch_milliseconds_read_as_the_models_read_them(millis: int) -> None:
    assert assert_same_as_models({**sample("product_viewed.json"), "timestamp": millis})


def test_absent_objects_get_the_models_default() -> None:
    event = sample("identify.json")
    del event["traits"]
    quick = quick_validate(event)
    assert quick is not None and quick["traits"] == {}
    assert "traits" not in event  # a copy, not the caller's dict


def test_group_alias_and_screen_shapes() -> None:
    for name in ("group.json", "alias.json", "screen.json", "page.json"):
        assert assert_same_as_models(sample(name))
    assert quick_validate({**sample("group.json"), "groupId": ""}) is None
    assert quick_validate({**sample("alias.json"), "previousId": None}) is None
    assert quick_validate({**sample("page.json"), "name": 3}) is None


def test_a_custom_row_reading_context_whole_maps_alike() -> None:
    """``context`` is a typed model on the models' path (``as_plain`` makes it plain data) and a
    dict on the quick one: a playbook row that reads it whole gets the same plain data either way."""
    override = (
        '{"events": {"product_viewed": {"endpoint": "track", "rows": ['
        '{"key": "identity", "from": "anonymousId"}, {"key": "event", "from": "event"},'
        '{"key": "properties", "from": "context"}]}}}'
    )
    mapper = Mapper(build_playbook(parameter_text=override), {"MY_APP_ID": "demo-app-id"})
    raw = sample("product_viewed.json")
    quick = quick_validate(raw)
    assert quick is not None

    def mapped(event: Any) -> Any:
        return [apply_rules(i, RULES).body for i in mapper.map(event, raw)]

    from_quick = mapped(quick)
    assert from_quick == mapped(as_plain(validate_event(raw)))
    assert from_quick[0]["properties"]["userAgent"] == raw["context"]["userAgent"]
