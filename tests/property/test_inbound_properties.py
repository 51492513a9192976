"""The hot path's shortcut (``quick_validate``) against the models, as a property (hypothesis):
for realistic events with fields replaced, removed or added, what the shortcut vouches for the
models accept alike, and the models' event made plain (``models.as_plain``, the one shape the
mapping engine reads) is the shortcut's dict (the check: ``tests/support/inbound_check.py``;
the examples: ``tests/unit/test_inbound.py``). 400 examples, 5,000 with
``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heap_forwarder.models import InvalidEvent, validate_event
from inbound_check import RAW_FILES, TIME_FIELDS, assert_same_as_models, sample

EXAMPLES = 5000 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 400

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
    event = sample(name)
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
