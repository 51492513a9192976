"""Cold start: importing the handler module vs importing its bare dependencies.

    python bench/cold_start.py [--runs N]

Each measurement is a fresh interpreter, with the environment variables Lambda's runtime sets,
that times its own import statement (interpreter start-up is the same for both sides and left
out). Both sides import compiled bytecode: the dependencies' from pip, ours compiled first, as
the deployed functions ship it (handler/Makefile). The two sides alternate, N runs each; the
median counts. The baseline imports what the handler needs from Powertools (Logger, Metrics,
Tracer, the SSM parameters utility, the typing helpers), pydantic (``BaseModel``,
``TypeAdapter``: ``import pydantic`` alone loads next to nothing), boto3/botocore and urllib3,
and nothing of ours. A second pair measures the same with tracing on (the template's default
``TracingMode: Active``): Powertools' Tracer then needs the X-Ray SDK, so the baseline imports
it too.

``-X importtime`` of both sides then says which modules the handler adds to the baseline
(self time summed by top-level package) and what each of our modules costs: where a lazy
import would pay.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import _common as c

HANDLER = "import heap_forwarder.entry.sqs"
BASELINE = (
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


def time_import(statement: str, env: dict[str, str]) -> float:
    """Seconds a fresh interpreter spends on ``statement``."""
    completed = subprocess.run(
        [c.PYTHON, "-c", _TIMER.format(statement=statement)],
        cwd=c.ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(completed.stdout.strip().splitlines()[-1])


def compare(handler: str, baseline: str, runs: int, env: dict[str, str]) -> dict[str, Any]:
    mine: list[float] = []
    theirs: list[float] = []
    time_import(handler, env)  # the first run may compile or fault pages in: not counted
    time_import(baseline, env)
    for _ in range(runs):
        mine.append(time_import(handler, env))
        theirs.append(time_import(baseline, env))
    return {
        "handler_s": statistics.median(mine),
        "baseline_s": statistics.median(theirs),
        "handler_min_s": min(mine),
        "baseline_min_s": min(theirs),
        "runs": runs,
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


def breakdown(env: dict[str, str]) -> dict[str, Any]:
    handler = import_times(HANDLER, env)
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


def run(runs: int) -> dict[str, Any]:
    compile_package()
    off, on = _env(tracing=False), _env(tracing=True)
    return {
        "tracing_off": compare(HANDLER, BASELINE, runs, off),
        "tracing_on": compare(HANDLER, BASELINE + XRAY, runs, on),
        "importtime": breakdown(off),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
