"""The playbook: the declarative mapping, its schema, and its compilation into fast row readers.

A playbook has MetaRouter's structure:

- ``params``: connection parameters (``MY_APP_ID`` ...) that rows may reference;
- ``global``: ``request`` rows (request-level fields such as ``app_id``), ``item`` rows for
  every Heap item of their endpoints unless the event's own mapping states the same key, and
  ``edit``: property operations on the objects the rows produce (``mapping/edits.py``);
- ``events``: event-specific mappings keyed by event name, matched ignoring case and separators:
  only what differs from the global rows, plus their own edits;
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
from enum import IntEnum
from typing import Annotated, Any, Literal, NamedTuple

import jmespath
import jmespath.exceptions
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from heap_forwarder.heap.items import Endpoint
from heap_forwarder.mapping.edits import Edit, compile_edit
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
        None,
        min_length=1,  # `[]` would read as "none" but apply everywhere: leave it out for all
        description="Global item rows only: the endpoints the row applies to (default: all).",
    )
    description: str | None = None

    @property
    def removes(self) -> bool:
        """``value: null`` and no other input: the row removes its key (see docs/mapping.md)."""
        return (
            "value" in self.model_fields_set
            and self.value is None
            and self.from_ is None
            and self.param is None
            and self.expr is None
        )


class EditSpec(_Strict):
    """Property operations on one object the rows produce, applied in this order."""

    rename: dict[str, str] = Field(default_factory=dict, description="Move keys: {old: new}.")
    drop: list[str] = Field(default_factory=list, description="Remove keys, by name or pattern.")
    keep: list[str] | None = Field(None, description="Remove every key matching none of these.")
    set_: dict[str, Any] = Field(default_factory=dict, alias="set", description="Put static values.")
    default: dict[str, Any] = Field(default_factory=dict, description="Put static values where missing.")
    hash: list[str] = Field(
        default_factory=list, description="HMAC-SHA-256 these keys' values with the hash key."
    )
    endpoints: list[EndpointName] | None = Field(
        None,
        min_length=1,  # as for rows: `[]` is refused, not taken for every endpoint
        description="Global edits only: the endpoints the edit applies to (default: all).",
    )
    description: str | None = None


class RequestSpec(_Strict):
    endpoint: EndpointName = "track"
    when: str | None = Field(None, description="A path: the item is made only when it has a value.")
    rows: list[RowSpec] = Field(default_factory=list)
    edit: dict[str, EditSpec] = Field(default_factory=dict)
    description: str | None = None


class ParamSpec(_Strict):
    required: bool = False
    value: str | None = Field(None, description="A fixed value (else given at deploy time, e.g. from SSM).")
    description: str | None = None


class GlobalSpec(_Strict):
    request: list[RowSpec] = Field(default_factory=list)
    item: list[RowSpec] = Field(default_factory=list)
    edit: dict[str, EditSpec] = Field(default_factory=dict)


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


class RowInput(NamedTuple):
    """What a row reads, as data (``read`` is the same as a function): what the compiled
    path (``mapping/compiled.py``) generates its code from."""

    kind: Literal["paths", "value", "param", "expr", "remove"]
    paths: tuple[tuple[str, ...], ...] = ()  # paths: the first present wins
    value: Any = None  # value: the constant; param: the parameter's name
    hash_fallback: bool = False  # otherwise: event_hash


class Row(NamedTuple):
    key: tuple[str, ...]
    read: Reader
    transforms: tuple[Transform, ...]
    required: bool
    label: str
    source: str  # what the row reads, for error messages
    origin: str = ""  # the file (or SSM parameter) the row came from, for `preview --explain`
    input: RowInput | None = None  # ``read`` as data, for the compiled path

    def evaluate(self, view: EventView) -> Any:
        value = self.read(view)
        for transform in self.transforms:
            value = transform(value)
        return value


class Mode(IntEnum):
    """How a step writes its key into a Heap body."""

    SET = 0  # the event's own row: writes its value
    FILL = 1  # a global row: writes only where nothing is yet
    REMOVE = 2  # `value: null`: removes the key (before the deeper keys are written)


class Step(NamedTuple):
    row: Row
    mode: Mode


class RequestMapping(NamedTuple):
    """One Heap request an event makes: its steps (the global rows for its endpoint that the
    mapping does not restate, and its own rows; by depth: objects before the keys written into
    them), then its edits (global ones first)."""

    endpoint: Endpoint
    when: Reader | None
    steps: tuple[Step, ...]
    edits: tuple[Edit, ...]
    label: str
    when_path: tuple[str, ...] | None = None  # ``when`` as data, for the compiled path


@dataclass
class Origins:
    """Which source each part of a merged playbook came from (``loader.merge`` keeps it)."""

    request: list[str] = field(default_factory=list)  # per global.request row, by index
    item: list[str] = field(default_factory=list)  # per global.item row, by index
    edit: dict[str, str] = field(default_factory=dict)  # per global edit target
    events: dict[str, str] = field(default_factory=dict)  # per event mapping name
    default: str = ""


@dataclass(frozen=True)
class Playbook:
    """A validated, compiled playbook."""

    spec: PlaybookSpec
    source: str
    request_rows: tuple[Row, ...]
    events: dict[str, tuple[RequestMapping, ...]] = field(default_factory=dict)
    default: tuple[RequestMapping, ...] = ()
    uses_hash: bool = False  # an edit hashes values: the deployment needs a hash key
    # Valid but likely slips (a mapping named `pages`), as the loader finds them.
    warnings: tuple[PlaybookProblem, ...] = ()

    @property
    def rules(self) -> RulesSpec:
        return self.spec.rules


def _endpoints(names: list[EndpointName] | None) -> frozenset[Endpoint]:
    """The endpoints a global row or edit names (all of them when it names none)."""
    return frozenset(ENDPOINTS_BY_NAME[n] for n in names) if names else frozenset(ENDPOINTS_BY_NAME.values())


def _inside(inner: tuple[str, ...], outer: tuple[str, ...]) -> bool:
    """``inner`` is a key within the object ``outer`` (``properties.plan`` in ``properties``)."""
    return len(inner) > len(outer) and inner[: len(outer)] == outer


def _nested(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """One key is the other or inside it (``properties`` and ``properties.email``)."""
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


class _GlobalRow(NamedTuple):
    row: Row
    endpoints: frozenset[Endpoint]
    removes: bool
    from_override: bool


class _GlobalEdit(NamedTuple):
    target: tuple[str, ...]
    endpoints: frozenset[Endpoint]
    edit: Edit
    label: str
    from_override: bool


class _Compiler:
    def __init__(self, spec: PlaybookSpec, source: str, origins: Origins | None) -> None:
        self.spec = spec
        self.source = source
        self.origins = origins or Origins()
        self.default_origin = source.split(" + ", maxsplit=1)[0]
        self.problems: list[str] = []
        self.uses_hash = False
        # The global rows and edits (by index) that reach at least one mapping.
        self.rows_landed: set[int] = set()
        self.edits_landed: set[int] = set()

    def origin(self, found: str | None) -> str:
        return found or self.default_origin

    def compile(self) -> Playbook:
        request_rows = []
        for i, spec in enumerate(self.spec.global_.request):
            label = f"global.request[{i}]"
            origin = self.origin(self.origins.request[i] if i < len(self.origins.request) else None)
            if spec.from_ is not None or spec.expr is not None:
                self.problems.append(
                    f"{label} ({spec.key}): request rows take a param or a value, not event data (from/expr)"
                )
            elif spec.removes:
                self.problems.append(
                    f"{label} ({spec.key}): request fields cannot be removed (value: null); "
                    "Heap needs app_id on every request"
                )
            elif spec.endpoints is not None:
                self.problems.append(f"{label} ({spec.key}): endpoints is for global item rows only")
            elif row := self.row(spec, label, origin):
                request_rows.append(row)
        self.global_rows = self.compile_global_rows()
        self.global_edits = self.compile_global_edits()
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
                events[key] = self.event(event_spec, f"events.{name}", self.origins.events.get(name))
        default = (
            self.event(self.spec.default, "default", self.origins.default)
            if self.spec.default is not None
            else ()
        )
        self.report_what_lands_nowhere()
        if self.problems:
            raise PlaybookError(self.source, self.problems)
        return Playbook(self.spec, self.source, tuple(request_rows), events, default, self.uses_hash)

    def compile_global_rows(self) -> list[_GlobalRow]:
        compiled: list[_GlobalRow] = []
        for i, spec in enumerate(self.spec.global_.item):
            found = self.origins.item[i] if i < len(self.origins.item) else None
            row = self.row(spec, f"global.item[{i}]", self.origin(found))
            if row is None:
                continue
            endpoints = _endpoints(spec.endpoints)
            for other in compiled:
                if other.row.key == row.key and other.endpoints & endpoints:
                    both = ", ".join(sorted(str(e) for e in other.endpoints & endpoints))
                    self.problems.append(
                        f"{row.label}: {other.row.label} already maps this key for {both}; "
                        "give each row its own endpoints"
                    )
            removes = spec.removes
            from_override = found is not None and found != self.default_origin
            compiled.append(_GlobalRow(row, endpoints, removes, from_override))
        return compiled

    def compile_global_edits(self) -> list[_GlobalEdit]:
        compiled = []
        for target, spec in self.spec.global_.edit.items():
            found = self.origins.edit.get(target)
            label = f"global.edit.{target}"
            edit = self.edit(target, spec, label, self.origin(found))
            if edit is None:
                continue
            endpoints = _endpoints(spec.endpoints)
            from_override = found is not None and found != self.default_origin
            compiled.append(_GlobalEdit(tuple(target.split(".")), endpoints, edit, label, from_override))
        return compiled

    def event(self, spec: EventSpec, label: str, origin: str | None) -> tuple[RequestMapping, ...]:
        if not spec:
            # `[]` maps nothing: a track event's fell back to `default` (no change), a type's
            # events became unsupported. `null` says the second plainly.
            self.problems.append(
                f"{label}: an empty list has no request; null removes a mapping, a request maps the event"
            )
            return ()
        compiled = []
        for i, request in enumerate(spec):
            request_label = f"{label}[{i}]" if len(spec) > 1 else label
            compiled.append(self.request(request, request_label, self.origin(origin)))
        return tuple(compiled)

    def request(self, request: RequestSpec, label: str, origin: str) -> RequestMapping:
        endpoint = ENDPOINTS_BY_NAME[request.endpoint]
        own: list[tuple[Row, bool]] = []
        for j, spec in enumerate(request.rows):
            row_label = f"{label}.rows[{j}]"
            if spec.endpoints is not None:
                self.problems.append(
                    f"{row_label} ({spec.key}): endpoints is for global item rows only; "
                    f"this mapping's endpoint is {request.endpoint}"
                )
                continue
            if row := self.row(spec, row_label, origin):
                own.append((row, spec.removes))
        keys = [row.key for row, _ in own]
        for duplicate in sorted({k for k in keys if keys.count(k) > 1}):
            self.problems.append(f"{label}: output key {'.'.join(duplicate)!r} is mapped twice")
        stated = set(keys)
        steps: list[Step] = []
        global_removals: list[tuple[int, Row]] = []
        shadowed: set[tuple[str, ...]] = set()
        for n, global_row in enumerate(self.global_rows):
            if endpoint not in global_row.endpoints:
                continue
            if global_row.row.key in stated:
                shadowed.add(global_row.row.key)  # the event's own row wins
            elif global_row.removes:
                global_removals.append((n, global_row.row))
            else:
                self.rows_landed.add(n)
                row = global_row.row
                if row.required and any(_inside(k, row.key) for k in stated):
                    # The mapping's own rows build this object: the global row may add to it,
                    # but its input is no longer required (`properties.plan` on add_user_properties).
                    row = row._replace(required=False)
                steps.append(Step(row, Mode.FILL))
        steps += [Step(row, Mode.SET) for row, removes in own if not removes]
        produced = [step.row.key for step in steps]
        for n, row in global_removals:
            if any(_nested(row.key, k) for k in produced):
                self.rows_landed.add(n)
                steps.append(Step(row, Mode.REMOVE))
        for row, removes in own:
            if not removes:
                continue
            if not (row.key in shadowed or any(_nested(row.key, k) for k in produced)):
                self.problems.append(
                    f"{row.label}: value: null removes {'.'.join(row.key)!r}, but no row "
                    "of this mapping or of the global section sets it"
                )
            steps.append(Step(row, Mode.REMOVE))
        # Objects before the keys in them, a removal before what is written at its depth:
        # `properties: null` then `properties.total` sends a properties object of total alone.
        steps.sort(key=lambda step: (len(step.row.key), step.mode is not Mode.REMOVE))
        edits: list[Edit] = []
        for n, global_edit in enumerate(self.global_edits):
            if endpoint in global_edit.endpoints and any(_nested(global_edit.target, k) for k in produced):
                self.edits_landed.add(n)
                edits.append(global_edit.edit)
        for target_text, edit_spec in request.edit.items():
            edit_label = f"{label}.edit.{target_text}"
            if edit_spec.endpoints is not None:
                self.problems.append(f"{edit_label}: endpoints is for global edits only")
                continue
            target = tuple(target_text.split("."))
            if not any(_nested(target, k) for k in produced):
                self.problems.append(
                    f"{edit_label}: no row of this mapping produces {target_text!r}"
                    + _TRAITS_HINT * (target[0] == "traits")
                )
                continue
            if own_edit := self.edit(target_text, edit_spec, edit_label, origin):
                edits.append(own_edit)
        when_path = None
        if request.when is not None:
            when_path = tuple(request.when.split("."))
            if any(not part for part in when_path):
                self.problems.append(
                    f"{label}: when needs a dotted path like context.heap.user_id, got {request.when!r}"
                )
        when = _lookup(when_path) if when_path else None
        return RequestMapping(endpoint, when, tuple(steps), tuple(edits), label, when_path)

    def report_what_lands_nowhere(self) -> None:
        """An override's global row or edit that no mapping uses would change nothing: refused."""
        for n, global_row in enumerate(self.global_rows):
            if global_row.from_override and n not in self.rows_landed:
                what = "value: null removes it from" if global_row.removes else "it applies to"
                self.problems.append(
                    f"{global_row.row.label}: {what} no mapping (every mapping of its endpoints "
                    "sets the key itself, or none produces the object it is in)"
                )
        for n, global_edit in enumerate(self.global_edits):
            if global_edit.from_override and n not in self.edits_landed:
                hint = _TRAITS_HINT if global_edit.target[0] == "traits" else ""
                self.problems.append(
                    f"{global_edit.label}: no mapping of its endpoints produces this object{hint}"
                )

    def edit(self, target: str, spec: EditSpec, label: str, origin: str) -> Edit | None:
        parts = target.split(".")
        if any(not part for part in parts):
            self.problems.append(f"{label}: the target needs a dotted key like properties, got {target!r}")
            return None
        if parts[0] in _TEXT_FIELDS:
            # Heap takes these as text: an edit of one would never find an object to change.
            self.problems.append(
                f"{label}: {parts[0]} is a text field of Heap's, not an object: an edit names an "
                "object such as properties"
            )
            return None
        if any(not new for new in spec.rename.values()):
            self.problems.append(f"{label}: rename needs a new name for every key")
            return None
        by_new: dict[str, list[str]] = {}
        for old, new in spec.rename.items():
            by_new.setdefault(new, []).append(old)
        clashes = {new: olds for new, olds in by_new.items() if len(olds) > 1}
        for new, olds in clashes.items():
            self.problems.append(
                f"{label}: rename moves {', '.join(olds)} to {new!r}: only one of their values could stay"
            )
        if clashes:
            return None
        nulls = [key for key, value in spec.default.items() if value is None]
        if nulls:
            self.problems.append(
                f"{label}: default {', '.join(nulls)}: null puts nothing where nothing is (Heap stores "
                "no nulls); give a value, or drop the key"
            )
            return None
        null_sets = [key for key, value in spec.set_.items() if value is None]
        if null_sets:
            self.problems.append(
                f"{label}: set {', '.join(null_sets)}: null (Heap stores no nulls); to remove a key, "
                f"drop it: {{drop: [{', '.join(null_sets)}]}}"
            )
            return None
        if not (spec.rename or spec.drop or spec.keep is not None or spec.set_ or spec.default or spec.hash):
            self.problems.append(f"{label}: no operation (rename, drop, keep, set, default, hash)")
            return None
        if spec.hash:
            self.uses_hash = True
        return compile_edit(
            tuple(parts),
            rename=spec.rename,
            drop=spec.drop,
            keep=spec.keep,
            set_=spec.set_,
            default=spec.default,
            hash_=spec.hash,
            label=f"{label} ({origin})",
        )

    def row(self, spec: RowSpec, label: str, origin: str) -> Row | None:
        label = f"{label} ({spec.key})"
        if spec.removes:
            extras = [
                name
                for name, present in (
                    ("required", spec.required),
                    ("transforms", bool(spec.transforms)),
                    ("otherwise", spec.otherwise is not None),
                )
                if present
            ]
            if extras:
                self.problems.append(
                    f"{label}: value: null removes the key, so {', '.join(extras)} would never apply"
                )
                return None
            return Row(
                tuple(spec.key.split(".")),
                _constant(None),
                (),
                False,
                label,
                "value null",
                origin,
                RowInput("remove"),
            )
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
        given: RowInput
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
            given = RowInput("paths", tuple(tuple(p.split(".")) for p in paths))
        elif spec.param is not None:
            if spec.param not in self.spec.params:
                hint = did_you_mean(spec.param, self.spec.params) or "; no params are defined"
                self.problems.append(f"{label}: unknown param {spec.param!r}{hint}")
                return None
            reader = _ParamReader(spec.param)
            source = f"param {spec.param}"
            given = RowInput("param", value=spec.param)
        elif spec.expr is not None:
            try:
                reader = _jmespath(jmespath.compile(spec.expr))
            except jmespath.exceptions.JMESPathError as error:
                self.problems.append(f"{label}: bad JMESPath expression {spec.expr!r}: {error}")
                return None
            source = f"expr {spec.expr}"
            given = RowInput("expr")
        else:
            reader = _constant(spec.value)
            source = f"value {spec.value!r}"
            given = RowInput("value", value=spec.value)
        if spec.otherwise == "event_hash":
            reader = _with_hash_fallback(reader)
            given = given._replace(hash_fallback=True)
        transforms = []
        for t in spec.transforms:
            try:
                transforms.append(build_transform(t))
            except ValueError as error:
                self.problems.append(f"{label}: {error}")
        key = tuple(spec.key.split("."))
        return Row(key, reader, tuple(transforms), spec.required, label, source, origin, given)


# Heap's item and request fields that are text (or a time), never objects (heap/rules.py).
_TEXT_FIELDS = frozenset(
    ("app_id", "identity", "user_id", "account_id", "event", "timestamp", "session_id", "idempotency_key")
)
_TRAITS_HINT = "; identify's and group's traits reach Heap as the properties object: edit properties"


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
        value = values.get(row.read.name)
        given = RowInput("value", value=value) if row.input is not None else None
        return row._replace(read=_constant(value), input=given)
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


def compile_playbook(spec: PlaybookSpec, source: str, origins: Origins | None = None) -> Playbook:
    return _Compiler(spec, source, origins).compile()
