"""The README's first command: the real handlers fed with ``events/``, against the local Heap
emulator and moto, then a readable summary of what Heap received and what went to the DLQ."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from heap_forwarder_tools.local.invoke import invoke, read_event
from heap_forwarder_tools.local.sandbox import Sandbox


def _event_files(events_dir: Path, folder: str) -> list[Path]:
    return sorted((events_dir / folder).glob("*.json"))


def run_demo(
    root: Path = Path("."), out: TextIO = sys.stdout, log_path: Path | None = None
) -> dict[str, Any]:
    """Replay events/ through the functions; print the summary; return the figures (for tests)."""
    events_dir = root / "events"
    log_path = log_path or root / ".demo-logs.jsonl"
    invocations: list[tuple[str, str, Any]] = []
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
    return _summarise(invocations, state, letters, log_path, out)


def _replay(
    sandbox: Sandbox, events_dir: Path, root: Path, log: TextIO, invocations: list[tuple[str, str, Any]]
) -> None:
    functions = {"ConsumerFunction": ["sqs", "bad"], "ApiFunction": ["api"]}
    for logical_id, folders in functions.items():
        if logical_id not in sandbox.template["Resources"]:
            continue
        spec = sandbox.function(logical_id)
        paths = [path for folder in folders for path in _event_files(events_dir, folder)]
        for n, path in enumerate(paths):
            with contextlib.redirect_stdout(io.StringIO()) as captured:  # EMF metrics
                # Cold for the first event, warm after: one process per function, as in Lambda.
                response = invoke(spec, read_event(path), cold=n == 0)
            log.write(captured.getvalue())
            invocations.append((logical_id, str(path.relative_to(root)), response))


def _short(response: Any) -> str:
    if isinstance(response, dict) and "batchItemFailures" in response:
        failures = response["batchItemFailures"]
        return "all records settled" if not failures else f"{len(failures)} record(s) left for retry"
    if isinstance(response, dict) and "statusCode" in response:
        return f"HTTP {response['statusCode']}"
    return json.dumps(response)[:60]


def _summarise(
    invocations: list[tuple[str, str, Any]],
    state: dict[str, Any],
    letters: list[Any],
    log_path: Path,
    out: TextIO,
) -> dict[str, Any]:
    def say(text: str = "") -> None:
        print(text, file=out)

    say("Heap forwarder demo: the real Lambda handlers, a local Heap emulator, moto for SQS and SSM.")
    say()
    say(f"Invocations ({len(invocations)}):")
    for logical_id, path, response in invocations:
        say(f"  {logical_id:<17} {path:<45} -> {_short(response)}")
    tracked = state.get("tracked_events", [])
    stats = state.get("stats", {})
    say()
    say(
        f"What Heap received: {len(tracked)} track event(s)"
        f" in {stats.get('requests_total', 0)} HTTP request(s)"
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
    say(f"  duplicates dropped by idempotency key: {stats.get('duplicates', 0)}")
    if tracked:
        sample = tracked[0]
        say("  e.g. " + json.dumps({k: sample[k] for k in sample if k != "properties"}, ensure_ascii=False))
    say()
    say(f"Dead-letter queue: {len(letters)} message(s), each with its reason")
    for letter in letters:
        attributes = letter.attributes
        say(f"  [{attributes.get('ErrorClass', '?')}] {attributes.get('Reason', '')[:150]}")
    say()
    say(f"Function logs (JSON, Powertools): {log_path}")
    return {"invocations": invocations, "tracked": tracked, "letters": letters, "stats": stats}
