"""The deployable pieces agree with each other: dependencies, handlers, the CLI, CI."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

from heap_forwarder_tools.local.template import Resolver, function_spec, load_template

ROOT = Path(__file__).resolve().parent.parent


def _names(requirements: list[str]) -> dict[str, str]:
    found = {}
    for raw in requirements:
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[\[<>=!~ ]", line, maxsplit=1)[0].lower()
            found[name] = line
    return found


def test_the_layer_installs_the_runtime_dependencies_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"])
    layer = _names((ROOT / "layers/deps/requirements.txt").read_text().splitlines())
    wanted.pop("boto3")  # the Lambda runtime provides it
    assert layer == wanted


def test_every_function_in_the_template_names_a_real_handler() -> None:
    template = load_template(ROOT / "template.yaml")
    functions = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"]
    assert sorted(functions) == ["ApiFunction", "ConsumerFunction"]
    for logical_id in functions:
        spec = function_spec(template, logical_id, Resolver(template))
        assert template["Resources"][logical_id]["Properties"]["CodeUri"] == "handler/"
        module, _, name = spec.handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in readme and "make demo" in readme
    assert re.search(r"^make test$", ci, re.MULTILINE)
