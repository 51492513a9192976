"""Reading ``template.yaml`` the way ``sam local invoke`` does: a function's handler, timeout
and environment, with CloudFormation intrinsics resolved against local stand-ins."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class TemplateError(ValueError):
    pass


class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML with CloudFormation's short tags (!Ref, !Sub, !If ...) read as their long forms."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    try:
        document = yaml.load(path.read_text("utf-8"), Loader=_CfnLoader)
    except (OSError, yaml.YAMLError) as error:
        raise TemplateError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict) or "Resources" not in document:
        raise TemplateError(f"{path} is not a SAM/CloudFormation template (no Resources)")
    return document


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    handler: str
    timeout: int
    memory_mb: int
    environment: dict[str, str]


_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")


class Resolver:
    """Evaluates the intrinsics a function's properties use, against local stand-ins.

    ``resources`` maps a logical ID to its attributes (``Ref`` and e.g. ``Arn``, ``QueueUrl``);
    parameters take their overrides, else their defaults.
    """

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str] | None = None,
        resources: Mapping[str, Mapping[str, str]] | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.template = template
        self.parameters = {
            name: str(spec.get("Default", "")) for name, spec in (template.get("Parameters") or {}).items()
        }
        self.parameters.update(parameters or {})
        self.resources = resources or {}
        self.pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": "123456789012",
            "AWS::StackName": "heap-forwarder-local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"unknown condition {name}")
        return bool(self.resolve(conditions[name]))

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return self.resources[name].get("Ref", name)
        return name  # a resource with no local stand-in: its logical ID is as good a name as any

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        return self.resources.get(logical_id, {}).get(attribute, f"{logical_id}.{attribute}")

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                return str(self._get_att(*name.split(".", 1)))
            return str(self._ref(name))

        return _SUB_VARIABLE.sub(replace, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(n) for n in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            function = self._functions().get(key)
            if function is not None:
                return function(value)
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not _NO_VALUE}

    def _functions(self) -> dict[str, Callable[[Any], Any]]:
        def sub(value: Any) -> Any:
            if isinstance(value, list):
                return self._sub(value[0], {k: self.resolve(v) for k, v in value[1].items()})
            return self._sub(value, {})

        def find_in_map(value: Any) -> Any:
            name, first, second = (self.resolve(v) for v in value)
            return self.template["Mappings"][name][first][second]

        def if_(value: Any) -> Any:
            name, then, otherwise = value
            return self.resolve(then if self.condition(name) else otherwise)

        return {
            "Ref": self._ref,
            "Fn::GetAtt": lambda v: self._get_att(*(v if isinstance(v, list) else str(v).split(".", 1))),
            "Fn::Sub": sub,
            "Fn::If": if_,
            "Fn::FindInMap": find_in_map,
            "Fn::Equals": lambda v: str(self.resolve(v[0])) == str(self.resolve(v[1])),
            "Fn::Not": lambda v: not self.resolve(v[0]),
            "Fn::And": lambda v: all(self.resolve(x) for x in v),
            "Fn::Or": lambda v: any(self.resolve(x) for x in v),
            "Condition": self.condition,
            "Fn::Join": lambda v: str(v[0]).join(str(self.resolve(x)) for x in self.resolve(v[1])),
            "Fn::Select": lambda v: self.resolve(v[1])[int(self.resolve(v[0]))],
        }


def function_spec(template: Mapping[str, Any], logical_id: str, resolver: Resolver) -> FunctionSpec:
    resources = template.get("Resources") or {}
    functions = sorted(k for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Function")
    resource = resources.get(logical_id)
    if resource is None or resource.get("Type") != "AWS::Serverless::Function":
        raise TemplateError(f"no function {logical_id!r} in the template; functions: {', '.join(functions)}")
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    properties = resource.get("Properties") or {}
    environment: dict[str, Any] = {}
    for source in (globals_, properties):
        variables = resolver.resolve((source.get("Environment") or {}).get("Variables") or {})
        environment.update(variables)
    handler = properties.get("Handler") or globals_.get("Handler")
    if not handler:
        raise TemplateError(f"function {logical_id} has no Handler")
    return FunctionSpec(
        logical_id=logical_id,
        handler=str(handler),
        timeout=int(resolver.resolve(properties.get("Timeout", globals_.get("Timeout", 3)))),
        memory_mb=int(resolver.resolve(properties.get("MemorySize", globals_.get("MemorySize", 128)))),
        environment={k: str(v) for k, v in environment.items()},
    )
