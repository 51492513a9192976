"""What template.yaml promises about isolation and load: the API is never open, its routes are
throttled, reserved concurrency is opt-in, throttles raise alarms, and secrets are expected in
SecureStrings. Read with the project's own template reader (.ci/sam-check lints the same file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from heap_forwarder_tools.local.template import Resolver, function_spec, load_template

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {"ConsumerFunction": "ConsumerReservedConcurrency", "ApiFunction": "ApiReservedConcurrency"}
# Heap's cap per app ID, in events a second: the most single-event requests that can all be delivered.
HEAP_EVENTS_PER_SECOND = 15_000 / 60


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


# ---------------------------------------------------------------------------------- closed by default
@pytest.mark.parametrize(
    ("mode", "key", "allowed"),
    [
        ("WriteKey", "", False),  # nothing to check callers against: refused in every stage
        ("WriteKey", "/heap-forwarder/write-key", True),
        ("IAM", "", True),  # API Gateway authenticates
        ("IAM", "/heap-forwarder/write-key", True),
    ],
)
@pytest.mark.parametrize("stage", ["dev", "staging", "prod"])
def test_an_unauthenticated_api_is_refused_in_every_stage(
    template: dict[str, Any], stage: str, mode: str, key: str, allowed: bool
) -> None:
    resolver = Resolver(template, {"Stage": stage, "ApiAuthMode": mode, "WriteKeyParameterName": key})
    verdicts = []
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not resolver.resolve(rule["RuleCondition"]):
            continue
        verdicts.extend(bool(resolver.resolve(a["Assert"])) for a in rule["Assertions"])
    assert all(verdicts) is allowed


def test_the_api_function_is_told_its_auth_mode(template: dict[str, Any]) -> None:
    for mode in ("WriteKey", "IAM"):
        env = function_spec(template, "ApiFunction", Resolver(template, {"ApiAuthMode": mode})).environment
        assert env["API_AUTH_MODE"] == mode


@pytest.mark.parametrize("parameter", ["HeapAppIdParameterName", "WriteKeyParameterName"])
def test_secret_parameters_say_a_secure_string_is_expected(template: dict[str, Any], parameter: str) -> None:
    description = template["Parameters"][parameter]["Description"]
    assert "SecureString" in description
    assert "InsecureParameter" in description  # and what happens otherwise


# ---------------------------------------------------------------------------------- throttling
def test_every_api_route_is_throttled_by_default(template: dict[str, Any]) -> None:
    settings = template["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    rate = template["Parameters"]["ApiThrottlingRateLimit"]
    burst = template["Parameters"]["ApiThrottlingBurstLimit"]
    assert rate["Type"] == burst["Type"] == "Number"
    assert rate["Default"] == HEAP_EVENTS_PER_SECOND
    assert burst["Default"] == 2 * rate["Default"]
    assert rate["MinValue"] >= 1 and burst["MinValue"] >= 1  # 0 would refuse every request


@pytest.mark.parametrize(("function", "parameter"), sorted(FUNCTIONS.items()))
def test_reserved_concurrency_is_off_unless_asked_for(
    template: dict[str, Any], function: str, parameter: str
) -> None:
    spec = template["Parameters"][parameter]
    assert (spec["Type"], spec["Default"], spec["MinValue"]) == ("Number", 0, 0)
    reserved = template["Resources"][function]["Properties"]["ReservedConcurrentExecutions"]
    condition, then, otherwise = reserved["Fn::If"]
    assert then == {"Ref": parameter}
    assert otherwise == {"Ref": "AWS::NoValue"}
    # 0 (the default) leaves the property out; any other number sets it.
    assert not Resolver(template).condition(condition)
    assert Resolver(template, {parameter: "5"}).condition(condition)
    properties = template["Resources"][function]["Properties"]
    assert "ReservedConcurrentExecutions" not in Resolver(template).resolve(properties)
    assert Resolver(template, {parameter: "5"}).resolve(properties)["ReservedConcurrentExecutions"] == "5"


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_function_has_a_throttles_alarm_on_the_alarm_topic(
    template: dict[str, Any], function: str
) -> None:
    alarms = [
        a["Properties"]
        for a in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == "AWS/Lambda"
        and a["Properties"]["MetricName"] == "Throttles"
        and a["Properties"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]
    ]
    (alarm,) = alarms
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert alarm["OKActions"] == [{"Ref": "AlarmTopic"}]
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )
    assert alarm["TreatMissingData"] == "notBreaching"


# ---------------------------------------------------------------------------------- SnapStart
def test_snapstart_is_off_unless_asked_for(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["SnapStart"]
    assert parameter["Default"] == "None"
    assert parameter["AllowedValues"] == ["None", "PublishedVersions"]
    apply_on = template["Globals"]["Function"]["SnapStart"]["ApplyOn"]
    assert Resolver(template, {}).resolve(apply_on) == "None"
    assert Resolver(template, {"SnapStart": "PublishedVersions"}).resolve(apply_on) == "PublishedVersions"


def test_both_functions_are_called_through_their_published_alias(template: dict[str, Any]) -> None:
    """SnapStart applies to published versions only: SAM publishes one behind the alias on every
    deployment and points the SQS event source and the HTTP API's integrations at it."""
    assert template["Globals"]["Function"]["AutoPublishAlias"] == "live"
    for function in FUNCTIONS:
        properties = template["Resources"][function]["Properties"]
        assert "AutoPublishAlias" not in properties  # no function opts out of the global alias
        assert "ProvisionedConcurrencyConfig" not in properties  # SnapStart cannot be combined with it
