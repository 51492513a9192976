"""The property tier: hypothesis properties of pure code, with the network blocked around every
test, as in the unit tier (``tests/support/socket_block.py``).

A property that needs the Heap emulator or moto lives in ``tests/functional`` (the Heap client's
conservation property) or ``tests/proof`` (the isolation properties, on the sandbox)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from socket_block import block_network


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    block_network(monkeypatch)
    yield
