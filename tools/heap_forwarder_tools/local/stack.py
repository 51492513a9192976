"""The local stack: the deployed stack's parts on 127.0.0.1, wired as in the account.

- AWS: moto's server (SQS and SSM), with the template's queues (the main queue's redrive policy
  to the DLQ included) and SSM parameters; other processes reach it at ``aws_endpoint_url``.
- Heap: the project's emulator (``emulator_url``; faults through ``/_emulator/faults``).
- The API function behind a local HTTP server (``api_url``), in this process, under its
  template environment.
- The consumer function in its own process (``local.consumer_process``) under its own template
  environment, polling the main queue as Lambda's event source mapping does: what the API
  parks is delivered when Heap recovers; what keeps failing backs off, then reaches the DLQ.

``time_scale`` k runs the stack's clock k times faster (``Sandbox.time_scale``): the backoff
(30 s doubling to 30 min over 19 receives) and the retry budgets are divided by k, so an outage
rehearsal takes seconds. ``traffic()`` is what the API answered and what each consumer
invocation did, most recent last.

``heap-forwarder serve`` runs it until Ctrl+C (``serve_stack``); tests and tools use the class.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from heap_forwarder_tools.emulator import HeapEmulator
from heap_forwarder_tools.local.consumer_process import spec_argument
from heap_forwarder_tools.local.sandbox import (
    DEFAULT_TEMPLATE,
    LOCAL_APP_ID,
    REGION,
    DeadLetterView,
    Sandbox,
    queue_counts,
)
from heap_forwarder_tools.local.server import ApiExchange, LocalApiServer, api_routes
from heap_forwarder_tools.service import Service

API_FUNCTION = "ApiFunction"
CONSUMER_FUNCTION = "ConsumerFunction"
MAIN_QUEUE = "MainQueue"
DEAD_LETTER_QUEUE = "DeadLetterQueue"
_CONSUMER_START_SECONDS = 60.0  # importing the runtime on a slow, busy machine


@dataclass(frozen=True)
class Traffic:
    """One thing the stack did: an API answer (``source`` "api") or a consumer invocation
    ("consumer"). ``detail``: the exchange (method, path, status, answer, metrics) or the
    invocation's report (records with receive counts, failed ids, metrics, error)."""

    seq: int
    at: float  # time.time()
    source: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


def consumer_summary(report: dict[str, Any]) -> str:
    """One line for a consumer invocation, from its report (the function's own counts)."""
    records = report.get("records") or []
    metrics = report.get("metrics") or {}
    receives = sorted({r.get("receiveCount", 1) for r in records})
    receive = f"receive {receives[0]}" if len(receives) == 1 else f"receives {receives[0]}-{receives[-1]}"
    if report.get("error"):
        return f"{len(records)} record(s) ({receive}): the function failed ({report['error']}); all come back"
    parts = [f"{int(metrics.get('EventsDelivered', 0))} delivered"]
    if metrics.get("EventsRetried"):
        parts.append(f"{int(metrics['EventsRetried'])} left in the queue for retry (backing off)")
    if metrics.get("DlqWrites"):
        parts.append(f"{int(metrics['DlqWrites'])} dead-lettered")
    if metrics.get("ConfigurationFaults"):
        parts.append("configuration fault: every record retried")
    return f"{len(records)} record(s) ({receive}): " + ", ".join(parts)


