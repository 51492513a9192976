"""``heap-forwarder``: thin command-line fronts on the same pipeline the Lambda functions run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heap_forwarder.mapping.engine import MissingParameter
from heap_forwarder.mapping.loader import build_playbook, compile_merged, merged_document
from heap_forwarder.mapping.playbook import PlaybookError
from heap_forwarder_tools.json_files import JsonFileError, read_json
from heap_forwarder_tools.preview import APP_ID_PLACEHOLDER, Previewer


def cmd_preview(args: argparse.Namespace) -> int:
    try:
        playbook = build_playbook(args.mapping)
    except PlaybookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        hash_key = _preview_hash_key(args.hash_key_file)
    except OSError as error:
        print(f"error: cannot read the hash key file: {error.strerror or error}", file=sys.stderr)
        return 2
    try:
        previewer = Previewer(playbook, args.app_id, args.user_id, hash_key=hash_key, explain=args.explain)
    except MissingParameter as error:
        print(f"error: {error}; preview takes the key from --hash-key-file", file=sys.stderr)
        return 2
    status = 0
    for path in args.files:
        try:
            document = read_json(Path(path))
        except JsonFileError as error:
            print(f"== {path}\nerror: {error}", file=sys.stderr)
            status = 1
            continue
        preview = previewer.document(document, str(path))
        print("\n".join(preview.lines()))
        if not preview.all_mapped:
            status = 1
    return status


def _preview_hash_key(path: Path | None) -> bytes | None:
    """Preview never reads SSM: a playbook that hashes takes its key from a local file."""
    if path is None:
        return None
    return path.read_bytes().strip()


def cmd_mapping_check(args: argparse.Namespace) -> int:
    try:
        merged = merged_document(args.file)
        playbook = compile_merged(merged)
    except PlaybookError as error:
        print(f"{error.source}: {len(error.problems)} problem(s)", file=sys.stderr)
        for problem in error.details:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    # The playbook in force: mappings an override removed are gone from this list.
    events = sorted(name for name, mapping in playbook.spec.events.items() if mapping is not None)
    print(
        f"{playbook.source}: OK ({len(events)} event mappings: {', '.join(events)}; default: "
        f"{'yes' if playbook.default else 'none'}"
        f"{'; hashes values: needs HASH_KEY_PARAMETER' if playbook.uses_hash else ''})"
    )
    for warning in playbook.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    if args.print:
        import yaml

        print(f"# The merged playbook: {merged.source}")
        print(yaml.safe_dump(merged.document, sort_keys=False, allow_unicode=True, width=110), end="")
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    from heap_forwarder_tools.emulator import serve

    serve(args.host, args.port, args.app_id or ["demo-app-id"], args.time_scale, args.enforce_rate_limits)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from heap_forwarder_tools.local.demo import run_demo

    summary = run_demo(args.root)
    return 0 if summary["tracked"] else 1


def _env_overrides(path: Path | None, logical_id: str) -> dict[str, str]:
    """SAM's --env-vars file: {"FunctionLogicalId": {"VAR": "value"}, "Parameters": {...}}."""
    if path is None:
        return {}
    from heap_forwarder_tools.local.invoke import InvokeError

    try:
        document = read_json(path)
    except JsonFileError as error:
        raise InvokeError(str(error)) from None
    if not isinstance(document, dict):
        raise InvokeError(f"{path}: --env-vars takes a JSON object, not {type(document).__name__}")
    merged = {**document.get("Parameters", {}), **document.get(logical_id, {})}
    return {str(k): str(v) for k, v in merged.items()}


