"""The playbook: the declarative mapping, its schema, and its compilation into fast row readers.

A playbook has MetaRouter's structure:

- ``params``: connection parameters (``MY_APP_ID`` ...) that rows may reference;
- ``global``: ``request`` rows (request-level fields such as ``app_id``) and ``item`` rows
  applied to every Heap item whose key the event's own mapping did not set;
- ``events``: event-specific mappings keyed by event name, matched ignoring case and separators;
- ``default``: the mapping for any other track event;
- ``rules``: how Heap's value rules are met (nested objects, arrays).

Everything is validated and compiled once at load time; a problem names the file, the row
and the reason. See docs/mapping.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

import jmespath
import jmespath.exceptions
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from heap_forwarder.heap.items import Endpoint
from heap_forwarder.mapping.source_map import DocumentPath, Location
from heap_forwarder.mapping.suggest import did_you_mean, field_names_at
from heap_forwarder.mapping.transforms import Transform, TransformError, build_transform

ENDPOINTS_BY_NAME = {
    "track": Endpoint.TRACK,
    "add_user_properties": Endpoint.ADD_USER_PROPERTIES,
    "add_account_properties": Endpoint.ADD_ACCOUNT_PROPERTIES,
    "identify": Endpoint.IDENTIFY,
}
EndpointName = Literal["track", "add_user_properties", "add_account_properties", "identify"]


@dataclass(frozen=True)
class PlaybookProblem:
    """One problem (or warning): where in the playbook (``events.page.rows[2] (key)``), why, and,
    when the document came from a file or SSM text, the file, line and column it was written at."""

    where: str
    message: str
    path: DocumentPath = ()
    location: Location | None = None

    @property
    def text(self) -> str:
        """The problem without its location: ``events.page.rows[2] (key): why``."""
        return f"{self.where}: {self.message}" if self.where else self.message

    def __str__(self) -> str:
        return f"{self.location}: {self.text}" if self.location else self.text


class PlaybookError(ValueError):
    """A playbook that cannot be used: every problem, each naming where it is and why.

    ``problems`` are the problems' texts; ``details`` the same problems with their document path
    and, when known, their file, line and column (the message and ``str`` include them)."""

    def __init__(self, source: str, problems: Sequence[str | PlaybookProblem]) -> None:
        self.source = source
        self.details = [p if isinstance(p, PlaybookProblem) else PlaybookProblem("", p) for p in problems]
        self.problems = [p.text for p in self.details]
        super().__init__(f"{source}: " + "; ".join(str(p) for p in self.details))


# ---------------------------------------------------------------------------------------------
# Schema of the document (what users write)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RowSpec(_Strict):
    key: str = Field(min_length=1, description="Output key; dots nest (properties.user_agent).")
    from_: str | list[str] | None = Field(
        None, alias="from", description="Path(s) into the event; the first present value wins."
    )
    value: Any = Field(None, description="A static value.")
    param: str | None = Field(None, description="A connection parameter, e.g. MY_APP_ID.")
    expr: str | None = Field(None, description="A JMESPath expression over the event.")
    otherwise: Literal["event_hash"] | None = Field(
        None, description="When the input is missing: event_hash = a stable hash of the whole event."
    )
    transforms: list[str | dict[str, Any]] = Field(default_factory=list)
    required: bool = False
    endpoints: list[EndpointName] | None = Field(
        None, description="Global item rows only: the endpoints the row applies to (default: all)."
    )
    description: str | None = None


class RequestSpec(_Strict):
    endpoint: EndpointName
    when: str | None = Field(None, description="A path: the item is made only when it has a value.")
    rows: list[RowSpec]
    description: str | None = None


class ParamSpec(_Strict):
    required: bool = False
    value: str | None = Field(None, description="A fixed value (else given at deploy time, e.g. from SSM).")
    description: str | None = None


class GlobalSpec(_Strict):
    request: list[RowSpec] = Field(default_factory=list)
    item: list[RowSpec] = Field(default_factory=list)


class RulesSpec(_Strict):
    nested: Literal["flatten", "stringify", "drop"] = "flatten"
    arrays: Literal["join", "stringify"] = "join"


def _as_list(value: Any) -> Any:
    # One request may be written as a mapping, several as a list: validate both as a list, so
    # that a problem is reported once, not once per branch of a union.
    return [value] if isinstance(value, dict) else value


EventSpec = Annotated[list[RequestSpec], BeforeValidator(_as_list)]


class PlaybookSpec(_Strict):
    version: Literal[1] = 1
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    global_: GlobalSpec = Field(default_factory=GlobalSpec, alias="global")
    events: dict[str, EventSpec | None] = Field(default_factory=dict)
    default: EventSpec | None = None
    rules: RulesSpec = Field(default_factory=RulesSpec)


def event_key(name: str) -> str:
    """Event names match ignoring case and separators: ``Cart Viewed`` = ``cart_viewed``."""
    return _SEPARATORS.sub("", name).lower()


_SEPARATORS = re.compile(r"[\s_\-.:/]+")


# ---------------------------------------------------------------------------------------------
# Compiled form (what runs per event)


class EventView:
    """One event as the rows see it: the plain dict ``quick_validate`` vouched for (or
    ``models.as_plain`` made of the validated model: the same shape), plus the raw dict for
    hashes and JMESPath."""

    __slots__ = ("_plain", "event", "raw")

    def __init__(self, event: dict[str, Any], raw: Mapping[str, Any] | None = None) -> None:
        self.event = event
        self.raw = raw
        self._plain: dict[str, Any] | None = None

    def plain(self) -> dict[str, Any]:
        """The normalised event as plain data (built lazily: only JMESPath rows need it): the
        event as the models hold it, dumped the one way JMESPath rows see every event."""
        if self._plain is None:
            source = self.raw if self.raw is not None else self.event
            if source:
                from heap_forwarder.models import validate_event  # built on first use only

                self._plain = validate_event(source).model_dump(mode="json", exclude_none=True)
            else:
                self._plain = {}  # request-level rows: no event
        return self._plain

    def stable_hash(self) -> str:
        source = self.raw if self.raw is not None else self.plain()
        try:
            canonical = json.dumps(
                source, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
            )
        except RecursionError:
            # Only a hand-built dict gets here (JSON decoding refuses such depth first).
            raise TransformError(
                "event_hash: the event is nested too deeply to hash; give it a messageId"
            ) from None
        return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:40]


Reader = Callable[[EventView], Any]


def _step(node: Any, part: str) -> Any:
    if node.__class__ is dict:
        return node.get(part)
    return node.get(part) if isinstance(node, dict) else getattr(node, part, None)


def _lookup(path: tuple[str, ...]) -> Reader:
    """A dotted path compiled to direct key (or attribute) lookups (no expression engine)."""
    if len(path) == 1:
        (only,) = path
        return lambda view: _step(view.event, only)
    if len(path) == 2:
        first, second = path

        def read_two(view: EventView) -> Any:
            node = _step(view.event, first)
            return None if node is None else _step(node, second)

        return read_two

    def read(view: EventView) -> Any:
        node: Any = view.event
        for part in path:
            if node is None:
                return None
            node = _step(node, part)
        return node

    return read


def _first_present(readers: list[Reader]) -> Reader:
    def read(view: EventView) -> Any:
        for reader in readers:
            value = reader(view)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                return value
        return None

    return read


def _constant(value: Any) -> Reader:
    return lambda _view: value


def _jmespath(expression: jmespath.parser.ParsedResult) -> Reader:
    return lambda view: expression.search(view.plain())


def _with_hash_fallback(reader: Reader) -> Reader:
    def read(view: EventView) -> Any:
        value = reader(view)
        missing = value is None or (isinstance(value, str) and not value.strip())
        return view.stable_hash() if missing else value

    return read


class Row(NamedTuple):
    key: tuple[str, ...]
    read: Reader
    transforms: tuple[Transform, ...]
    required: bool
    label: str
    source: str  # what the row reads, for error messages

    def evaluate(self, view: EventView) -> Any:
        value = self.read(view)
        for transform in self.transforms:
            value = transform(value)
        return value


class GlobalRow(NamedTuple):
    row: Row
    endpoints: frozenset[Endpoint]


class RequestMapping(NamedTuple):
    endpoint: Endpoint
    when: Reader | None
    rows: tuple[Row, ...]
    label: str


@dataclass(frozen=True)
class Playbook:
    """A validated, compiled playbook."""

    spec: PlaybookSpec
    source: str
    request_rows: tuple[Row, ...]
    item_rows: tuple[GlobalRow, ...]
    events: dict[str, tuple[RequestMapping, ...]] = field(default_factory=dict)
    default: tuple[RequestMapping, ...] = ()
    # Valid but likely slips (a mapping named `pages`), as the loader finds them.
    warnings: tuple[PlaybookProblem, ...] = ()

    @property
    def rules(self) -> RulesSpec:
        return self.spec.rules


class _Compiler:
    def __init__(self, spec: PlaybookSpec, source: str) -> None:
        self.spec = spec
        self.source = source
        self.problems: list[str] = []

    def compile(self) -> Playbook:
        request_rows = []
        for i, spec in enumerate(self.spec.global_.request):
            label = f"global.request[{i}]"
            if spec.from_ is not None or spec.expr is not None:
                self.problems.append(
                    f"{label} ({spec.key}): request rows take a param or a value, not event data (from/expr)"
                )
            elif row := self.row(spec, label):
                request_rows.append(row)
        item_rows: list[GlobalRow] = []
        for i, spec in enumerate(self.spec.global_.item):
            item_row = self.row(spec, f"global.item[{i}]")
            if item_row is not None:
                endpoints = (
                    [ENDPOINTS_BY_NAME[n] for n in spec.endpoints]
                    if spec.endpoints
                    else ENDPOINTS_BY_NAME.values()
                )
                item_rows.append(GlobalRow(item_row, frozenset(endpoints)))
        events: dict[str, tuple[RequestMapping, ...]] = {}
        seen: dict[str, str] = {}
        for name, event_spec in self.spec.events.items():
            key = event_key(name)
            if key in seen:
                self.problems.append(
                    f"events.{name}: same event as events.{seen[key]}"
                    " (names match ignoring case and separators)"
                )
            seen[key] = name
            if event_spec is not None:
                events[key] = self.event(event_spec, f"events.{name}")
        default = self.event(self.spec.default, "default") if self.spec.default is not None else ()
        if self.problems:
            raise PlaybookError(self.source, self.problems)
        return Playbook(self.spec, self.source, tuple(request_rows), tuple(item_rows), events, default)

    def event(self, spec: EventSpec, label: str) -> tuple[RequestMapping, ...]:
        compiled = []
        for i, request in enumerate(spec):
            request_label = f"{label}[{i}]" if len(spec) > 1 else label
            rows = tuple(
                r for j, s in enumerate(request.rows) if (r := self.row(s, f"{request_label}.rows[{j}]"))
            )
            keys = [r.key for r in rows]
            for duplicate in {k for k in keys if keys.count(k) > 1}:
                self.problems.append(f"{request_label}: output key {'.'.join(duplicate)!r} is mapped twice")
            when = _lookup(tuple(request.when.split("."))) if request.when else None
            compiled.append(RequestMapping(ENDPOINTS_BY_NAME[request.endpoint], when, rows, request_label))
        return tuple(compiled)

    def row(self, spec: RowSpec, label: str) -> Row | None:
        label = f"{label} ({spec.key})"
        inputs = [
            n
            for n, present in (
                ("from", spec.from_ is not None),
                ("value", "value" in spec.model_fields_set),
                ("param", spec.param is not None),
                ("expr", spec.expr is not None),
            )
            if present
        ]
        if len(inputs) != 1:
            found = ", ".join(inputs) or "none"
            self.problems.append(
                f"{label}: needs exactly one input of from / value / param / expr (found {found})"
            )
            return None
        reader: Reader
        if spec.from_ is not None:
            paths = [spec.from_] if isinstance(spec.from_, str) else spec.from_
            bad = [p for p in paths if not p or any(not part for part in p.split("."))]
            if not paths or bad:
                self.problems.append(
                    f"{label}: 'from' needs dotted paths like context.userAgent, got {spec.from_!r}"
                )
                return None
            readers = [_lookup(tuple(p.split("."))) for p in paths]
            reader = readers[0] if len(readers) == 1 else _first_present(readers)
            source = " | ".join(paths)
        elif spec.param is not None:
            if spec.param not in self.spec.params:
                hint = did_you_mean(spec.param, self.spec.params) or "; no params are defined"
                self.problems.append(f"{label}: unknown param {spec.param!r}{hint}")
                return None
            reader = _ParamReader(spec.param)
            source = f"param {spec.param}"
        elif spec.expr is not None:
            try:
                reader = _jmespath(jmespath.compile(spec.expr))
            except jmespath.exceptions.JMESPathError as error:
                self.problems.append(f"{label}: bad JMESPath expression {spec.expr!r}: {error}")
                return None
            source = f"expr {spec.expr}"
        else:
            reader = _constant(spec.value)
            source = f"value {spec.value!r}"
        if spec.otherwise == "event_hash":
            reader = _with_hash_fallback(reader)
        transforms = []
        for t in spec.transforms:
            try:
                transforms.append(build_transform(t))
            except ValueError as error:
                self.problems.append(f"{label}: {error}")
        return Row(tuple(spec.key.split(".")), reader, tuple(transforms), spec.required, label, source)


class _ParamReader:
    """Marks a row that reads a connection parameter; the mapper binds the value at start."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, view: EventView) -> Any:
        raise RuntimeError(f"param {self.name} read before the mapper bound it")


