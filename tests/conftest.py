"""Fixtures shared by every tier: the sample events, a safe AWS environment for moto, the
functions' JSON log lines; and each test marked with its tier.

The tiers (README, "Tests"): ``tests/unit`` (pure code, network blocked), ``tests/property``
(hypothesis properties of pure code, network blocked), ``tests/functional`` (moto, the Heap
emulator, local servers, the CLI and packaging), ``tests/proof`` (the end-to-end proof suites).
Helper modules live in ``tests/support`` (on ``sys.path`` through pyproject's pytest
``pythonpath``), except those of one folder, which sit beside its tests (``proof_support``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sample_events import raw

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "functional", "property", "proof")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier (its first folder under tests/): ``pytest -m unit`` etc."""
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        if len(parts) > 1 and parts[0] in TIERS:
            item.add_marker(parts[0])


@pytest.fixture
def raw_event() -> Callable[[str], dict[str, Any]]:
    """Load ``events/raw/<name>.json`` afresh (each call returns a new dict, safe to modify)."""

    return raw


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A region and dummy credentials, so that boto3 under moto never finds real ones."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The functions' JSON log lines (Powertools writes to the stream it found at import)."""
    from heap_forwarder.edge.observability import logger

    handler = logger.registered_handler
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield buffer
    finally:
        handler.setStream(previous)