def cmd_invoke(args: argparse.Namespace) -> int:
    from heap_forwarder_tools.local.invoke import InvokeError, read_event, shape_event, trigger_of
    from heap_forwarder_tools.local.sandbox import LOCAL_WRITE_KEY, Sandbox
    from heap_forwarder_tools.local.template import Resolver, TemplateError, function_spec, load_template

    try:
        document = read_event(args.event)
        overrides = _env_overrides(args.env_vars, args.function)
        if args.aws:
            # Real AWS and Heap: the environment comes from the template and --env-vars only.
            template = load_template(args.template)
            spec = function_spec(template, args.function, Resolver(template))
            spec.environment.update(overrides)
            event, note = shape_event(document, trigger_of(template, args.function), str(args.event))
            if note:
                print(f"note: {note}", file=sys.stderr)
            response, metrics = _invoked(spec, event)
            if args.metrics:
                print("\n".join(metrics), file=sys.stderr)  # stdout stays the response's JSON
            print(json.dumps(response, indent=2))
            return 0
        with Sandbox(template_path=args.template) as sandbox:
            spec = sandbox.function(args.function, overrides)
            trigger = trigger_of(sandbox.template, args.function)
            event, note = shape_event(document, trigger, str(args.event), LOCAL_WRITE_KEY)
            if note:
                print(f"note: {note}", file=sys.stderr)
            response, metrics = _invoked(spec, event)
            state = sandbox.emulator.state()
            letters = sandbox.dead_letters()
    except TemplateError as error:
        print(f"error: {error}{_template_hint(args.template)}", file=sys.stderr)
        return 2
    except InvokeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.metrics:
        print("Metrics (CloudWatch EMF, as Lambda would print them):")
        for line in metrics:
            print(line)
    print("Response:")
    print(json.dumps(response, indent=2))
    print(
        f"Heap received {len(state['tracked_events'])} track event(s), user properties for "
        f"{len(state['user_properties'])} identity(ies), {len(state['account_properties'])} account(s):"
    )
    print(
        json.dumps(
            {k: state[k] for k in ("tracked_events", "user_properties", "account_properties", "identifies")},
            indent=2,
            ensure_ascii=False,
        )
    )
    for letter in letters:
        print(f"DLQ: [{letter.attributes.get('ErrorClass')}] {letter.attributes.get('Reason')}")
    return 0


def _invoked(spec: Any, event: dict[str, Any]) -> tuple[Any, list[str]]:
    """The handler's response and the metric lines it printed (kept apart: shown with --metrics)."""
    import contextlib
    import io

    from heap_forwarder_tools.local.invoke import invoke
    from heap_forwarder_tools.local.metrics import metric_lines

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        response = invoke(spec, event)
    printed = captured.getvalue()
    metrics = metric_lines(printed)
    others = [line for line in printed.splitlines() if line not in metrics]
    if others:
        print("\n".join(others), file=sys.stderr)
    return response, metrics


def cmd_serve(args: argparse.Namespace) -> int:
    from heap_forwarder_tools.local.server import serve_aws
    from heap_forwarder_tools.local.stack import serve_stack
    from heap_forwarder_tools.local.template import TemplateError

    if not args.time_scale > 0:
        print("error: --time-scale must be a positive number", file=sys.stderr)
        return 2
    try:
        if args.aws:
            serve_aws(args.host, args.port, args.template)
        else:
            serve_stack(args.host, args.port, args.template, time_scale=args.time_scale)
    except TemplateError as error:
        print(f"error: {error}{_template_hint(args.template)}", file=sys.stderr)
        return 2
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    from heap_forwarder_tools.studio.server import serve

    serve(root=args.root, template=args.template, port=args.port, time_scale=args.time_scale)
    return 0


def _template_hint(template: Path) -> str:
    """What to pass when the template is not where it was looked for."""
    if template.exists():
        return ""
    return (
        f"; run this from the project's folder (where template.yaml is) or pass -t PATH/template.yaml"
        f" (looked for {template.resolve()})"
    )


