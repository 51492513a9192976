"""Cold start: importing the handler module vs importing its dependencies' top-level packages.

    python bench/cold_start.py [--runs N]

Each measurement is a fresh interpreter, with the environment variables Lambda's runtime sets,
that times its own import statement (interpreter start-up is the same for both sides and left
out). Both sides import compiled bytecode: the dependencies' from pip, ours compiled first, as
the deployed functions ship it (handler/Makefile), and nothing is written (Lambda's /var/task
is read-only). The sides alternate, N runs each; the median counts.

The baseline is ``import aws_lambda_powertools, boto3, urllib3, pydantic``: the four top-level
packages, and nothing the handler chooses to import from them (``import pydantic`` alone loads
next to nothing; a ``BaseModel`` loads pydantic's core). The old baseline, printed beside it,
imported the submodules the handler uses (Powertools' Logger, Metrics, Tracer, parameters and
typing helpers, pydantic's ``BaseModel`` and ``TypeAdapter``, botocore's exceptions): it counted
part of what the handler chooses to import as the dependencies' share. A second pair measures
tracing on (the template's default ``TracingMode: Active``): Powertools' Tracer then needs the
X-Ray SDK, so the baseline imports it too.

Import alone can be made to look small by moving work into the first invocation. So, with the
Heap emulator and moto running (``run(..., env=)``), a third figure times, in fresh processes,
the import and then the first invocation of 10 records (SSM read, boto3 clients, playbook,
the Heap requests): what a cold start costs a function.

``-X importtime`` of the handler with what its first invocation imports (``preload``), against
the baseline, then says which modules the handler adds (self time summed by top-level package)
and what each of our modules costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as c

HANDLER = "import heap_forwarder.entry.sqs"
BASELINE = "import aws_lambda_powertools, boto3, urllib3, pydantic"
# The baseline until December 2026: the submodules the handler uses (see the docstring).
OLD_BASELINE = (
    "from aws_lambda_powertools import Logger, Metrics, Tracer\n"
    "from aws_lambda_powertools.metrics import MetricUnit\n"
    "from aws_lambda_powertools.utilities.parameters import SSMProvider\n"
    "from aws_lambda_powertools.utilities.typing import LambdaContext\n"
    "from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError\n"
    "import pydantic_core, boto3, botocore.exceptions, urllib3"
)
XRAY = "\nimport aws_xray_sdk.core"

_TIMER = "import time\n_t = time.perf_counter()\n{statement}\nprint(time.perf_counter() - _t)\n"


def _env(tracing: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_", "LAMBDA_"))}
    env.update(c.DUMMY_AWS)
    env.update(c.LAMBDA_ENV)  # inside Lambda: the X-Ray SDK, for one, imports less there
    env["POWERTOOLS_TRACE_DISABLED"] = "false" if tracing else "true"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the .pyc files exist (compile_package): never time writing them
    return env


def _last_line(code: str, args: list[str], env: dict[str, str]) -> str:
    """What a fresh interpreter running ``code`` (with ``args``) prints last."""
    completed = subprocess.run(
        [c.PYTHON, "-c", code, *args],
        cwd=c.ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return completed.stdout.strip().splitlines()[-1]


def time_import(statement: str, env: dict[str, str]) -> float:
    """Seconds a fresh interpreter spends on ``statement``."""
    return float(_last_line(_TIMER.format(statement=statement), [], env))


def compare(handler: str, baselines: dict[str, str], runs: int, env: dict[str, str]) -> dict[str, Any]:
    """The handler's import and each baseline's, alternating, ``runs`` fresh processes each."""
    mine: list[float] = []
    theirs: dict[str, list[float]] = {name: [] for name in baselines}
    time_import(handler, env)  # the first run may compile or fault pages in: not counted
    for statement in baselines.values():
        time_import(statement, env)
    for _ in range(runs):
        mine.append(time_import(handler, env))
        for name, statement in baselines.items():
            theirs[name].append(time_import(statement, env))
    result: dict[str, Any] = {
        "handler_s": statistics.median(mine),
        "handler_min_s": min(mine),
        "runs": runs,
    }
    for name, times in theirs.items():
        prefix = "baseline" if name == "baseline" else name
        result[f"{prefix}_s"] = statistics.median(times)
        result[f"{prefix}_min_s"] = min(times)
    return result


# Import, then one invocation of 10 records, in one fresh process: what a cold start costs.
# The event is read (and json imported) before the clock starts; both times are printed.
_FIRST_INVOCATION = """
import json, sys, time
event = json.loads(open(sys.argv[1], encoding="utf-8").read())
class Context:
    function_name = "heap-forwarder-bench-consumer"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:heap-forwarder-bench-consumer"
    memory_limit_in_mb = 256
    aws_request_id = "bench-cold"
    log_group_name = "/aws/lambda/heap-forwarder-bench-consumer"
    log_stream_name = "bench"
    def get_remaining_time_in_millis(self):
        return 900_000
