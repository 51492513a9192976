"""The compiled path: a playbook's mappings as specialised functions, generated once at load.

For each event type (and, for track events, each set of mappings an event name selects) one
Python function is generated from the playbook's compiled rows and compiled with ``compile``:
in one pass over the decoded event it does what ``inbound.quick_validate``, ``Mapper.map`` and
``heap.rules.apply_rules`` do one after the other, without the plain copy of the event, the
row readers' calls, the ``EventView`` and the copies between the stages.

- The generic engine (``mapping/engine.py``) stays the reference. A compiled function answers
  only for an event it can take the plain way; for anything else (an event ``quick_validate``
  would decline, a value a transform cannot convert, a required value missing, a Heap rule
  broken, a path through something that is not an object) it answers ``None`` and the caller
  runs the generic path, which decides and words the outcome. ``tests/property/
  test_compiled_properties.py`` holds the two to the same items, byte for byte.
- Playbook strings never become source text: every key, path, constant, transform and edit is
  bound as a name in the function's namespace (``_c0``, ``_c1``...); the source holds only
  names this module makes up. A new playbook (an override refreshed from SSM) makes a new
  ``Mapper``, hence a new ``Pipeline``, which compiles it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.rules import RuleSettings, rules_for
from heap_forwarder.inbound import (
    PLAIN_CONTEXT_OBJECTS,
    PLAIN_CONTEXT_TEXT,
    PLAIN_IDS,
    PLAIN_ISO_TIMESTAMP,
    PLAIN_SHAPES,
    PLAIN_TIMES,
    plain_time,
)
from heap_forwarder.mapping.engine import Mapper, _assign, _has, _remove
from heap_forwarder.mapping.playbook import EventView, Mode, RequestMapping, Step

# (the decoded event, its index) -> its Heap items, or None: "take the generic path"
Prepare = Callable[[dict[str, Any], int], list[HeapItem] | None]

# Track event names remembered with their function; past this many, names are looked up
# each time (a stream of made-up names must not grow the process).
MAX_REMEMBERED_NAMES = 4096


class CompiledPlaybook:
    """The compiled functions of one mapper (its playbook, params and hash key) and rules."""

    def __init__(self, mapper: Mapper, settings: RuleSettings) -> None:
        self._mapper = mapper
        self._settings = settings
        self.sources: dict[tuple[str, int], str] = {}  # the generated source, for tests and curiosity
        self._functions: dict[tuple[str, int], Prepare | None] = {}
        self._by_type: dict[str, Prepare | None] = {}
        self._by_name: dict[str, Prepare | None] = {}
        for kind in PLAIN_SHAPES:
            if kind != "track":
                self._by_type[kind] = self._function(kind, mapper.mappings_for(kind, None))
        # Every track mapping compiled now, not on the first event that selects it.
        for mappings in (*mapper.playbook.events.values(), mapper.playbook.default):
            if mappings:
                self._function("track", mappings)

    def __call__(self, raw: dict[str, Any], index: int) -> list[HeapItem] | None:
        """``raw``'s Heap items, made valid for Heap; None when the generic path must decide."""
        kind = raw.get("type")
        if kind == "track":
            name = raw.get("event")
            if name.__class__ is not str:
                return None
            function = self._by_name.get(name, _UNSEEN)
            if function is _UNSEEN:
                function = self._track_function(name)
        elif kind.__class__ is str:
            function = self._by_type.get(kind)
        else:
            return None
        return function(raw, index) if function is not None else None

    def _track_function(self, name: str) -> Prepare | None:
        mappings = self._mapper.mappings_for("track", name) if name else None
        function = self._function("track", mappings) if mappings else None
        if len(self._by_name) < MAX_REMEMBERED_NAMES:
            self._by_name[name] = function
        return function

    def _function(self, kind: str, mappings: tuple[RequestMapping, ...] | None) -> Prepare | None:
        if not mappings:
            return None
        key = (kind, id(mappings))
        if key not in self._functions:
            self._functions[key] = None
            if all(_compilable(step) for m in mappings for step in self._mapper.bound_steps(m)):
                generator = _Generator(kind, self._mapper, self._settings)
                self._functions[key], self.sources[key] = generator.function(mappings)
        return self._functions[key]


