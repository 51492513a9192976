"""A deployed stack as the tools see it: its parameters and outputs, read with CloudFormation.

``mapping push`` and ``backfill`` find what they need here (the mapping parameter's name, the
main queue's URL, the rate settings). Only the standard library is imported at start: the CLI
builds every parser at start-up, and boto3 is loaded when a command actually runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class StackError(RuntimeError):
    """The stack cannot be read: no region, no such stack, no permission..."""


@dataclass(frozen=True)
class StackDescription:
    """A stack's parameters (as deployed; blank values kept as "") and outputs."""

    name: str
    parameters: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def parameter(self, key: str) -> str | None:
        """The parameter's value, or None when it is unset or blank."""
        return self.parameters.get(key) or None


def describe_stack(cloudformation: Any, stack: str) -> StackDescription:
    """The stack's parameters and outputs; ``StackError`` saying why when it cannot be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack).get("Stacks") or []
    except ClientError as error:
        raise StackError(f"cannot read stack {stack!r}: {describe_error(error)}") from None
    except BotoCoreError as error:
        raise StackError(f"cannot read stack {stack!r}: {error}") from None
    if not stacks:
        raise StackError(f"stack {stack!r} not found")
    parameters = {
        str(p.get("ParameterKey")): str(p.get("ParameterValue") or "").strip()
        for p in stacks[0].get("Parameters") or []
    }
    outputs = {
        str(o.get("OutputKey")): str(o.get("OutputValue") or "") for o in stacks[0].get("Outputs") or []
    }
    return StackDescription(stack, parameters, outputs)


def cloudformation_client(region: str | None) -> Any:
    """A CloudFormation client; without a region anywhere, a ``StackError`` that says what to pass.
    Other clients of the stack take its ``meta.region_name``: the stack's resources live there."""
    import boto3
    from botocore.exceptions import NoRegionError

    try:
        return boto3.client("cloudformation", region_name=region)
    except NoRegionError:
        raise StackError(
            "no AWS region: give --region (the stack's region), or set AWS_REGION / AWS_DEFAULT_REGION"
        ) from None


def describe_error(error: Exception) -> str:
    """An AWS error as one line: its code first when it has one."""
    response = getattr(error, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code", ""))
    return f"{code}: {error}" if code else f"{type(error).__name__}: {error}"
