"""The README's examples work: every `heap-forwarder` command in its bash blocks is run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from heap_forwarder_tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text("utf-8")
# Commands that need what a test machine lacks (a deployed stack) or that block (servers).
NEEDS_AWS_OR_BLOCKS = ("--stack", "serve", "emulator", "demo", "studio")


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith(".venv/bin/heap-forwarder ")]


def test_the_readme_shows_the_cli() -> None:
    assert len(_commands()) >= 5


@pytest.mark.parametrize("command", [c for c in _commands() if not any(n in c for n in NEEDS_AWS_OR_BLOCKS)])
def test_each_readme_command_runs(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[1:]
    if "my-mapping.yaml" in argv:  # the README's example override, written out here
        override = tmp_path / "my-mapping.yaml"
        override.write_text(
            "events:\n  video_played:\n    endpoint: track\n    rows:\n"
            "      - {key: event, value: Video Watched}\n      - {key: properties, from: properties}\n"
        )
        argv = [str(override) if a == "my-mapping.yaml" else a for a in argv]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip()


def test_no_tracked_file_holds_merge_conflict_markers() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    marked = []
    for name in files.split():
        path = root / name
        if path.suffix not in {".py", ".md", ".yaml", ".toml", ".json", ".txt", ""} or not path.is_file():
            continue
        text = path.read_text("utf-8", errors="replace")
        if any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in text.splitlines()):
            marked.append(name)
    assert marked == []
