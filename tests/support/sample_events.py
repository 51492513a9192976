"""The sample events under events/raw, loaded afresh for tests (importable from every test
folder: pyproject's pytest `pythonpath` puts tests/support on the path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RAW_EVENTS = ROOT / "events" / "raw"


def raw(name: str, **overrides: Any) -> dict[str, Any]:
    """``events/raw/<name>.json`` afresh, with top-level overrides (None removes the key)."""
    event: dict[str, Any] = json.loads((RAW_EVENTS / f"{name}.json").read_text("utf-8"))
    for key, value in overrides.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event
