"""``heap-forwarder serve``: the sandboxed local API, until interrupted (its own module: it starts
its own Sandbox, and two moto mocks in one process would share, and reset, one state)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from api_support import ROOT, WRITE_KEY, basic, raw
from heap_forwarder_tools import cli


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_serve_answers_until_interrupted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prints the API and emulator URLs and the demo key, answers real HTTP, stops on SIGINT."""
    monkeypatch.chdir(ROOT)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    statuses: list[int] = []

    def client() -> None:
        # Waits for the server, sends one call, then interrupts serve as Ctrl+C would.
        try:
            deadline = time.monotonic() + 30
            body = json.dumps(raw("product_viewed", type=None)).encode()
            headers = {"Content-Type": "application/json", "Authorization": basic(WRITE_KEY)}
            while time.monotonic() < deadline:
                request = urllib.request.Request(f"{url}/v1/track", data=body, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        statuses.append(response.status)
                        break
                except urllib.error.HTTPError as error:
                    statuses.append(error.code)
                    break
                except OSError:
                    time.sleep(0.05)
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=client, daemon=True).start()
    status = cli.main(["serve", "--port", str(port), "-t", "template.yaml"])

    printed = capsys.readouterr().out
    assert status == 0
    assert statuses == [200]
    assert re.search(rf"Ingest API:\s+{re.escape(url)}", printed)
    assert re.search(r"Heap emulator:\s+http://127\.0\.0\.1:\d+", printed)
    assert f"Write key:     {WRITE_KEY}" in printed
    assert "POST /v1/track -> 200" in printed
