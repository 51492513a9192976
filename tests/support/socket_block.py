"""No network in the tiers that test pure code (``tests/unit``, ``tests/property``).

Their ``conftest.py`` runs :func:`block_network` around every test (an autouse fixture). While it
holds, each of these raises :class:`NetworkBlocked`:

* making an Internet socket (``AF_INET``, ``AF_INET6``, or the default family), which covers
  ``socket.create_connection``, urllib3, boto3, http.client and the Heap emulator's server;
* connecting a socket made before the test (a session fixture's, or one wrapping a file
  descriptor);
* resolving a name (``socket.getaddrinfo``): no DNS either.

Unix-domain sockets and ``socket.socketpair`` (asyncio's self-pipe) stay allowed: they never
leave the machine. This is pytest-socket's ``--disable-socket`` in a few lines, with no new
dependency. ``NetworkBlocked`` is a ``RuntimeError``, not an ``OSError``, so that code under test
which treats ``OSError`` as "the network failed, retry" cannot swallow it: the test fails loudly.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

INTERNET = (socket.AF_INET, socket.AF_INET6)


class NetworkBlocked(RuntimeError):
    """A test of a no-network tier tried to use the network."""


def _refuse(what: str) -> NetworkBlocked:
    return NetworkBlocked(
        f"{what}: this tier runs with the network blocked (tests/support/socket_block.py); "
        "a test that needs a socket belongs in tests/functional"
    )


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Block Internet sockets and name lookups until ``monkeypatch`` is undone (the test's end)."""
    real_init = socket.socket.__init__
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded_init(
        self: socket.socket, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None
    ) -> None:
        # family -1 with no file descriptor means AF_INET (the socket module's default).
        if fileno is None and (family == -1 or family in INTERNET):
            raise _refuse(f"socket({socket.AddressFamily(family if family != -1 else socket.AF_INET)!r})")
        real_init(self, family, type, proto, fileno)

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in INTERNET:
            raise _refuse(f"connect({address!r})")
        real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in INTERNET:
            raise _refuse(f"connect_ex({address!r})")
        return real_connect_ex(self, address)

    def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        raise _refuse(f"create_connection({address!r})")

    def guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        raise _refuse(f"getaddrinfo({host!r}, {port!r})")

    monkeypatch.setattr(socket.socket, "__init__", guarded_init)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