class LocalStack(Service):
    """moto's server + the Heap emulator + the API + the consumer; see the module's docstring."""

    def __init__(
        self,
        template_path: Path = DEFAULT_TEMPLATE,
        *,
        host: str = "127.0.0.1",
        api_port: int = 0,
        time_scale: float = 1.0,
        log_path: Path | None = None,
        on_traffic: Callable[[Traffic], None] | None = None,
        history: int = 1000,
    ) -> None:
        """``log_path``: where both functions' JSON logs go (None: discarded). ``on_traffic``:
        called with each new ``Traffic`` (from the API's or the consumer's watcher thread)."""
        self.sandbox = Sandbox(
            template_path=template_path,
            aws_server=True,
            time_scale=time_scale,
            emulator=HeapEmulator(app_ids=(LOCAL_APP_ID,)),
        )
        self.host = host
        self.api_port = api_port
        self.time_scale = time_scale
        self.log_path = log_path
        self.on_traffic = on_traffic
        self._traffic: deque[Traffic] = deque(maxlen=history)
        self._seq = 0
        self._lock = threading.Lock()
        self._api: LocalApiServer | None = None
        self._consumer: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._log: IO[str] | None = None
        self._api_log_stream: tuple[logging.StreamHandler[Any], Any, IO[str]] | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalStack:
        if self._started:
            return self
        self._started = True
        try:
            self.sandbox.__enter__()
            if self.log_path is not None:
                self._log = self.log_path.open("a", encoding="utf-8")
            self._start_api()
            self._start_consumer()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.terminate()
            try:
                consumer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        api, self._api = self._api, None
        if api is not None:
            api.stop()
        self._restore_api_logs()
        if self._started:
            self._started = False
            self.sandbox.__exit__(None, None, None)
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------------ where things are
    @property
    def emulator(self) -> HeapEmulator:
        return self.sandbox.emulator

    @property
    def api_url(self) -> str:
        if self._api is None:
            raise RuntimeError("the stack is not started")
        return self._api.url

    @property
    def emulator_url(self) -> str:
        return self.sandbox.emulator.url

    @property
    def aws_endpoint_url(self) -> str:
        if self.sandbox.aws_endpoint_url is None:
            raise RuntimeError("the stack is not started")
        return self.sandbox.aws_endpoint_url

    @property
    def region(self) -> str:
        return REGION

    @property
    def main_queue_url(self) -> str:
        return self.sandbox.queue_url(MAIN_QUEUE)

    @property
    def dead_letter_queue_url(self) -> str:
        return self.sandbox.queue_url(DEAD_LETTER_QUEUE)

    @property
    def write_key(self) -> str | None:
        """The API's write key (HTTP Basic user name), or None when the template's API takes none."""
        spec = self._api.spec if self._api is not None else None
        return self.sandbox.write_key if spec and spec.environment.get("WRITE_KEY_PARAMETER") else None

    def urls(self) -> dict[str, str]:
        return {
            "api": self.api_url,
            "heap_emulator": self.emulator_url,
            "aws_endpoint": self.aws_endpoint_url,
            "main_queue": self.main_queue_url,
            "dead_letter_queue": self.dead_letter_queue_url,
        }

    def aws_environment(self) -> dict[str, str]:
        """The variables a shell needs for ``redrive`` and the AWS CLI to reach the stack."""
        return self.sandbox.aws_environment()

    def redrive_command(self, *options: str) -> list[str]:
        """The ``heap-forwarder redrive`` command line for this stack's queues (run it under
        ``aws_environment()``)."""
        return [
            "heap-forwarder",
            "redrive",
            "--queue-url",
            self.main_queue_url,
            "--dlq-url",
            self.dead_letter_queue_url,
            "--region",
            self.region,
            *options,
        ]

    # ------------------------------------------------------------------ what is going on
    def traffic(self, since: int = 0) -> list[Traffic]:
        """What the API answered and what the consumer did, after ``since`` (a ``seq``)."""
        with self._lock:
            return [t for t in self._traffic if t.seq > since]

    def dead_letters(self) -> list[DeadLetterView]:
        return self.sandbox.dead_letters(DEAD_LETTER_QUEUE)

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        """(visible, in flight or backing off) messages of the main queue and of the DLQ."""
        sqs = self.sandbox.client("sqs")
        return {
            "main": queue_counts(sqs, self.main_queue_url),
            "dead_letter": queue_counts(sqs, self.dead_letter_queue_url),
        }

    @property
    def consumer_running(self) -> bool:
        return self._consumer is not None and self._consumer.poll() is None

    # ------------------------------------------------------------------ the functions
    def _start_api(self) -> None:
        spec = self.sandbox.function(API_FUNCTION)
        routes = api_routes(self.sandbox.template)
        self._api = LocalApiServer(
            spec, host=self.host, port=self.api_port, routes=routes, observe=self._api_exchange
        )
        self._send_api_logs()
        self._api.start()

    def _send_api_logs(self) -> None:
        """The API function's JSON logs (Powertools' logger, this process) into the log file, or
        nowhere, while the stack runs: the terminal is for the stack's own lines."""
        from heap_forwarder.edge.observability import logger

        handler = logger.registered_handler
        if isinstance(handler, logging.StreamHandler):
            target = self._log if self._log is not None else open(os.devnull, "w")  # noqa: SIM115
            self._api_log_stream = (handler, handler.stream, target)
            handler.setStream(target)

    def _restore_api_logs(self) -> None:
        if self._api_log_stream is not None:
            handler, previous, target = self._api_log_stream
            self._api_log_stream = None
            handler.setStream(previous)
            if target is not self._log:
                target.close()

    def _api_exchange(self, exchange: ApiExchange) -> None:
        try:
            answer = json.loads(exchange.body or b"{}")
        except ValueError:
            answer = None
        line = f"{exchange.method} {exchange.path} -> {exchange.status}"
        summary = exchange.summary
        self._record(
            "api",
            f"{line}: {summary}" if summary else line,
            {
                "method": exchange.method,
                "path": exchange.path,
                "status": exchange.status,
                "answer": answer,
                "milliseconds": round(exchange.milliseconds, 1),
                "metrics": dict(exchange.metrics),
            },
        )

    def _start_consumer(self) -> None:
        spec = self.sandbox.function(CONSUMER_FUNCTION)
        batch_size, window = self._event_source()
        environment = {
            **os.environ,
            **self.sandbox.aws_environment(),
            **spec.environment,
            # The same code as this process (a worktree's, say), whatever is installed.
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "PYTHONUNBUFFERED": "1",
        }
        command = [
            sys.executable,
            "-m",
            "heap_forwarder_tools.local.consumer_process",
            "--queue-url",
            self.main_queue_url,
            "--spec",
            spec_argument(spec),
            "--batch-size",
            str(batch_size),
            "--idle-seconds",
            f"{min(1.0, max(0.05, window / self.time_scale)):g}",
        ]
        self._consumer = subprocess.Popen(
            command,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
        )
        ready = threading.Event()
        self._reader = threading.Thread(
            target=self._read_reports, args=(self._consumer, ready), name="local-consumer", daemon=True
        )
        self._reader.start()
        if not ready.wait(_CONSUMER_START_SECONDS) or self._consumer.poll() is not None:
            raise RuntimeError(
                "the local consumer did not start"
                + (f"; see {self.log_path}" if self.log_path else "; pass a log_path to see why")
            )

    def _event_source(self) -> tuple[int, float]:
        """(BatchSize, MaximumBatchingWindowInSeconds) of the consumer's SQS event."""
        resource = self.sandbox.template["Resources"].get(CONSUMER_FUNCTION) or {}
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if isinstance(event, dict) and event.get("Type") == "SQS":
                properties = event.get("Properties") or {}
                return int(properties.get("BatchSize", 10)), float(
                    properties.get("MaximumBatchingWindowInSeconds", 0)
                )
        return 10, 0.0

    def _read_reports(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if report.get("ready"):
                ready.set()
                continue
            self._record("consumer", consumer_summary(report), report)
        ready.set()  # ended: whoever waits for the start finds it gone

    def _record(self, source: str, summary: str, detail: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            entry = Traffic(self._seq, time.time(), source, summary, detail)
            self._traffic.append(entry)
        if self.on_traffic is not None:
            self.on_traffic(entry)


LOG_FILE = Path(".local-logs.jsonl")


def serve_stack(
    host: str, port: int, template: Path, *, time_scale: float = 1.0, out: TextIO | None = None
) -> None:
    """``heap-forwarder serve``: the local stack until Ctrl+C, printing where everything is and
    then one line per API answer and per consumer invocation."""
    from heap_forwarder_tools.local.server import until_signalled, wait_until_set

    stream = out or sys.stdout  # held: an API invocation swaps sys.stdout while it runs

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    def show(entry: Traffic) -> None:
        say(f"{time.strftime('%H:%M:%S')} {entry.source:<8} {entry.summary}")

    with (
        until_signalled() as stop,
        LocalStack(
            template, host=host, api_port=port, time_scale=time_scale, log_path=LOG_FILE, on_traffic=show
        ) as stack,
    ):
        for line in describe(stack):
            say(line)
        wait_until_set(stop)


def describe(stack: LocalStack) -> list[str]:
    """What ``serve`` prints at start: every URL, how to reach the queues, what to try."""
    spec_environment = stack.sandbox.function(CONSUMER_FUNCTION).environment
    routes = ", ".join(sorted(p for _, p in api_routes(stack.sandbox.template)))
    lines = [
        "Local stack: the two functions with their template environments, moto, the Heap emulator."
        + (f" Time runs {stack.time_scale:g}x faster." if stack.time_scale != 1 else ""),
        f"  Ingest API:    {stack.api_url}  ({routes})",
    ]
    key = stack.write_key
    auth = ""
    if key:
        lines.append(f"  Write key:     {key}  (demo only: HTTP Basic user name, empty password)")
        auth = f"-u {key}: "
    elif stack.sandbox.function(API_FUNCTION).environment.get("API_AUTH_MODE") == "IAM":
        lines.append("  Write key:     none (ApiAuthMode=IAM: API Gateway checks SigV4; not done locally)")
    else:
        lines.append("  Write key:     none: every request is answered 503 (WriteKey mode without a key)")
    base = float(spec_environment.get("BACKOFF_BASE_SECONDS", 30))
    cap = float(spec_environment.get("BACKOFF_CAP_SECONDS", 1800))
    lines += [
        f"  Heap emulator: {stack.emulator_url}  (what Heap received: GET /_emulator/state;"
        " faults: POST /_emulator/faults, see docs/emulator.md)",
        f"  AWS (moto):    {stack.aws_endpoint_url}  (SQS and SSM; region {stack.region}, any credentials)",
        f"  Main queue:    {stack.main_queue_url}",
        f"  Dead letters:  {stack.dead_letter_queue_url}",
        f"  Consumer:      polls the main queue; a failing record backs off {base:g} s doubling to"
        f" {cap:g} s, and goes to the DLQ on receive {spec_environment.get('MAX_RECEIVE_COUNT', '19')}",
        f"  Function logs: {stack.log_path}",
        "",
        "From another shell (redrive and the AWS CLI reach the local queues this way):",
        "  export "
        + " ".join(f"{k}={v}" for k, v in sorted(stack.aws_environment().items()) if k in _SHELL_AWS),
        "  " + " ".join(stack.redrive_command("--dry-run")),
        f"  aws sqs get-queue-attributes --queue-url {stack.dead_letter_queue_url} --attribute-names All",
        f"  curl -s {auth}-H 'Content-Type: application/json' {stack.api_url}/v1/track"
        ' -d \'{"event":"Order Completed","anonymousId":"a1","properties":{"total":9.5}}\'',
        f'  curl -s -X POST {stack.emulator_url}/_emulator/faults -d \'{{"outage": {{"status": 503}}}}\''
        "   # Heap down; '{\"outage\": false}' brings it back",
        "An outage rehearsal, step by step: docs/local.md. Press Ctrl+C to stop.",
        "",
    ]
    return lines


# What a shell needs to reach moto's server (the rest of the sandbox's AWS variables are aliases).
_SHELL_AWS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
