"""Where a backfill stands, on disk (tools/heap_forwarder_tools/backfill/checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from heap_forwarder_tools.backfill.checkpoint import Checkpoint, CheckpointError, Totals


def test_a_checkpoint_reads_back_as_written_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    written = Checkpoint(
        ["s3://b/p/"], {"types": ["track"]}, "s3://b/p/x.gz", 12, 3, False, Totals(1, 2, 3, 4, 5, 6)
    )
    written.save(path)
    assert Checkpoint.load(path) == written
    assert [p.name for p in tmp_path.iterdir()] == ["cp.json"]


def test_no_file_is_no_checkpoint(tmp_path: Path) -> None:
    assert Checkpoint.load(tmp_path / "none.json") is None


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.write_text('{"hello": 1}', "utf-8")
    with pytest.raises(CheckpointError, match="not a backfill checkpoint"):
        Checkpoint.load(path)


def test_a_checkpoint_continues_only_the_backfill_that_wrote_it(tmp_path: Path) -> None:
    checkpoint = Checkpoint(["a"], {"types": []})
    checkpoint.check_same_run(["a"], {"types": []}, tmp_path)
    with pytest.raises(CheckpointError, match="--restart"):
        checkpoint.check_same_run(["a", "b"], {"types": []}, tmp_path)
    with pytest.raises(CheckpointError, match="another backfill"):
        checkpoint.check_same_run(["a"], {"types": ["page"]}, tmp_path)
