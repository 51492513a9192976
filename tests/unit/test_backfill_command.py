"""``heap-forwarder backfill``'s options (tools/heap_forwarder_tools/backfill/command.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from heap_forwarder_tools.backfill import command
from heap_forwarder_tools.cli import build_parser
from heap_forwarder_tools.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_stack_the_rates_are_the_templates_defaults() -> None:
    parameters = load_template(ROOT / "template.yaml")["Parameters"]
    assert float(parameters["RateLimitEventsPerMinute"]["Default"]) == command.TEMPLATE_RATE_LIMIT
    assert int(parameters["MaxConcurrency"]["Default"]) == command.TEMPLATE_MAX_CONCURRENCY


def test_the_options_as_the_issue_names_them() -> None:
    args = build_parser().parse_args(
        [
            "backfill",
            "s3://bucket/segment-logs/",
            "local/folder",
            "--stack",
            "heap-forwarder-prod",
            "--since",
            "2023-01-01",
            "--until",
            "2023-07-01T00:00:00+02:00",
            "--type",
            "track",
            "--type",
            "page",
            "--event",
            "Order Completed",
            "--dry-run",
            "--max-backlog",
            "5000",
            "--allow-invalid",
        ]
    )
    assert args.sources == ["s3://bucket/segment-logs/", "local/folder"]
    assert args.since == datetime(2023, 1, 1, tzinfo=UTC)
    assert args.until == datetime(2023, 6, 30, 22, tzinfo=UTC)
    assert (args.type, args.event, args.max_backlog) == (["track", "page"], ["Order Completed"], 5000)
    assert args.dry_run and args.allow_invalid
    assert args.checkpoint == command.DEFAULT_CHECKPOINT


@pytest.mark.parametrize(
    ("option", "value"), [("--since", "last week"), ("--type", "purchase"), ("--max-backlog", "0")]
)
def test_a_bad_option_value_is_refused_before_anything_runs(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["backfill", "src", option, value])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err