started, started_cpu = time.perf_counter(), time.process_time()
from heap_forwarder.entry import sqs as entry
imported, imported_cpu = time.perf_counter(), time.process_time()
response = entry.lambda_handler(event, Context())
done, done_cpu = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": imported - started, "invocation_s": done - imported,
                  "import_cpu_s": imported_cpu - started_cpu, "invocation_cpu_s": done_cpu - imported_cpu,
                  "failed": len(response["batchItemFailures"])}))
"""


def first_invocation(runs: int, env: dict[str, str]) -> dict[str, Any]:
    """Median over ``runs`` fresh processes of import + the first 10-record invocation."""
    event = c.sqs_event([c.compact(e) for e in c.build_events(10, tag="cold")], tag="cold")
    totals: list[float] = []
    imports: list[float] = []
    invocations: list[float] = []
    cpu: list[float] = []
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "event.json"
        path.write_text(json.dumps(event), "utf-8")
        for n in range(runs + 1):
            figures = json.loads(_last_line(_FIRST_INVOCATION, [str(path)], env))
            failed += figures["failed"]
            if n == 0:
                continue  # the first run may fault pages in: not counted
            imports.append(figures["import_s"])
            invocations.append(figures["invocation_s"])
            totals.append(figures["import_s"] + figures["invocation_s"])
            cpu.append(figures["import_cpu_s"] + figures["invocation_cpu_s"])
    return {
        "total_s": statistics.median(totals),
        "total_cpu_s": statistics.median(cpu),
        "import_s": statistics.median(imports),
        "invocation_s": statistics.median(invocations),
        "runs": runs,
        "failed_records": failed,
        "delivered_all": failed == 0,
    }


def import_times(statement: str, env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """module -> (self µs, cumulative µs) from ``-X importtime``."""
    completed = subprocess.run(
        [c.PYTHON, "-X", "importtime", "-c", statement],
        cwd=c.ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    modules: dict[str, tuple[int, int]] = {}
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        modules[name.strip()] = (int(own), int(cumulative))
    return modules


# The module and what its first invocation imports (entry.sqs.preload: the consumer, the
# pipeline, boto3), for the breakdown: what the handler adds to the four packages in all.
HANDLER_AND_FIRST_USE = HANDLER + "\nheap_forwarder.entry.sqs.preload()"


def breakdown(env: dict[str, str]) -> dict[str, Any]:
    handler = import_times(HANDLER_AND_FIRST_USE, env)
    baseline = import_times(BASELINE, env)
    extra: dict[str, int] = defaultdict(int)
    for name, (own, _) in handler.items():
        if name not in baseline and not name.startswith("heap_forwarder"):
            extra[name.split(".")[0]] += own
    ours = {
        name: {"self_ms": own / 1000, "cumulative_ms": cum / 1000} for name, (own, cum) in handler.items()
    }
    ours = {k: v for k, v in ours.items() if k.startswith("heap_forwarder")}
    return {
        "extra_packages_ms": dict(sorted(((k, v / 1000) for k, v in extra.items()), key=lambda kv: -kv[1])),
        "our_modules": dict(sorted(ours.items(), key=lambda kv: -kv[1]["self_ms"])),
    }


def compile_package() -> None:
    """Bytecode for our package, as the dependencies have theirs (pip compiles at install) and
    as the deployed functions ship theirs (handler/Makefile): a machine that sets
    PYTHONDONTWRITEBYTECODE would otherwise time compiling our modules from source."""
    subprocess.run(
        [c.PYTHON, "-m", "compileall", "-q", str(c.ROOT / "handler" / "heap_forwarder")],
        check=True,
        capture_output=True,
        timeout=120,
    )


def run(runs: int, services_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The import figures; with ``services_env`` (the emulator's and moto's), import + first
    invocation as well."""
    compile_package()
    off, on = _env(tracing=False), _env(tracing=True)
    result = {
        "tracing_off": compare(HANDLER, {"baseline": BASELINE, "old_baseline": OLD_BASELINE}, runs, off),
        "tracing_on": compare(HANDLER, {"baseline": BASELINE + XRAY}, runs, on),
        "importtime": breakdown(off),
    }
    if services_env is not None:
        result["first_invocation"] = first_invocation(runs, {**off, **services_env})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--first-invocation", action="store_true", help="also time import + a first invocation"
    )
    args = parser.parse_args(argv)
    if args.first_invocation:
        with c.services() as running:
            print(json.dumps(run(args.runs, running.env), indent=2))
    else:
        print(json.dumps(run(args.runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
