"""Events into message bodies (tools/heap_forwarder_tools/backfill/packing.py)."""

from __future__ import annotations

import json
from pathlib import Path

from heap_forwarder.edge.consumer import MAX_EVENTS_PER_RECORD
from heap_forwarder_tools.backfill.packing import Body, InvocationFit, Packer, utf8_length

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_invocation_bound_follows_the_templates_consumer() -> None:
    from heap_forwarder_tools.backfill import packing
    from heap_forwarder_tools.local.template import load_template

    consumer = load_template(ROOT / "template.yaml")["Resources"]["ConsumerFunction"]["Properties"]
    assert consumer["Timeout"] == packing.CONSUMER_TIMEOUT_SECONDS
    [sqs] = [e["Properties"] for e in consumer["Events"].values() if e["Type"] == "SQS"]
    assert sqs["BatchSize"] == packing.CONSUMER_BATCH_SIZE


def test_small_events_are_packed_so_that_an_invocation_gets_no_more_than_its_pace_delivers() -> None:
    fit = InvocationFit.of(6000)  # 100 a second for 57 s, plus a burst of 1,000, less the margin
    assert fit.max_events == 5025
    small = [json.dumps({"n": n, "pad": "x" * 80}) for n in range(100)]  # ~100 bytes each
    bodies = pack(Packer(fit=fit), small)
    per_message = max(b.events for b in bodies)
    # Lambda's 1,000 records of these messages fit in 6 MB: the events per record bound it.
    assert per_message * 1000 <= fit.max_events < (per_message + 1) * 1000


def test_large_events_fill_their_messages_the_6_mb_payload_bounds_the_invocation() -> None:
    fit = InvocationFit.of(6000)
    large = [json.dumps({"n": n, "pad": "x" * 1500}) for n in range(400)]  # ~1.5 KB each
    bodies = pack(Packer(fit=fit), large)
    assert bodies[0].size > 250_000  # as full as SQS allows
    records = 6 * 1024 * 1024 // bodies[0].size
    assert records * bodies[0].events <= fit.max_events
