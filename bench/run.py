"""The benchmark: every figure measured in the same run as its baseline, printed as one table.

    .venv/bin/python bench/run.py            # full run (make bench), a few minutes
    .venv/bin/python bench/run.py --quick    # CI smoke run (make bench-quick), well under a minute
    .venv/bin/python bench/run.py --json results.json

Figures (see docs/performance.md):

- throughput: the SQS consumer (the real Lambda handler) handling one invocation of 10,000
  records against the Heap emulator in its own process, vs json.loads + json.dumps of the
  same bodies; with a per-stage breakdown in µs per event;
- HTTP requests per 1,000 events (track events, and all endpoints);
- cold start: importing the handler module vs its dependencies' four top-level packages (and
  vs the old baseline, the submodules it uses), fresh interpreters; import + the first
  10-record invocation;
- memory: peak RSS (VmHWM) of a fresh process handling the largest batch Lambda hands over
  (6 MB payload), moto and the emulator outside it; and of a fresh API process answering a
  ~550-byte gzip request of 170,000 ``{}`` events, against the same process after one small
  valid request;
- isolation: requests and items re-sent to find k refused events among 1,000 (k = 1, 3, 10,
  100), and, in full mode, how long a trickling Heap holds each handler told it has 30 s left;
- pacing: a 60,000-event backlog against the emulator enforcing Heap's rate limits, time
  compressed: delivery rate as a fraction of Heap's cap, 429s received, events lost;
- backfill (full mode only): ``heap-forwarder backfill`` streaming a generated ~200 MB gzipped
  Segment-style archive from moto's S3 into the main queue: events enqueued per second, SQS
  requests per 1,000 events, the CLI's peak RSS (and the same for a 20 MB archive: the peak
  must not grow with the archive).
- single requests: CPU per identify call (the client's way, urllib3's way, bare http.client)
  and per-request metrics (tallied vs Powertools points per request).

Exit status: 1 when any event was not delivered (or was lost) or a figure could not be
measured; never because of a timing. Timings are printed, with whether each target is met.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c
import backfill
import cold_start
import memory
import pacing
import throughput


@dataclass(frozen=True)
class Mode:
    name: str
    records: int  # throughput: records in the one invocation
    repeat: int  # throughput: median of this many invocations
    baseline_repeat: int  # throughput: median of this many stdlib round trips
    cold_runs: int  # cold start: fresh interpreters per side
    memory_records: int  # memory: at most this many records (the 6 MB cap decides)
    pacing_events: int
    time_scale: float  # pacing: Heap seconds per real second


FULL = Mode(
    "full",
    records=10_000,
    repeat=3,
    baseline_repeat=5,
    cold_runs=15,
    memory_records=5_000,
    pacing_events=60_000,
    time_scale=20,
)
QUICK = Mode(
    "quick",
    records=1_000,
    repeat=1,
    baseline_repeat=1,
    cold_runs=2,
    memory_records=300,
    pacing_events=6_000,
    time_scale=30,
)

STAGE_NOTES = {
    "envelope": "read_records: SQS record fields and receive count (JSON decoding excluded)",
    "parse/validate": "body JSON decoding (from_json); quick_validate, the models: what compiled declines",
    "compiled": "the compiled playbook: validation, mapping and Heap's rules in one pass",
    "map": "Mapper.map (the generic engine): what the compiled path declines",
    "Heap rules": "apply_rules: the same, after Mapper.map",
    "serialise": "Heap client: each item encoded (pydantic_core.to_json) and packed into bulk bodies",
    "HTTP": "Transport.post: request out, answer in (summed over threads; loopback, other process)",
    "other": "the rest: outcome folding, settle, metrics, Powertools decorators, GC between stages",
}


def _measure(name: str, errors: dict[str, str], run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    started = time.perf_counter()
    print(f"  {name} ...", end="", flush=True, file=sys.stderr)
    try:
        result = run()
    except Exception as error:
        errors[name] = f"{type(error).__name__}: {error}"
        print(" FAILED", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return None
    print(f" {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return result


def measure(mode: Mode) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    results: dict[str, Any] = {}
    print(f"heap-forwarder benchmark ({mode.name} mode): measuring", file=sys.stderr)
    with c.services() as running:
        for key, workload in (("throughput", "track"), ("throughput_mix", "mix")):
            results[key] = _measure(
                f"throughput ({workload})",
                errors,
                lambda workload=workload: throughput.run(  # type: ignore[misc]
                    running.env,
                    records=mode.records,
                    repeat=mode.repeat,
                    warmup=min(50, mode.records),
                    workload=workload,
                    baseline_repeat=mode.baseline_repeat,
                ),
            )
        results["memory"] = _measure(
            "memory", errors, lambda: memory.run(running.env, records=mode.memory_records)
        )
        results["cold_start"] = _measure(
            "cold start", errors, lambda: cold_start.run(mode.cold_runs, running.env)
        )
    results["pacing"] = _measure(
        "pacing", errors, lambda: pacing.run(events=mode.pacing_events, time_scale=mode.time_scale)
    )
    results["mapping"] = _measure(
        "mapping-only (bench_mapping.py)", errors, lambda: _script("bench_mapping.py", mode)
    )
    results["delivery"] = _measure(
        "delivery-only (bench_delivery.py)", errors, lambda: _script("bench_delivery.py", mode)
    )
    results["isolation"] = _measure(
        "isolation (bench_isolation.py)", errors, lambda: _script("bench_isolation.py", mode)
    )
    results["requests"] = _measure(
        "single requests (bench_requests.py)", errors, lambda: _script("bench_requests.py", mode)
    )
    if mode is FULL:  # minutes, and ~1 GB of disk churn: never in CI
        results["backfill"] = _measure("backfill (bench/backfill.py)", errors, backfill.run)
    return results, errors


def _script(name: str, mode: Mode) -> dict[str, Any]:
    argv = [c.PYTHON, str(c.BENCH / name)] + (["--quick"] if mode is QUICK else [])
    done = subprocess.run(argv, cwd=c.ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} exit {done.returncode}: {done.stderr[-2000:]}")
    return {"output": done.stdout.rstrip()}


# ---------------------------------------------------------------------------------- the table
def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "NO")


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    table: list[tuple[str, str, str, str, str, str]] = []
    for key, label, target in (
        ("throughput", "throughput: {records:,} records, track events", 1.0),
        ("throughput_mix", "throughput: {records:,} records, the mix (5% identify)", 0.6),
    ):
        figure = results.get(key)
        if not figure:
            continue
        n = figure["events"]
        mine, base = figure["handler_s"], figure["baseline_s"]
        ratio = base / mine
        table.append(
            (
                label.format(records=figure["records"]),
                f"{n / mine:,.0f} ev/s ({1e6 * mine / n:.1f} µs/ev)",
                f"{n / base:,.0f} ev/s ({1e6 * base / n:.1f} µs/ev) json round trip",
                f"{ratio:.2f}",
                f">= {target}",
                _met(ratio >= target),
            )
        )
    tp = results.get("throughput_mix") or results.get("throughput")
    if tp:
        track, overall = throughput.requests_per_1000(tp)
        track_items = tp["items_by_endpoint"].get("/api/track", 0)
        track_requests = sum(tp["requests"].get("/api/track", {}).values())
        fewest = -(-track_items // 1000)  # Heap takes at most 1,000 events a request
        table.append(
            (
                "HTTP requests per 1,000 track events",
                f"{track:.2f} ({track_requests} for {track_items:,}; fewest {fewest})",
                "1,000 (a request per event)",
                f"{track / 1000:.4f}",
                "1 (the bulk cap)",
                _met(track_requests <= fewest),
            )
        )
        table.append(
            (
                "HTTP requests per 1,000 events, all endpoints",
                f"{overall:.1f}",
                "1,000 (a request per event)",
                f"{overall / 1000:.4f}",
                "(info)",
                "—",
            )
        )
    cs = results.get("cold_start")
    if cs:
        off = cs["tracing_off"]
        for label, mine, base, target in (
            (
                "cold start: import handler vs the 4 top-level packages",
                off["handler_s"],
                off["baseline_s"],
                True,
            ),
            (
                "cold start, old baseline (the submodules used)",
                off["handler_s"],
                off["old_baseline_s"],
                False,
            ),
            (
                "cold start, tracing on (X-Ray SDK both sides)",
                cs["tracing_on"]["handler_s"],
                cs["tracing_on"]["baseline_s"],
                False,
            ),
        ):
            ratio = mine / base
            table.append(
                (
                    label,
                    f"{1000 * mine:.0f} ms",
                    f"{1000 * base:.0f} ms",
                    f"{ratio:.2f}",
                    "<= 1.15" if target else "(info)",
                    _met(ratio <= 1.15) if target else "—",
                )
            )
        first = cs.get("first_invocation")
        if first:
            table.append(
                (
                    "cold start: import + first 10-record invocation",
                    f"{1000 * first['total_s']:.0f} ms",
                    f"import {1000 * first['import_s']:.0f} + first {1000 * first['invocation_s']:.0f} ms; "
                    f"CPU {1000 * first['total_cpu_s']:.0f} ms",
                    "—",
                    "no slower than before",
                    "—",
                )
            )
    mem = results.get("memory")
    if mem:
        table.append(
            (
                f"memory: peak RSS, {mem['records']:,} records ({mem['payload_mb']:.2f} MB payload)",
                f"{mem['peak_mb']:.1f} MB",
                f"{mem['after_imports_mb']:.1f} MB after imports",
                f"{mem['peak_mb'] / mem['after_imports_mb']:.2f}",
                "<= 96 MB",
                _met(mem["peak_mb"] <= 96),
            )
        )
        api = mem.get("api")
        if api:
            table.append(
                (
                    f"memory: API peak RSS, {api['sent_bytes']}-byte gzip request of {api['events']:,} {{}}",
                    f"{api['peak_mb']:.1f} MB (answer {api['inflating_status']})",
                    f"{api['baseline_mb']:.1f} MB after one small request",
                    f"{api['peak_mb'] / api['baseline_mb']:.2f}",
                    f"<= {api['target_mb']:.0f} MB",
                    _met(api["peak_mb"] <= api["target_mb"]),
                )
            )
    pc = results.get("pacing")
    if pc:
        table.append(
            (
                f"pacing: {pc['events']:,}-event backlog, delivery rate / Heap cap",
                f"{pc['rate']:.3f} ({pc['rate'] * pacing.HEAP_CAP_PER_MINUTE:,.0f} ev/min)",
                f"{pacing.HEAP_CAP_PER_MINUTE:,} ev/min",
                f"{pc['rate']:.3f}",
                ">= 0.9",
                _met(pc["rate"] >= 0.9),
            )
        )
        few = pc["rate_limited"] <= max(1, 0.05 * pc["track_requests"])
        table.append(
            (
                "pacing: 429s received",
                f"{pc['rate_limited']} of {sum(sum(v.values()) for v in pc['requests'].values())} requests",
                "—",
                "—",
                "few (<= 5% of requests)",
                _met(few),
            )
        )
        table.append(("pacing: events lost", f"{pc['lost']}", "—", "—", "0", _met(pc["lost"] == 0)))
    bf = results.get("backfill")
    if bf:
        for one in bf["runs"]:
            table.append(
                (
                    f"backfill: {one['stored_mb']:.0f} MB gzipped archive, {one['events']:,} events",
                    f"{one['events_per_s']:,.0f} ev/s enqueued; "
                    f"{one['requests_per_1000']:.2f} SQS req/1,000 ev",
                    "—",
                    "—",
                    "(info)",
                    "—",
                )
            )
            table.append(
                (
                    f"backfill: CLI peak RSS, {one['stored_mb']:.0f} MB archive",
                    f"{one['peak_rss_mb']:.1f} MB",
                    "—",
                    "—",
                    f"<= {bf['peak_rss_target_mb']:.0f} MB",
                    _met(one["peak_rss_mb"] <= bf["peak_rss_target_mb"]),
                )
            )
    delivered = delivery_failures(results)
    table.append(
        (
            "every event delivered (all runs)",
            "yes" if not delivered else "NO: " + "; ".join(delivered),
            "—",
            "—",
            "all",
            _met(not delivered),
        )
    )
    return table


def delivery_failures(results: dict[str, Any]) -> list[str]:
    problems = []
    for name in ("throughput", "throughput_mix", "memory", "pacing"):
        result = results.get(name)
        if result is None:
            problems.append(f"{name}: not measured")
        elif not result["delivered_all"]:
            problems.append(f"{name}: not all delivered")
    first = (results.get("cold_start") or {}).get("first_invocation")
    if first and not first["delivered_all"]:
        problems.append(f"cold start: {first['failed_records']} records of the first invocations failed")
    pc = results.get("pacing")
    if pc and pc["lost"]:
        problems.append(f"pacing: {pc['lost']} lost")
    bf = results.get("backfill")
    if bf and not bf["delivered_all"]:
        problems.append("backfill: not every event enqueued")
    return problems


def format_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in body)])


def stage_report(tp: dict[str, Any]) -> list[str]:
    """The per-stage table of one throughput workload, and what the invocations cost."""
    n = tp["events"]
    stages = tp["stages_s"]
    total = sum(stages.values())
    body = [
        (name, f"{1e6 * seconds / n:.1f}", f"{100 * seconds / total:.0f}%", STAGE_NOTES[name])
        for name, seconds in stages.items()
    ]
    body.append(("total", f"{1e6 * total / n:.1f}", "100%", "the instrumented invocation"))
    runs = ", ".join(f"{1e6 * s / n:.1f}" for s in tp["handler_runs_s"])
    return [
        f"Per-stage breakdown, {tp['workload']} workload, µs per event ({n:,} events of "
        f"{tp['mean_body_bytes']:,.0f} bytes on average; a timer around each stage's calls, "
        f"fastest of the instrumented invocations: {1e6 * tp['probed_handler_s'] / n:.1f} µs/ev, "
        f"vs {1e6 * tp['handler_s'] / n:.1f} clean):",
        "",
        format_table(("stage", "µs/event", "share", "what it covers"), body),
        "",
        "HTTP by endpoint: "
        + ", ".join(
            f"{path} {v['requests']} req, {1000 * v['seconds']:.0f} ms"
            for path, v in tp["http_by_endpoint"].items()
        ),
        f"Invocations, µs/event: {runs} (median {1e6 * tp['handler_s'] / n:.1f}; its CPU time "
        f"{1e6 * tp['handler_cpu_s'] / n:.1f}); the json round trip {1e6 * tp['baseline_s'] / n:.1f}.",
    ]


def report(mode: Mode, results: dict[str, Any], errors: dict[str, str]) -> str:
    m = c.machine()
    out = [
        f"heap-forwarder benchmark, {mode.name} mode — {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, {m['os']}, load {m['load']}",
        "",
        format_table(("figure", "measured", "baseline", "ratio", "target", "met?"), rows(results)),
    ]
    for key in ("throughput", "throughput_mix"):
        tp = results.get(key)
        if tp:
            out += ["", *stage_report(tp)]
    cs = results.get("cold_start")
    if cs:
        extra = ", ".join(
            f"{k} {v:.0f} ms" for k, v in list(cs["importtime"]["extra_packages_ms"].items())[:5]
        )
        ours = ", ".join(
            f"{k.removeprefix('heap_forwarder.')} {v['self_ms']:.0f} ms"
            for k, v in list(cs["importtime"]["our_modules"].items())[:6]
        )
        out += [
            "",
            "Cold start (-X importtime, self time), the module and what its first invocation imports: "
            f"the handler adds to the 4 packages: {extra}.",
            f"Our own modules: {ours}.",
        ]
    mem = results.get("memory")
    if mem:
        vm = mem["vm"]
        out += [
            "",
            "Memory, VmHWM after each step: "
            + ", ".join(f"{step} {values['VmHWM']:.1f} MB" for step, values in vm.items())
            + f". The first invocation (10 records: SSM read from moto, boto3 clients, playbook) "
            f"took {1000 * mem['first_invocation_s']:.0f} ms.",
        ]
        api = mem.get("api")
        if api:
            out += [
                "",
                "API memory, VmHWM after each step: "
                + ", ".join(f"{step} {values['VmHWM']:.1f} MB" for step, values in api["rss_mb"].items())
                + f". The inflating request was answered {api['inflating_status']} "
                f"({api['inflating_error']}: {api['inflating_message']}).",
            ]
    pc = results.get("pacing")
    if pc:
        out += [
            "",
            f"Pacing: {pc['events']:,} events in {pc['invocations']} invocations of {pc['batch']}, "
            f"{pc['heap_minutes']:.2f} Heap minutes ({pc['elapsed_s']:.1f} s real at x{pc['time_scale']:g}), "
            f"limiter {pc['limiter_events_per_minute']:,.0f}/min + burst {pacing.BURST}; "
            f"records retried {pc['records_retried']}, dead-lettered {pc['dead_lettered']}, "
            f"duplicates {pc['duplicates']}.",
        ]
    if results.get("backfill"):
        out += ["", "Backfill (bench/backfill.py):", *backfill.describe(results["backfill"])]
    if results.get("mapping"):
        out += ["", "Mapping only (bench/bench_mapping.py):", results["mapping"]["output"]]
    if results.get("delivery"):
        out += ["", "Delivery only (bench/bench_delivery.py):", results["delivery"]["output"]]
    if results.get("isolation"):
        out += ["", "Isolation (bench/bench_isolation.py):", results["isolation"]["output"]]
    if results.get("requests"):
        out += ["", "Single requests (bench/bench_requests.py):", results["requests"]["output"]]
    for name, error in errors.items():
        out += ["", f"ERROR in {name}: {error}"]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke run: small sizes, checks delivery only"
    )
    parser.add_argument("--json", metavar="OUT", help="also write every measurement as JSON to OUT")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    started = time.perf_counter()
    results, errors = measure(mode)
    print(report(mode, results, errors))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"mode": mode.name, "machine": c.machine(), "results": results, "errors": errors},
                indent=2,
                default=str,
            ),
            "utf-8",
        )
    failures = delivery_failures(results)
    if errors or failures:
        print("FAILED: " + "; ".join([*errors, *failures]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
