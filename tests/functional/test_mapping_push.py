"""``heap-forwarder mapping push`` over moto's CloudFormation and SSM: the override is checked
against the stack (default + its MappingFile + the override) before anything is written, SSM's
tiers are respected, and the functions' runtime then maps with what was written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from heap_forwarder.edge.config import Settings
from heap_forwarder.edge.runtime import build_runtime
from heap_forwarder_tools import push as push_module
from heap_forwarder_tools.cli import main
from sample_events import raw

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
STACK = "heap-forwarder-test"
PARAMETER = "/heap-forwarder/test/mapping"
APP_ID_PARAMETER = "/heap-forwarder/test/app-id"

# The stack's parameters that matter here, around a resource CloudFormation can create.
_STACK_TEMPLATE = {
    "Parameters": {
        "MappingParameterName": {"Type": "String", "Default": ""},
        "MappingFile": {"Type": "String", "Default": ""},
    },
    "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
}

VIDEO_OVERRIDE = """\
events:
  Video Played:
    endpoint: track
    rows:
      - {key: timestamp, from: timestamp, required: true}
      - {key: event, value: video_played, required: true}
      - {key: properties, from: properties, required: true}
      - {key: properties.pushed, value: "yes"}
"""
# Breaks the playbook's schema twice: an unknown endpoint, and a row with an unknown field.
BAD_OVERRIDE = """\
events:
  Video Played:
    endpoint: no_such_endpoint
    rows:
      - {key: event, value: played}
  Video Paused:
    endpoint: track
    rows:
      - {key: event, value: paused, no_such_field: 1}
"""


@dataclass
class Aws:
    cloudformation: Any
    ssm: Any

    def stack(self, name: str = STACK, **parameters: str) -> str:
        self.cloudformation.create_stack(
            StackName=name,
            TemplateBody=json.dumps(_STACK_TEMPLATE),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
        return name

    def value(self, name: str = PARAMETER) -> str | None:
        try:
            return str(self.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        except self.ssm.exceptions.ParameterNotFound:
            return None

    def described(self, name: str = PARAMETER) -> dict[str, Any]:
        [parameter] = self.ssm.describe_parameters(
            ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}]
        )["Parameters"]
        return dict(parameter)


@pytest.fixture
def aws(aws_env: None) -> Iterator[Aws]:
    with mock_aws():
        yield Aws(boto3.client("cloudformation", region_name=REGION), boto3.client("ssm", region_name=REGION))


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = main(["mapping", "push", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def override(tmp_path: Path, text: str, name: str = "override.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


def _large_override(target_bytes: int) -> str:
    """A valid override of at least ``target_bytes``: custom events, each a few hundred bytes."""
    events: dict[str, Any] = {}
    while len(text := yaml.safe_dump({"events": events}, sort_keys=False).encode()) < target_bytes:
        events[f"Custom Event {len(events):03d}"] = {
            "endpoint": "track",
            "rows": [
                {"key": "timestamp", "from": "timestamp", "required": True},
                {"key": "event", "value": f"custom_event_{len(events):03d}", "required": True},
                {"key": "properties", "from": "properties", "required": True},
            ],
        }
    return text.decode()


def _mapped_video(runtime: Any) -> dict[str, Any]:
    """The Heap item the runtime's current pipeline makes of events/raw/custom_track.json."""
    prepared = runtime.pipeline().prepare([raw("custom_track")])
    assert all(d is None for d in prepared.decided), prepared.problems
    [item] = prepared.items
    body: dict[str, Any] = item.body
    return body


# ---------------------------------------------------------------------------------- refusals


def test_a_bad_override_is_refused_and_nothing_is_written(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER)
    aws.ssm.put_parameter(Name=PARAMETER, Value=VIDEO_OVERRIDE, Type="String")

    status, _, err = run(capsys, override(tmp_path, BAD_OVERRIDE), "--stack", STACK)

    assert status == 1
    assert "refused, nothing written" in err
    assert f"SSM parameter {PARAMETER}" in err
    # Every problem listed, not only the first.
    assert "events.Video Played" in err and "events.Video Paused" in err
    assert aws.value() == VIDEO_OVERRIDE
    assert aws.described()["Version"] == 1


def test_a_bad_override_never_creates_the_parameter(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER)
    status, _, _ = run(capsys, override(tmp_path, "events: [not, a, mapping]\n"), "--stack", STACK)
    assert status == 1
    assert aws.value() is None