def cmd_redrive(args: argparse.Namespace) -> int:
    from heap_forwarder_tools.redrive import run_redrive_command

    return run_redrive_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heap-forwarder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    preview = commands.add_parser(
        "preview", help="print the exact Heap request(s) events produce (no network)"
    )
    preview.add_argument(
        "files", nargs="+", help="event JSON: plain, {batch: [...]}, SQS or API Gateway event"
    )
    preview.add_argument("--mapping", type=Path, help="a playbook override file (as MAPPING_FILE)")
    preview.add_argument("--app-id", help=f"the Heap app ID to show (default: {APP_ID_PLACEHOLDER})")
    preview.add_argument("--user-id", help="MY_USER_ID connection parameter, if your playbook uses it")
    preview.add_argument(
        "--explain", action="store_true", help="for each output key: the row or edit, and its file"
    )
    preview.add_argument(
        "--hash-key-file",
        type=Path,
        help="a file holding the hash key, when the playbook hashes values (preview never reads SSM)",
    )
    preview.set_defaults(run=cmd_preview)

    mapping = commands.add_parser("mapping", help="playbook tools").add_subparsers(
        dest="mapping_command", required=True
    )
    check = mapping.add_parser(
        "check", help="validate a playbook (merged onto the default) and list every problem"
    )
    check.add_argument(
        "file", nargs="?", type=Path, help="playbook override file (default: the bundled playbook)"
    )
    check.add_argument("--print", action="store_true", help="also print the merged playbook (YAML)")
    check.set_defaults(run=cmd_mapping_check)
    from heap_forwarder_tools import push

    push_parser = mapping.add_parser(
        "push", help="check an override against a stack, then write it to the stack's mapping SSM parameter"
    )
    push.add_arguments(push_parser)
    push_parser.set_defaults(run=push.run_push_command)

    emulator = commands.add_parser("emulator", help="run the local Heap emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=0, help="0 picks a free port")
    emulator.add_argument(
        "--app-id", action="append", help="an accepted app ID (repeatable; default demo-app-id)"
    )
    emulator.add_argument(
        "--time-scale", type=float, default=1.0, help="Heap minutes pass this many times faster"
    )
    emulator.add_argument("--enforce-rate-limits", action="store_true")
    emulator.set_defaults(run=cmd_emulator)

    demo = commands.add_parser("demo", help="replay events/ through the real handlers into the emulator")
    demo.add_argument(
        "--root", type=Path, default=Path("."), help="the project folder (template.yaml, events/)"
    )
    demo.set_defaults(run=cmd_demo)

    invoke = commands.add_parser(
        "invoke", help="Docker-free `sam local invoke`: run a function's handler in-process"
    )
    invoke.add_argument("function", help="the function's logical ID in template.yaml, e.g. ConsumerFunction")
    invoke.add_argument("-e", "--event", type=Path, required=True, help="the Lambda event JSON file")
    invoke.add_argument("-t", "--template", type=Path, default=Path("template.yaml"))
    invoke.add_argument("-n", "--env-vars", type=Path, help="SAM-style environment overrides JSON")
    invoke.add_argument(
        "--aws", action="store_true", help="use real AWS and Heap (your credentials), not the sandbox"
    )
    invoke.add_argument(
        "--metrics", action="store_true", help="also print the metrics the function emitted (EMF JSON)"
    )
    invoke.set_defaults(run=cmd_invoke)

    serve = commands.add_parser(
        "serve",
        help="the local stack: the ingest API (like `sam local start-api`), the consumer on the local"
        " main queue, moto's server and the Heap emulator",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000, help="0 picks a free port")
    serve.add_argument("-t", "--template", type=Path, default=Path("template.yaml"))
    serve.add_argument(
        "--aws", action="store_true", help="use real AWS and Heap (your credentials), not the sandbox"
    )
    serve.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="K",
        help="run the local stack's clock K times faster: the consumer's backoff (30 s doubling to"
        " 30 min) and the retry budgets are divided by K (e.g. 900: a Heap outage rehearsal in seconds)",
    )
    serve.set_defaults(run=cmd_serve)

    studio = commands.add_parser(
        "studio",
        help="the event tester page on 127.0.0.1: preview, override, send, traffic (local stack only)",
    )
    studio.add_argument("--port", type=int, default=8400, help="0 picks a free port")
    studio.add_argument(
        "--root", type=Path, default=Path("."), help="the project folder (events/ for the samples)"
    )
    studio.add_argument("-t", "--template", type=Path, default=Path("template.yaml"))
    studio.add_argument(
        "--time-scale",
        type=float,
        default=10.0,
        help="the API's retry budget and the consumer's backoff pass this many times faster",
    )
    studio.set_defaults(run=cmd_studio)

    redrive = commands.add_parser("redrive", help="move DLQ messages back to the main queue after a fix")
    from heap_forwarder_tools.redrive import add_arguments as add_redrive_arguments

    add_redrive_arguments(redrive)
    redrive.set_defaults(run=cmd_redrive)

    from heap_forwarder_tools.backfill import command as backfill

    backfill_parser = commands.add_parser(
        "backfill", help="replay historical events (files, s3://) into Heap through the stack's main queue"
    )
    backfill.add_arguments(backfill_parser)
    backfill_parser.set_defaults(run=backfill.run_backfill_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
