"""The local tools: the Sandbox (moto + the Heap emulator, as template.yaml describes the stack),
Docker-free ``heap-forwarder invoke`` on every sample event, the template Resolver, Lambda's SQS
event source mapping played over moto, and ``heap-forwarder demo``."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Imported at collection, so that the Powertools logger binds to a stdout that outlives any
# single test's capture (it keeps the stream it finds at import).
import heap_forwarder.edge.observability  # noqa: F401
from heap_forwarder.outcome import ErrorClass
from heap_forwarder_tools import cli
from heap_forwarder_tools.local.poller import EventSourceMapping, PollResult, as_lambda_record
from heap_forwarder_tools.local.sandbox import LOCAL_APP_ID, Sandbox, environment
from heap_forwarder_tools.local.template import Resolver, TemplateError, function_spec, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SQS_FILES = sorted((ROOT / "events" / "sqs").glob("*.json"))
BAD_FILES = sorted((ROOT / "events" / "bad").glob("*.json"))
ERROR_CLASSES = {str(c) for c in ErrorClass if c is not ErrorClass.NONE}
# What each sample file parks in the DLQ (the sample SQS events are good but for one alias).
EXPECTED_LETTERS = {
    "sqs/mixed_batch.json": ["unsupported"],
    "bad/batch_with_one_bad_event.json": ["invalid_event"],
    "bad/malformed_json.json": ["invalid_json"],
    "bad/missing_identity.json": ["heap_rule"],
    "bad/mixed_good_and_bad.json": ["invalid_json"],
    "bad/unsupported_type.json": ["unsupported"],
    "bad/wrong_types.json": ["invalid_event"],
}
RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # `invoke` reads template.yaml from the working directory by default


# ---------------------------------------------------------------------------------- invoke (CLI)
def _invoke_output(out: str) -> tuple[dict[str, Any], list[str]]:
    """The response printed after ``Response:`` and the error class of each ``DLQ:`` line."""
    response_text = out.split("Response:\n", 1)[1].split("\nHeap received", 1)[0]
    letters = re.findall(r"^DLQ: \[([a-z_]+)\] \S", out, flags=re.MULTILINE)
    return json.loads(response_text), letters


@pytest.mark.parametrize("path", SQS_FILES + BAD_FILES, ids=_name)
def test_invoke_runs_every_sample_event(
    path: Path, in_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["invoke", "ConsumerFunction", "-e", str(path.relative_to(ROOT))])
    out, err = capsys.readouterr()
    assert status == 0, err
    response, letters = _invoke_output(out)
    assert response == {"batchItemFailures": []}  # every record settled: delivered or parked
    assert sorted(letters) == sorted(EXPECTED_LETTERS.get(_name(path), []))
    assert re.search(r"^Heap received \d+ track event\(s\)", out, flags=re.MULTILINE)
    state = json.loads(out.split("account(s):\n", 1)[1].split("\nDLQ:", 1)[0])
    if path.name == "order_completed.json":
        (tracked,) = state["tracked_events"]
        assert tracked["event"] == "Order Completed"
        assert tracked["app_id"] == LOCAL_APP_ID


def test_invoke_takes_sam_style_environment_overrides(
    in_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = tmp_path / "env.json"
    overrides.write_text(json.dumps({"ConsumerFunction": {"HEAP_APP_ID_PARAMETER": "/not/there"}}))
    status = cli.main(["invoke", "ConsumerFunction", "-e", "events/sqs/page.json", "-n", str(overrides)])
    assert status == 0
    response, letters = _invoke_output(capsys.readouterr().out)
    assert len(response["batchItemFailures"]) == 1  # no app ID: retried, not lost
    assert letters == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "event.json: cannot read: No such file or directory"),
        ("not_json", "event.json: not valid JSON: line 1 column 1 (Expecting value)"),
        ("array", "must hold a JSON object"),
    ],
)
def test_invoke_refuses_a_bad_event_file_clearly(
    setup: str, message: str, in_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "event.json"
    if setup == "not_json":
        path.write_text("Records: [oops")
    elif setup == "array":
        path.write_text("[]")
    assert cli.main(["invoke", "ConsumerFunction", "-e", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ")
    assert message in err
    assert str(path) in err
    assert "Traceback" not in err
    assert out == ""


def test_invoke_names_the_functions_when_one_is_unknown(
    in_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["invoke", "NoSuchFunction", "-e", "events/sqs/page.json"]) == 2
    err = capsys.readouterr().err
    assert "no function 'NoSuchFunction' in the template" in err
    assert "ConsumerFunction" in err


def test_invoke_refuses_a_missing_template(
    in_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        ["invoke", "ConsumerFunction", "-e", "events/sqs/page.json", "-t", str(tmp_path / "no.yaml")]
    )
    assert status == 2
    assert "error: cannot read" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- Sandbox
def test_the_sandbox_stands_in_for_the_stack_and_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mine")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    box = Sandbox(template_path=TEMPLATE)
    with box as sandbox:
        assert os.environ["AWS_ACCESS_KEY_ID"] != "mine"  # never the real credentials inside
        # The queues, as the template makes them.
        sqs = sandbox.client("sqs")
        main = sqs.get_queue_attributes(QueueUrl=sandbox.queue_url("MainQueue"), AttributeNames=["All"])[
            "Attributes"
        ]
        redrive = json.loads(main["RedrivePolicy"])
        assert int(redrive["maxReceiveCount"]) == 20
        assert redrive["deadLetterTargetArn"] == sandbox.resources["DeadLetterQueue"]["Arn"]
        assert main["VisibilityTimeout"] == "360"
        assert sandbox.resources["MainQueue"]["Ref"] == sandbox.queue_url("MainQueue")
        # The parameters, encrypted.
        ssm = sandbox.client("ssm")
        parameter = ssm.get_parameter(Name="/heap-forwarder/app-id", WithDecryption=True)["Parameter"]
        assert parameter["Type"] == "SecureString"
        assert parameter["Value"] == LOCAL_APP_ID
        assert ssm.get_parameter(Name="/heap-forwarder/write-key", WithDecryption=True)["Parameter"]["Value"]
        # The functions, pointed at the stand-ins.
        spec = sandbox.function("ConsumerFunction", {"MAX_RECEIVE_COUNT": "3"})
        assert spec.handler == "heap_forwarder.entry.sqs.lambda_handler"
        assert spec.environment["HEAP_API_URL"] == sandbox.emulator.url
        assert spec.environment["RETRY_QUEUE_URL"] == sandbox.queue_url("MainQueue")
        assert spec.environment["DEAD_LETTER_QUEUE_URL"] == sandbox.queue_url("DeadLetterQueue")
        assert spec.environment["MAX_RECEIVE_COUNT"] == "3"
        assert sandbox.function("ConsumerFunction").environment["MAX_RECEIVE_COUNT"] == "19"
        # Dead letters are read with their reasons and left in place.
        sqs.send_message(
            QueueUrl=sandbox.queue_url("DeadLetterQueue"),
            MessageBody='{"n": 1}',
            MessageAttributes={"ErrorClass": {"DataType": "String", "StringValue": "heap_rule"}},
        )
        first = sandbox.dead_letters()
        assert [(x.body, x.attributes) for x in first] == [('{"n": 1}', {"ErrorClass": "heap_rule"})]
        assert [x.message_id for x in sandbox.dead_letters()] == [x.message_id for x in first]
        url = sandbox.emulator.url
    # And after: the environment as it was, the emulator stopped.
    assert os.environ["AWS_ACCESS_KEY_ID"] == "mine"
    assert "AWS_SESSION_TOKEN" not in os.environ
    with pytest.raises(RuntimeError):
        _ = box.emulator.url
    assert url.startswith("http://127.0.0.1:")


def test_environment_restores_every_variable_even_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_KEPT", "before")
    monkeypatch.delenv("HF_NEW", raising=False)
    with pytest.raises(KeyError), environment({"HF_KEPT": "during", "HF_NEW": "x"}):
        assert os.environ["HF_KEPT"] == "during"
        assert os.environ["HF_NEW"] == "x"
        raise KeyError("boom")
    assert os.environ["HF_KEPT"] == "before"
    assert "HF_NEW" not in os.environ


# ---------------------------------------------------------------------------------- template Resolver
SYNTHETIC: dict[str, Any] = {
    "Parameters": {"Stage": {"Default": "dev"}, "Name": {"Default": ""}, "Region": {"Default": "us"}},
    "Conditions": {
        "IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
        "HasName": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Name"}, ""]}]},
        "Both": {"Fn::And": [{"Condition": "IsProd"}, {"Condition": "HasName"}]},
        "Either": {"Fn::Or": [{"Condition": "IsProd"}, {"Condition": "HasName"}]},
    },
    "Mappings": {"Urls": {"us": {"Base": "https://us.example"}, "eu": {"Base": "https://eu.example"}}},
    "Resources": {},
}


def test_the_resolver_evaluates_the_intrinsics() -> None:
    resources = {"Queue": {"Ref": "https://sqs/q", "Arn": "arn:aws:sqs:us-east-1:123456789012:q"}}
    resolver = Resolver(SYNTHETIC, {"Name": "x"}, resources, region="eu-west-1")
    assert resolver.resolve({"Ref": "Stage"}) == "dev"
    assert resolver.resolve({"Ref": "Name"}) == "x"  # an override wins over the default
    assert resolver.resolve({"Ref": "AWS::Region"}) == "eu-west-1"
    assert resolver.resolve({"Ref": "Queue"}) == "https://sqs/q"
    assert resolver.resolve({"Ref": "Unknown"}) == "Unknown"
    assert resolver.resolve({"Fn::GetAtt": ["Queue", "Arn"]}) == resources["Queue"]["Arn"]
    assert resolver.resolve({"Fn::GetAtt": "Queue.Arn"}) == resources["Queue"]["Arn"]
    assert resolver.resolve({"Fn::Sub": "${AWS::StackName}-${Stage}-${Queue.Arn}"}) == (
        "heap-forwarder-local-dev-arn:aws:sqs:us-east-1:123456789012:q"
    )
    assert resolver.resolve({"Fn::Sub": ["${A}/${Stage}", {"A": {"Ref": "Name"}}]}) == "x/dev"
    assert resolver.resolve({"Fn::FindInMap": ["Urls", {"Ref": "Region"}, "Base"]}) == "https://us.example"
    assert resolver.resolve({"Fn::Join": ["-", ["a", {"Ref": "Stage"}]]}) == "a-dev"
    assert resolver.resolve({"Fn::Select": [1, ["a", "b"]]}) == "b"
    assert resolver.condition("HasName") and resolver.condition("Either")
    assert not resolver.condition("IsProd") and not resolver.condition("Both")
    assert resolver.resolve({"Fn::If": ["IsProd", "p", "np"]}) == "np"


def test_no_value_removes_keys_and_list_items() -> None:
    resolver = Resolver(SYNTHETIC)
    no_value = {"Fn::If": ["HasName", {"Ref": "Name"}, {"Ref": "AWS::NoValue"}]}
    assert resolver.resolve({"A": "1", "B": no_value}) == {"A": "1"}
    assert resolver.resolve(["a", no_value, "c"]) == ["a", "c"]


def test_an_unknown_condition_is_an_error() -> None:
    with pytest.raises(TemplateError, match="unknown condition Nope"):
        Resolver(SYNTHETIC).condition("Nope")


def test_the_consumer_function_as_sam_would_run_it(template: dict[str, Any]) -> None:
    spec = function_spec(template, "ConsumerFunction", Resolver(template))
    assert spec.handler == "heap_forwarder.entry.sqs.lambda_handler"
    assert (spec.timeout, spec.memory_mb) == (60, 256)
    env = spec.environment
    assert env["HEAP_API_URL"] == "https://heapanalytics.com"
    assert env["HEAP_APP_ID_PARAMETER"] == "/heap-forwarder/app-id"
    assert env["RETRY_QUEUE_URL"] == "MainQueue"  # no stand-in given: the logical ID
    assert env["POWERTOOLS_TRACE_DISABLED"] == "false"
    assert "MAPPING_PARAMETER" not in env and "MAPPING_FILE" not in env  # left out, not ""
    assert all(isinstance(v, str) for v in env.values())


def test_template_parameters_change_the_environment(template: dict[str, Any]) -> None:
    resolver = Resolver(
        template,
        {"HeapRegion": "eu", "MappingParameterName": "/hf/mapping", "TracingMode": "PassThrough"},
        {"MainQueue": {"Ref": "https://sqs/main"}},
    )
    env = function_spec(template, "ConsumerFunction", resolver).environment
    assert env["HEAP_API_URL"] == "https://c.eu.heap-api.com"
    assert env["MAPPING_PARAMETER"] == "/hf/mapping"
    assert env["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert env["RETRY_QUEUE_URL"] == "https://sqs/main"


def test_an_unknown_function_lists_the_known_ones(template: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"no function 'MainQueue'.*ConsumerFunction"):
        function_spec(template, "MainQueue", Resolver(template))  # a queue, not a function


@pytest.mark.parametrize(
    ("text", "message"),
    [("just: a mapping\n", "not a SAM/CloudFormation template"), ("a: [unclosed\n", "cannot read")],
)
def test_load_template_refuses_what_is_not_a_template(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    with pytest.raises(TemplateError, match=message):
        load_template(path)


def test_short_form_tags_are_read(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n  X:\n    Properties:\n      A: !Ref Stage\n      B: !GetAtt Q.Arn\n"
        "      C: !Sub '${Stage}-x'\n      D: !If [Cond, 1, 2]\n"
    )
    properties = load_template(path)["Resources"]["X"]["Properties"]
    assert properties == {
        "A": {"Ref": "Stage"},
        "B": {"Fn::GetAtt": ["Q", "Arn"]},
        "C": {"Fn::Sub": "${Stage}-x"},
        "D": {"Fn::If": ["Cond", 1, 2]},
    }


# ---------------------------------------------------------------------------------- event source mapping
@pytest.fixture
def queues(aws_env: None) -> Iterator[dict[str, Any]]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="esm-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "2"})
        main = sqs.create_queue(
            QueueName="esm-main", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": redrive}
        )["QueueUrl"]
        yield {"sqs": sqs, "main": main, "dlq": dlq}


def _send(queues: dict[str, Any], *bodies: str) -> None:
    for text in bodies:
        queues["sqs"].send_message(
            QueueUrl=queues["main"],
            MessageBody=text,
            MessageAttributes={"Source": {"DataType": "String", "StringValue": "test"}},
        )


def _count(queues: dict[str, Any], key: str) -> int:
    attributes = queues["sqs"].get_queue_attributes(QueueUrl=queues[key], AttributeNames=["All"])[
        "Attributes"
    ]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_records_have_the_shape_lambda_gives(queues: dict[str, Any]) -> None:
    _send(queues, "hello")
    (message,) = queues["sqs"].receive_message(
        QueueUrl=queues["main"], AttributeNames=["All"], MessageAttributeNames=["All"]
    )["Messages"]
    record = as_lambda_record(message, "arn:aws:sqs:us-east-1:123456789012:esm-main")
    assert set(record) == RECORD_KEYS
    sample = json.loads((ROOT / "events" / "sqs" / "page.json").read_text())["Records"][0]
    assert set(record) == set(sample)  # the same keys as the sample events
    assert record["body"] == "hello"
    assert record["eventSource"] == "aws:sqs"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["Source"]["stringValue"] == "test"
    assert record["messageAttributes"]["Source"]["dataType"] == "String"


def test_succeeded_records_are_deleted_failed_ones_stay(queues: dict[str, Any]) -> None:
    _send(queues, "ok-1", "fail", "ok-2")
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event)
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "fail"
            ]
        }

    result = EventSourceMapping(queues["sqs"], queues["main"], handler).poll_once()
    assert (result.received, result.deleted, result.failed) == (3, 2, 1)
    (event,) = seen
    assert sorted(r["body"] for r in event["Records"]) == ["fail", "ok-1", "ok-2"]
    # The failed one stays, hidden until its visibility timeout ends; the others are gone.
    attributes = queues["sqs"].get_queue_attributes(QueueUrl=queues["main"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert (
        attributes["ApproximateNumberOfMessages"],
        attributes["ApproximateNumberOfMessagesNotVisible"],
    ) == (
        "0",
        "1",
    )


def test_a_crashed_invocation_keeps_the_whole_batch(queues: dict[str, Any]) -> None:
    _send(queues, "a", "b")

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("the function crashed")

    result = EventSourceMapping(queues["sqs"], queues["main"], handler).poll_once()
    assert (result.received, result.deleted, result.failed) == (2, 0, 2)
    assert _count(queues, "main") == 2


def test_a_batch_gathers_several_receives(queues: dict[str, Any]) -> None:
    _send(queues, *(f"m-{n}" for n in range(25)))
    sizes: list[int] = []

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        sizes.append(len(event["Records"]))
        return {"batchItemFailures": []}

    total = EventSourceMapping(queues["sqs"], queues["main"], handler, batch_size=100).drain()
    assert sizes == [25]
    assert (total.received, total.deleted, total.failed) == (25, 25, 0)
    assert _count(queues, "main") == 0


def test_an_empty_queue_invokes_nothing(queues: dict[str, Any]) -> None:
    def handler(event: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("no invocation for an empty queue")

    assert EventSourceMapping(queues["sqs"], queues["main"], handler).poll_once() == PollResult()


def test_failing_forever_ends_in_the_dlq_by_the_redrive_policy(queues: dict[str, Any]) -> None:
    _send(queues, "x", "y")
    receive_counts: list[str] = []

    def handler(event: dict[str, Any]) -> dict[str, Any]:
        receive_counts.extend(r["attributes"]["ApproximateReceiveCount"] for r in event["Records"])
        for record in event["Records"]:  # back off by 0 s, as the consumer does with base 0
            queues["sqs"].change_message_visibility(
                QueueUrl=queues["main"], ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}

    total = EventSourceMapping(queues["sqs"], queues["main"], handler).drain(max_polls=20)
    assert sorted(receive_counts) == ["1", "1", "2", "2"]  # maxReceiveCount 2: then SQS moves them
    assert (total.received, total.failed, total.deleted) == (4, 4, 0)
    assert _count(queues, "main") == 0
    assert _count(queues, "dlq") == 2


# ---------------------------------------------------------------------------------- demo
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from heap_forwarder.edge.observability import logger
    from heap_forwarder_tools.local.demo import run_demo

    handler = logger.registered_handler
    stream_before = handler.stream
    out = io.StringIO()
    log_path = tmp_path_factory.mktemp("demo") / "logs.jsonl"
    # The logger keeps the stdout it found at import, which may be a capture closed since.
    with handler.lock:  # type: ignore[union-attr]
        handler.stream = io.StringIO()
    try:
        summary = run_demo(root=ROOT, out=out, log_path=log_path)
        stream_after = handler.stream
    finally:
        # Put the logger back by hand: setStream() would flush the demo's closed file and raise.
        with handler.lock:  # type: ignore[union-attr]
            handler.stream = stream_before
    yield {"summary": summary, "out": out.getvalue(), "log_path": log_path, "stream_after": stream_after}


def test_demo_prints_what_heap_received(demo: dict[str, Any]) -> None:
    out, summary = demo["out"], demo["summary"]
    tracked = summary["tracked"]
    names = {e["event"] for e in tracked}
    assert len(names) == 12
    assert len(tracked) == 12  # each once, though several files repeat events
    assert re.search(
        r"^What Heap received: 12 track events stored, from \d+ HTTP requests:$", out, re.MULTILINE
    )
    # The request count and the duplicates are explained, with their own figures.
    requests, duplicates = summary["stats"]["requests_total"], summary["stats"]["duplicates"]
    assert f"Why {requests} requests: each file is its own invocation" in out
    assert "identify has no bulk form" in out
    assert f"Why {duplicates} duplicates: {12 + duplicates} track events were sent, 12" in out
    for name in names:
        assert re.search(rf"^\s+1 x {re.escape(name)}$", out, re.MULTILINE), name
    assert all(e["app_id"] == LOCAL_APP_ID for e in tracked)


def test_demo_ties_every_dead_letter_to_its_file_and_event(demo: dict[str, Any]) -> None:
    out, letters = demo["out"], demo["summary"]["letters"]
    assert f"Dead-letter queue: {len(letters)} messages, each listed above under its file" in out
    # Each file's line, then the dead letters it caused: "dead letter: record <id>..., event <i> ...".
    under: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        found = re.match(r"^  (events/\S+\.json) ", line)
        if found:
            current = found.group(1).removeprefix("events/")
        letter = re.match(
            r"^\s+dead letter: (record|request) \S+ (event \d+|its whole body).*: \[([a-z_]+)\] \S", line
        )
        if letter:
            under.setdefault(current, []).append(letter.group(3))
    assert sum(len(classes) for classes in under.values()) == len(letters)
    assert {
        name: classes for name, classes in under.items() if not name.startswith("api/")
    } == EXPECTED_LETTERS
    assert under["api/alias.json"] == ["unsupported"]
    assert all(c in ERROR_CLASSES for classes in under.values() for c in classes)


def test_demo_runs_every_sample_and_settles_every_record(demo: dict[str, Any]) -> None:
    invocations = demo["summary"]["invocations"]
    consumer = [
        (path, response) for function, path, response in invocations if function == "ConsumerFunction"
    ]
    assert sorted(path for path, _ in consumer) == sorted(
        str(p.relative_to(ROOT)) for p in SQS_FILES + BAD_FILES
    )
    assert all(response == {"batchItemFailures": []} for _, response in consumer)
    for path, _ in consumer:
        expected = len(EXPECTED_LETTERS.get(path.removeprefix("events/"), []))
        line = re.search(rf"^  {re.escape(path)} +(.*)$", demo["out"], re.MULTILINE)
        assert line, path
        assert re.fullmatch(
            rf"\d+ records?, \d+ events?: \d+ delivered, 0 parked, {expected} dead-lettered", line.group(1)
        )


def test_demo_gives_each_api_answer_with_its_reason(demo: dict[str, Any]) -> None:
    out = demo["out"]
    assert re.search(
        r"^  events/api/track\.json +POST /v1/track -> 200: 1 delivered, 0 parked, 0 dead-lettered$",
        out,
        re.M,
    )
    assert re.search(
        r"^  events/api/track_wrong_write_key\.json +POST /v1/track -> 401, refused to the caller"
        r" \(nothing sent\): invalid credentials: ",
        out,
        re.M,
    )
    assert re.search(
        r"batch_with_one_bad_event\.json +POST /v1/batch -> 400, .*\(event 1: event: Field required\)$",
        out,
        re.M,
    )


def test_demo_writes_the_function_logs_as_json(demo: dict[str, Any]) -> None:
    lines = demo["log_path"].read_text("utf-8").splitlines()
    assert lines
    documents = [json.loads(line) for line in lines if line.strip()]
    assert any(d.get("message") == "event parked in the DLQ" for d in documents)
    assert any("_aws" in d for d in documents)  # the EMF metrics
    assert str(demo["log_path"]) in demo["out"]


def test_demo_gives_the_logger_back(demo: dict[str, Any]) -> None:
    assert not getattr(demo["stream_after"], "closed", False)
