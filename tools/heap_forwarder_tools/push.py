"""``heap-forwarder mapping push FILE --stack NAME``: a playbook override into a stack's SSM parameter.

The override is held to what the stack's functions will build from it before anything is
written: the bundled default, then the stack's ``MappingFile`` (its copy in this repository:
``/var/task/...`` is ``handler/...``, what ``sam build`` ships), then the override, merged and
validated by the runtime's own loader. Only the override's text is written (the functions do
the merging themselves), to the parameter the stack names in ``MappingParameterName``.

SSM's tiers: a Standard parameter holds 4 KB, an Advanced one 8 KB. The text goes in a Standard
parameter while it fits, unless the parameter is Advanced already: SSM cannot turn an Advanced
parameter back into a Standard one, so its tier is kept. Anything over 8 KB is refused, pointing
at ``MappingFile``.

Only the standard library and the runtime's loader are imported at start: the CLI builds every
parser at start-up, and boto3 is loaded when a push actually runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from heap_forwarder import defaults
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import PlaybookError
from heap_forwarder_tools.stacks import StackError, cloudformation_client, describe_error, describe_stack

STANDARD_MAX_BYTES = 4096  # the largest value of a Standard-tier SSM parameter
ADVANCED_MAX_BYTES = 8192  # ... and of an Advanced-tier one
STANDARD = "Standard"
ADVANCED = "Advanced"
# Where Lambda unpacks a function's code: a MappingFile under it is a file of the code folder.
LAMBDA_CODE_ROOT = PurePosixPath("/var/task")
SHIPPED_OVERRIDES = LAMBDA_CODE_ROOT / "overrides"  # handler/overrides/, as handler/Makefile ships it
CODE_FUNCTION = "ConsumerFunction"  # the function whose CodeUri names the code folder
DEFAULT_CODE_URI = "handler/"

Output = Callable[[str], None]


class PushError(StackError):
    """The push cannot start: no region, no such stack, no parameter to write to..."""


class OverrideRefused(RuntimeError):
    """The override would not work in the stack (problems, or too large); nothing was written."""

    def __init__(self, summary: str, problems: list[str] | None = None) -> None:
        super().__init__(summary)
        self.problems = problems or []


@dataclass(frozen=True)
class StackMapping:
    """The stack's mapping parameters, as deployed."""

    stack: str
    parameter_name: str | None  # MappingParameterName
    mapping_file: str | None  # MappingFile: a path inside the function
    hash_key_parameter: str | None = None  # HashKeyParameterName: the functions' hash key


@dataclass(frozen=True)
class PushResult:
    parameter_name: str
    size: int
    tier: str
    parameter_type: str
    playbook_source: str
    version: int | None  # the parameter's new version; None in a dry run
    created: bool  # the parameter did not exist before


def stack_mapping(cloudformation: Any, stack: str) -> StackMapping:
    """MappingParameterName, MappingFile and HashKeyParameterName from the stack's parameters
    (empty is unset)."""
    described = describe_stack(cloudformation, stack)
    return StackMapping(
        stack,
        described.parameter("MappingParameterName"),
        described.parameter("MappingFile"),
        described.parameter("HashKeyParameterName"),
    )


def code_folder(template: Path) -> Path:
    """The folder ``sam build`` packs into the functions: the template's folder + their CodeUri."""
    from heap_forwarder_tools.local.template import TemplateError, load_template

    try:
        document = load_template(template)
    except TemplateError as error:
        raise PushError(f"{error}; give --mapping-file, the local copy of the stack's MappingFile") from None
    function = document.get("Resources", {}).get(CODE_FUNCTION, {})
    code_uri = function.get("Properties", {}).get("CodeUri", DEFAULT_CODE_URI)
    if not isinstance(code_uri, str):
        raise PushError(f"{template}: {CODE_FUNCTION}'s CodeUri is not a folder; give --mapping-file")
    return template.parent / code_uri


