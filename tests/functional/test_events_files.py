"""The sample events under events/ are valid, well-shaped and in sync with events/make_events.py."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
RAW = EVENTS / "raw"
MAKE_EVENTS = EVENTS / "make_events.py"

EVENT_TYPES = {"track", "page", "screen", "identify", "group", "alias"}
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}
ATTRIBUTE_KEYS = {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"}

JSON_FILES = sorted(EVENTS.rglob("*.json"))
RAW_FILES = sorted(RAW.glob("*.json"))
SQS_FILES = sorted([*(EVENTS / "sqs").glob("*.json"), *(EVENTS / "bad").glob("*.json")])


def _id(path: Path) -> str:
    return str(path.relative_to(EVENTS))


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_sample_events() -> None:
    assert len(RAW_FILES) >= 15
    assert len(SQS_FILES) >= 20


@pytest.mark.parametrize("path", JSON_FILES, ids=_id)
def test_every_events_file_is_valid_json(path: Path) -> None:
    _load(path)


def test_make_events_check_passes() -> None:
    proc = subprocess.run(
        [sys.executable, str(MAKE_EVENTS), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (
        "events/ is out of sync with events/make_events.py; run `python events/make_events.py`\n"
        + proc.stdout
        + proc.stderr
    )


@pytest.mark.parametrize("path", RAW_FILES, ids=_id)
def test_raw_event_shape(path: Path) -> None:
    event = _load(path)
    assert isinstance(event, dict)
    assert event.get("type") in EVENT_TYPES
    assert UUID_RE.match(event.get("messageId", ""))
    assert UUID_RE.match(event.get("anonymousId", ""))
    assert isinstance(event.get("context"), dict)
    assert event.get("integrations") == {"All": True}
    if event["type"] == "track":
        assert isinstance(event.get("event"), str)
        assert event["event"]
    if event["type"] in {"identify", "alias"}:
        assert event.get("userId")
    # Pretty-printed with a 2-space indent, as written by json.dumps.
    assert path.read_text(encoding="utf-8") == json.dumps(event, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("path", SQS_FILES, ids=_id)
def test_sqs_event_shape(path: Path) -> None:
    doc = _load(path)
    assert isinstance(doc, dict)
    assert set(doc) == {"Records"}
    records = doc["Records"]
    assert isinstance(records, list)
    assert records
    for record in records:
        assert set(record) == RECORD_KEYS
        assert UUID_RE.match(record["messageId"])
        assert isinstance(record["receiptHandle"], str)
        assert isinstance(record["body"], str)
        assert set(record["attributes"]) == ATTRIBUTE_KEYS
        assert all(isinstance(v, str) for v in record["attributes"].values())
        assert record["attributes"]["ApproximateReceiveCount"] == "1"
        assert record["attributes"]["SentTimestamp"].isdigit()
        assert record["messageAttributes"] == {}
        assert record["eventSource"] == "aws:sqs"
        assert record["eventSourceARN"].startswith("arn:aws:sqs:us-east-1:")
        assert record["awsRegion"] == "us-east-1"
        assert record["md5OfBody"] == hashlib.md5(record["body"].encode("utf-8")).hexdigest()
    assert len({r["messageId"] for r in records}) == len(records)


@pytest.mark.parametrize("path", sorted((EVENTS / "sqs").glob("*.json")), ids=_id)
def test_good_sqs_bodies_are_json_objects(path: Path) -> None:
    for record in _load(path)["Records"]:
        body = json.loads(record["body"])
        assert isinstance(body, dict)
        events = body.get("batch", [body])
        assert all(e.get("type") in EVENT_TYPES for e in events)


def test_single_event_sqs_files_carry_their_raw_event() -> None:
    for raw_path in RAW_FILES:
        sqs_path = EVENTS / "sqs" / raw_path.name
        if raw_path.stem in {"alias", "group"}:
            assert not sqs_path.exists()
            continue
        (record,) = _load(sqs_path)["Records"]
        assert json.loads(record["body"]) == _load(raw_path)


def test_bad_malformed_json_body_does_not_parse() -> None:
    (record,) = _load(EVENTS / "bad" / "malformed_json.json")["Records"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(record["body"])