def _compilable(step: Step) -> bool:
    """A row described as data (rows a test builds by hand are not), its params bound."""
    given = step.row.input
    return given is not None and (given.kind != "param" or step.mode is Mode.REMOVE)


# Endpoints whose rules format a ``timestamp``.
STAMPED = frozenset({Endpoint.TRACK, Endpoint.IDENTIFY})

_UNSEEN: Any = object()
_MISSING: Any = object()


class _Generator:
    """The source of one function, and the namespace its names are bound in."""

    def __init__(self, kind: str, mapper: Mapper, settings: RuleSettings) -> None:
        self.kind = kind
        self.mapper = mapper
        self.lines: list[str] = []
        self.depth = 1
        self.namespace: dict[str, Any] = {
            "_plain_time": plain_time,
            "_iso_shape": PLAIN_ISO_TIMESTAMP.match,
            "_fromisoformat": datetime.fromisoformat,
            "_MISSING": _MISSING,
            "_HeapItem": HeapItem,
            "_EventView": EventView,
            "_assign": _assign,
            "_has": _has,
            "_remove": _remove,
            "_settings": settings,
            "_hash_key": mapper.hash_key,
        }
        self.bound: dict[int, str] = {}
        self.fresh = 0
        required, optional, blob = PLAIN_SHAPES[kind]
        self.blob = blob
        self.shape = (required, optional)
        self.tops: dict[str, str] = {}  # top-level event key -> the local holding its plain value
        # time local -> the local holding its text when that text is already Heap's form
        self.stamps: dict[str, str] = {}

    # ---------------------------------------------------------------------------- plumbing
    def const(self, value: Any) -> str:
        """A name bound to ``value`` in the namespace: how every playbook value reaches the code."""
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def local(self, prefix: str) -> str:
        self.fresh += 1
        return f"{prefix}{self.fresh}"

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def function(self, mappings: tuple[RequestMapping, ...]) -> tuple[Prepare, str]:
        self.lines = ["def _prepare(raw, index):"]
        self.validation()
        self.emit("try:")
        self.depth += 1
        self.emit("items = []")
        for mapping in mappings:
            self.mapping(mapping)
        self.emit("return items")
        self.depth -= 1
        self.emit("except Exception:")
        self.emit("    return None  # the generic path decides, and words the outcome")
        source = "\n".join(self.lines) + "\n"
        code = compile(source, f"<compiled playbook: {self.kind}>", "exec")
        exec(code, self.namespace)
        function: Prepare = self.namespace["_prepare"]
        return function, source

    # ---------------------------------------------------------------------------- validation
    def validation(self) -> None:
        """``quick_validate``'s checks, unrolled for this event type, on the event as decoded."""
        emit = self.emit
        emit("get = raw.get")
        self.when_given(PLAIN_IDS, "str")
        for name in PLAIN_TIMES:
            # plain_time, its usual case inline: an ISO 8601 text in the shape the models take.
            moment = self.tops[name] = self.local("t")
            # Its text, when it is Heap's form already (UTC, milliseconds, Z: 24 characters of
            # that shape): format_timestamp would give it back as it is.
            stamp = self.stamps[moment] = self.local("s")
            emit(f"v = get({self.const(name)})")
            emit(f"{stamp} = None")
            emit("if v is None:")
            emit(f"    {moment} = None")
            emit("elif v.__class__ is str and _iso_shape(v) is not None:")
            emit("    try:")
            emit(f"        {moment} = _fromisoformat(v)")
            emit("    except ValueError:")
            emit("        return None")
            emit(f"    if {moment}.year == 1 or {moment}.year == 9999:")
            emit("        return None")
            emit("    if len(v) == 24 and v[23] == 'Z':")
            emit(f"        {stamp} = v")
            emit("else:")
            emit(f"    {moment} = _plain_time(v)")
            emit(f"    if {moment} is None:")
            emit("        return None")
        required, optional = self.shape
        for name in required:
            emit(f"v = get({self.const(name)})")
            emit("if v.__class__ is not str or not v:")
            emit("    return None")
        self.when_given(optional, "str")
        if self.blob is not None:
            blob = self.tops[self.blob] = self.local("b")
            emit(f"{blob} = get({self.const(self.blob)}, _MISSING)")
            emit(f"if {blob} is _MISSING:")
            emit(f"    {blob} = {{}}")
            emit(f"elif {blob}.__class__ is not dict:")
            emit("    return None")
        self.when_given(("integrations",), "dict")
        emit(f"context = get({self.const('context')})")
        emit("if context is not None:")
        emit("    if context.__class__ is not dict:")
        emit("        return None")
        self.when_given(PLAIN_CONTEXT_TEXT, "str", source="context.get", indent="    ")
        self.when_given(PLAIN_CONTEXT_OBJECTS, "dict", source="context.get", indent="    ")

    def when_given(self, names: Iterable[str], kind: str, *, source: str = "get", indent: str = "") -> None:
        """Each field, when it is given, of this class (``str``, ``dict``), else the generic path."""
        for name in names:
            self.emit(f"{indent}v = {source}({self.const(name)})")
            self.emit(f"{indent}if v is not None and v.__class__ is not {kind}:")
            self.emit(f"{indent}    return None")

    # ---------------------------------------------------------------------------- reading
    def read_path(self, target: str, path: tuple[str, ...]) -> None:
        """``target = `` the value at ``path`` of the plain event (``Mapper``'s lookup). A step
        through anything but an object or a missing value leaves the compiled path."""
        top = self.tops.get(path[0])
        self.emit(f"{target} = {top if top is not None else f'get({self.const(path[0])})'}")
        opened = 0
        for part in path[1:]:
            self.emit(f"if {target} is not None:")
            self.depth += 1
            opened += 1
            self.emit(f"if {target}.__class__ is not dict:")
            self.emit("    return None")
            self.emit(f"{target} = {target}.get({self.const(part)})")
        self.depth -= opened

    def missing(self, value: str) -> str:
        return f"{value} is None or ({value}.__class__ is str and not {value}.strip())"

    def read_row(self, step: Step) -> None:
        """``v = `` what the row reads, transformed."""
        row = step.row
        given = row.input
        if given is None or given.kind not in {"paths", "value"}:
            # JMESPath: the row's own reader, on a view (it reads the raw event only).
            self.emit(f"v = {self.const(row.read)}(_EventView({{}}, raw))")
        else:
            if given.kind == "value":
                self.emit(f"v = {self.const(given.value)}")
            else:
                first, *others = given.paths
                self.read_path("v", first)
                opened = 0
                for path in others:
                    self.emit(f"if {self.missing('v')}:")
                    self.depth += 1
                    opened += 1
                    self.read_path("v", path)
                if others:
                    self.emit(f"if {self.missing('v')}:")
                    self.emit("    v = None")
                self.depth -= opened
            if given.hash_fallback:
                self.emit(f"if {self.missing('v')}:")
                self.emit("    v = _EventView({}, raw).stable_hash()")
        for transform in row.transforms:
            self.emit(f"v = {self.const(transform)}(v)")

    # ---------------------------------------------------------------------------- mapping
    def mapping(self, mapping: RequestMapping) -> None:
        opened = 0
        if mapping.when_path is not None:
            self.read_path("w", mapping.when_path)
            self.emit(f"if not ({self.missing('w')}):")
            self.depth += 1
            opened = 1
        elif mapping.when is not None:
            self.emit(f"w = {self.const(mapping.when)}(_EventView({{}}, raw))")
            self.emit(f"if not ({self.missing('w')}):")
            self.depth += 1
            opened = 1
        self.emit("body = {}")
        self.written: set[str] = set()  # top-level keys a step before may have written
        for step in self.mapper.bound_steps(mapping):
            self.step(step)
        for edit in mapping.edits:
            self.emit(f"{self.const(edit)}(body, _hash_key, None)")
        if mapping.endpoint in STAMPED:
            # The body's time, if it is one of the event's times whose text is Heap's form already.
            self.emit(f"s = body.get({self.const('timestamp')})")
            self.emit(f"s = {' else '.join(f'{s} if s is {t}' for t, s in self.stamps.items())} else None")
        else:
            self.emit("s = None")
        self.emit(f"{self.const(rules_for(mapping.endpoint))}(body, _settings, s)")
        self.emit(f"items.append(_HeapItem({self.const(mapping.endpoint)}, body, index))")
        self.depth -= opened

    def step(self, step: Step) -> None:
        row = step.row
        key = row.key
        top = key[0] if len(key) == 1 else None
        name = self.const(top if top is not None else key)
        if step.mode is Mode.REMOVE:
            if key[0] in self.written:
                self.emit(f"_remove(body, {name})")
            return  # nothing before it wrote there: nothing to remove
        # Whether the key may be there already (no step before wrote its top-level key: not).
        maybe = key[0] in self.written
        present = (f"{name} in body" if top is not None else f"_has(body, {name})") if maybe else None
        self.written.add(key[0])
        opened = 0
        if step.mode is Mode.FILL and present is not None:
            self.emit(f"if not {present}:")  # a global row fills only what is still unset
            self.depth += 1
            opened = 1
        given = row.input
        if given is not None and given.kind == "value" and not given.hash_fallback and not row.transforms:
            self.constant_step(step, name, top, present)
        else:
            self.read_row(step)
            self.emit(f"if {self.missing('v')}:")
            if row.required:
                if present is None:
                    self.emit("    return None  # required and missing: the generic path words it")
                else:
                    self.emit(f"    if not {present}:")
                    self.emit("        return None  # required and missing: the generic path words it")
            else:
                self.emit("    pass")
            self.emit("else:")
            self.depth += 1
            self.write(name, top, "v", key)
            self.depth -= 1
        self.depth -= opened

    def constant_step(self, step: Step, name: str, top: str | None, present: str | None) -> None:
        """A row of a static value: whether it is missing is known now."""
        value = step.row.input.value if step.row.input is not None else None
        if value is None or (value.__class__ is str and not value.strip()):
            if step.row.required:
                if present is None:
                    self.emit("return None  # required and missing: the generic path words it")
                else:
                    self.emit(f"if not {present}:")
                    self.emit("    return None  # required and missing: the generic path words it")
            return
        self.write(name, top, self.const(value), step.row.key)

    def write(self, name: str, top: str | None, value: str, key: tuple[str, ...] = ()) -> None:
        # Objects taken from the event are copied: later rows, edits and rules change them.
        copied = f"dict({value}) if {value}.__class__ is dict else {value}"
        if top is not None:
            self.emit(f"body[{name}] = {copied}")
        elif len(key) == 2:
            # engine._assign, inline for a key one object deep (properties.user_agent): the
            # object is the body's own already (rows copy what they take from the event).
            self.emit(f"n = body.get({self.const(key[0])})")
            self.emit("if not isinstance(n, dict):")
            self.emit("    n = {}")
            self.emit(f"body[{self.const(key[0])}] = n")
            self.emit(f"n[{self.const(key[1])}] = dict({value}) if isinstance({value}, dict) else {value}")
        else:
            self.emit(f"_assign(body, {name}, {value})")
