"""The cookbook in docs/mapping.md: each example's override, sample event and expected Heap
requests are files under docs/cookbook/<example>/; `heap-forwarder preview` must print exactly
those requests, and docs/mapping.md must show the files as they are, so the docs cannot drift."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder_tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
COOKBOOK = ROOT / "docs" / "cookbook"
EXAMPLES = sorted(path.name for path in COOKBOOK.iterdir() if path.is_dir())
MAPPING_DOC = (ROOT / "docs" / "mapping.md").read_text("utf-8")


def printed_requests(output: str) -> list[dict[str, Any]]:
    """The `POST <path>` + JSON body blocks preview prints."""
    parts = re.split(r"^POST (\S+)\n", output, flags=re.MULTILINE)
    return [{"POST": parts[i], "body": json.loads(parts[i + 1])} for i in range(1, len(parts), 2)]


def test_the_cookbook_has_the_everyday_changes() -> None:
    assert len(EXAMPLES) >= 12
    for needed in (
        "rename-an-event",
        "rename-a-property",
        "drop-a-property-everywhere",
        "keep-only-some-properties",
        "hash-the-email",
        "identity-from-user-id",
        "a-static-property-on-every-event",
        "a-custom-event",
        "one-event-to-two-heap-calls",
        "group-traits-to-account-properties",
        "the-session-id-from-elsewhere",
        "snake-case-names-for-every-event",
    ):
        assert any(name.endswith(needed) for name in EXAMPLES), needed


@pytest.mark.parametrize("example", EXAMPLES)
def test_preview_prints_the_expected_heap_requests(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder = COOKBOOK / example
    argv = ["preview", "--mapping", str(folder / "override.yaml"), str(folder / "event.json")]
    if (folder / "hash-key.txt").exists():
        argv += ["--hash-key-file", str(folder / "hash-key.txt")]
    assert main(argv) == 0
    expected = json.loads((folder / "heap.json").read_text("utf-8"))
    assert printed_requests(capsys.readouterr().out) == expected


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_override_is_short_and_needs_no_jmespath(example: str) -> None:
    text = (COOKBOOK / example / "override.yaml").read_text("utf-8")
    assert len(text.splitlines()) <= 6
    assert "expr" not in text
    build_playbook(COOKBOOK / example / "override.yaml")  # valid on its own


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_docs_show_the_files_as_they_are(example: str) -> None:
    folder = COOKBOOK / example
    assert f"docs/cookbook/{example}/" in MAPPING_DOC
    assert (folder / "override.yaml").read_text("utf-8") in MAPPING_DOC
    # The Heap items (the request bodies' lists), as the docs print them.
    for request in json.loads((folder / "heap.json").read_text("utf-8")):
        shown = json.dumps(request["body"], indent=2, ensure_ascii=False)
        assert f"POST {request['POST']}\n{shown}\n" in MAPPING_DOC, f"{example}: {request['POST']}"
