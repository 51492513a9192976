"""The Lambda entry ``heap_forwarder.entry.sqs.lambda_handler``, run as ``template.yaml`` describes
it (handler, environment) over the Sandbox: moto's SQS and SSM, the Heap emulator over HTTP.

What is checked is what an operator sees: the partial batch response, the DLQ, the JSON logs
(Powertools) and the EMF metrics on stdout; and what must never be seen: secrets and traits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from heap_forwarder.edge.config import ConfigurationError
from heap_forwarder.edge.observability import logger
from heap_forwarder.edge.parameters import ParameterStore
from heap_forwarder.entry import sqs as entry
from heap_forwarder_tools.local.invoke import LocalContext, invoke
from heap_forwarder_tools.local.poller import EventSourceMapping, as_lambda_record
from heap_forwarder_tools.local.sandbox import Sandbox, environment

SECRET_APP_ID = "app-SECRET-123"
SECRET_TRAIT = "trait-SECRET"


def lambda_event(sandbox: Sandbox, *bodies: str) -> dict[str, Any]:
    """Send the bodies to the main queue and receive them as Lambda hands them over (send order)."""
    sqs = sandbox.client("sqs")
    url = sandbox.queue_url("MainQueue")
    sent = [sqs.send_message(QueueUrl=url, MessageBody=b)["MessageId"] for b in bodies]
    messages: dict[str, Any] = {}
    while len(messages) < len(bodies):
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
        ).get("Messages", [])
        assert batch, "a message sent was not received"
        messages.update((m["MessageId"], m) for m in batch)
    arn = sandbox.resources["MainQueue"]["Arn"]
    return {"Records": [as_lambda_record(messages[i], arn) for i in sent]}


def ids(event: dict[str, Any]) -> list[str]:
    return [r["messageId"] for r in event["Records"]]


def failures(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def run(sandbox: Sandbox, event: dict[str, Any], capsys, kit, **overrides: str) -> tuple[dict, dict]:
    """Invoke the ConsumerFunction (cold, as configured by the template); its response and EMF metrics."""
    capsys.readouterr()
    response = invoke(sandbox.function("ConsumerFunction", overrides), event)
    return response, kit.emf_metrics(capsys.readouterr().out)


# ---------------------------------------------------------------------------------- the good path
def test_the_sample_batch_is_delivered_and_measured(sandbox, capsys, kit, logs) -> None:
    document = json.loads((kit.ROOT / "events" / "sqs" / "mixed_batch.json").read_text("utf-8"))
    event = lambda_event(sandbox, *(r["body"] for r in document["Records"]))
    capsys.readouterr()
    response = invoke(sandbox.function("ConsumerFunction"), event)
    stdout = capsys.readouterr().out

    assert response == {"batchItemFailures": []}
    letters = sandbox.dead_letters()
    assert [x.attributes["ErrorClass"] for x in letters] == ["unsupported"]  # the alias
    # 16 records, 18 events (the last record is a batch of 3 repeating earlier events).
    assert len(sandbox.emulator.tracked_events()) == 12
    assert sandbox.emulator.stats()["duplicates"] == 2  # the repeats, dropped by idempotency key
    assert len(kit.emf_documents(stdout)) == 1  # flushed once, at the end of the invocation
    emf = kit.emf_metrics(stdout)
    assert emf["BatchSize"] == 16
    assert emf["EventsReceived"] == 18
    assert emf["EventsDelivered"] == 17
    assert emf["EventsRejected"] == emf["DlqWrites"] == emf["EventsRejected.unsupported"] == 1
    assert emf["HeapRequests"] >= 1
    assert "ConfigurationFaults" not in emf
    assert [r["message"] for r in logs.records()] == ["event parked in the DLQ"]
    for record in logs.records():
        assert record["function_name"] == "ConsumerFunction"
        assert record["correlation_id"] == ids(event)[0]


def test_a_warm_process_keeps_its_runtime(sandbox, capsys, kit) -> None:
    spec = sandbox.function("ConsumerFunction")
    with environment(spec.environment):
        entry.reset()
        first = entry.lambda_handler(
            lambda_event(sandbox, kit.body(kit.track(1))), LocalContext("c", 256, 60)
        )
        warm = entry._warm.consumer
        second = entry.lambda_handler(
            lambda_event(sandbox, kit.body(kit.track(2))), LocalContext("c", 256, 60)
        )
        assert entry._warm.consumer is warm
    assert first == second == {"batchItemFailures": []}
    assert sorted(e["idempotency_key"] for e in sandbox.emulator.tracked_events()) == ["msg-1", "msg-2"]


# ---------------------------------------------------------------------------------- SSM
def test_a_missing_ssm_parameter_retries_every_record(sandbox, capsys, kit, logs) -> None:
    event = lambda_event(sandbox, kit.body(kit.track(1)), kit.body(kit.raw("identify")))
    response, emf = run(sandbox, event, capsys, kit, HEAP_APP_ID_PARAMETER="/heap-forwarder/gone")

    assert failures(response) == ids(event)
    assert emf["ConfigurationFaults"] == 1
    (error,) = [r for r in logs.records() if r["level"] == "ERROR"]
    assert error["message"] == "configuration fault: every record will be retried"
    assert "/heap-forwarder/gone" in error["cause"]
    assert sandbox.emulator.stats()["requests_total"] == 0
    assert sandbox.dead_letters() == []
    # Backed off with the template's 30 s base: not visible again at once.
    sqs = sandbox.client("sqs")
    assert sqs.receive_message(QueueUrl=sandbox.queue_url("MainQueue")).get("Messages") is None


def test_denied_ssm_retries_every_record(sandbox, capsys, kit, logs) -> None:
    import boto3
    from botocore.stub import Stubber

    ssm = boto3.client("ssm", region_name="us-east-1")
    stubber = Stubber(ssm)
    stubber.add_client_error("get_parameter", service_error_code="AccessDeniedException")
    spec = sandbox.function("ConsumerFunction")
    event = lambda_event(sandbox, kit.body(kit.track(1)), kit.body(kit.track(2)))
    with environment(spec.environment), stubber:
        entry.reset()
        entry.consumer()  # what a cold start builds; then its SSM access is denied
        assert entry._warm.runtime is not None
        entry._warm.runtime.parameters = ParameterStore(0, client=ssm)
        capsys.readouterr()
        response = entry.lambda_handler(event, LocalContext("ConsumerFunction", 256, 60))
    emf = kit.emf_metrics(capsys.readouterr().out)
    assert failures(response) == ids(event)
    assert emf["ConfigurationFaults"] == 1
    assert [r["message"] for r in logs.records() if r["level"] == "ERROR"] == [
        "configuration fault: every record will be retried"
    ]
    assert sandbox.emulator.stats()["requests_total"] == 0


def test_no_app_id_parameter_named_retries_every_record(sandbox, capsys, kit, logs) -> None:
    event = lambda_event(sandbox, kit.body(kit.track(1)))
    response, emf = run(sandbox, event, capsys, kit, HEAP_APP_ID_PARAMETER="")
    assert failures(response) == ids(event)
    assert emf["ConfigurationFaults"] == 1
    (error,) = [r for r in logs.records() if r["level"] == "ERROR"]
    assert "HEAP_APP_ID_PARAMETER is not set" in error["cause"]


def test_an_app_id_stored_as_a_plain_string_is_warned_about(sandbox, capsys, kit, logs) -> None:
    """It works, but the operator is told which parameter is not a SecureString (never its value)."""
    sandbox.client("ssm").put_parameter(
        Name="/heap-forwarder/app-id", Value=kit.SECRET_APP_ID, Type="String", Overwrite=True
    )
    event = lambda_event(sandbox, kit.body(kit.track(1)))

    response, emf = run(sandbox, event, capsys, kit)

    assert failures(response) == []
    assert emf["InsecureParameter"] == 1
    (warning,) = [r for r in logs.records() if r["level"] == "WARNING"]
    assert (warning["parameter"], warning["parameter_type"]) == ("/heap-forwarder/app-id", "String")
    assert kit.SECRET_APP_ID not in logs.text()


# ---------------------------------------------------------------------------------- configuration
@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_an_invalid_environment_fails_the_invocation_and_loses_nothing(sandbox, kit) -> None:
    spec = sandbox.function("ConsumerFunction", {"MAX_RECEIVE_COUNT": "0", "HEAP_API_URL": "heap"})
    sqs = sandbox.client("sqs")
    url = sandbox.queue_url("MainQueue")
    sqs.send_message(QueueUrl=url, MessageBody=kit.body(kit.track(1)))
    errors: list[BaseException] = []

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        try:
            return invoke(spec, event)
        except ConfigurationError as error:
            errors.append(error)
            raise

    result = EventSourceMapping(sqs, url, handler).poll_once()
    assert (result.received, result.deleted, result.failed) == (1, 0, 1)
    (error,) = errors
    assert "MAX_RECEIVE_COUNT" in str(error)
    assert "HEAP_API_URL" in str(error)
    assert sandbox.dead_letters() == []
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"  # still there, comes back


def test_heap_not_knowing_the_app_id_retries_every_record(sandbox, capsys, kit, logs) -> None:
    sandbox.client("ssm").put_parameter(
        Name="/heap-forwarder/app-id", Value="someone-else", Type="SecureString", Overwrite=True
    )
    event = lambda_event(sandbox, kit.body(kit.track(1)), kit.body(kit.raw("identify")))
    response, emf = run(sandbox, event, capsys, kit)
    assert failures(response) == ids(event)
    assert emf["ConfigurationFaults"] == 1
    assert "Heap refused the configuration; records will be retried" in logs.messages("ERROR")
    assert sandbox.dead_letters() == []
    assert sandbox.emulator.tracked_events() == []


@pytest.mark.parametrize("status", [401, 403, 404])
def test_heap_refusing_access_retries_every_record(status: int, sandbox, capsys, kit) -> None:
    sandbox.emulator.fail_next(100, status)
    event = lambda_event(sandbox, kit.body(kit.track(1)), kit.body(kit.track(2), kit.track(3)))
    response, emf = run(sandbox, event, capsys, kit)
    assert failures(response) == ids(event)
    assert emf["ConfigurationFaults"] == 1
    assert sandbox.dead_letters() == []


def test_no_time_left_retries_every_record(sandbox, capsys, kit) -> None:
    # 3 s of Lambda time, all of it kept back by DEADLINE_MARGIN_SECONDS (3): nothing may start.
    spec = dataclasses.replace(sandbox.function("ConsumerFunction"), timeout=3)
    event = lambda_event(sandbox, kit.body(kit.track(1)), kit.body(kit.track(2)))
    response = invoke(spec, event)
    assert failures(response) == ids(event)
    assert sandbox.emulator.stats()["requests_total"] == 0
    assert sandbox.dead_letters() == []


# ---------------------------------------------------------------------------------- what logs never hold
def _identify_with_secrets(kit, message_id: str, **overrides: Any) -> dict[str, Any]:
    event = kit.raw("identify", messageId=message_id, **overrides)
    event["traits"] = {
        "email": f"{SECRET_TRAIT}@example.com",
        "plan": f"{SECRET_TRAIT}-plan",
        "address": {"street": f"1 {SECRET_TRAIT} Street"},
    }
    event["context"]["traits"] = {"name": f"{SECRET_TRAIT} name"}
    return event


@dataclasses.dataclass
class Output:
    logs: Any  # the Powertools JSON lines
    caplog: pytest.LogCaptureFixture  # stdlib loggers (the Heap client's retry lines)
    capsys: pytest.CaptureFixture[str]  # stdout: EMF metrics, anything printed

    def everything(self) -> str:
        return "\n".join([self.logs.text(), self.caplog.text, self.capsys.readouterr().out])


@pytest.fixture
def output(logs, caplog, capsys) -> Iterator[Output]:
    """Everything the function writes, with its logger at INFO (the template's LogLevel)."""
    previous = logger.log_level
    logger.setLevel("INFO")
    caplog.set_level(logging.INFO)
    try:
        yield Output(logs, caplog, capsys)
    finally:
        logger.setLevel(previous)


SCENARIOS = ["delivered", "heap_outage", "heap_refuses_app", "heap_rejects_event", "invalid_events"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_logs_never_hold_the_app_id_or_traits(scenario: str, sandbox, kit, output: Output) -> None:
    sandbox.client("ssm").put_parameter(
        Name="/heap-forwarder/app-id", Value=SECRET_APP_ID, Type="SecureString", Overwrite=True
    )
    track_with_traits = kit.track(1)
    track_with_traits["context"]["traits"] = {"email": f"{SECRET_TRAIT}@example.com"}
    bodies = [kit.body(_identify_with_secrets(kit, "id-1")), kit.body(track_with_traits)]
    if scenario == "heap_outage":
        sandbox.emulator.fail_next(10**6, 503, body=f"down for {SECRET_APP_ID}")
    elif scenario == "heap_refuses_app":
        sandbox.emulator.fail_next(10**6, 400, body=f"Invalid app_id {SECRET_APP_ID}")
    elif scenario == "heap_rejects_event":
        sandbox.emulator.reject_event_names(["Order Completed"])
    elif scenario == "invalid_events":
        bodies += [
            kit.body(_identify_with_secrets(kit, "id-2", anonymousId=None, userId=None)),
            kit.body(_identify_with_secrets(kit, "id-3", timestamp="not a date")),
            kit.body(_identify_with_secrets(kit, "id-4"))[:-20],  # cut: not JSON
        ]
    event = lambda_event(sandbox, *bodies)

    spec = sandbox.function("ConsumerFunction", {"RETRY_BUDGET_SECONDS": "0.05"})
    response = invoke(spec, event)
    seen = output.everything()
    powertools_lines = output.logs.records()

    if scenario != "delivered":  # the good path logs nothing at INFO
        assert powertools_lines, "the scenario logged nothing: the check would prove nothing"
    assert SECRET_APP_ID not in seen
    assert SECRET_TRAIT not in seen
    # The events themselves are kept whole where they belong: the DLQ or Heap.
    if scenario in ("heap_rejects_event", "invalid_events"):
        assert any(SECRET_TRAIT in x.body for x in sandbox.dead_letters())
    if scenario in ("heap_outage", "heap_refuses_app"):
        assert failures(response) == ids(event)
    if scenario == "delivered":
        assert response == {"batchItemFailures": []}
        assert sandbox.emulator.tracked_events()[0]["app_id"] == SECRET_APP_ID
