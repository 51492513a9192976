"""The deployable pieces agree with each other: dependencies, handlers, the CLI, CI."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from heap_forwarder_tools.local.template import Resolver, function_spec, load_template

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "handler" / "heap_forwarder"
OVERRIDES = ROOT / "handler" / "overrides"
# What handler/overrides/ may ship: playbook override files, read only when MappingFile names one.
OVERRIDE_SUFFIXES = (".yaml", ".yml", ".json")


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


def test_ci_installs_the_browser_and_never_skips_the_browser_test() -> None:
    ci = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "apt-get install -y -qq chromium chromium-driver" in ci
    assert "export HEAP_FORWARDER_REQUIRE_BROWSER=1" in ci
    assert ci.index("HEAP_FORWARDER_REQUIRE_BROWSER") < ci.index("\nmake test")
    assert "apt-get install -y chromium chromium-driver" in readme
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(d.startswith("selenium") for d in pyproject["project"]["optional-dependencies"]["dev"])


def test_the_studio_page_is_package_data_of_the_tools() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["heap_forwarder_tools"]
    package = ROOT / "tools/heap_forwarder_tools"
    static = {p.relative_to(package).as_posix() for p in (package / "studio/static").iterdir()}
    covered = {p.relative_to(package).as_posix() for pattern in patterns for p in package.glob(pattern)}
    assert {"studio/static/index.html", "studio/static/studio.js", "studio/static/studio.css"} <= static
    assert static <= covered


# ---------------------------------------------------------------- what ships to Lambda

# Modules each function needs (their entry points and what those stand on).
NEEDED = (
    "entry/sqs.py",
    "entry/api.py",
    "pipeline.py",
    "outcome.py",
    "models.py",
    "inbound.py",
    "envelopes.py",
    "mapping/engine.py",
    "mapping/default_playbook.yaml",
    "heap/client.py",
    "heap/rules.py",
    "edge/consumer.py",
    "edge/ingest.py",
    "edge/letters.py",
    "edge/runtime.py",
    "edge/api_contract.py",
    "edge/parking.py",
)
# What never runs in Lambda, by the names it had in the runtime package or might get again.
TOOL_NAMES = {"emulator", "local", "cli", "redrive", "openapi", "demo", "sandbox", "poller"}
# A tripwire, not a target: the runtime was 5,039 lines when the tools moved out (8,359
# before); 6,695 with the playbook's property operations, global rows, and its problems'
# file:line:column and did-you-mean (mapping/edits.py, source_map.py, suggest.py); 7,526 with
# the compiled playbook (mapping/compiled.py) and the cheaper identify path. Raise it knowingly
# when the runtime grows; a jump (the tools are ~7,700 lines now) means they ship again.
MAX_ARTIFACT_LINES = 8_200

# Run in a fresh interpreter whose sys.path starts at the artifact: imports every module the
# artifact holds, then reports where each of our modules came from and which installed
# distributions got imported, so the test can tell an artifact that works alone from one that
# leans on the source tree, the tools package or a dev-only dependency.
_IMPORT_ALL = """
import importlib, importlib.metadata, json, pathlib, sys
root = pathlib.Path(sys.argv[1])
names = sorted(
    ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    for p in root.joinpath("heap_forwarder").rglob("*.py")
)
for name in names:
    importlib.import_module(name)
