"""The README's first command: the real handlers fed with ``events/``, against the local Heap
emulator and moto, then, file by file, what was delivered, left for retry or dead-lettered and
why, and what Heap received (with why it took that many requests and dropped duplicates)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from heap_forwarder_tools.local.invoke import invoke, read_event
from heap_forwarder_tools.local.metrics import split_metrics
from heap_forwarder_tools.local.sandbox import DeadLetterView, Sandbox
from heap_forwarder_tools.local.server import answer_summary

FUNCTIONS = {"ConsumerFunction": ["sqs", "bad"], "ApiFunction": ["api"]}


@dataclass
class Invocation:
    """One file handed to its function: the response, the function's own counts (its metrics),
    and the dead letters it wrote."""

    function: str
    path: str
    event: dict[str, Any]
    response: Any
    metrics: dict[str, float]
    letters: list[DeadLetterView] = field(default_factory=list)


def _event_files(events_dir: Path, folder: str) -> list[Path]:
    return sorted((events_dir / folder).glob("*.json"))


def run_demo(
    root: Path = Path("."), out: TextIO = sys.stdout, log_path: Path | None = None
) -> dict[str, Any]:
    """Replay events/ through the functions; print the summary; return the figures (for tests)."""
    events_dir = root / "events"
    log_path = log_path or root / ".demo-logs.jsonl"
    invocations: list[Invocation] = []
    with Sandbox(template_path=root / "template.yaml") as sandbox, log_path.open("w") as log:
        from heap_forwarder.edge.observability import logger

        handler = logger.registered_handler
        # The functions' JSON logs go to the file, the summary to you; the stream is given back.
        previous = handler.setStream(log) if isinstance(handler, logging.StreamHandler) else None
        try:
            _replay(sandbox, events_dir, root, log, invocations)
        finally:
            if previous is not None and isinstance(handler, logging.StreamHandler):
                handler.setStream(previous)
        state = sandbox.emulator.state()
        letters = sandbox.dead_letters()
    _summarise(invocations, state, log_path, out)
    return {
        "invocations": [(i.function, i.path, i.response) for i in invocations],
        "tracked": state.get("tracked_events", []),
        "letters": letters,
        "stats": state.get("stats", {}),
    }


def _replay(
    sandbox: Sandbox, events_dir: Path, root: Path, log: TextIO, invocations: list[Invocation]
) -> None:
    seen: set[str] = set()
    for logical_id, folders in FUNCTIONS.items():
        if logical_id not in sandbox.template["Resources"]:
            continue
        spec = sandbox.function(logical_id)
        paths = [path for folder in folders for path in _event_files(events_dir, folder)]
        for n, path in enumerate(paths):
            event = read_event(path)
            with contextlib.redirect_stdout(io.StringIO()) as captured:  # EMF metrics
                # Cold for the first event, warm after: one process per function, as in Lambda.
                response = invoke(spec, event, cold=n == 0)
            log.write(captured.getvalue())  # as in CloudWatch Logs, metrics included
            metrics, _ = split_metrics(captured.getvalue())
            # The letters this file caused: the DLQ's messages not seen after the files before.
            letters = [letter for letter in sandbox.dead_letters() if letter.message_id not in seen]
            seen.update(letter.message_id for letter in letters)
            invocations.append(
                Invocation(logical_id, str(path.relative_to(root)), event, response, metrics, letters)
            )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _counts(delivered: int, parked: int, dead_lettered: int) -> str:
    return f"{delivered} delivered, {parked} parked, {dead_lettered} dead-lettered"


def _consumer_line(invocation: Invocation) -> str:
    """Parked, for the consumer: left in the queue for a retry (listed in batchItemFailures)."""
    metrics = invocation.metrics
    records = len(invocation.event.get("Records") or [])
    received = int(metrics.get("EventsReceived", 0))
    counts = _counts(
        int(metrics.get("EventsDelivered", 0)), int(metrics.get("EventsRetried", 0)), len(invocation.letters)
    )
    return f"{_plural(records, 'record')}, {_plural(received, 'event')}: {counts}"


def _api_line(invocation: Invocation) -> str:
    """Parked, for the API: sent to the main queue for the consumer (answered 202)."""
    response = invocation.response if isinstance(invocation.response, dict) else {}
    status = int(response.get("statusCode", 0))
    body = str(response.get("body") or "")
    http = invocation.event.get("requestContext", {}).get("http", {})
    line = f"{http.get('method', 'POST')} {invocation.event.get('rawPath', '')} -> {status}"
    try:
        answer = json.loads(body or "{}")
    except ValueError:
        answer = {}
    if status in (200, 202) and isinstance(answer, dict) and "delivered" in answer:
        counts = _counts(
            int(answer["delivered"]), int(answer.get("parked", 0)), len(answer.get("rejected") or [])
        )
        return f"{line}: {counts}"
    return f"{line}, refused to the caller (nothing sent): {answer_summary(status, body.encode())}"


def _letter_line(letter: DeadLetterView) -> str:
    """Which event a dead letter holds (its place in the record, what it is) and why."""
    attributes = letter.attributes
    record, _, position = attributes.get("LetterId", "").rpartition(":")
    source = "request" if attributes.get("EntryPoint") == "api" else "record"
    where = f"{source} {record[:8]}..., " + (
        "its whole body" if position == "record" else f"event {position}"
    )
    try:
        event = json.loads(letter.body)
    except ValueError:
        event = None
    if isinstance(event, dict) and position != "record":
        name = event.get("event") if event.get("type") == "track" else None
        what = str(event.get("type", "?")) + (f" {name!r}" if name else "")
        where += f" ({what}, messageId {str(event.get('messageId', '?'))[:8]}...)"
    reason = attributes.get("Reason", "")
    return f"dead letter: {where}: [{attributes.get('ErrorClass', '?')}] {reason[:150]}"


def _summarise(invocations: list[Invocation], state: dict[str, Any], log_path: Path, out: TextIO) -> None:
    def say(text: str = "") -> None:
        print(text, file=out)

    def paragraph(text: str) -> None:
        say(textwrap.fill(text, width=100, initial_indent="  ", subsequent_indent="  "))

    say("Heap forwarder demo: the real Lambda handlers, a local Heap emulator, moto for SQS and SSM.")
    say("Each file is one invocation of its function, as if Lambda had been handed it alone. Parked:")
    say("left in the queue for a retry (SQS), or sent to the main queue for the consumer (API, 202).")
    width = max((len(i.path) for i in invocations), default=0)
    for function, title in (
        ("ConsumerFunction", "SQS events (ConsumerFunction): what became of each file's events"),
        ("ApiFunction", "API requests (ApiFunction): the answer and its reason"),
    ):
        mine = [i for i in invocations if i.function == function]
        if not mine:
            continue
        say()
        say(title)
        for invocation in mine:
            line = _consumer_line(invocation) if function == "ConsumerFunction" else _api_line(invocation)
            say(f"  {invocation.path:<{width}}  {line}")
            for letter in invocation.letters:
                say(f"  {'':<{width}}    {_letter_line(letter)}")

    tracked = state.get("tracked_events", [])
    stats = state.get("stats", {})
    requests = stats.get("requests", {})
    sending = sum(1 for i in invocations if i.metrics.get("HeapRequests"))
    duplicates = int(stats.get("duplicates", 0))
    say()
    say(
        f"What Heap received: {_plural(len(tracked), 'track event')} stored, from"
        f" {_plural(stats.get('requests_total', 0), 'HTTP request')}:"
    )
    for path, outcomes in sorted(requests.items()):
        total = sum(outcomes.values())
        say(f"  {total:>3} x {path}  ({', '.join(f'{n} answered {s}' for s, n in sorted(outcomes.items()))})")
    paragraph(
        f"Why {stats.get('requests_total', 0)} requests: each file is its own invocation, so its own"
        f" requests ({sending} of the {len(invocations)} files reached Heap). Within one invocation"
        " events share bulk requests (up to 1,000 track events in one), and once deployed one"
        " invocation takes a batch of up to 1,000 queue records. identify has no bulk form in Heap's"
        " API: each identify event is one /api/v1/identify request, plus its user properties."
    )
    for name, n in sorted(Counter(e.get("event") for e in tracked).items()):
        say(f"  {n:>3} x {name}")
    users = state.get("user_properties", {})
    accounts = state.get("account_properties", {})
    say(
        f"  user properties for {len(users)} identity(ies);"
        f" account properties for {len(accounts)} account(s);"
        f" {len(state.get('identifies', []))} identify link(s)"
    )
    say(f"  duplicates dropped by idempotency key: {duplicates}")
    paragraph(
        f"Why {duplicates} duplicates: {len(tracked) + duplicates} track events were sent, {len(tracked)}"
        " distinct. The files under events/sqs, events/bad and events/api are made from the same"
        " samples (events/raw) and carry the same messageIds; Heap keeps one track event per"
        " idempotency_key (the messageId), as it does for a redelivery or a redrive. Nothing was"
        " dropped silently: every event above was delivered, parked, dead-lettered with its reason,"
        " or refused to its caller."
    )
    if tracked:
        sample = tracked[0]
        say("  e.g. " + json.dumps({k: sample[k] for k in sample if k != "properties"}, ensure_ascii=False))
    letters = sum(len(i.letters) for i in invocations)
    say()
    say(
        f"Dead-letter queue: {_plural(letters, 'message')}, each listed above under its file, with its reason"
    )
    say(f"Function logs (JSON, Powertools): {log_path}")
