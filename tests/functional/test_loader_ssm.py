"""The playbook override from an SSM parameter (moto), and SSM's size tiers (the rest of the
playbook's tests: ``tests/unit/test_playbook.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import PlaybookError
from playbook_support import custom_event, prepare, track

SSM_STANDARD_MAX = 4096  # bytes a Standard-tier SSM parameter holds
SSM_ADVANCED_MAX = 8192  # bytes an Advanced-tier SSM parameter holds


@pytest.fixture
def ssm(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ssm", region_name="us-east-1")


def _tier(client: Any, name: str) -> str:
    """GetParameter does not say the tier; DescribeParameters does."""
    described = client.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])
    [parameter] = described["Parameters"]
    return str(parameter["Tier"])


def _large_override(events: int) -> str:
    document = {
        "events": {
            f"Custom Event {i:02d}": {
                "endpoint": "track",
                "description": f"Custom event number {i}, mapped from the SSM parameter.",
                "rows": [
                    {"key": "event", "value": f"custom_{i:02d}", "required": True},
                    {"key": "properties", "from": "properties", "required": True},
                    {
                        "key": "properties.source",
                        "value": "ssm",
                        "description": "where the mapping came from",
                    },
                ],
            }
            for i in range(events)
        }
    }
    return yaml.safe_dump(document, sort_keys=False)


def test_ssm_standard_parameter_override(ssm: Any) -> None:
    text = yaml.safe_dump({"events": {"Video Played": custom_event({"key": "event", "value": "played"})}})
    assert len(text.encode()) <= SSM_STANDARD_MAX
    ssm.put_parameter(Name="/heap-forwarder/mapping", Value=text, Type="String")
    parameter = ssm.get_parameter(Name="/heap-forwarder/mapping")["Parameter"]
    assert _tier(ssm, "/heap-forwarder/mapping") == "Standard"
    playbook = build_playbook(parameter_text=parameter["Value"], parameter_name="/heap-forwarder/mapping")
    assert playbook.source == "default_playbook.yaml + SSM parameter /heap-forwarder/mapping"
    assert prepare(playbook, track()) == [
        (
            "/api/track",
            {
                "event": "played",
                "properties": {"video_id": "v1"},
                "identity": "anon-1",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "idempotency_key": "m1",
            },
        )
    ]


def test_ssm_advanced_parameter_holds_a_playbook_over_4_kb(ssm: Any) -> None:
    text = _large_override(18)
    size = len(text.encode())
    assert SSM_STANDARD_MAX < size <= SSM_ADVANCED_MAX, size
    ssm.put_parameter(Name="/heap-forwarder/mapping", Value=text, Type="String", Tier="Advanced")
    parameter = ssm.get_parameter(Name="/heap-forwarder/mapping")["Parameter"]
    assert _tier(ssm, "/heap-forwarder/mapping") == "Advanced"
    assert parameter["Value"] == text
    playbook = build_playbook(parameter_text=parameter["Value"], parameter_name="/heap-forwarder/mapping")
    assert {f"customevent{i:02d}" for i in range(18)} <= set(playbook.events)
    assert prepare(playbook, track("custom-event-17", properties={"a": 1})) == [
        (
            "/api/track",
            {
                "event": "custom_17",
                "properties": {"a": 1, "source": "ssm"},
                "identity": "anon-1",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "idempotency_key": "m1",
            },
        )
    ]


def test_a_bad_ssm_override_names_the_parameter(ssm: Any) -> None:
    ssm.put_parameter(Name="/heap-forwarder/mapping", Value="rules: {arrays: glue}\n", Type="String")
    text = ssm.get_parameter(Name="/heap-forwarder/mapping")["Parameter"]["Value"]
    with pytest.raises(PlaybookError) as caught:
        build_playbook(parameter_text=text, parameter_name="/heap-forwarder/mapping")
    assert caught.value.source == "default_playbook.yaml + SSM parameter /heap-forwarder/mapping"
    assert caught.value.problems == ["rules.arrays: Input should be 'join' or 'stringify'"]
