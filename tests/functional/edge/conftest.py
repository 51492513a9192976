"""Fixtures for the AWS edge tests: moto's SQS and SSM in-process, a live Heap emulator over HTTP,
and a Consumer built from real parts (mapper, Heap client, DLQ writer) around them."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3

from heap_forwarder.edge.consumer import BackoffPolicy, Consumer, Pace
from heap_forwarder.edge.letters import DeadLetterWriter
from heap_forwarder.edge.observability import logger, metrics
from heap_forwarder.heap.client import DeliverySettings, HeapClient
from heap_forwarder.heap.transport import new_pool
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import Playbook
from heap_forwarder.pipeline import Pipeline
from heap_forwarder_tools.emulator import HeapEmulator
from heap_forwarder_tools.local.poller import as_lambda_record
from heap_forwarder_tools.local.sandbox import peek_queue, queue_counts
from sample_events import raw

ROOT = Path(__file__).resolve().parents[3]
APP_ID = "demo-app-id"
SECRET_APP_ID = "app-SECRET-123"
REGION = "us-east-1"
# The fast queues of these tests: SQS moves a message on the receive after the 4th; the consumer
# parks it itself, with the reason, on the 3rd (the template: 20 and 19).
TEST_MAX_RECEIVE_COUNT = 3
TEST_REDRIVE_MAX_RECEIVE_COUNT = 4


# ---------------------------------------------------------------------------------- events
def track(n: int, name: str = "Order Completed", **overrides: Any) -> dict[str, Any]:
    """A valid track event with its own messageId (Heap's idempotency key) ``msg-<n>``."""
    return raw("order_completed", event=name, messageId=f"msg-{n}", **overrides)


def body(*events: dict[str, Any]) -> str:
    """One SQS record body: the event itself, or ``{"batch": [...]}`` for several."""
    if len(events) == 1:
        return json.dumps(events[0])
    return json.dumps({"batch": list(events)})


# ---------------------------------------------------------------------------------- AWS
@dataclass
class Letter:
    body: str
    attributes: dict[str, str]

    @property
    def error_class(self) -> str:
        return self.attributes.get("ErrorClass", "")

    @property
    def reason(self) -> str:
        return self.attributes.get("Reason", "")

    def event(self) -> Any:
        return json.loads(self.body)


def read_queue(sqs: Any, url: str) -> list[Letter]:
    """Every visible message of a queue, left in place (received, then made visible again)."""
    return [Letter(m.body, m.attributes) for m in peek_queue(sqs, url)]


@dataclass
class Aws:
    """moto's SQS (a main queue with a redrive policy, its DLQ) and SSM."""

    sqs: Any
    ssm: Any
    main_url: str
    main_arn: str
    dlq_url: str
    visibility_calls: list[dict[str, Any]] = field(default_factory=list)

    def send(self, *bodies: str) -> list[str]:
        """Send the bodies to the main queue; their SQS message ids, in order."""
        return [self.sqs.send_message(QueueUrl=self.main_url, MessageBody=b)["MessageId"] for b in bodies]

    def receive(self, expected: int | None = None, *, visibility: int = 30) -> dict[str, Any]:
        """A Lambda SQS event of what is visible in the main queue (real receipt handles)."""
        messages: dict[str, dict[str, Any]] = {}
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.main_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=visibility,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            fresh = [m for m in batch if m["MessageId"] not in messages]
            if not fresh:  # nothing visible, or (visibility 0) the same messages again
                break
            messages.update((m["MessageId"], m) for m in fresh)
        if expected is not None:
            assert len(messages) == expected, f"{len(messages)} messages visible, expected {expected}"
        return {"Records": [as_lambda_record(m, self.main_arn) for m in messages.values()]}

    def lambda_event(self, *bodies: str) -> dict[str, Any]:
        """Send the bodies and receive them back, as Lambda would hand them over (in send order)."""
        ids = self.send(*bodies)
        event = self.receive(len(bodies))
        order = {message_id: i for i, message_id in enumerate(ids)}
        event["Records"].sort(key=lambda r: order[r["messageId"]])
        return event

    def dead_letters(self) -> list[Letter]:
        return read_queue(self.sqs, self.dlq_url)

    def main_counts(self) -> tuple[int, int]:
        return queue_counts(self.sqs, self.main_url)


@pytest.fixture(scope="session")
def boto_clients() -> tuple[Any, Any]:
    """SQS and SSM clients made once (they cost ~0.1 s each); moto intercepts them while a mock runs."""
    import boto3
    import moto  # noqa: F401  (moto must be imported before clients are made to intercept them)

    dummy = {"region_name": REGION, "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client("sqs", **dummy), boto3.client("ssm", **dummy)


@pytest.fixture
def aws(aws_env: None, boto_clients: tuple[Any, Any]) -> Iterator[Aws]:
    from moto import mock_aws

    sqs, ssm = boto_clients
    with mock_aws():  # fresh, empty backends for every test
        dlq_url = sqs.create_queue(QueueName="edge-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(TEST_REDRIVE_MAX_RECEIVE_COUNT)}
        main_url = sqs.create_queue(
            QueueName="edge-main",
            Attributes={"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        main_arn = sqs.get_queue_attributes(QueueUrl=main_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        ssm.put_parameter(Name="/heap-forwarder/app-id", Value=APP_ID, Type="SecureString")
        env = Aws(sqs, ssm, main_url, main_arn, dlq_url)

        # Observe (not alter) the visibility changes the consumer asks SQS for.
        def seen(params: dict[str, Any], **_: Any) -> None:
            env.visibility_calls.append(dict(params))

        event_name = "provide-client-params.sqs.ChangeMessageVisibilityBatch"
        sqs.meta.events.register(event_name, seen)
        try:
            yield env
        finally:
            sqs.meta.events.unregister(event_name, seen)


# ---------------------------------------------------------------------------------- Heap
@pytest.fixture(scope="session")
def edge_heap() -> Iterator[HeapEmulator]:
    emulator = HeapEmulator(app_ids=(APP_ID, SECRET_APP_ID)).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator(edge_heap: HeapEmulator) -> Iterator[HeapEmulator]:
    """The session's emulator, emptied and with no faults armed (before and after the test)."""
    edge_heap.reset()
    yield edge_heap
    edge_heap.reset()


@pytest.fixture
def pool() -> Iterator[urllib3.PoolManager]:
    manager = new_pool()
    yield manager
    manager.clear()


@pytest.fixture(scope="session")
def playbook() -> Playbook:
    return build_playbook()


def fast_delivery(url: str, **overrides: Any) -> DeliverySettings:
    options: dict[str, Any] = {
        "base_url": url,
        "retry_budget_s": 0.05,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.02,
        "read_timeout_s": 0.5,
        "connect_timeout_s": 0.5,
        **overrides,
    }
    return DeliverySettings(**options)


ConsumerFactory = Callable[..., Consumer]


@pytest.fixture
def make_consumer(
    aws: Aws, emulator: HeapEmulator, pool: urllib3.PoolManager, playbook: Playbook
) -> ConsumerFactory:
    """A Consumer of real parts on moto and the emulator; every knob overridable."""

    def make(
        *,
        app_id: str = APP_ID,
        base: float = 0.0,
        cap: float = 0.0,
        max_receive_count: int = TEST_MAX_RECEIVE_COUNT,
        pipeline_factory: Callable[[], Pipeline] | None = None,
        dlq_url: str | None = None,
        seed: int = 7,
        sqs_client: Any = None,
        pace: Pace | None = None,
        hash_key: bytes | None = None,
        **delivery: Any,
    ) -> Consumer:
        mapper = Mapper(playbook, {"MY_APP_ID": app_id}, hash_key=hash_key)
        heap = HeapClient(
            fast_delivery(emulator.url, **delivery), request_fields=mapper.request_fields, pool=pool
        )
        return Consumer(
            pipeline_factory or (lambda: Pipeline(mapper, heap)),
            sqs_client or aws.sqs,
            aws.main_url,
            DeadLetterWriter(aws.sqs, dlq_url or aws.dlq_url),
            BackoffPolicy(base, cap),
            max_receive_count=max_receive_count,
            rng=random.Random(seed),
            pace=pace,
        )

    return make


# ---------------------------------------------------------------------------------- Sandbox
@pytest.fixture(scope="module")
def module_sandbox() -> Iterator[Any]:
    """One Sandbox (template queues and parameters on moto, a Heap emulator) per test module."""
    from heap_forwarder_tools.local.sandbox import LOCAL_APP_ID, Sandbox

    emulator = HeapEmulator(app_ids=(LOCAL_APP_ID, SECRET_APP_ID))
    with Sandbox(template_path=ROOT / "template.yaml", emulator=emulator) as box:
        # boto3 clients cost ~0.1 s each to make: the sandbox hands out the same ones.
        made: dict[str, Any] = {}
        make = box.client

        def client(service: str) -> Any:
            if service not in made:
                made[service] = make(service)
            return made[service]

        box.client = client  # type: ignore[method-assign]
        yield box


@pytest.fixture
def sandbox(module_sandbox: Any) -> Any:
    """The module's Sandbox as new: empty queues (made again from the template), the template's
    app ID in SSM, the emulator emptied with no faults armed."""
    sqs = module_sandbox.client("sqs")
    for logical_id in list(module_sandbox.resources):
        sqs.delete_queue(QueueUrl=module_sandbox.queue_url(logical_id))
    module_sandbox._create_queues()
    module_sandbox._create_parameters()
    module_sandbox.emulator.reset()
    return module_sandbox


# ---------------------------------------------------------------------------------- observability
@dataclass
class Logs:
    stream: io.StringIO

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def messages(self, level: str | None = None) -> list[str]:
        return [r["message"] for r in self.records() if level is None or r["level"] == level]

    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def logs() -> Iterator[Logs]:
    """The Powertools logger's JSON lines (it writes to the stdout it found at import)."""
    handler = logger.registered_handler
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        yield Logs(buffer)
    finally:
        handler.setStream(previous)


def metric_names() -> set[str]:
    """Metrics added since the last flush (the Consumer alone never flushes)."""
    return set(metrics.metric_set)


@pytest.fixture(autouse=True)
def _fresh_observability_and_warm_state() -> Iterator[None]:
    from heap_forwarder.entry import sqs as entry

    metrics.clear_metrics()
    entry.reset()
    yield
    metrics.clear_metrics()
    entry.reset()


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents among the lines written to stdout."""
    documents = []
    for line in stdout.splitlines():
        if line.startswith('{"_aws"'):
            documents.append(json.loads(line))
    return documents


def emf_metrics(stdout: str) -> dict[str, float]:
    """Metric name -> summed value over every EMF document of ``stdout``."""
    totals: dict[str, float] = {}
    for document in emf_documents(stdout):
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                name = metric["Name"]
                values = document[name]
                totals[name] = totals.get(name, 0.0) + (
                    sum(values) if isinstance(values, list) else float(values)
                )
    return totals


class Kit:
    """The helpers above as a fixture (test modules cannot import a conftest reliably)."""

    APP_ID = APP_ID
    SECRET_APP_ID = SECRET_APP_ID
    ROOT = ROOT
    TEST_MAX_RECEIVE_COUNT = TEST_MAX_RECEIVE_COUNT
    TEST_REDRIVE_MAX_RECEIVE_COUNT = TEST_REDRIVE_MAX_RECEIVE_COUNT
    raw = staticmethod(raw)
    track = staticmethod(track)
    body = staticmethod(body)
    read_queue = staticmethod(read_queue)
    queue_counts = staticmethod(queue_counts)
    metric_names = staticmethod(metric_names)
    emf_documents = staticmethod(emf_documents)
    emf_metrics = staticmethod(emf_metrics)
    fast_delivery = staticmethod(fast_delivery)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
