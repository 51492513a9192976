"""Fixtures shared by every test: the sample events, and a safe AWS environment for moto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sample_events import raw


@pytest.fixture
def raw_event() -> Callable[[str], dict[str, Any]]:
    """Load ``events/raw/<name>.json`` afresh (each call returns a new dict, safe to modify)."""

    return raw


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A region and dummy credentials, so that boto3 under moto never finds real ones."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