def test_a_stack_without_mapping_parameter_name_is_refused(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack()

    status, _, err = run(capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK)

    assert status == 2
    assert "has no MappingParameterName" in err
    assert "MappingParameterName=/heap-forwarder/<stage>/mapping" in err  # how to set it
    assert aws.ssm.describe_parameters()["Parameters"] == []


def test_an_override_over_8_kb_is_refused_pointing_at_mapping_file(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER)
    text = _large_override(push_module.ADVANCED_MAX_BYTES + 1)
    assert len(text.encode()) > 8192

    status, _, err = run(capsys, override(tmp_path, text), "--stack", STACK)

    assert status == 1
    assert "at most 8,192" in err
    assert "MappingFile=/var/task/overrides/" in err
    assert aws.value() is None


def test_an_empty_override_is_refused(aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    aws.stack(MappingParameterName=PARAMETER)
    status, _, err = run(capsys, override(tmp_path, "\n  \n"), "--stack", STACK)
    assert status == 1
    assert "push a file holding {}" in err
    assert aws.value() is None


def test_an_unknown_stack_is_a_clear_error(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run(capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", "no-such-stack")
    assert status == 2
    assert "cannot read stack 'no-such-stack'" in err
    assert "does not exist" in err


def test_no_region_asks_for_region(
    aws_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))  # no region from ~/.aws/config either
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # nor from a session that read one earlier

    status, _, err = run(capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK)

    assert status == 2
    assert "no AWS region: give --region" in err
    assert "NoRegionError" not in err


# ---------------------------------------------------------------------------------- tiers


def test_a_small_override_goes_in_a_standard_parameter(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER)
    status, out, _ = run(capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK)
    assert status == 0, out
    assert aws.value() == VIDEO_OVERRIDE
    assert aws.described()["Tier"] == "Standard"
    assert aws.described()["Type"] == "String"
    assert f"created SSM parameter {PARAMETER} version 1" in out


def test_an_override_over_4_kb_goes_in_an_advanced_parameter(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER)
    aws.ssm.put_parameter(Name=PARAMETER, Value=VIDEO_OVERRIDE, Type="String")
    text = _large_override(push_module.STANDARD_MAX_BYTES + 1)
    assert 4096 < len(text.encode()) <= 8192

    status, out, _ = run(capsys, override(tmp_path, text), "--stack", STACK)

    assert status == 0, out
    assert aws.value() == text
    assert aws.described()["Tier"] == "Advanced"


def test_an_advanced_parameter_is_never_downgraded(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # (SSM refuses Advanced -> Standard; moto would allow it, so the command must not ask.)
    aws.stack(MappingParameterName=PARAMETER)
    aws.ssm.put_parameter(Name=PARAMETER, Value=_large_override(5000), Type="String", Tier="Advanced")

    status, out, _ = run(capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK)

    assert status == 0, out
    assert aws.value() == VIDEO_OVERRIDE
    assert aws.described()["Tier"] == "Advanced"
    assert "Advanced tier" in out


def test_a_secure_string_parameter_stays_one(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER)
    aws.ssm.put_parameter(Name=PARAMETER, Value="{}", Type="SecureString")
    status, _, _ = run(capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK)
    assert status == 0
    assert aws.described()["Type"] == "SecureString"
    assert aws.value() == VIDEO_OVERRIDE


def test_a_dry_run_checks_and_writes_nothing(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER)
    status, out, _ = run(capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK, "--dry-run")
    assert status == 0
    assert f"dry run: would create SSM parameter {PARAMETER}" in out
    assert "Standard tier" in out
    assert aws.value() is None


# ---------------------------------------------------------------------------------- MappingFile


@pytest.mark.parametrize(
    "mapping_file",
    [
        "/var/task/overrides/example.yaml",
        # Lambda runs the functions in /var/task: a relative MappingFile works there too.
        "overrides/example.yaml",
    ],
)
def test_the_stacks_mapping_file_is_merged_from_the_repository(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path, mapping_file: str
) -> None:
    """The stack's MappingFile is handler/overrides/example.yaml in this checkout."""
    aws.stack(MappingParameterName=PARAMETER, MappingFile=mapping_file)

    status, out, err = run(
        capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK, "--template", ROOT / "template.yaml"
    )

    assert status == 0, err
    local = ROOT / "handler" / "overrides" / "example.yaml"
    assert f"default_playbook.yaml + {local} + SSM parameter {PARAMETER}: OK" in out
    assert f"MappingFile {mapping_file}" in err


def test_an_override_is_refused_when_the_stacks_mapping_file_is_bad(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """What the functions would build is checked, not the override alone: here they could not
    start at all, whatever the parameter says."""
    code = tmp_path / "repo" / "handler" / "overrides"
    code.mkdir(parents=True)
    (code / "prod.yaml").write_text("global: {request: not-a-list-of-rows}\n", "utf-8")
    (tmp_path / "repo" / "template.yaml").write_text(
        "Resources:\n  ConsumerFunction:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: handler/}\n",
        "utf-8",
    )
    aws.stack(MappingParameterName=PARAMETER, MappingFile="/var/task/overrides/prod.yaml")
    text = override(tmp_path, VIDEO_OVERRIDE)

    status, _, err = run(capsys, text, "--stack", STACK, "--template", tmp_path / "repo" / "template.yaml")

    assert status == 1
    assert str(code / "prod.yaml") in err
    assert aws.value() is None
    # The same override is fine against the default alone.
    assert push_module.validate(VIDEO_OVERRIDE, None, PARAMETER).endswith(f"SSM parameter {PARAMETER}")


def test_a_mapping_file_missing_here_is_a_clear_error(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER, MappingFile="/var/task/overrides/not-here.yaml")
    text = override(tmp_path, VIDEO_OVERRIDE)

    status, _, err = run(capsys, text, "--stack", STACK, "--template", ROOT / "template.yaml")
    assert status == 2
    assert "not-here.yaml" in err and "--mapping-file" in err
    assert aws.value() is None

    local = override(tmp_path, "{}\n", "deployed-copy.yaml")
    status, _, err = run(capsys, text, "--stack", STACK, "--mapping-file", local)
    assert status == 0, err
    assert aws.value() == VIDEO_OVERRIDE


def test_a_mapping_file_that_sam_build_does_not_ship_is_warned_about(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The placement the issue found broken: a file under handler/ but outside overrides/."""
    (tmp_path / "repo" / "handler").mkdir(parents=True)
    (tmp_path / "repo" / "handler" / "prod.yaml").write_text("{}\n", "utf-8")
    (tmp_path / "repo" / "template.yaml").write_text(
        "Resources:\n  ConsumerFunction:\n    Properties: {CodeUri: handler/}\n", "utf-8"
    )
    aws.stack(MappingParameterName=PARAMETER, MappingFile="/var/task/prod.yaml")
    text = override(tmp_path, VIDEO_OVERRIDE)

    status, _, err = run(capsys, text, "--stack", STACK, "--template", tmp_path / "repo" / "template.yaml")

    assert status == 0
    assert "warning: sam build ships only handler/overrides/" in err

    aws.cloudformation.delete_stack(StackName=STACK)
    aws.stack("shipped", MappingParameterName=PARAMETER, MappingFile="/var/task/overrides/example.yaml")
    status, _, err = run(capsys, text, "--stack", "shipped", "--template", ROOT / "template.yaml")
    assert status == 0
    assert "warning" not in err


def test_a_mapping_file_outside_the_code_needs_a_local_copy(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER, MappingFile="/opt/mapping/prod.yaml")  # a layer
    status, _, err = run(capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK)
    assert status == 2
    assert "/opt/mapping/prod.yaml is not in the function's code" in err
    assert aws.value() is None


# ---------------------------------------------------------------------------------- the functions


def _settings(mapping_file: Path | None = None, max_age: int = 300) -> Settings:
    return Settings(
        HEAP_APP_ID_PARAMETER=APP_ID_PARAMETER,
        MAPPING_PARAMETER=PARAMETER,
        MAPPING_FILE=mapping_file,
        POWERTOOLS_PARAMETERS_MAX_AGE=max_age,
    )


def test_a_function_maps_with_the_pushed_override(
    aws: Aws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    aws.stack(MappingParameterName=PARAMETER, MappingFile="/var/task/overrides/example.yaml")
    aws.ssm.put_parameter(Name=APP_ID_PARAMETER, Value="app-1", Type="SecureString")
    aws.ssm.put_parameter(Name=PARAMETER, Value="{}", Type="String")
    example = ROOT / "handler" / "overrides" / "example.yaml"
    running = build_runtime(_settings(example))  # a warm instance, from before the push
    before = _mapped_video(running)
    assert before["event"] == "Video Played"
    assert before["properties"]["mapped_by"] == "overrides/example.yaml"

    status, out, err = run(
        capsys, override(tmp_path, VIDEO_OVERRIDE), "--stack", STACK, "--template", ROOT / "template.yaml"
    )
    assert status == 0, err
    assert "at most 300 s after this write" in out

    # A new instance (a cold start) maps with it at once: the override on top of MappingFile.
    after = _mapped_video(build_runtime(_settings(example)))
    assert after["event"] == "video_played"
    assert after["properties"]["pushed"] == "yes"
    assert "mapped_by" not in after["properties"]  # the override replaced the file's Video Played
    # The warm one keeps its cached copy until it expires (POWERTOOLS_PARAMETERS_MAX_AGE), then
    # maps with the new override at its next invocation.
    assert _mapped_video(running) == before
    running.parameters.provider.clear_cache()  # what the cache's max age does
    assert _mapped_video(running) == after
