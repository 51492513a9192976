"""Event and playbook builders of the playbook tests (``tests/unit/test_playbook.py`` and the
SSM override's, ``tests/functional/test_loader_ssm.py``)."""

from __future__ import annotations

from typing import Any

from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.playbook import Playbook
from heap_forwarder.pipeline import Pipeline


def custom_event(*rows: dict[str, Any], endpoint: str = "track") -> dict[str, Any]:
    return {"endpoint": endpoint, "rows": list(rows)}


def prepare(playbook: Playbook, *events: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    pipeline = Pipeline(Mapper(playbook, {"MY_APP_ID": "test-app"}), deliverer=None)  # type: ignore[arg-type]
    prepared = pipeline.prepare(list(events))
    assert all(d is None for d in prepared.decided), prepared.problems
    return [(str(i.endpoint), i.body) for i in prepared.items]


def track(event: str = "Video Played", **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "messageId": "m1",
        "anonymousId": "anon-1",
        "timestamp": "2024-06-10T14:00:00Z",
        "properties": {"video_id": "v1"},
        **fields,
    }
