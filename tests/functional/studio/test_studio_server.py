"""``heap-forwarder studio``'s server: refuses other sites, previews exactly as ``preview``
prints, and drives the local stack (sent, delivered, parked, dead-lettered)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from heap_forwarder_tools import cli
from heap_forwarder_tools.studio.server import Studio, StudioServer

ROOT = Path(__file__).resolve().parents[3]
EVENT = {
    "type": "track",
    "event": "Plan Chosen",
    "anonymousId": "anon-7",
    "timestamp": "2024-06-10T14:07:05Z",
    "properties": {"plan": "pro", "seats": 3},
}


def call(
    server: StudioServer, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    sent = {"Content-Type": "application/json", **(headers or {})}
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    connection.request(method, path, body=data, headers=sent)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    try:
        return response.status, json.loads(payload)
    except ValueError:
        return response.status, payload.decode()


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.1)


def status_of(server: StudioServer, message_id: str) -> dict[str, Any] | None:
    _, traffic = call(server, "GET", "/api/traffic")
    return next((t for t in traffic["traffic"] if t["message_id"] == message_id), None)


# ---------------------------------------------------------------------------------------------
# Another site must not drive it


def test_a_foreign_host_is_refused(studio: StudioServer) -> None:
    status, answer = call(studio, "GET", "/api/samples", headers={"Host": "evil.example"})
    assert status == 403
    assert "own address" in answer["error"]
    status, _ = call(studio, "POST", "/api/faults", {"outage": True}, headers={"Host": "evil.example"})
    assert status == 403
    assert studio.studio.faults()["outage"] is False


def test_a_foreign_origin_is_refused(studio: StudioServer) -> None:
    status, answer = call(
        studio, "POST", "/api/faults", {"outage": True}, headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    assert "another origin" in answer["error"]
    assert studio.studio.faults()["outage"] is False
    status, _ = call(studio, "GET", "/", headers={"Origin": "null"})
    assert status == 403


def test_its_own_origin_and_host_are_served(studio: StudioServer) -> None:
    port = urlsplit(studio.url).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        status, answer = call(
            studio, "GET", "/api/samples", headers={"Host": host, "Origin": f"http://{host}"}
        )
        assert status == 200
        assert "raw/order_completed.json" in answer["samples"]


def test_a_preflight_and_a_form_post_are_refused(studio: StudioServer) -> None:
    assert call(studio, "OPTIONS", "/api/send")[0] == 403
    status, _ = call(
        studio,
        "POST",
        "/api/faults",
        b"outage=true",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415


def test_it_listens_on_loopback_only(studio: StudioServer) -> None:
    assert urlsplit(studio.url).hostname == "127.0.0.1"


def test_there_is_no_aws_option() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["studio", "--aws"])


def test_the_stack_runs_on_fake_credentials(studio: StudioServer) -> None:
    stack = studio.studio.stack
    assert stack is not None
    # The sandbox's fake keys (or moto's own, which it sets while it intercepts), never yours;
    # and the queues are moto's, in its fake account.
    credentials = stack.sandbox.client("sqs")._request_signer._credentials
    assert credentials.access_key in {"testing", "FOOBARKEY"}
    assert ":123456789012:" in stack.sandbox.resources["MainQueue"]["Arn"]


def test_only_listed_samples_are_read(studio: StudioServer) -> None:
    assert call(studio, "GET", "/api/sample?name=../template.yaml")[0] == 404
    status, sample = call(studio, "GET", "/api/sample?name=raw/page.json")
    assert status == 200
    assert sample["text"] == (ROOT / "events/raw/page.json").read_text("utf-8")


def test_the_page_and_its_files_are_served_with_a_strict_policy(studio: StudioServer) -> None:
    address = urlsplit(studio.url)
    for path, kind in (
        ("/", "text/html"),
        ("/static/studio.js", "javascript"),
        ("/static/studio.css", "text/css"),
    ):
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, path
        assert kind in response.getheader("Content-Type", "")
        assert "default-src 'self'" in response.getheader("Content-Security-Policy", "")
        connection.close()


# ---------------------------------------------------------------------------------------------
# The preview is what `heap-forwarder preview` prints


OVERRIDE = """events:
  Plan Chosen:
    endpoint: track
    rows:
      - {key: event, value: Plan Picked}
      - {key: timestamp, from: timestamp, required: true}
      - {key: properties, from: properties}
