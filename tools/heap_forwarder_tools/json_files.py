"""Reading the JSON files the tools are given (events, --env-vars): a problem says which file
and where, ``events/x.json: not valid JSON: line 3 column 5 (Expecting ',' delimiter)``, and
never reads like a file-access problem when the file was read fine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JsonFileError(ValueError):
    """A JSON file that cannot be used: the message names the file and the reason."""


def read_json(path: Path) -> Any:
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise JsonFileError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise JsonFileError(f"{path}: not valid JSON: not UTF-8 text (byte {error.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonFileError(
            f"{path}: not valid JSON: line {error.lineno} column {error.colno} ({error.msg})"
        ) from None
    except RecursionError:
        raise JsonFileError(f"{path}: not valid JSON for these tools: nested too deeply") from None
