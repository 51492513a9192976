"""Where a backfill stands, on disk: rewritten after every request SQS acknowledged.

It names the last position handled (file label, line, item): everything up to it is in the
queue, reported invalid, or filtered out; nothing after it is. A re-run with the same file
continues after it. The file is replaced atomically (written beside it, then renamed), so an
interruption at any moment leaves the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1


class CheckpointError(RuntimeError):
    """The checkpoint cannot be read, or belongs to another backfill."""


@dataclass
class Totals:
    """What the run has done up to its checkpoint (a resumed run goes on counting)."""

    files: int = 0  # files finished
    lines: int = 0  # items read (events, or lines that could not be read)
    enqueued: int = 0
    messages: int = 0
    invalid: int = 0
    filtered: int = 0

    def add(self, other: Totals) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Checkpoint:
    sources: list[str]
    filters: dict[str, Any]
    file: str | None = None  # the label of the file of the last position handled; None: none yet
    line: int = 0
    item: int = 0
    done: bool = False
    totals: Totals = field(default_factory=Totals)

    def save(self, path: Path) -> None:
        document = {"format": FORMAT, **asdict(self)}
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(document) + "\n", "utf-8")  # one line: written ~10 times a second
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        """The checkpoint at ``path``, or None when there is none."""
        try:
            document = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot read the checkpoint {path}: {error}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a backfill checkpoint (format {FORMAT})")
        try:
            return cls(
                sources=[str(s) for s in document["sources"]],
                filters=dict(document["filters"]),
                file=document.get("file"),
                line=int(document.get("line", 0)),
                item=int(document.get("item", 0)),
                done=bool(document.get("done", False)),
                totals=Totals(**document.get("totals", {})),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path} is not a backfill checkpoint: {error}") from None

    def check_same_run(self, sources: list[str], filters: dict[str, Any], path: Path) -> None:
        """A checkpoint continues only the backfill that wrote it: same SOURCEs, same filters."""
        if self.sources != sources or self.filters != filters:
            raise CheckpointError(
                f"the checkpoint {path} is of another backfill (sources {self.sources}, filters "
                f"{self.filters}); run with the same SOURCEs and filters to continue it, or give "
                "--restart to start again from the beginning (Heap drops the events it already has)"
            )
