"""The compiled playbook (``mapping/compiled.py``): playbook strings never become source text, a
new playbook is compiled again, what it cannot take plainly goes to the generic engine, and a
stream of made-up event names cannot grow it. (``tests/property/test_compiled_properties.py``
holds it to the generic engine on every bundled and cookbook playbook.)"""

from __future__ import annotations

from pathlib import Path

import pydantic_core

from heap_forwarder.heap.items import Endpoint
from heap_forwarder.mapping.compiled import MAX_REMEMBERED_NAMES
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.pipeline import Pipeline
from sample_events import raw as load_raw

HOSTILE = '"); __import__("os").system("echo pwned")  # \\'


def _pipeline(playbook_file: Path | None = None) -> Pipeline:
    return Pipeline(Mapper(build_playbook(playbook_file), {"MY_APP_ID": "demo-app-id"}), deliverer=None)  # type: ignore[arg-type]


def test_playbook_strings_are_bound_as_values_never_pasted_into_the_source(tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(
        "events:\n"
        "  Order Completed:\n"
        "    rows:\n"
        f"      - {{key: event, value: {pydantic_core.to_json(HOSTILE).decode()}}}\n"
        f"      - {{key: {pydantic_core.to_json('properties.' + HOSTILE).decode()}, "
        "from: properties.total}\n",
        "utf-8",
    )
    pipeline = _pipeline(override)
    sources = "\n".join(pipeline.compiled.sources.values())
    assert sources
    assert "pwned" not in sources and "Order" not in sources and "anonymousId" not in sources
    items = pipeline.compiled(load_raw("order_completed"), 0)
    assert items is not None
    (item,) = items
    assert item.body["event"] == HOSTILE
    assert item.body["properties"][HOSTILE] == 146.1


def test_a_new_playbook_is_compiled_again(tmp_path: Path) -> None:
    before = _pipeline().compiled(load_raw("order_completed"), 0)
    override = tmp_path / "override.yaml"
    override.write_text(
        "events:\n  Order Completed:\n    rows:\n      - {key: event, value: Purchase}\n", "utf-8"
    )
    after = _pipeline(override).compiled(load_raw("order_completed"), 0)
    assert before is not None and after is not None
    assert before[0].body["event"] == "Order Completed"
    assert after[0].body["event"] == "Purchase"


def test_what_is_not_plainly_valid_goes_to_the_generic_path() -> None:
    pipeline = _pipeline()
    event = load_raw("order_completed")
    assert pipeline.compiled(event, 0) is not None
    for field, value in (("messageId", 12), ("timestamp", "2024-06-10 14:07:05"), ("properties", [])):
        assert pipeline.compiled({**event, field: value}, 0) is None, field
    # A required value missing, a Heap rule broken: the generic path words the outcome.
    assert pipeline.compiled({**event, "anonymousId": "null", "userId": None}, 0) is None
    prepared = pipeline.prepare([{**event, "anonymousId": "null", "userId": None}])
    assert prepared.items == []
    assert prepared.decided[0] is not None and "placeholder" in prepared.decided[0].reason


def test_identify_makes_both_requests_when_it_carries_a_heap_user_id() -> None:
    event = load_raw("identify")
    items = _pipeline().compiled(event, 3)
    assert items is not None
    assert [i.endpoint for i in items][:1] == [Endpoint.ADD_USER_PROPERTIES]
    assert {i.source for i in items} == {3}


def test_made_up_event_names_do_not_grow_the_compiled_path() -> None:
    pipeline = _pipeline()
    event = load_raw("custom_track")
    for n in range(MAX_REMEMBERED_NAMES + 50):
        assert pipeline.compiled({**event, "event": f"made up {n}"}, 0) is not None
    assert len(pipeline.compiled._by_name) == MAX_REMEMBERED_NAMES
