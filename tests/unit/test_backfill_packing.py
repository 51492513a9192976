"""Events into message bodies (tools/heap_forwarder_tools/backfill/packing.py)."""

from __future__ import annotations

import json

from heap_forwarder.edge.consumer import MAX_EVENTS_PER_RECORD
from heap_forwarder_tools.backfill.packing import Body, Packer, utf8_length


def pack(packer: Packer, texts: list[str]) -> list[Body]:
    bodies = [b for t in texts if (b := packer.add(t, utf8_length(t))) is not None]
    last = packer.flush()
    return [*bodies, *([last] if last else [])]


def test_bodies_stay_within_the_message_size_and_hold_every_event_in_order() -> None:
    texts = [json.dumps({"n": n, "pad": "é" * (n % 50)}, ensure_ascii=False) for n in range(2000)]
    bodies = pack(Packer(max_bytes=10_000), texts)
    assert len(bodies) > 1
    assert all(len(b.text.encode()) == b.size <= 10_000 for b in bodies)
    events = [e for b in bodies for e in json.loads(b.text)["batch"]]
    assert [e["n"] for e in events] == list(range(2000))
    assert sum(b.events for b in bodies) == 2000


def test_never_more_events_in_a_body_than_the_consumer_takes_in_a_record() -> None:
    bodies = pack(Packer(max_bytes=10**9), ["{}"] * (2 * MAX_EVENTS_PER_RECORD + 1))
    assert [b.events for b in bodies] == [MAX_EVENTS_PER_RECORD, MAX_EVENTS_PER_RECORD, 1]


def test_an_event_fits_alone_only_with_its_batch_around_it() -> None:
    packer = Packer(max_bytes=100)
    assert packer.fits_alone(100 - len('{"batch":[]}'))
    assert not packer.fits_alone(100 - len('{"batch":[]}') + 1)


def test_nothing_collected_flushes_nothing() -> None:
    assert Packer().flush() is None
