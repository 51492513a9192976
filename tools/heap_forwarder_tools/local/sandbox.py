"""A local stand-in for the stack: moto's SQS and SSM and the Heap emulator.

The queues and parameters are made as ``template.yaml`` describes them (the main queue's
redrive policy included), so handlers run here exactly as they would in the account. moto runs
in-process (``mock_aws``), or, with ``aws_server``, as moto's HTTP server on 127.0.0.1, which
other processes (the local consumer, ``redrive``, the AWS CLI) reach at ``aws_endpoint_url``.

``time_scale`` k makes the stack's clock run k times faster: the template's time settings
(``TIME_SETTINGS``, the queues' visibility timeouts) are divided by k. Lambda never sees it: it
only changes the values the local tools hand the functions and create the queues with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heap_forwarder_tools.emulator import HeapEmulator
from heap_forwarder_tools.local.template import FunctionSpec, Resolver, function_spec, load_template

DEFAULT_TEMPLATE = Path("template.yaml")
LOCAL_APP_ID = "demo-app-id"
LOCAL_WRITE_KEY = "demo-write-key"
REGION = "us-east-1"
# The template's settings that are lengths of time, scaled by ``Sandbox.time_scale``: the
# consumer's backoff (30 s doubling to 30 min) and both functions' time retrying Heap. The
# functions' Timeout and Heap's connect/read timeouts are not: they bound real work.
TIME_SETTINGS = ("BACKOFF_BASE_SECONDS", "BACKOFF_CAP_SECONDS", "RETRY_BUDGET_SECONDS")
# ... and the settings that are rates, multiplied by it: a consumer whose minutes pass k times
# faster sends k times as many events a real minute (what a backfill at --time-scale k expects).
RATE_SETTINGS = ("RATE_LIMIT_EVENTS_PER_MINUTE",)
_DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration, restoring the previous values after."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class DeadLetterView:
    body: str
    attributes: dict[str, str]
    message_id: str


@dataclass
class Sandbox:
    """moto + the Heap emulator, with the template's queues and SSM parameters."""

    template_path: Path = DEFAULT_TEMPLATE
    app_id: str = LOCAL_APP_ID
    write_key: str | None = LOCAL_WRITE_KEY
    parameters: dict[str, str] = field(default_factory=dict)
    emulator: HeapEmulator = field(default_factory=lambda: HeapEmulator(app_ids=(LOCAL_APP_ID,)))
    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    aws_server: bool = False
    time_scale: float = 1.0
    aws_endpoint_url: str | None = None
    _stack: list[Any] = field(default_factory=list)
    _clients: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> Sandbox:
        if not self.time_scale > 0:
            raise ValueError("time_scale must be a positive number")
        self.template = load_template(self.template_path)
        if self.aws_server:
            self._start_aws_server()
        else:
            from moto import mock_aws

            env = environment(_DUMMY_AWS)
            env.__enter__()
            self._stack.append(env)
            mock = mock_aws()
            mock.start()
            self._stack.append(mock)
        self.emulator.start()
        self._stack.append(self.emulator)
        self._create_queues()
        self._create_parameters()
        return self

    def __exit__(self, *exc: object) -> None:
        while self._stack:
            item = self._stack.pop()
            if isinstance(item, HeapEmulator) or hasattr(item, "stop"):
                item.stop()
            else:
                item.__exit__(None, None, None)
        self._clients.clear()

    def _start_aws_server(self) -> None:
        """moto's server on a free port of 127.0.0.1, emptied first (its state is per process)."""
        import logging
        import urllib.request

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._stack.append(server)
        host, port = server.get_host_and_port()
        self.aws_endpoint_url = f"http://{host}:{port}"
        urllib.request.urlopen(
            urllib.request.Request(f"{self.aws_endpoint_url}/moto-api/reset", method="POST"), timeout=10
        ).close()
        env = environment(self.aws_environment())
        env.__enter__()
        self._stack.append(env)

    def aws_environment(self) -> dict[str, str]:
        """What a process needs to reach this sandbox's AWS (dummy credentials, the region, and
        moto's server when there is one)."""
        endpoint = {"AWS_ENDPOINT_URL": self.aws_endpoint_url} if self.aws_endpoint_url else {}
        return {**_DUMMY_AWS, **endpoint}

    # ------------------------------------------------------------------ AWS stand-ins
    def client(self, service: str) -> Any:
        import boto3

        if service not in self._clients:
            self._clients[service] = boto3.client(service, region_name=REGION)
        return self._clients[service]

    def resolver(self, parameters: Mapping[str, str] | None = None) -> Resolver:
        """The template's intrinsics against this sandbox; ``parameters`` override the stack's."""
        return Resolver(self.template, {**self.parameters, **(parameters or {})}, self.resources, REGION)

    def _queue_properties(self, logical_id: str) -> dict[str, Any]:
        resource = self.template["Resources"].get(logical_id) or {}
        return dict(resource.get("Properties") or {})

    def _create_queues(self) -> None:
        sqs = self.client("sqs")
        queues = [k for k, v in self.template["Resources"].items() if v.get("Type") == "AWS::SQS::Queue"]
        # Dead-letter queues first: the others' redrive policies point at them.
        queues.sort(key=lambda q: "RedrivePolicy" in self._queue_properties(q))
        for logical_id in queues:
            properties = self._queue_properties(logical_id)
            attributes: dict[str, str] = {}
            timeout = properties.get("VisibilityTimeout")
            if timeout is not None:
                seconds = float(self.resolver().resolve(timeout)) / self.time_scale
                attributes["VisibilityTimeout"] = str(max(1, round(seconds)))
            redrive = properties.get("RedrivePolicy")
            if redrive:
                resolved = self.resolver().resolve(redrive)
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": resolved["deadLetterTargetArn"],
                        "maxReceiveCount": str(resolved["maxReceiveCount"]),
                    }
                )
            url = sqs.create_queue(QueueName=f"heap-forwarder-local-{logical_id}", Attributes=attributes)[
                "QueueUrl"
            ]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            self.resources[logical_id] = {
                "Ref": url,
                "QueueUrl": url,
                "Arn": arn,
                "QueueName": url.rsplit("/", 1)[-1],
            }

    def _create_parameters(self) -> None:
        ssm = self.client("ssm")
        resolver = self.resolver()
        app_id_name = resolver.parameters.get("HeapAppIdParameterName", "/heap-forwarder/app-id")
        ssm.put_parameter(Name=app_id_name, Value=self.app_id, Type="SecureString", Overwrite=True)
        key_name = resolver.parameters.get("WriteKeyParameterName", "")
        if self.write_key and key_name:
            ssm.put_parameter(Name=key_name, Value=self.write_key, Type="SecureString", Overwrite=True)

    def queue_url(self, logical_id: str) -> str:
        return self.resources[logical_id]["QueueUrl"]

    # ------------------------------------------------------------------ functions
    def function(
        self,
        logical_id: str,
        overrides: Mapping[str, str] | None = None,
        *,
        parameters: Mapping[str, str] | None = None,
    ) -> FunctionSpec:
        """The function as the template describes it, under other stack ``parameters`` if given,
        with environment ``overrides`` on top (as ``sam local invoke --env-vars``)."""
        spec = function_spec(self.template, logical_id, self.resolver(parameters))
        for name in TIME_SETTINGS:
            if name in spec.environment and self.time_scale != 1:
                spec.environment[name] = f"{float(spec.environment[name]) / self.time_scale:g}"
        for name in RATE_SETTINGS:
            if name in spec.environment and self.time_scale != 1:
                spec.environment[name] = f"{float(spec.environment[name]) * self.time_scale:g}"
        spec.environment["HEAP_API_URL"] = self.emulator.url
        spec.environment["POWERTOOLS_TRACE_DISABLED"] = "true"  # no X-Ray daemon here
        spec.environment.update(overrides or {})
        return spec

    def dead_letters(self, logical_id: str = "DeadLetterQueue") -> list[DeadLetterView]:
        """Every message in the DLQ (or another of the stack's queues), left in place."""
        return peek_queue(self.client("sqs"), self.queue_url(logical_id))


def peek_queue(sqs: Any, url: str) -> list[DeadLetterView]:
    """Every visible message of a queue with its attributes, left in place (received, then made
    visible again). A queue that does not exist holds nothing."""
    seen: list[DeadLetterView] = []
    handles: list[str] = []
    while True:
        try:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30, MessageAttributeNames=["All"]
            ).get("Messages", [])
        except sqs.exceptions.QueueDoesNotExist:
            return []
        if not messages:
            break
        for message in messages:
            attributes = {
                k: v.get("StringValue", "") for k, v in (message.get("MessageAttributes") or {}).items()
            }
            seen.append(DeadLetterView(message["Body"], attributes, message["MessageId"]))
            handles.append(message["ReceiptHandle"])
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return seen


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
