"""What a local service (the emulator, the local API, the local stack) has in common: started and
stopped explicitly, or used as a context manager that stops it whatever happens."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