def local_mapping_file(deployed: str, code: Path) -> Path:
    """The repository file a deployed MappingFile was built from: /var/task/X is <code>/X (a
    relative path too: Lambda runs the functions in /var/task)."""
    path = LAMBDA_CODE_ROOT / deployed
    if not path.is_relative_to(LAMBDA_CODE_ROOT):
        raise PushError(
            f"the stack's MappingFile {deployed} is not in the function's code ({LAMBDA_CODE_ROOT}/): "
            "give --mapping-file, a local copy of that file, to check the override against it"
        )
    local = code.joinpath(*path.relative_to(LAMBDA_CODE_ROOT).parts)
    if not local.is_file():
        raise PushError(
            f"the stack's MappingFile {deployed} is {local} in this repository, which does not exist: "
            "check out what is deployed, or give --mapping-file"
        )
    return local


def choose_tier(size: int, current_tier: str | None) -> str:
    """Standard while the text fits (4 KB), else Advanced (8 KB); an Advanced parameter stays so."""
    if size > ADVANCED_MAX_BYTES:
        raise OverrideRefused(
            f"the override is {size:,} bytes; an SSM parameter holds at most {ADVANCED_MAX_BYTES:,} "
            "(Advanced tier). Ship it with the code instead: put it in handler/overrides/ and deploy "
            "with MappingFile=/var/task/overrides/<name>.yaml (docs/deploy.md)"
        )
    if current_tier == ADVANCED or size > STANDARD_MAX_BYTES:
        return ADVANCED
    return STANDARD


def validate(text: str, mapping_file: Path | None, parameter_name: str, *, has_hash_key: bool = True) -> str:
    """Builds the playbook the functions would: default + MappingFile + this text; its source.
    Raises ``OverrideRefused`` listing every problem, and for a playbook that hashes when the
    functions have no hash key (they would retry every record as a configuration fault)."""
    if not text.strip():
        raise OverrideRefused(
            "the override is empty, and an SSM parameter cannot be: to clear the override, push a "
            "file holding {}"
        )
    try:
        playbook = build_playbook(mapping_file, text, parameter_name=parameter_name)
    except PlaybookError as error:
        raise OverrideRefused(f"{error.source}: {len(error.problems)} problem(s)", error.problems) from None
    if playbook.uses_hash and not has_hash_key:
        raise OverrideRefused(
            f"{playbook.source}: hashes values (an edit's hash:), but the stack has no "
            "HashKeyParameterName, so its functions have no hash key and would retry every record "
            "as a configuration fault. Create the SecureString key and deploy once with "
            "HashKeyParameterName set (docs/mapping.md, property operations), then push again"
        )
    return playbook.source


def _current(ssm: Any, name: str) -> Mapping[str, Any] | None:
    """The parameter's description (Type, Tier, KeyId), or None when it does not exist."""
    described = ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}]
    )
    found = [p for p in described.get("Parameters", []) if p.get("Name") == name]
    return found[0] if found else None