ours = {
    n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.startswith("heap_forwarder")
}
tops = importlib.metadata.packages_distributions()
dists = sorted({d for n in list(sys.modules) for d in tops.get(n.split(".")[0], [])})
print(json.dumps({"imported": names, "ours": ours, "dists": dists}))
"""


def _build(function: str, artifacts: Path, source: Path = ROOT / "handler") -> None:
    artifacts.mkdir()
    # What sam build runs for a BuildMethod: makefile function, with the test's interpreter for
    # the bytecode (sam uses python3.13; the .pyc names carry the interpreter's tag).
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(source),
            f"build-{function}",
            f"ARTIFACTS_DIR={artifacts}",
            f"PYTHON={sys.executable}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _lines(root: Path) -> int:
    return sum(len(p.read_text("utf-8").splitlines()) for p in root.rglob("*.py"))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("build") / "ConsumerFunction"
    _build("ConsumerFunction", artifacts)
    return artifacts


def _override_files(root: Path) -> set[str]:
    return {path for path in _files(root) if path.endswith(OVERRIDE_SUFFIXES)}


def test_the_function_build_ships_the_runtime_package_and_the_override_files_alone(artifact: Path) -> None:
    assert sorted(p.name for p in artifact.iterdir()) == ["heap_forwarder", "overrides"]
    assert _files(artifact / "overrides") == _override_files(OVERRIDES)
    shipped = _files(artifact / "heap_forwarder")
    assert shipped == _files(RUNTIME)
    assert set(NEEDED) <= shipped
    parts = {part.removesuffix(".py") for path in shipped for part in path.split("/")}
    assert not parts & TOOL_NAMES, f"tool modules in the Lambda artifact: {sorted(parts & TOOL_NAMES)}"


def test_every_shipped_module_has_its_bytecode(artifact: Path) -> None:
    tag = sys.implementation.cache_tag
    for source in (artifact / "heap_forwarder").rglob("*.py"):
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert compiled.is_file(), f"{compiled} missing: a cold start would compile {source.name}"


def test_the_artifact_stays_small(artifact: Path) -> None:
    assert _lines(artifact) <= MAX_ARTIFACT_LINES


def test_both_functions_ship_the_same_code(artifact: Path, tmp_path: Path) -> None:
    _build("ApiFunction", tmp_path / "ApiFunction")
    assert _files(tmp_path / "ApiFunction") == _files(artifact)


def _run_from_artifact(
    artifact: Path, code: str, argument: str, cwd: Path, environment: dict[str, str] | None = None
) -> Any:
    """``code`` run in a fresh interpreter whose only source of our modules is the artifact
    (cwd elsewhere: the repository's own folders must not be what makes an import work); the
    JSON it prints."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AWS_", "POWERTOOLS_"))}
    environ.pop("MAPPING_FILE", None)
    environ |= {
        "PYTHONPATH": str(artifact),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    environ |= environment or {}
    done = subprocess.run(
        [sys.executable, "-c", code, argument],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_shipped_module_imports_from_the_artifact_alone(artifact: Path, tmp_path: Path) -> None:
    report = _run_from_artifact(artifact, _IMPORT_ALL, str(artifact), tmp_path)
    assert {"heap_forwarder.entry.sqs", "heap_forwarder.entry.api"} <= set(report["imported"])
    strays = {n: f for n, f in report["ours"].items() if not f or not Path(f).is_relative_to(artifact)}
    assert not strays, f"modules loaded from outside the artifact: {strays}"

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev_only = set(_names(project["optional-dependencies"]["dev"])) - set(_names(project["dependencies"]))
    leaked = {d for d in report["dists"] if d.lower().replace("_", "-") in dev_only}
    assert not leaked, f"the functions import dev-only packages: {sorted(leaked)}"


# ---------------------------------------------------------------- override files in the artifact


def test_the_build_ships_every_override_file_and_nothing_else_of_the_folder(tmp_path: Path) -> None:
    """sam build runs the Makefile in a copy of handler/; here, a copy holding a user's files."""
    source = tmp_path / "handler"
    shutil.copytree(ROOT / "handler", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "overrides" / "prod.yaml").write_text("events: {Video Played: null}\n", "utf-8")
    (source / "overrides" / "eu").mkdir()
    (source / "overrides" / "eu" / "prod.json").write_text('{"rules": {"arrays": "stringify"}}', "utf-8")
    (source / "overrides" / "notes.txt").write_text("not an override", "utf-8")
    (source / "overrides" / "helper.py").write_text("print('never shipped')\n", "utf-8")

    _build("ConsumerFunction", tmp_path / "ConsumerFunction", source)

    shipped = _files(tmp_path / "ConsumerFunction" / "overrides")
    assert {"prod.yaml", "eu/prod.json", "example.yaml"} <= shipped
    assert shipped == _override_files(source / "overrides")
    assert (tmp_path / "ConsumerFunction" / "overrides" / "prod.yaml").read_text("utf-8") == (
        "events: {Video Played: null}\n"
    )


def test_a_build_without_an_overrides_folder_still_succeeds(tmp_path: Path) -> None:
    source = tmp_path / "handler"
    shutil.copytree(ROOT / "handler", source, ignore=shutil.ignore_patterns("__pycache__", "overrides"))
    _build("ApiFunction", tmp_path / "ApiFunction", source)
    assert sorted(p.name for p in (tmp_path / "ApiFunction").iterdir()) == ["heap_forwarder", "overrides"]
    assert _files(tmp_path / "ApiFunction" / "overrides") == set()


# Run in a fresh interpreter on the artifact alone, with the function's environment: the playbook
# the function builds at a cold start (edge/runtime.py), applied to one event; its items as JSON.
_MAP_ONE = """
import json, sys
from heap_forwarder.edge.runtime import build_runtime
from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.pipeline import Pipeline
playbook = build_runtime().playbook_holder().playbook
prepared = Pipeline(Mapper(playbook, {"MY_APP_ID": "app"}), deliverer=None).prepare([json.loads(sys.argv[1])])
assert all(d is None for d in prepared.decided), prepared.problems
print(json.dumps({"source": playbook.source, "items": [i.body for i in prepared.items]}))
"""


def _map_in_artifact(artifact: Path, cwd: Path, environment: dict[str, str]) -> dict[str, Any]:
    event = json.loads((ROOT / "events" / "raw" / "custom_track.json").read_text("utf-8"))
    result: dict[str, Any] = _run_from_artifact(artifact, _MAP_ONE, json.dumps(event), cwd, environment)
    return result


def test_the_function_loads_an_override_shipped_in_the_artifact_by_mapping_file(
    artifact: Path, tmp_path: Path
) -> None:
    """MappingFile=/var/task/overrides/example.yaml, with the artifact standing in for /var/task."""
    shipped = artifact / "overrides" / "example.yaml"
    assert shipped.is_file()

    result = _map_in_artifact(artifact, tmp_path, {"MAPPING_FILE": str(shipped)})

    assert result["source"] == f"default_playbook.yaml + {shipped}"
    [item] = result["items"]
    assert item["properties"]["mapped_by"] == "overrides/example.yaml"
    assert item["properties"]["video"] == "vid_blend_101"


def test_a_shipped_override_is_not_loaded_unless_mapping_file_names_it(
    artifact: Path, tmp_path: Path
) -> None:
    result = _map_in_artifact(artifact, tmp_path, {})

    assert result["source"] == "default_playbook.yaml"
    [item] = result["items"]
    assert "mapped_by" not in item["properties"]
    assert item["event"] == "Video Played"
