"""The benchmark's own checks, at the smallest sizes: its events are valid, its payloads fit
Lambda's cap, and its throughput and pacing runs deliver every event (no timings asserted).

The full smoke run (``bench/run.py --quick``) runs in CI as ``make bench-quick``.
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import _common as c  # noqa: E402
import backfill as bench_backfill  # noqa: E402
import bench_isolation  # noqa: E402
import bench_requests  # noqa: E402
import cold_start  # noqa: E402
import memory  # noqa: E402
import pacing  # noqa: E402
import run as bench_run  # noqa: E402
import throughput  # noqa: E402


def test_the_mix_is_valid_and_every_event_is_its_own() -> None:
    from heap_forwarder.mapping.engine import Mapper
    from heap_forwarder.mapping.loader import build_playbook
    from heap_forwarder.pipeline import Pipeline

    events = c.build_events(300, tag="t")
    assert len({e["messageId"] for e in events}) == 300
    kinds = Counter(c.mix_order(c.MIX))
    assert kinds == Counter(c.MIX)
    prepared = Pipeline(Mapper(build_playbook(), {"MY_APP_ID": c.APP_ID}), _NoDelivery()).prepare(events)
    assert prepared.decided == [None] * 300, [o for o in prepared.decided if o][:3]
    track_only = c.build_events(100, mix=c.TRACK_MIX)
    assert {e["type"] for e in track_only} <= {"track", "page", "screen"}


class _NoDelivery:
    def deliver(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise AssertionError("prepare never delivers")


def test_the_payload_is_the_largest_that_fits_the_cap() -> None:
    payload, kept = memory.build_payload(400, cap=200_000)
    assert len(payload.encode()) <= 200_000
    assert 0 < kept < 400
    assert len(json.loads(payload)["Records"]) == kept
    bigger, _ = memory.build_payload(kept + 1, cap=10**9)
    assert len(bigger.encode()) > 200_000  # one more record would not have fitted


def test_the_inflating_request_holds_the_most_empty_events_under_the_cap() -> None:
    event, count, sent_bytes = memory.inflating_request(max_body_bytes=3_000)
    assert event["isBase64Encoded"] is True
    assert event["headers"]["content-encoding"] == "gzip"
    compressed = base64.b64decode(event["body"])
    assert len(compressed) == sent_bytes
    body = gzip.decompress(compressed)
    assert len(body) <= 3_000 < len(body) + 3  # one more "{}" (and its comma) would not fit
    assert json.loads(body) == {"batch": [{}] * count}


def test_the_table_shows_the_api_memory_figure_against_its_baseline() -> None:
    api = {
        "rss_mb": {"imports": {"VmHWM": 52.0}, "small_request": {"VmHWM": 67.0}},
        "peak_mb": 81.0,
        "baseline_mb": 67.0,
        "events": 170_663,
        "sent_bytes": 550,
        "target_mb": memory.API_PEAK_TARGET_MB,
        "inflating_status": 413,
        "inflating_error": "payload_too_large",
        "inflating_message": "the batch holds 170663 events; the limit is 2500 per request",
        "delivered_all": True,
    }
    mem = {
        "records": 300,
        "payload_mb": 0.6,
        "peak_mb": 70.0,
        "after_imports_mb": 45.0,
        "vm": {"imports": {"VmHWM": 45.0}},
        "first_invocation_s": 0.1,
        "delivered_all": True,
        "api": api,
    }

    table = bench_run.report(bench_run.QUICK, {"memory": mem}, {})

    assert "memory: API peak RSS, 550-byte gzip request of 170,663 {}" in table
    assert "81.0 MB (answer 413)" in table
    assert "67.0 MB after one small request" in table
    assert "the limit is 2500 per request" in table


@pytest.mark.slow
def test_the_api_answers_the_inflating_request_without_a_5xx() -> None:
    with c.services() as running:
        api = memory.run_api(running.env)
    assert api["small_status"] == 200, api
    assert api["inflating_status"] == 413, api
    assert api["delivered_all"]
    assert api["peak_mb"] >= api["baseline_mb"] > 0


@pytest.mark.slow
def test_throughput_and_pacing_deliver_every_event() -> None:
    with c.services() as running:
        tp = throughput.run(running.env, records=200, repeat=1, warmup=10, baseline_repeat=1)
        mix = throughput.run(running.env, records=200, repeat=1, warmup=10, baseline_repeat=1, workload="mix")
    assert tp["workload"] == "track" and mix["workload"] == "mix"
    assert tp["items_by_endpoint"] == {"/api/track": 200}  # one track event per record
    assert mix["items_by_endpoint"]["/api/v1/identify"] > 0
    assert mix["delivered_all"], mix
    assert tp["delivered_all"], tp
    assert tp["failed_records"] == 0
    assert tp["received"] == tp["expected"]
    track_requests = sum(tp["requests"]["/api/track"].values())
    assert track_requests == 1  # 200 records: one bulk request carries every track event
    assert set(tp["stages_s"]) == set(throughput.STAGES)

    pc = pacing.run(events=1_500, time_scale=60)
    assert pc["lost"] == 0, pc
    assert pc["delivered_all"], pc
    assert pc["delivered"] == 1_500

    table = bench_run.report(bench_run.QUICK, {"throughput": tp, "throughput_mix": mix, "pacing": pc}, {})
    for figure in (
        "track events",
        "the mix",
        "HTTP requests per 1,000",
        "delivery rate",
        "429s",
        "events lost",
    ):
        assert figure in table
    measured = {"throughput": tp, "throughput_mix": mix, "pacing": pc, "memory": {"delivered_all": True}}
    assert not bench_run.delivery_failures(measured)


def test_a_run_that_lost_or_failed_anything_fails() -> None:
    fine = {
        "throughput": {"delivered_all": True},
        "throughput_mix": {"delivered_all": True},
        "memory": {"delivered_all": True},
    }
    assert not bench_run.delivery_failures({**fine, "pacing": {"delivered_all": True, "lost": 0}})
    assert bench_run.delivery_failures({**fine, "pacing": {"delivered_all": True, "lost": 3}})
    assert bench_run.delivery_failures({**fine, "pacing": {"delivered_all": False, "lost": 0}})
    assert bench_run.delivery_failures(fine)  # a figure not measured is a failure too


def test_the_bench_runs_the_handler_with_the_templates_import_time_settings() -> None:
    """What the template sets for every function and acts at import (pydantic's plugin scan) is
    what the cold-start and memory workers set: the figures are the deployed function's."""
    from heap_forwarder_tools.local.template import load_template

    variables = load_template(c.ROOT / "template.yaml")["Globals"]["Function"]["Environment"]["Variables"]
    for name, value in c.TEMPLATE_IMPORT_ENV.items():
        assert variables[name] == value
        assert c.LAMBDA_ENV[name] == value


def test_the_isolation_figures_find_every_refused_event_and_deliver_the_rest(capsys) -> None:
    assert bench_isolation.main(["--quick"]) == 0
    printed = capsys.readouterr().out
    assert "refused k" in printed
    for k in (1, 3, 10, 100):
        assert f"\n{k} " in printed


def test_the_backfill_archive_is_valid_events_each_its_own(tmp_path: Path) -> None:
    from heap_forwarder_tools.backfill.events import Ready, prepare
    from heap_forwarder_tools.backfill.reader import read_items
    from heap_forwarder_tools.backfill.sources import CountingReader, decoded, list_files

    files, events = bench_backfill.write_archive(tmp_path, 0.05)
    assert [f.name for f in files] == ["0000.bench.gz"]
    ids = set()
    [data_file] = list(list_files([str(tmp_path)], lambda: None))
    with decoded(CountingReader(data_file.open())) as stream:
        for item in read_items(stream):
            ready = prepare(item, data_file.label)
            assert isinstance(ready, Ready), ready
            ids.add(json.loads(ready.text)["messageId"])
    assert len(ids) == events


def test_the_table_holds_the_backfill_figures_to_their_memory_target() -> None:
    run = {
        "stored_mb": 200.0,
        "events": 2_000_000,
        "events_per_s": 7000.0,
        "requests_per_1000": 5.2,
        "peak_rss_mb": 151.0,
        "messages": 10_000,
        "seconds": 285.0,
        "files": 20,
    }
    result = {"runs": [run], "delivered_all": True, "peak_rss_target_mb": 150.0}
    rows = {row[0]: row for row in bench_run.rows({"backfill": result})}
    assert rows["backfill: CLI peak RSS, 200 MB archive"][-1] == "NO"
    assert "7,000 ev/s enqueued" in rows["backfill: 200 MB gzipped archive, 2,000,000 events"][1]
    assert bench_run.delivery_failures({"backfill": {**result, "delivered_all": False}})[-1] == (
        "backfill: not every event enqueued"
    )


def _cold(failed: int = 0) -> dict[str, Any]:
    figure = {"handler_s": 0.06, "baseline_s": 0.12, "old_baseline_s": 0.16}
    first = {
        "total_s": 0.26,
        "import_s": 0.06,
        "invocation_s": 0.2,
        "total_cpu_s": 0.24,
        "failed_records": failed,
        "delivered_all": failed == 0,
    }
    importtime = {"extra_packages_ms": {"pydantic": 20.0}, "our_modules": {}}
    return {
        "tracing_off": figure,
        "tracing_on": {"handler_s": 0.1, "baseline_s": 0.1},
        "importtime": importtime,
        "first_invocation": first,
    }


def test_the_cold_start_rows_show_both_baselines_and_the_first_invocation() -> None:
    table = bench_run.report(bench_run.QUICK, {"cold_start": _cold()}, {})
    assert "cold start: import handler vs the 4 top-level packages | 60 ms" in table
    assert "cold start, old baseline (the submodules used)" in table
    assert "import 60 + first 200 ms; CPU 240 ms" in table
    assert cold_start.BASELINE == "import aws_lambda_powertools, boto3, urllib3, pydantic"


def test_a_first_invocation_that_failed_records_fails_the_run() -> None:
    fine = {
        "throughput": {"delivered_all": True},
        "throughput_mix": {"delivered_all": True},
        "memory": {"delivered_all": True},
        "pacing": {"delivered_all": True, "lost": 0},
    }
    assert not bench_run.delivery_failures({**fine, "cold_start": _cold()})
    assert bench_run.delivery_failures({**fine, "cold_start": _cold(failed=2)})


@pytest.mark.slow
def test_import_and_first_invocation_deliver_every_record() -> None:
    with c.services() as running:
        first = cold_start.first_invocation(1, {**cold_start._env(tracing=False), **running.env})
    assert first["delivered_all"], first
    assert first["total_cpu_s"] > 0


def test_the_single_request_figures_are_measured(capsys) -> None:
    assert bench_requests.main(["--quick", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["calls"] == 100
    for key in ("transport_cpu_s", "pool_manager_cpu_s", "http_client_cpu_s", "metrics_tally_cpu_s"):
        assert figures[key] > 0
