"""Heap is reached over HTTPS in production: both ways of sending (urllib3 for bulk requests,
``http.client`` on a pooled connection for identify calls) over TLS, on the same connections,
with the certificate checked. A TLS terminator on 127.0.0.1 in front of the emulator stands for
Heap's edge (a self-signed certificate made for the test with openssl)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from heap_forwarder.heap.client import DeliverySettings, HeapClient
from heap_forwarder.heap.items import Endpoint
from heap_forwarder.heap.transport import POOL_CONNECTIONS, RequestRecord, new_pool
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@pytest.fixture
def tls_heap(emulator, certificate: tuple[Path, Path]) -> Iterator[str]:
    """``https://127.0.0.1:PORT``: TLS in front of the emulator."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    upstream = urlsplit(emulator.url)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                client = context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()  # a client that refused our certificate
                continue
            backend = socket.create_connection((upstream.hostname or "127.0.0.1", upstream.port or 80))
            threading.Thread(target=_pipe, args=(client, backend), daemon=True).start()
            threading.Thread(target=_pipe, args=(backend, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=2)


def test_bulk_and_identify_requests_both_go_over_tls(tls_heap, emulator, certificate, kit) -> None:
    cert, _ = certificate
    pool = new_pool(maxsize=POOL_CONNECTIONS, block=True, cert_reqs="CERT_REQUIRED", ca_certs=str(cert))
    records: list[RequestRecord] = []
    client = HeapClient(
        DeliverySettings(base_url=tls_heap), request_fields=kit.fields, pool=pool, observer=records.append
    )
    try:
        items = [kit.identify(n) for n in range(6)] + kit.tracks(3)
        assert client.deliver(items) == [DELIVERED] * 9
        # Again, on the connections both ways left in the pool.
        assert client.deliver([kit.identify(10), *kit.tracks(2)]) == [DELIVERED] * 3
    finally:
        pool.clear()
    # Each identify once, answered 200 through TLS (the emulator is shared by the session, so its
    # own counts may hold a late request of another test: this client's records are the proof).
    identifies = [r for r in records if r.endpoint is Endpoint.IDENTIFY]
    assert len(identifies) == 7 and {r.status for r in identifies} == {200}
    assert {r.status for r in records if r.endpoint is Endpoint.TRACK} == {200}
    assert emulator.stats()["identifies_accepted"] >= 7
    assert len(emulator.tracked_events()) >= 3


def test_a_certificate_that_does_not_check_out_is_a_transient_failure(tls_heap, emulator, kit) -> None:
    pool = new_pool(maxsize=POOL_CONNECTIONS, block=True, cert_reqs="CERT_REQUIRED")  # system CAs only
    client = HeapClient(
        DeliverySettings(base_url=tls_heap, retry_budget_s=0), request_fields=kit.fields, pool=pool
    )
    try:
        outcomes = client.deliver([kit.identify(1), *kit.tracks(1)])
    finally:
        pool.clear()
    assert {(o.fate, o.error_class) for o in outcomes} == {(Fate.RETRYABLE, ErrorClass.TRANSIENT)}
    assert all("certificate" in o.reason.lower() or "ssl" in o.reason.lower() for o in outcomes)
    assert emulator.stats()["identifies_accepted"] == 0
