"""`heap-forwarder preview`: the exact Heap requests sample events produce, and the rejected ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heap_forwarder_tools import cli

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
RAW_FILES = sorted((EVENTS / "raw").glob("*.json"))
SQS_FILES = sorted((EVENTS / "sqs").glob("*.json"))
BAD_FILES = sorted((EVENTS / "bad").glob("*.json"))


def preview(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = cli.main(["preview", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return status, out, err


def requests_in(out: str) -> list[tuple[str, dict[str, Any]]]:
    """Each ``POST <path>`` line and the JSON body printed under it."""
    found: list[tuple[str, dict[str, Any]]] = []
    lines = out.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("POST "):
            path = lines[i].removeprefix("POST ")
            end = lines.index("}", i + 1)  # json.dumps(indent=2) closes the body on its own line
            found.append((path, json.loads("\n".join(lines[i + 1 : end + 1]))))
            i = end
        i += 1
    return found


def rejected_lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.startswith("  rejected ")]


def _id(path: Path) -> str:
    return path.stem


# ---------------------------------------------------------------------------------------------
# events/raw


@pytest.mark.parametrize("path", [p for p in RAW_FILES if p.stem != "alias"], ids=_id)
def test_preview_of_each_raw_event(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    status, out, err = preview(capsys, path)
    assert status == 0, out + err
    assert out.splitlines()[0] == f"== {path}: 1 event(s)"
    assert rejected_lines(out) == []
    requests = requests_in(out)
    assert requests
    raw = json.loads(path.read_text("utf-8"))
    for _, body in requests:
        assert body["app_id"] == "<MY_APP_ID>"
    if raw["type"] in ("track", "page", "screen"):
        [(endpoint, body)] = requests
        assert endpoint == "/api/track"
        [item] = body["events"]
        assert item["idempotency_key"] == raw["messageId"]
        assert item["identity"] == raw["anonymousId"]
        assert item["event"] == {"page": "Pageview", "screen": "Screenview"}.get(
            raw["type"], raw.get("event")
        )
        assert '"app_id": "<MY_APP_ID>"' in out


def test_preview_prints_post_api_track_and_the_app_id(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = preview(capsys, EVENTS / "raw" / "cart_viewed.json")
    assert status == 0
    assert "POST /api/track\n" in out
    assert '  "app_id": "<MY_APP_ID>",\n' in out
    [(_, body)] = requests_in(out)
    assert list(body) == ["app_id", "events"]
    assert body["events"][0]["properties"]["products.1.sku"] == "KB-BTL-20-BLU"


def test_preview_with_an_app_id(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = preview(capsys, EVENTS / "raw" / "page.json", "--app-id", "1234567890")
    assert status == 0
    assert '"app_id": "1234567890"' in out
    assert "<MY_APP_ID>" not in out


def test_preview_of_identify_shows_both_requests(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = preview(capsys, EVENTS / "raw" / "identify.json", "--app-id", "app-1")
    assert status == 0
    assert requests_in(out) == [
        (
            "/api/add_user_properties",
            {
                "app_id": "app-1",
                "users": [
                    {
                        "identity": "130161d0-8fee-4167-aa4d-d151eed27c6b",
                        "properties": {
                            "email": "jane.doe@example.com",
                            "name": "Jane Doe",
                            "firstName": "Jane",
                            "lastName": "Doe",
                            "plan": "premium",
                            "phone": "+1-555-010-4477",
                            "logins": 7,
                            "newsletter": "true",
                            "address.street": "123 Example Street, Apt 4B",
                            "address.city": "Springfield",
                            "address.state": "IL",
                            "address.postalCode": "62701",
                            "address.country": "US",
                            "createdAt": "2023-11-02T09:15:27.000Z",
                        },
                    }
                ],
            },
        ),
        (
            "/api/v1/identify",
            {
                "app_id": "app-1",
                "user_id": "8267308474930012",
                "identity": "130161d0-8fee-4167-aa4d-d151eed27c6b",
                "timestamp": "2024-06-10T14:05:40.129Z",
            },
        ),
    ]


def test_preview_of_group(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = preview(capsys, EVENTS / "raw" / "group.json")
    assert status == 0
    [(endpoint, body)] = requests_in(out)
    assert endpoint == "/api/add_account_properties"
    assert body["accounts"] == [
        {
            "account_id": "org_7731",
            "properties": {
                "name": "Example Bistro Group",
                "industry": "Food & Beverage",
                "employees": 240,
                "plan": "business",
                "website": "https://bistro.example.com",
            },
        }
    ]


def test_preview_of_alias_is_rejected_with_its_reason(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = preview(capsys, EVENTS / "raw" / "alias.json")
    assert status == 1
    [line] = rejected_lines(out)
    assert line.startswith("rejected event 0: unsupported: ")
    assert "alias" in line
    assert requests_in(out) == []


def test_preview_of_all_raw_files_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = preview(capsys, *RAW_FILES)
    assert status == 1  # alias is among them
    assert len([line for line in out.splitlines() if line.startswith("== ")]) == len(RAW_FILES)
    assert len(rejected_lines(out)) == 1
    assert all(body["app_id"] == "<MY_APP_ID>" for _, body in requests_in(out))


def test_preview_of_a_plain_batch_body(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    events = [
        json.loads((EVENTS / "raw" / f"{n}.json").read_text("utf-8")) for n in ("page", "product_added")
    ]
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"batch": events}), "utf-8")
    status, out, _ = preview(capsys, path)
    assert status == 0
    assert out.splitlines()[0] == f"== {path}: 2 event(s)"
    [(endpoint, body)] = requests_in(out)
    assert endpoint == "/api/track"
    assert [e["event"] for e in body["events"]] == ["Pageview", "Product Added"]


# ---------------------------------------------------------------------------------------------
# events/sqs


@pytest.mark.parametrize("path", [p for p in SQS_FILES if p.stem != "mixed_batch"], ids=_id)
def test_preview_of_each_sqs_event(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    status, out, err = preview(capsys, path)
    assert status == 0, out + err
    assert rejected_lines(out) == []
    requests = requests_in(out)
    assert requests
    assert all(body["app_id"] == "<MY_APP_ID>" for _, body in requests)


def test_preview_of_the_mixed_sqs_batch(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = preview(capsys, EVENTS / "sqs" / "mixed_batch.json")
    assert status == 1
    [line] = rejected_lines(out)
    assert line.startswith("rejected SQS record ")
    assert ": unsupported: " in line
    endpoints = {endpoint for endpoint, _ in requests_in(out)}
    assert "/api/track" in endpoints
    assert "/api/add_user_properties" in endpoints


# ---------------------------------------------------------------------------------------------
# events/bad

BAD_EXPECTATIONS = {
    "batch_with_one_bad_event": ("batch[1]: invalid_event: ", "event: Field required", 2),
    "malformed_json": (": invalid_json: ", "body is not valid JSON", 0),
    "missing_identity": (": heap_rule: ", "identity: required", 0),
    "mixed_good_and_bad": (": invalid_json: ", "body is not valid JSON", 2),
    "unsupported_type": (": unsupported: ", "alias", 0),
    "wrong_types": (": invalid_event: ", "timestamp: ", 0),
}


def test_every_bad_file_has_an_expectation() -> None:
    assert {p.stem for p in BAD_FILES} == set(BAD_EXPECTATIONS)


@pytest.mark.parametrize("path", BAD_FILES, ids=_id)
def test_preview_reports_each_rejection_with_its_reason(
    capsys: pytest.CaptureFixture[str], path: Path
) -> None:
    error_class, reason, delivered = BAD_EXPECTATIONS[path.stem]
    status, out, _ = preview(capsys, path)
    assert status == 1
    [line] = rejected_lines(out)
    assert line.startswith("rejected SQS record ")
    assert error_class in line
    assert reason in line
    track_events = [
        item for endpoint, body in requests_in(out) if endpoint == "/api/track" for item in body["events"]
    ]
    assert len(track_events) == delivered


def test_wrong_types_names_both_fields(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = preview(capsys, EVENTS / "bad" / "wrong_types.json")
    [line] = rejected_lines(out)
    assert "timestamp: " in line
    assert "properties: " in line


# ---------------------------------------------------------------------------------------------
# Options and failures


def test_preview_with_a_mapping_override(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "events:\n  Video Played:\n    endpoint: track\n    rows:\n"
        "      - {key: event, value: video_play}\n"
        "      - {key: properties.video, from: properties.video_id}\n",
        "utf-8",
    )
    status, out, _ = preview(capsys, EVENTS / "raw" / "custom_track.json", "--mapping", mapping)
    assert status == 0
    [(_, body)] = requests_in(out)
    [item] = body["events"]
    assert item["event"] == "video_play"
    assert item["properties"]["video"] == "vid_blend_101"


def test_preview_with_a_broken_mapping_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("rules: {nested: explode}\n", "utf-8")
    status, out, err = preview(capsys, EVENTS / "raw" / "page.json", "--mapping", mapping)
    assert status == 2
    assert out == ""
    assert err.startswith("error: ")
    assert "rules.nested" in err


def test_preview_of_an_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", "utf-8")
    status, out, err = preview(capsys, tmp_path / "absent.json", broken, EVENTS / "raw" / "page.json")
    assert status == 1
    absent = tmp_path / "absent.json"
    assert f"error: {absent}: cannot read: No such file or directory\n" in err
    # A file that was read but is not JSON says so, with where, not "cannot read".
    assert (
        f"error: {broken}: not valid JSON: line 1 column 2"
        " (Expecting property name enclosed in double quotes)\n"
    ) in err
    assert [p for p, _ in requests_in(out)] == ["/api/track"]  # the readable file is still shown
