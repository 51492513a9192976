"""Fixtures of the studio tests: the page's server over its local stack (moto in-process, the
Heap emulator, the API server and the consumer loop), one per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from heap_forwarder_tools.studio.server import Studio, StudioServer
from heap_forwarder_tools.studio.stack import StudioStack

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioStack]:
    with StudioStack(
        ROOT / "template.yaml", time_scale=20, log_path=tmp_path_factory.mktemp("studio") / "logs.jsonl"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def studio_server(stack: StudioStack) -> Iterator[StudioServer]:
    with StudioServer(Studio(ROOT, stack)) as server:
        yield server


@pytest.fixture
def studio(studio_server: StudioServer) -> Iterator[StudioServer]:
    """The server with Heap healthy and empty, and the faults off, for each test."""
    studio_server.studio.set_faults({"outage": False, "latency": 0, "reject_event_names": []})
    stack = studio_server.studio.stack
    assert stack is not None
    stack.sandbox.emulator.reset()
    yield studio_server