"""


@pytest.mark.parametrize(
    ("sample", "override", "explain"),
    [
        ("raw/order_completed.json", "", False),
        ("sqs/mixed_batch.json", "", False),
        ("api/batch.json", "", False),
        ("raw/alias.json", "", False),
        ("bad/malformed_json.json", "", False),
        ("bad/mixed_good_and_bad.json", "", True),
        (None, OVERRIDE, False),
        (None, OVERRIDE, True),
    ],
)
def test_the_preview_is_what_the_command_prints(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    sample: str | None,
    override: str,
    explain: bool,
) -> None:
    monkeypatch.chdir(tmp_path)
    event_text = (ROOT / "events" / sample).read_text("utf-8") if sample else json.dumps(EVENT)
    Path("pasted event").write_text(event_text, "utf-8")
    arguments = ["preview", "pasted event"]
    if override:
        Path("override.yaml").write_text(override, "utf-8")
        arguments[1:1] = ["--mapping", "override.yaml"]
    if explain:
        arguments.append("--explain")
    status = cli.main(arguments)
    printed = capsys.readouterr()
    studio = Studio(ROOT, None)
    try:
        shown = studio.preview(event_text, override, "pasted event", explain)
    finally:
        studio.close()
    assert shown["text"] + "\n" == printed.out + printed.err
    assert shown["status"] == status


def test_the_preview_names_each_outcome() -> None:
    batch = {
        "batch": [EVENT, {**EVENT, "type": "alias", "previousId": "x"}, {"type": "track", "anonymousId": "a"}]
    }
    studio = Studio(ROOT, None)
    try:
        verdicts = studio.preview(json.dumps(batch), "", "pasted event")["preview"]["verdicts"]
    finally:
        studio.close()
    assert [v["outcome"] for v in verdicts] == ["mapped", "unsupported", "refused"]
    assert verdicts[1]["error_class"] == "unsupported"
    assert verdicts[2]["error_class"] == "invalid_event"
    assert "event" in verdicts[2]["reason"]


def test_override_problems_come_with_their_line() -> None:
    broken = "events:\n  Plan Chosen:\n    endpont: track\n    rows:\n      - {key: event, value: x}\n"
    studio = Studio(ROOT, None)
    try:
        shown = studio.preview(json.dumps(EVENT), broken, "pasted event")
    finally:
        studio.close()
    assert shown["status"] == 2
    assert shown["preview"] is None
    problems = shown["override"]["problems"]
    assert [p["line"] for p in problems] == [3]
    assert "endpont" in problems[0]["text"]
    assert "/tmp" not in shown["text"]


# ---------------------------------------------------------------------------------------------
# Sending through the local stack


def send(server: StudioServer, event: dict[str, Any], via: str = "api", override: str = "") -> dict[str, Any]:
    status, answer = call(
        server, "POST", "/api/send", {"event": json.dumps(event), "override": override, "via": via}
    )
    assert status == 200, answer
    return answer


def test_an_event_sent_to_the_api_is_delivered_and_stored(studio: StudioServer) -> None:
    answer = send(studio, EVENT, override=OVERRIDE)
    assert answer["status"] == 200
    assert answer["answer"]["delivered"] == 1
    message_id = answer["events"][0]["messageId"]
    assert status_of(studio, message_id)["status"] == "delivered"  # type: ignore[index]
    _, traffic = call(studio, "GET", "/api/traffic")
    stored = [e for e in traffic["heap"]["tracked_events"] if e["idempotency_key"] == message_id]
    assert [e["event"] for e in stored] == ["Plan Picked"]  # the override applied by the running API


def test_an_event_heap_refuses_is_dead_lettered_with_the_reason(studio: StudioServer) -> None:
    call(studio, "POST", "/api/faults", {"reject_event_names": ["Plan Chosen"]})
    answer = send(studio, EVENT)
    message_id = answer["events"][0]["messageId"]
    entry = status_of(studio, message_id)
    assert entry is not None and entry["status"] == "dead-lettered"
    assert "is not accepted" in entry["reason"]
    _, traffic = call(studio, "GET", "/api/traffic")
    assert message_id in {letter["message_id"] for letter in traffic["dead_letters"]}


def test_an_event_sent_while_heap_fails_is_parked_then_delivered_by_the_consumer(
    studio: StudioServer,
) -> None:
    assert call(studio, "POST", "/api/faults", {"outage": True})[1]["outage"] is True
    answer = send(studio, EVENT)
    assert answer["status"] == 202
    message_id = answer["events"][0]["messageId"]
    # Parked by the API, then received by the consumer and put back while Heap still fails.
    wait_for(lambda: (status_of(studio, message_id) or {}).get("status") == "retrying")
    call(studio, "POST", "/api/faults", {"outage": False})
    entry = wait_for(lambda: (e := status_of(studio, message_id)) and e["status"] == "delivered" and e)
    assert "consumer" in entry["reason"]
    assert [h.split(" ", 1)[1].split(":")[0] for h in entry["history"]][:2] == ["sent", "parked"]
    stack = studio.studio.stack
    assert stack is not None
    assert message_id in {e["idempotency_key"] for e in stack.sandbox.emulator.tracked_events()}


def test_an_event_sent_to_the_queue_is_delivered_by_the_consumer(studio: StudioServer) -> None:
    answer = send(studio, EVENT, via="queue")
    message_id = answer["events"][0]["messageId"]
    entry = wait_for(lambda: (e := status_of(studio, message_id)) and e["status"] == "delivered" and e)
    assert entry["via"] == "queue"


def test_a_bad_override_is_not_sent(studio: StudioServer) -> None:
    status, answer = call(
        studio, "POST", "/api/send", {"event": json.dumps(EVENT), "override": "events: [", "via": "api"}
    )
    assert status == 409
    assert "override" in answer["error"]
