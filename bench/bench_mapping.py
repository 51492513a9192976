"""How fast is the mapping, compared with merely decoding and encoding the same events?

    python bench/bench_mapping.py [--events N] [--repeat R] [--quick]

Builds N realistic events by cycling the seed samples in events/raw (the nine seed track events,
page and identify), each with its own messageId, then times, in one run and with the garbage
collector on, the best of R repetitions of:

  baseline  json.loads + json.dumps of each event's JSON text (the least any forwarder does);
  mapping   validated models -> Heap item bodies: Mapper.map + apply_rules, i.e. what
            Pipeline.prepare does minus validation (the models are built before timing);
  prepare   Pipeline.prepare on the raw dicts: validation + mapping + Heap's rules.

The ratio columns divide a stage's events/s by the baseline's: mapping/baseline >= 1.0 means
the mapping costs no more than a JSON round trip. ``--quick`` (1,000 events, 1 repetition) is
for CI: it checks that every event mapped and exits non-zero otherwise; it asserts no timing.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from heap_forwarder.heap.rules import RuleSettings, apply_rules
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.models import as_plain, validate_event
from heap_forwarder.pipeline import Pipeline

RAW = Path(__file__).resolve().parents[1] / "events" / "raw"
SAMPLES = (
    "cart_viewed",
    "checkout_started",
    "order_completed",
    "payment_info_entered",
    "product_added",
    "product_clicked",
    "product_list_viewed",
    "product_viewed",
    "products_searched",
    "page",
    "identify",
)


class _NoDelivery:
    def deliver(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise RuntimeError("the benchmark never delivers")


def build_events(count: int) -> list[dict[str, Any]]:
    """``count`` events cycling the samples, each with a distinct messageId."""
    samples = [json.loads((RAW / f"{name}.json").read_text("utf-8")) for name in SAMPLES]
    events = []
    for i in range(count):
        event = json.loads(json.dumps(samples[i % len(samples)]))  # an independent copy
        event["messageId"] = f"bench-{i:08d}-{event['messageId'][14:]}"
        events.append(event)
    return events


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs, in seconds (GC stays on: it is part of the real cost)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000, help="number of events (default 10,000)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions; the best counts (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="CI mode: 1,000 events, 1 repetition, checks only"
    )
    args = parser.parse_args(argv)
    count, repeat = (1_000, 1) if args.quick else (args.events, args.repeat)
    if count < 1 or repeat < 1:
        parser.error("--events and --repeat must be positive")

    gc.enable()
    events = build_events(count)
    texts = [json.dumps(event) for event in events]
    mapper = Mapper(build_playbook(), {"MY_APP_ID": "bench-app"})
    pipeline = Pipeline(mapper, _NoDelivery())
    rules = RuleSettings(nested=mapper.playbook.rules.nested, arrays=mapper.playbook.rules.arrays)
    models = [as_plain(validate_event(event, i)) for i, event in enumerate(events)]  # outside the timing

    def baseline() -> list[str]:
        return [json.dumps(json.loads(text)) for text in texts]

    def mapping() -> list[Any]:
        return [
            apply_rules(item, rules)
            for i, (model, raw) in enumerate(zip(models, events, strict=True))
            for item in mapper.map(model, raw, i)
        ]

    def prepare() -> Any:
        return pipeline.prepare(events)

    # Correctness first: every event maps, and the two mapping paths agree.
    prepared = prepare()
    refused = [(i, o.reason) for i, o in enumerate(prepared.decided) if o is not None]
    mapped = mapping()
    if refused or [i.body for i in mapped] != [i.body for i in prepared.items]:
        print(f"FAILED: {len(refused)} event(s) not mapped, e.g. {refused[:3]}", file=sys.stderr)
        return 1
    sources = {item.source for item in prepared.items}
    if sources != set(range(count)):
        print(f"FAILED: {count - len(sources)} event(s) produced no Heap item", file=sys.stderr)
        return 1

    # Interleaved repetitions, best of each: on a shared machine the load changes from second
    # to second, and a stage measured entirely after another would inherit a different load.
    timings = {"baseline": float("inf"), "mapping": float("inf"), "prepare": float("inf")}
    runs = {"baseline": baseline, "mapping": mapping, "prepare": prepare}
    for _ in range(repeat):
        for name, run in runs.items():
            timings[name] = min(timings[name], best_of(1, run))
    rates = {name: count / seconds for name, seconds in timings.items()}

    print(
        f"{count:,} events ({len(SAMPLES)} samples cycled), {len(prepared.items):,} Heap items, "
        f"best of {repeat}, GC on, Python {sys.version.split()[0]}"
    )
    print(f"{'stage':<10} {'events/s':>12} {'µs/event':>10} {'vs baseline':>12}")
    descriptions = {
        "baseline": "json.loads + json.dumps",
        "mapping": "Mapper.map + apply_rules (pre-validated)",
        "prepare": "Pipeline.prepare (validate + map + rules)",
    }
    for name, rate in rates.items():
        ratio = rate / rates["baseline"]
        print(f"{name:<10} {rate:>12,.0f} {1e6 / rate:>10.1f} {ratio:>11.2f}x  {descriptions[name]}")
    ratio = rates["mapping"] / rates["baseline"]
    verdict = "met" if ratio >= 1.0 else "NOT met"
    print(
        f"mapping/baseline = {ratio:.2f} (target >= 1.0: {verdict}); "
        f"prepare/baseline = {rates['prepare'] / rates['baseline']:.2f}"
    )
    if args.quick:
        print(f"quick check: all {count:,} events mapped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