def push(
    cloudformation: Any,
    ssm: Any,
    stack: str,
    text: str,
    *,
    mapping_file: Path | None = None,
    template: Path = Path("template.yaml"),
    dry_run: bool = False,
    say: Output = print,
) -> PushResult:
    """Check the override against the stack, then write it to the stack's mapping parameter.

    ``mapping_file``: the local copy of the stack's MappingFile (default: found through the
    template's code folder). Nothing is written when it raises.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    deployed = stack_mapping(cloudformation, stack)
    if deployed.parameter_name is None:
        raise PushError(
            f"stack {stack!r} has no MappingParameterName, so its functions read no SSM override. "
            "Deploy it once with MappingParameterName set, e.g. `sam deploy ... --parameter-overrides "
            "... MappingParameterName=/heap-forwarder/<stage>/mapping` (or in the environment's "
            "parameter_overrides in samconfig.toml), then push again"
        )
    name = deployed.parameter_name
    if deployed.mapping_file is not None and mapping_file is None:
        mapping_file = local_mapping_file(deployed.mapping_file, code_folder(template))
    if deployed.mapping_file is None and mapping_file is not None:
        say(f"note: stack {stack!r} has no MappingFile; checking against {mapping_file} as asked")
    elif deployed.mapping_file is not None:
        say(f"stack {stack!r}: MappingFile {deployed.mapping_file} (checked against {mapping_file})")
        if not (LAMBDA_CODE_ROOT / deployed.mapping_file).is_relative_to(SHIPPED_OVERRIDES):
            say(
                f"warning: sam build ships only handler/overrides/ ({SHIPPED_OVERRIDES}/): unless "
                f"{deployed.mapping_file} comes from a layer, the functions cannot read it and do "
                "not start (the configuration-fault alarm), whatever the parameter holds"
            )

    source = validate(text, mapping_file, name, has_hash_key=deployed.hash_key_parameter is not None)
    size = len(text.encode("utf-8"))
    choose_tier(size, None)  # refuses what no tier holds before SSM is asked anything
    try:
        current = _current(ssm, name)
        tier = choose_tier(size, current.get("Tier") if current else None)
        parameter_type = str(current.get("Type") or "String") if current else "String"
        if dry_run:
            return PushResult(name, size, tier, parameter_type, source, None, current is None)
        request: dict[str, Any] = {
            "Name": name,
            "Value": text,
            "Type": parameter_type,
            "Tier": tier,
            "Overwrite": True,
        }
        if parameter_type == "SecureString" and current and current.get("KeyId"):
            request["KeyId"] = current["KeyId"]  # kept: without it SSM would re-encrypt under aws/ssm
        version = ssm.put_parameter(**request).get("Version")
    except ClientError as error:
        raise PushError(f"cannot write SSM parameter {name}: {describe_error(error)}") from None
    except BotoCoreError as error:
        raise PushError(f"cannot write SSM parameter {name}: {error}") from None
    return PushResult(name, size, tier, parameter_type, source, version, current is None)


def pickup_delay_text(max_age: int = defaults.PARAMETERS_MAX_AGE_SECONDS) -> str:
    """When the functions use a newly written override (edge/runtime.py reads the parameter at
    every invocation through the SSM cache of edge/parameters.py, which keeps a value max_age s)."""
    return (
        f"new function instances use it at once; running ones at their first invocation after "
        f"their cached copy expires: at most {max_age} s after this write "
        f"(POWERTOOLS_PARAMETERS_MAX_AGE). A playbook the functions refuse leaves the last good one "
        f"in force and counts MappingErrors"
    )


# ---------------------------------------------------------------------------------- the CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``mapping push`` subcommand's options."""
    parser.description = (
        "Write a playbook override to the stack's mapping SSM parameter (MappingParameterName), "
        "after checking it merges onto the default and the stack's MappingFile without problems. "
        "The running functions pick it up without a deploy."
    )
    parser.add_argument("file", type=Path, help="the override (YAML or JSON), as for `mapping check`")
    parser.add_argument("--stack", metavar="NAME", required=True, help="the deployed stack's name")
    parser.add_argument("--region", help="the stack's AWS region (default: your AWS configuration)")
    parser.add_argument(
        "--template",
        type=Path,
        default=Path("template.yaml"),
        help="the stack's template, to find its MappingFile here: /var/task/X is <CodeUri>/X "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--mapping-file",
        type=Path,
        metavar="PATH",
        help="the local copy of the stack's MappingFile, if it is not where --template says",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the override and show what would be written; write nothing",
    )


def run_push_command(args: argparse.Namespace) -> int:
    """0: written (or dry run); 1: the override was refused; 2: could not start."""
    try:
        text = args.file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"error: cannot read {args.file}: {error}", file=sys.stderr)
        return 2

    def note(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        cloudformation, ssm = _clients(args.region)
        result = push(
            cloudformation,
            ssm,
            args.stack,
            text,
            mapping_file=args.mapping_file,
            template=args.template,
            dry_run=args.dry_run,
            say=note,
        )
    except StackError as error:  # PushError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OverrideRefused as error:
        print(f"refused, nothing written: {error}", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    what = f"{result.size:,} bytes, {result.tier} tier, {result.parameter_type}"
    print(f"{result.playbook_source}: OK")
    if args.dry_run:
        verb = "would create" if result.created else "would overwrite"
        print(f"dry run: {verb} SSM parameter {result.parameter_name} ({what}); nothing was written")
        return 0
    verb = "created" if result.created else "wrote"
    print(f"{verb} SSM parameter {result.parameter_name} version {result.version} ({what})")
    print(f"{pickup_delay_text()}.")
    return 0


def _clients(region: str | None) -> tuple[Any, Any]:
    import boto3

    cloudformation = cloudformation_client(region)
    # The parameter lives in the stack's region: the functions read it there.
    return cloudformation, boto3.client("ssm", region_name=cloudformation.meta.region_name)
