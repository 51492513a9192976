"""Hostile review of ``mapping push`` and the hash key: an override that hashes, pushed to a
stack whose functions have no hash key, passed every check and was written; from then on
every record was retried as a configuration fault (docs/mapping.md: "A bad SSM override never
takes the forwarder down")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from heap_forwarder_tools.cli import main

REGION = "us-east-1"
STACK = "heap-forwarder-review"
PARAMETER = "/heap-forwarder/review/mapping"
HASHING_OVERRIDE = "global:\n  edit:\n    properties: {hash: [email]}\n"

_STACK_TEMPLATE = {
    "Parameters": {
        "MappingParameterName": {"Type": "String", "Default": ""},
        "MappingFile": {"Type": "String", "Default": ""},
        "HashKeyParameterName": {"Type": "String", "Default": ""},
    },
    "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
}


@pytest.fixture
def clients(aws_env: None) -> Iterator[tuple[Any, Any]]:
    with mock_aws():
        yield boto3.client("cloudformation", region_name=REGION), boto3.client("ssm", region_name=REGION)


def _stack(cloudformation: Any, **parameters: str) -> None:
    cloudformation.create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(_STACK_TEMPLATE),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )


def _push(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "override.yaml"
    path.write_text(HASHING_OVERRIDE, "utf-8")
    status = main(["mapping", "push", str(path), "--stack", STACK])
    out, err = capsys.readouterr()
    return status, out + err


def test_a_hashing_override_is_refused_for_a_stack_without_a_hash_key(
    clients: tuple[Any, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cloudformation, ssm = clients
    _stack(cloudformation, MappingParameterName=PARAMETER)

    status, output = _push(capsys, tmp_path)

    assert status == 1, output
    assert "HashKeyParameterName" in output
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name=PARAMETER)


def test_a_hashing_override_is_written_for_a_stack_with_a_hash_key(
    clients: tuple[Any, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cloudformation, ssm = clients
    _stack(cloudformation, MappingParameterName=PARAMETER, HashKeyParameterName="/heap-forwarder/review/hk")

    status, output = _push(capsys, tmp_path)

    assert status == 0, output
    assert ssm.get_parameter(Name=PARAMETER)["Parameter"]["Value"] == HASHING_OVERRIDE