def bind_params(row: Row, values: Mapping[str, str | None]) -> Row:
    """Replace a param reader by the parameter's value (done once, when the mapper is made)."""
    if isinstance(row.read, _ParamReader):
        return Row(
            row.key, _constant(values.get(row.read.name)), row.transforms, row.required, row.label, row.source
        )
    return row


def validate_document(document: Any, source: str) -> PlaybookSpec:
    if not isinstance(document, dict):
        raise PlaybookError(
            source, [f"a playbook is a mapping at the top level, not {type(document).__name__}"]
        )
    try:
        return PlaybookSpec.model_validate(document)
    except ValidationError as error:
        raise PlaybookError(
            source, [_describe(e, document) for e in error.errors(include_url=False)]
        ) from None


def _describe(detail: Any, document: Any) -> PlaybookProblem:
    path = _document_path(detail["loc"], document)
    message = detail["msg"]
    if detail["type"] == "extra_forbidden" and path:
        what = "unknown section" if len(path) == 1 else "unknown key"
        message = what + did_you_mean(path[-1], field_names_at(PlaybookSpec, path[:-1]))
    elif detail["type"] == "literal_error" and isinstance(detail.get("input"), str):
        expected = re.findall(r"'([^']*)'", str(detail.get("ctx", {}).get("expected", "")))
        hint = did_you_mean(detail["input"], expected)
        message += hint if "did you mean" in hint else ""
    return PlaybookProblem(_path_text(path) or "(top)", message, path)


def _document_path(loc: Sequence[str | int], document: Any) -> DocumentPath:
    """pydantic's location as a path in the document: without union branch names
    (``str``, ``list[str]``...) and without the ``[0]`` that ``_as_list`` adds when one request
    is written as a mapping."""
    path: list[str | int] = []
    node = document
    for part in loc:
        in_list = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        if in_list or (isinstance(node, dict) and part in node):
            node = node[part]
        elif isinstance(part, int) and isinstance(node, dict):
            continue  # the list of one a single request stands for
        elif isinstance(part, str) and _is_branch_name(part):
            continue
        else:
            node = None
        path.append(part)
    return tuple(path)


def _is_branch_name(part: str) -> bool:
    # pydantic names a union's branch by its type: str, list[str], dict[str,any], RequestSpec.
    return part in ("str", "int", "float", "bool") or "[" in part or part[:1].isupper()


def _path_text(path: DocumentPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def compile_playbook(spec: PlaybookSpec, source: str) -> Playbook:
    return _Compiler(spec, source).compile()
