"""A changed playbook keeps the isolation promise: with an override that converts, renames and
hashes, several bad events at any positions of one SQS batch, with hostile text, are each
dead-lettered with their own reason and value, the good ones delivered once, converted and
hashed, and neither the bad values nor the hash key reach a log line. On moto and the emulator."""

from __future__ import annotations

import hashlib
import hmac
import random
from typing import Any

import pytest

from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import Playbook

HASH_KEY = b"k3y-that-must-never-be-logged"
OVERRIDE = """\
global:
  item:
    - {key: properties.position_s, from: properties.position, transforms: [to_number], endpoints: [track]}
  edit:
    properties: {rename: {coupon_id: coupon}, hash: [email], drop: [position], endpoints: [track]}
"""
HOSTILE = [
    "twelve",
    "1e400",
    "nan",
    "'; DROP TABLE events; --",
    "\u202e\u0000<script>alert(1)</script>",
    "ada@example.com",
]


@pytest.fixture
def playbook() -> Playbook:
    """This module's playbook: the default with the override above (make_consumer's)."""
    return build_playbook(parameter_text=OVERRIDE)


def test_bad_events_anywhere_in_a_batch_are_isolated_under_a_changed_playbook(
    aws, emulator, make_consumer, kit, logs
) -> None:
    consumer = make_consumer(hash_key=HASH_KEY)

    rng = random.Random(20261206)
    bad_at = sorted({0, 59, *rng.sample(range(1, 59), 4)})  # first, last, and four anywhere
    events: list[dict[str, Any]] = []
    for n in range(60):
        event = kit.track(n)
        event["properties"] = {"coupon_id": f"C{n}", "email": f"user{n}@example.com", "position": n}
        if n in bad_at:
            event["properties"]["position"] = HOSTILE[len(events) % len(HOSTILE)] + f" #{n}"
        events.append(event)
    # Ten events a record: bad ones share records with good ones.
    bodies = [kit.body(*events[i : i + 10]) for i in range(0, 60, 10)]

    assert consumer.handle(aws.lambda_event(*bodies), 30.0) == {"batchItemFailures": []}

    stored = {e["idempotency_key"]: e for e in emulator.tracked_events()}
    assert sorted(stored) == sorted(f"msg-{n}" for n in range(60) if n not in bad_at)
    for n in range(60):
        if n in bad_at:
            continue
        properties = stored[f"msg-{n}"]["properties"]
        assert properties["position_s"] == n
        assert properties["coupon"] == f"C{n}" and "coupon_id" not in properties
        expected = hmac.new(HASH_KEY, f"user{n}@example.com".encode(), hashlib.sha256).hexdigest()
        assert properties["email"] == expected

    letters = aws.dead_letters()
    assert sorted(letter.event()["messageId"] for letter in letters) == sorted(f"msg-{n}" for n in bad_at)
    for letter in letters:
        n = int(letter.event()["messageId"].removeprefix("msg-"))
        assert letter.error_class == "invalid_event"
        # The letter quotes the value it could not convert (the logged reason does not).
        assert letter.reason.startswith("properties.position_s: to_number: ")
        assert f"#{n}" in letter.reason

    text = logs.text()
    assert "to_number: the text is not a number" in text  # each refusal is logged, by its reason
    assert HASH_KEY.decode() not in text
    for value in HOSTILE:
        assert value not in text  # event data: never in a log line
    assert "user1@example.com" not in text
