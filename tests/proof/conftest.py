"""Fixtures of the proof suites: one Sandbox per module (the template's queues, redrive policy and
SSM parameters on moto, a Heap emulator), set back to new before each test, and the handlers'
warm state forgotten around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proof_support import TEMPLATE, Stage

from heap_forwarder.edge.observability import metrics
from heap_forwarder.entry import api as api_entry
from heap_forwarder.entry import sqs as sqs_entry
from heap_forwarder_tools.local.sandbox import Sandbox


@pytest.fixture(scope="module")
def module_stage() -> Iterator[Stage]:
    with Sandbox(template_path=TEMPLATE) as sandbox:
        made: dict[str, object] = {}
        make = sandbox.client

        def client(service: str) -> object:  # boto3 clients cost ~0.1 s each: made once
            if service not in made:
                made[service] = make(service)
            return made[service]

        sandbox.client = client  # type: ignore[method-assign]
        yield Stage(sandbox)


@pytest.fixture
def stage(module_stage: Stage) -> Stage:
    """The module's stage as new: empty queues, the template's SSM values, a healthy empty Heap."""
    module_stage.reset()
    return module_stage


@pytest.fixture(autouse=True)
def _cold_handlers() -> Iterator[None]:
    metrics.clear_metrics()
    sqs_entry.reset()
    api_entry.reset()
    yield
    metrics.clear_metrics()
    sqs_entry.reset()
    api_entry.reset()
