"""The compiled playbook (``mapping/compiled.py``) against the generic engine, as a property
(hypothesis), on the bundled playbook and every cookbook override (the hash one with a fixed key).

For realistic events (the seed events of ``events/raw`` and the cookbook's, with fields
replaced, removed or added, properties nested, long, odd), the pipeline with its compiled path
and the pipeline with the generic path alone decide alike: the same Heap items (endpoint,
source, body bytes as sent), the same outcome (fate, error class, reason, detail) and the same
problems. And whatever the compiled path answers for, ``parse()`` (``models.validate_event``)
accepts. 400 examples, 5,000 with ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pydantic_core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heap_forwarder.inbound import quick_validate
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.models import validate_event
from heap_forwarder.pipeline import Pipeline, Prepared
from inbound_check import RAW_FILES, TIME_FIELDS, sample

EXAMPLES = 5000 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 400
COOKBOOK = Path(__file__).resolve().parents[2] / "docs" / "cookbook"
HASH_KEY = b"a fixed key for the property test"
SEEN: Counter[str] = Counter()  # how the compiled path answered (a guard against vacuity)


def _pipelines(override: Path | None) -> tuple[Pipeline, Pipeline]:
    """(compiled path on, generic path alone) for the playbook with ``override`` merged on."""
    playbook = build_playbook(override)
    key = HASH_KEY if playbook.uses_hash else None
    compiled = Pipeline(Mapper(playbook, {"MY_APP_ID": "demo-app-id"}, hash_key=key), deliverer=None)  # type: ignore[arg-type]
    generic = Pipeline(Mapper(playbook, {"MY_APP_ID": "demo-app-id"}, hash_key=key), deliverer=None)  # type: ignore[arg-type]
    generic.compiled = lambda raw, index: None  # type: ignore[assignment,method-assign]
    return compiled, generic


PLAYBOOKS: dict[str, tuple[Pipeline, Pipeline]] = {
    "bundled": _pipelines(None),
    **{folder.name: _pipelines(folder / "override.yaml") for folder in sorted(COOKBOOK.iterdir())},
}
SAMPLES = [sample(p.name) for p in RAW_FILES] + [
    json.loads((folder / "event.json").read_text("utf-8")) for folder in sorted(COOKBOOK.iterdir())
]

TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "null", "nan", "1e999", "x" * 1024, "id", "email", "a.b", "Order Completed"]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.just(float("inf")), TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
TIMES = st.one_of(
    st.sampled_from(
        [
            "2024-06-10T14:07:05.017Z",
            "2024-06-10T14:07:05Z",
            "2024-06-10T14:07:05.123456+05:30",
            "0001-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-06-10 14:07:05",
        ]
    ),
    # Any moment in the forms Segment's libraries send: the compiled path keeps a time already
    # in Heap's form (milliseconds, Z) as its own text instead of formatting it again.
    st.builds(
        lambda moment, form: form.format(moment.isoformat(timespec="milliseconds")),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
        st.sampled_from(["{}Z", "{}+00:00", "{}-07:00", "{}0Z", "{}"]),
    ),
    st.integers(-(10**15), 10**15),
    JSON,
)
FIELDS = [
    "type", "event", "messageId", "anonymousId", "userId", "properties", "traits", "context",
    "integrations", "name", "category", "groupId", "previousId", *TIME_FIELDS,
]  # fmt: skip
PROPERTY_KEYS = [
    "email",
    "plan",
    "total",
    "position",
    "coupon_id",
    "internal_x",
    "session_id",
    "user_agent",
    "name",
]


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A seed event with some fields replaced or removed, and some properties changed."""
    event = json.loads(json.dumps(draw(st.sampled_from(SAMPLES))))
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            event.pop(field, None)
        elif field == "type":
            event[field] = draw(st.sampled_from(["track", "page", "screen", "identify", "group", "alias", 7]))
        elif field in TIME_FIELDS:
            event[field] = draw(TIMES)
        elif field == "context":
            context = dict(event.get("context") or {})
            for key in draw(
                st.lists(st.sampled_from(["userAgent", "sessionId", "page", "heap", "x"]), max_size=2)
            ):
                context[key] = draw(
                    st.one_of(JSON, st.fixed_dictionaries({"user_id": st.one_of(JSON, st.just("12345"))}))
                )
            event[field] = draw(st.one_of(st.just(context), st.just(context), JSON))
        else:
            event[field] = draw(st.one_of(JSON, TEXT))
    blob = "traits" if event.get("type") in ("identify", "group") else "properties"
    if isinstance(event.get(blob), dict):
        changed = dict(event[blob])
        for key in draw(st.lists(st.one_of(st.sampled_from(PROPERTY_KEYS), TEXT), max_size=3)):
            changed[key] = draw(JSON)
        event[blob] = changed
    return event


def _decided(prepared: Prepared) -> tuple[Any, ...]:
    return (
        [(i.endpoint, i.source, pydantic_core.to_json(i.body)) for i in prepared.items],
        prepared.decided,
        prepared.problems,
    )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events(), playbook=st.sampled_from(sorted(PLAYBOOKS)))
def test_the_compiled_path_decides_as_the_generic_engine(event: dict[str, Any], playbook: str) -> None:
    compiled, generic = PLAYBOOKS[playbook]
    answered = compiled.compiled(json.loads(json.dumps(event)), 0)
    SEEN["answered" if answered else "declined"] += 1
    if answered:
        # parse()'s verdict: the compiled path takes only what the models accept.
        assert quick_validate(event) is not None
        validate_event(event)
    assert _decided(compiled.prepare([event])) == _decided(generic.prepare([event]))


@given(event=st.sampled_from(SAMPLES), playbook=st.sampled_from(sorted(PLAYBOOKS)))
@settings(max_examples=200, deadline=None)
def test_the_seed_events_take_the_compiled_path(event: dict[str, Any], playbook: str) -> None:
    """Every seed event the generic engine maps, and that is plainly valid (``quick_validate``
    vouches for it; the others the models coerce first), the compiled path maps (not declined)."""
    compiled, generic = PLAYBOOKS[playbook]
    expected = generic.prepare([event])
    answered = compiled.compiled(event, 0)
    if expected.items and expected.decided == [None] and quick_validate(event) is not None:
        assert answered is not None
        assert [(i.endpoint, pydantic_core.to_json(i.body)) for i in answered] == [
            (i.endpoint, pydantic_core.to_json(i.body)) for i in expected.items
        ]


def test_the_properties_were_not_vacuous() -> None:
    if sum(SEEN.values()) >= 100:  # the properties ran in this session
        assert SEEN["answered"] >= 20, SEEN
        assert SEEN["declined"] >= 20, SEEN
