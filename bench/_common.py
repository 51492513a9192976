"""Shared pieces of the benchmark: the event mix, Lambda-shaped SQS events, the out-of-process
services (Heap emulator, moto server) and the worker-process protocol.

Every figure runs in fresh worker processes (``python bench/<figure>.py --worker ...``) that
write their result as JSON to a file; ``bench/run.py`` starts the services, the workers, and
prints the table. Nothing here times anything.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RAW = ROOT / "events" / "raw"
PYTHON = sys.executable
APP_ID = "bench-app"
REGION = "us-east-1"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:heap-forwarder-bench-events"
LAMBDA_PAYLOAD_CAP = 6 * 1024 * 1024  # bytes Lambda hands a function per invocation

# A realistic stream of a web shop's events (weights per 100 events). Every seed event but
# alias (Heap's server-side API cannot merge identities: it would go to the DLQ by design).
MIX: dict[str, int] = {
    "page": 22,
    "product_viewed": 12,
    "custom_track": 10,
    "product_list_viewed": 8,
    "product_clicked": 8,
    "screen": 7,
    "products_searched": 6,
    "product_added": 6,
    "cart_viewed": 5,
    "identify": 5,
    "checkout_started": 3,
    "payment_info_entered": 3,
    "order_completed": 3,
    "group": 2,
}
# Events that map to /api/track only: the backlog of the pacing figure (Heap's per-app cap
# counts track events).
TRACK_MIX: dict[str, int] = {k: v for k, v in MIX.items() if k not in ("identify", "group")}
# The track events of events/raw (``"type": "track"``), one each: the throughput figure's
# workload (issue 16) cycles them in this order.
TRACK_EVENTS: dict[str, int] = dict.fromkeys(
    (
        "cart_viewed",
        "checkout_started",
        "custom_track",
        "order_completed",
        "payment_info_entered",
        "product_added",
        "product_clicked",
        "product_list_viewed",
        "product_viewed",
        "products_searched",
    ),
    1,
)

# Dummy credentials and region: the workers talk to moto only.
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


# What the template sets for every function and matters before the first event is read (a test
# holds these to template.yaml's Globals).
TEMPLATE_IMPORT_ENV = {"PYDANTIC_DISABLE_PLUGINS": "__all__"}

# What Lambda's Python runtime sets and the code (or its libraries) looks at: the X-Ray SDK,
# for one, imports far less inside Lambda (no sampling connector). Tracing off, as with
# TracingMode PassThrough; cold_start.py measures tracing on as well.
LAMBDA_ENV = {
    "LAMBDA_TASK_ROOT": str(ROOT / "handler"),
    "AWS_LAMBDA_FUNCTION_NAME": "heap-forwarder-bench-consumer",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "POWERTOOLS_TRACE_DISABLED": "true",
    **TEMPLATE_IMPORT_ENV,
}


# ------------------------------------------------------------------------------------ events
def _samples(mix: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    return {name: json.loads((RAW / f"{name}.json").read_text("utf-8")) for name in mix}


def mix_order(mix: Mapping[str, int], seed: int = 7) -> list[str]:
    """One cycle of the mix (sum of the weights long), interleaved by a fixed shuffle (the
    track events, one each, keep their order: the throughput workload cycles them)."""
    order = [name for name, weight in mix.items() for _ in range(weight)]
    if mix is not TRACK_EVENTS:
        random.Random(seed).shuffle(order)
    return order


def build_events(
    count: int, *, mix: Mapping[str, int] = MIX, tag: str = "run", users: int | None = None
) -> list[dict[str, Any]]:
    """``count`` events cycling the mix, each with its own messageId (Heap's idempotency key)
    and one of ``users`` identities (default: ~6 events per user), as a real stream has."""
    samples = _samples(mix)
    order = mix_order(mix)
    users = users or max(1, count // 6)
    events = []
    for i in range(count):
        name = order[i % len(order)]
        event = json.loads(json.dumps(samples[name]))  # an independent copy
        user = i % users
        event["messageId"] = f"{tag}-{i:08d}-{name}"
        event["anonymousId"] = f"anon-{user:08d}-4372-a567-0e02b2c3d479"
        if "userId" in event:
            event["userId"] = f"usr_{user:08d}"
        events.append(event)
    return events


def compact(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def sqs_record(body: str, index: int, tag: str = "run") -> dict[str, Any]:
    """An SQS record in the shape Lambda hands an SQS-triggered function."""
    message_id = hashlib.md5(f"{tag}/{index}".encode()).hexdigest()
    message_id = (
        f"{message_id[:8]}-{message_id[8:12]}-{message_id[12:16]}-{message_id[16:20]}-{message_id[20:]}"
    )
    sent = 1_718_028_000_000 + index
    return {
        "messageId": message_id,
        "receiptHandle": "AQEB" + hashlib.sha256(message_id.encode()).hexdigest() * 2,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": str(sent),
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": str(sent + 5),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": REGION,
    }


def sqs_event(bodies: Sequence[str], tag: str = "run") -> dict[str, Any]:
    return {"Records": [sqs_record(body, i, tag) for i, body in enumerate(bodies)]}


def payload_bytes(event: Mapping[str, Any]) -> int:
    return len(json.dumps(event).encode("utf-8"))


class FakeContext:
    """The bits of Lambda's context object the handler and Powertools read."""

    function_name = "heap-forwarder-bench-consumer"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:heap-forwarder-bench-consumer"
    memory_limit_in_mb = 256
    aws_request_id = "bench-request"
    log_group_name = "/aws/lambda/heap-forwarder-bench-consumer"
    log_stream_name = "bench"

    def __init__(self, timeout_s: float = 900.0) -> None:
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0.0, self._deadline - time.monotonic()) * 1000)


# ------------------------------------------------------------------------------------ timing
def median_of(repeat: int, run: Callable[[], object]) -> float:
    """Median of ``repeat`` runs, in seconds. GC stays on: Lambda runs with it."""
    gc.enable()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def best_of(repeat: int, run: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    """Fastest of ``repeat`` runs, in seconds. GC stays on: Lambda runs with it."""
    gc.enable()
    best = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def vm_status() -> dict[str, float]:
    """VmHWM / VmRSS of this process in MB (Linux)."""
    values: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "VmPeak"):
                values[key] = int(rest.split()[0]) / 1024
    return values


# ------------------------------------------------------------------------------------ services
@dataclass
class Service:
    name: str
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(name: str, argv: list[str], pattern: str, *, timeout: float = 60.0) -> Service:
    """Start a server process and wait until it prints the URL it listens on."""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, bufsize=1
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            # Keep draining the pipe in the background so the server never blocks on a full pipe.
            _drain(process)
            return Service(name, process, found.group(1))
    process.kill()
    raise RuntimeError(f"{name} did not start: {''.join(seen)[-2000:]}")


def _drain(process: subprocess.Popen[str]) -> None:
    import threading

    def pump() -> None:
        assert process.stdout is not None
        for _line in process.stdout:
            pass  # the servers' request logs: read so that a full pipe never blocks them

    threading.Thread(target=pump, daemon=True).start()


def start_emulator(*, enforce_rate_limits: bool = False, time_scale: float = 1.0) -> Service:
    argv = [PYTHON, "-m", "heap_forwarder_tools.emulator", "--port", "0", "--app-id", APP_ID]
    if enforce_rate_limits:
        argv += ["--enforce-rate-limits", "--time-scale", str(time_scale)]
    return _start("heap-emulator", argv, r"listening on (http://\S+)")


def start_moto() -> Service:
    return _start(
        "moto", [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"], r"Running on (http://\S+)"
    )


@dataclass
class Services:
    """The emulator and moto, in their own processes; the AWS resources the handler needs."""

    emulator: Service
    moto: Service
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        self.emulator.stop()
        self.moto.stop()


def provision_aws(moto_url: str) -> dict[str, str]:
    """Queues and the app-ID parameter in moto; the environment a handler process needs."""
    import boto3

    with _env({**DUMMY_AWS, "AWS_ENDPOINT_URL": moto_url}):
        sqs = boto3.client("sqs", region_name=REGION)
        ssm = boto3.client("ssm", region_name=REGION)
        dlq = sqs.create_queue(QueueName="heap-forwarder-bench-dlq")["QueueUrl"]
        main = sqs.create_queue(QueueName="heap-forwarder-bench-events")["QueueUrl"]
        ssm.put_parameter(Name="/bench/app-id", Value=APP_ID, Type="SecureString", Overwrite=True)
    return {
        **DUMMY_AWS,
        **LAMBDA_ENV,
        "AWS_ENDPOINT_URL": moto_url,
        "HEAP_APP_ID_PARAMETER": "/bench/app-id",
        "RETRY_QUEUE_URL": main,
        "DEAD_LETTER_QUEUE_URL": dlq,
        "POWERTOOLS_SERVICE_NAME": "heap-forwarder",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        # The throughput and memory figures measure CPU and memory, not pacing: no client limit.
        "RATE_LIMIT_EVENTS_PER_MINUTE": "1000000000",
        "RATE_LIMIT_BURST": "1000",
        # The API benchmarks measure the request path, not the write-key check: callers are
        # authenticated by API Gateway (IAM mode), as a deployment may choose.
        "API_AUTH_MODE": "IAM",
    }


@contextmanager
def services() -> Iterator[Services]:
    emulator = start_emulator()
    try:
        moto = start_moto()
    except BaseException:
        emulator.stop()
        raise
    running = Services(emulator, moto)
    try:
        running.env = {**provision_aws(moto.url), "HEAP_API_URL": emulator.url}
        yield running
    finally:
        running.stop()


@contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    # Like heap_forwarder_tools.local.sandbox.environment, kept here: a measuring process must not
    # import the package before the figure it measures (cold start, memory).
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def emulator_call(url: str, action: str) -> Any:
    """``POST /_emulator/reset`` or ``GET /_emulator/state`` of an emulator process."""
    method = "POST" if action == "reset" else "GET"
    request = urllib.request.Request(
        f"{url}/_emulator/{action}", method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def emulator_stats(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = emulator_call(url, "state")["stats"]
    return stats


# ------------------------------------------------------------------------------------ workers
def run_worker(
    script: str, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 600
) -> dict[str, Any]:
    """Run ``bench/<script> --worker ARGS --out FILE`` in a fresh interpreter; its JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        argv = [PYTHON, str(BENCH / script), "--worker", *args, "--out", str(out)]
        completed = subprocess.run(
            argv,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"{script} worker failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}"
            )
        result: dict[str, Any] = json.loads(out.read_text("utf-8"))
        return result


def write_result(path: str, result: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str), "utf-8")


# ------------------------------------------------------------------------------------ machine
def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ""
    with suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load": load,
    }
