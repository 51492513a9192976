"""The unit tier: pure code, with the network blocked around every test.

A unit test needs neither moto, nor the Heap emulator, nor any server, nor a subprocess; one that
opens an Internet socket or resolves a name fails with ``NetworkBlocked``
(``tests/support/socket_block.py``; ``test_socket_block.py`` proves it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_clock import FakeClock
from socket_block import block_network


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    block_network(monkeypatch)
    yield


class Kit:
    """What unit tests take from a fixture rather than import (the repository root, fake time)."""

    ROOT = Path(__file__).resolve().parents[2]
    FakeClock = FakeClock


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit
