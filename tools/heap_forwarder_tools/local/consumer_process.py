"""The SQS consumer function in its own process, behind the local event source mapping.

Lambda runs each function in its own environment; so does the local stack: the consumer gets
the template's environment for it (its backoff, retry budget, receive limit), the API keeps its
own in the parent. This process polls the main queue on moto's server
(``local.poller.EventSourceMapping``: receive, invoke, delete what succeeded, so the queue's own
redrive policy applies), and reports each invocation as one JSON line on its stdout. Anything
the function prints (its JSON logs) goes to stderr; its metrics are read into the report.

Run by :class:`heap_forwarder_tools.local.stack.LocalStack`, not by hand:
``python -m heap_forwarder_tools.local.consumer_process --queue-url URL --spec JSON``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from types import FrameType
from typing import Any, TextIO

from heap_forwarder_tools.local.invoke import LocalContext, load_handler
from heap_forwarder_tools.local.metrics import split_metrics
from heap_forwarder_tools.local.poller import EventSourceMapping
from heap_forwarder_tools.local.template import FunctionSpec


def invocation_report(
    event: dict[str, Any], response: Any, error: str | None, metrics: dict[str, float], seconds: float
) -> dict[str, Any]:
    """What one invocation did: its records (with their receive counts), the ones it handed back
    for retry, the function's own counts, and the error when it crashed."""
    records = event.get("Records") or []
    failed = [] if error else [f.get("itemIdentifier") for f in (response or {}).get("batchItemFailures", [])]
    return {
        "records": [
            {
                "messageId": r.get("messageId"),
                "receiveCount": int((r.get("attributes") or {}).get("ApproximateReceiveCount", 1)),
            }
            for r in records
        ],
        "failed": [r.get("messageId") for r in records] if error else failed,
        "metrics": metrics,
        "error": error,
        "seconds": round(seconds, 3),
    }


class _Function:
    """The consumer's handler, warm between invocations, each one reported."""

    def __init__(self, spec: FunctionSpec, report: TextIO) -> None:
        self.spec = spec
        self.report = report
        self.handler, module = load_handler(spec)
        reset = getattr(module, "reset", None)
        if callable(reset):
            reset()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        captured = io.StringIO()
        response: Any = None
        error: str | None = None
        try:
            with contextlib.redirect_stdout(captured):
                response = self.handler(
                    event, LocalContext(self.spec.logical_id, self.spec.memory_mb, self.spec.timeout)
                )
        except Exception as crash:
            error = f"{type(crash).__name__}: {crash}"
            traceback.print_exc(file=sys.stderr)
        finally:
            metrics, others = split_metrics(captured.getvalue())
            for line in others:
                print(line, file=sys.stderr)
            report = invocation_report(event, response, error, metrics, time.monotonic() - started)
            self.report.write(json.dumps(report) + "\n")
            self.report.flush()
        if error is not None:
            raise RuntimeError(error)  # the event source mapping fails the whole batch
        return dict(response or {})


def run(queue_url: str, spec: FunctionSpec, batch_size: int, idle_seconds: float, report: TextIO) -> None:
    """Poll until SIGTERM/SIGINT: a batch as soon as messages are visible, else wait a little."""
    import boto3

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    function = _Function(spec, report)
    mapping = EventSourceMapping(boto3.client("sqs"), queue_url, function, batch_size=batch_size)
    report.write(json.dumps({"ready": True}) + "\n")
    report.flush()
    while not stop.is_set():
        if not mapping.poll_once().received:
            stop.wait(idle_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--spec", required=True, help="the function (FunctionSpec as JSON)")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    spec = FunctionSpec(**json.loads(args.spec))
    # Reports keep the real stdout; everything else printed goes to stderr (the function's logs).
    report = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    os.environ.update(spec.environment)
    run(args.queue_url, spec, args.batch_size, args.idle_seconds, report)
    return 0


def spec_argument(spec: FunctionSpec) -> str:
    return json.dumps(asdict(spec))


if __name__ == "__main__":
    sys.exit(main())
