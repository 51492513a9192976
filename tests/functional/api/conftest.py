"""Fixtures of the ingest API tests: a Sandbox per module, a clean stage per test (helpers:
``tests/support/api_support.py``; ``log_stream``: ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api_support import TEMPLATE, Api, drain
from heap_forwarder_tools.local.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """moto's SQS and SSM as the template describes them, and a Heap emulator."""
    with Sandbox(template_path=TEMPLATE) as box:
        yield box


@pytest.fixture
def api(sandbox: Sandbox) -> Api:
    """A clean stage for each test: the Heap emulator emptied and healed, the queues emptied."""
    sandbox.emulator.reset()
    sqs = sandbox.client("sqs")
    for logical_id in ("MainQueue", "DeadLetterQueue"):
        drain(sqs, sandbox.queue_url(logical_id))
    return Api(sandbox)
