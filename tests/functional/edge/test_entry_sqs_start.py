"""What the SQS entry module does at a cold start: the imports it leaves to the first invocation
(and makes at once when Lambda initialises ahead of requests), the collector kept off until the
warm state is built, and the SQS client made only when a record needs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heap_forwarder.entry import sqs as entry
from heap_forwarder_tools.local.invoke import invoke
from heap_forwarder_tools.local.poller import as_lambda_record
from heap_forwarder_tools.local.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[3]
# Imported by the consumer and what it builds on; never needed to call the handler.
FIRST_USE = ("heap_forwarder.edge.consumer", "heap_forwarder.pipeline", "pydantic.main", "boto3")


def run_python(code: str, **env: str) -> dict[str, object]:
    """``code`` in a fresh interpreter with Lambda's environment variables; its JSON line."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_LAMBDA_", "LAMBDA_"))}
    environment.update({"AWS_LAMBDA_FUNCTION_NAME": "consumer", "AWS_DEFAULT_REGION": "us-east-1", **env})
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "handler"), str(ROOT / "tools"), environment.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


IMPORTED = """
import gc, json, sys
import heap_forwarder.entry.sqs
print(json.dumps({"modules": sorted(sys.modules), "collecting": gc.isenabled()}))
"""


def test_an_on_demand_start_imports_only_what_calling_the_handler_needs() -> None:
    result = run_python(IMPORTED, AWS_LAMBDA_INITIALIZATION_TYPE="on-demand")
    modules = set(result["modules"])  # type: ignore[arg-type]
    assert "heap_forwarder.edge.observability" in modules
    assert not modules & set(FIRST_USE)
    assert result["collecting"] is False  # off until the warm state is built


@pytest.mark.parametrize("kind", ["provisioned-concurrency", "snap-start"])
def test_a_start_ahead_of_requests_imports_the_consumer_at_once(kind: str) -> None:
    modules = set(run_python(IMPORTED, AWS_LAMBDA_INITIALIZATION_TYPE=kind)["modules"])  # type: ignore[arg-type]
    assert set(FIRST_USE) <= modules


def test_outside_lambda_the_collector_is_left_alone() -> None:
    code = IMPORTED.replace("import heap_forwarder.entry.sqs", "import heap_forwarder.entry.sqs  # no Lambda")
    environment_without_lambda = {"AWS_LAMBDA_FUNCTION_NAME": ""}
    assert run_python(code, **environment_without_lambda)["collecting"] is True


def test_the_collector_is_on_again_after_the_first_build_even_when_it_failed() -> None:
    code = """
import gc, json
from heap_forwarder.entry import sqs as entry
before = gc.isenabled()
try:
    entry.consumer()
    built = True
except Exception as error:
    built = type(error).__name__
print(json.dumps({"before": before, "built": built, "after": gc.isenabled()}))
"""
    result = run_python(code, HEAP_CONNECT_TIMEOUT_SECONDS="not a number")
    assert result == {"before": False, "built": "ConfigurationError", "after": True}


def received(sandbox: Sandbox, *bodies: str) -> dict[str, object]:
    """The bodies sent to the main queue and received as Lambda hands them over."""
    sqs = sandbox.client("sqs")
    url = sandbox.queue_url("MainQueue")
    for text in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=text)
    messages: list[dict[str, object]] = []
    while len(messages) < len(bodies):
        messages += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])[
            "Messages"
        ]
    arn = sandbox.resources["MainQueue"]["Arn"]
    return {"Records": [as_lambda_record(m, arn) for m in messages]}


def test_a_clean_batch_never_makes_the_sqs_client_a_failing_one_does(sandbox, kit) -> None:
    event = received(sandbox, *(kit.body(kit.track(n)) for n in range(3)))
    spec = sandbox.function("ConsumerFunction")
    assert invoke(spec, event) == {"batchItemFailures": []}
    assert entry._warm.runtime is not None
    assert entry._warm.runtime.sqs().made is False

    sandbox.emulator.fail_next(100, 401)  # Heap refuses the app: each record comes back later
    event = received(sandbox, *(kit.body(kit.track(n)) for n in range(3, 6)))
    response = invoke(spec, event, cold=False)
    assert len(response["batchItemFailures"]) == 3
    assert entry._warm.runtime.sqs().made is True
