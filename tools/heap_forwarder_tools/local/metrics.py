"""The functions' metrics, read back from what Powertools prints.

In Lambda, Powertools prints each invocation's metrics to stdout as one CloudWatch embedded
metric format (EMF) JSON line, and CloudWatch turns it into metrics. Locally nothing reads that
line, so the local tools capture the invocation's output, take the metrics out of it (a local
figure of what the function delivered, retried and dead-lettered), and pass the rest on.
"""

from __future__ import annotations

import json
from typing import Any


def split_metrics(output: str) -> tuple[dict[str, float], list[str]]:
    """(metric name -> sum of its values, the other lines) of an invocation's captured stdout."""
    totals: dict[str, float] = {}
    others: list[str] = []
    for line in output.splitlines():
        document = _emf(line)
        if document is None:
            if line.strip():
                others.append(line)
            continue
        for directive in document["_aws"].get("CloudWatchMetrics") or []:
            for metric in directive.get("Metrics") or []:
                name = metric.get("Name")
                values = document.get(name)
                if isinstance(name, str):
                    value = sum(values) if isinstance(values, list) else float(values or 0)
                    totals[name] = totals.get(name, 0.0) + value
    return totals, others


def metric_lines(output: str) -> list[str]:
    """The EMF lines of a captured stdout, as printed."""
    return [line for line in output.splitlines() if _emf(line) is not None]


def _emf(line: str) -> dict[str, Any] | None:
    if not line.startswith('{"_aws"'):
        return None
    try:
        document = json.loads(line)
    except ValueError:
        return None
    aws = document.get("_aws") if isinstance(document, dict) else None
    return document if isinstance(aws, dict) else None
