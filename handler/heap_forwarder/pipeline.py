"""The path of an event: parse (models) -> map (playbook) -> Heap rules -> deliver -> outcome.

No AWS here: the SQS and HTTP entry points hand decoded events in and translate the outcomes.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from heap_forwarder.heap.items import Endpoint, HeapItem
from heap_forwarder.heap.rules import HeapRuleError, RuleSettings, apply_rules
from heap_forwarder.inbound import InvalidEvent, Problem, quick_validate
from heap_forwarder.mapping.compiled import CompiledPlaybook
from heap_forwarder.mapping.engine import Mapper, MappingError
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate, Outcome, combine, rejected, retryable


class Deliverer(Protocol):
    """Heap for one app (``HeapClient``): bound to its request fields (the app ID) when built."""

    def deliver(self, items: Sequence[HeapItem], *, deadline: float | None = None) -> list[Outcome]: ...


@dataclass
class Prepared:
    """Events validated and mapped: the Heap items to send, and the events already decided."""

    items: list[HeapItem] = field(default_factory=list)
    # One entry per input event: None while its fate rests on delivery, else its final outcome.
    decided: list[Outcome | None] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class Pipeline:
    def __init__(self, mapper: Mapper, deliverer: Deliverer) -> None:
        self.mapper = mapper
        self.deliverer = deliverer
        rules = mapper.playbook.rules
        self.rule_settings = RuleSettings(nested=rules.nested, arrays=rules.arrays)
        # The playbook's mappings as specialised functions (validate, map and rules in one pass);
        # the generic path below decides whatever they decline.
        self.compiled = CompiledPlaybook(mapper, self.rule_settings)

    def prepare(self, raws: Sequence[Any]) -> Prepared:
        prepared = Prepared(decided=[None] * len(raws))
        for index, raw in enumerate(raws):
            prepared.items.extend(self._prepare_one(index, raw, prepared))
        return prepared

    def _prepare_one(self, index: int, raw: Any, prepared: Prepared) -> list[HeapItem]:
        """The event's Heap items; or none, with its outcome decided in ``prepared``."""
        if raw.__class__ is dict:
            items = self.compiled(raw, index)
            if items:
                return items
        try:
            event = plain_event(raw, index)
            items = [apply_rules(i, self.rule_settings) for i in self.mapper.map(event, raw, index)]
        except InvalidEvent as error:
            reason = "; ".join(f"{p.field or '(event)'}: {p.message}" for p in error.problems)
            detail = "; ".join(f"{p.field or '(event)'}: {p.full_message}" for p in error.problems)
            prepared.decided[index] = rejected(
                ErrorClass.INVALID_EVENT, reason, detail if detail != reason else ""
            )
            prepared.problems.extend(error.problems)
        except MappingError as error:
            detail = error.detail if error.detail != str(error) else ""
            prepared.decided[index] = rejected(error.error_class, str(error), detail)
            prepared.problems.append(Problem(index, error.field, str(error), detail))
        except HeapRuleError as error:
            prepared.decided[index] = rejected(ErrorClass.HEAP_RULE, str(error))
            prepared.problems.append(Problem(index, error.field, str(error)))
        else:
            if not items:
                # A mapping whose every request was skipped by `when`: nothing to send is
                # still an honest outcome, but say so rather than call it delivered silently.
                prepared.decided[index] = rejected(
                    ErrorClass.UNSUPPORTED, "the playbook mapped it to no Heap request"
                )
                prepared.problems.append(Problem(index, "", "mapped to no Heap request"))
            return items
        return []

    def deliver(self, prepared: Prepared, *, deadline: float | None = None) -> list[Outcome]:
        """One outcome per input event: decided ones as they are, the rest from Heap's answers."""
        item_outcomes = self.deliverer.deliver(prepared.items, deadline=deadline) if prepared.items else []
        return _fold(prepared.decided, [(prepared.items, item_outcomes)])

    def process(self, raws: Sequence[Any], *, deadline: float | None = None) -> list[Outcome]:
        """Prepare and deliver, overlapped: as soon as an endpoint has a full request's worth
        of items, a background thread sends it while the next events are being prepared (the
        wait on Heap then costs no preparing time). What is left goes in one last delivery.
        """
        with collector_paused():
            return self._process(raws, deadline)

    def _process(self, raws: Sequence[Any], deadline: float | None) -> list[Outcome]:
        prepared = Prepared(decided=[None] * len(raws))
        stream = _Stream(self.deliverer, deadline)
        pending: dict[Endpoint, list[HeapItem]] = {}
        try:
            for index, raw in enumerate(raws):
                for item in self._prepare_one(index, raw, prepared):
                    waiting = pending.setdefault(item.endpoint, [])
                    waiting.append(item)
                    if len(waiting) >= BULK_STREAM_AT and item.endpoint.bulk_key is not None:
                        stream.send(waiting)
                        pending[item.endpoint] = []
            stream.send([item for items in pending.values() for item in items], last=True)
        except BaseException:
            stream.close()  # what was handed over is still sent (its events keep their keys)
            raise
        return _fold(prepared.decided, stream.results())


_pause_lock = threading.Lock()
_pause = {"holders": 0, "was_enabled": False}


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a batch is processed (by the consumer: read,
    processed and settled), as it was afterwards.

    A batch keeps every decoded event, body and item alive until its outcomes are folded: each
    young-generation collection (every 10,000 new objects, see ``edge/runtime.py``) scans them
    and finds nothing to free, about 2-3 µs per event in all. Reference counting frees what a
    batch makes; preparing makes no reference cycles, delivery about ten per invocation (the
    threads' futures), collected at the next run after the batch. Nested or concurrent batches
    (threads of the local stack) share one pause: the last one out restores the collector."""
    with _pause_lock:
        if _pause["holders"] == 0:
            _pause["was_enabled"] = gc.isenabled()
            gc.disable()
        _pause["holders"] += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pause["holders"] -= 1
            if _pause["holders"] == 0 and _pause["was_enabled"]:
                gc.enable()


def plain_event(raw: Any, index: int = 0) -> dict[str, Any]:
    """The event validated, as the plain dict the engine reads. ``quick_validate`` vouches for
    what is plainly valid; the models decide (and word the error: ``InvalidEvent``) only for
    the rest, imported (and built) on first use."""
    event = quick_validate(raw) if raw.__class__ is dict else None
    if event is not None:
        return event
    from heap_forwarder.models import as_plain, validate_event

    return as_plain(validate_event(raw, index))


def _fold(
    decided: Sequence[Outcome | None], deliveries: Sequence[tuple[Sequence[HeapItem], Sequence[Outcome]]]
) -> list[Outcome]:
    """One outcome per input event: decided ones as they are, the rest from their items' outcomes
    (``combine``: the worst decides; an event whose items were all delivered is delivered)."""
    undelivered: dict[int, list[Outcome]] = {}
    for items, outcomes in deliveries:
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.fate is not Fate.DELIVERED:
                undelivered.setdefault(item.source, []).append(outcome)
    folded = [DELIVERED if outcome is None else outcome for outcome in decided]
    for index, outcomes_of_event in undelivered.items():
        if decided[index] is None:
            folded[index] = combine(outcomes_of_event)
    return folded


# A bulk request holds up to 1000 items (Heap's cap): stream at that. Identify calls (no bulk
# form) wait for the last delivery, which sends them a few at a time: streamed one by one they
# would each wait for the GIL while the preparing thread holds it.
BULK_STREAM_AT = 1000
# Deliveries in flight at once. The client's pool keeps enough connections for these plus the
# last delivery's identify calls (heap.transport.POOL_CONNECTIONS), so none waits for one.
STREAM_CONCURRENCY = 4


class _Stream:
    """Deliveries handed to background threads (a few in flight) while the caller goes on.

    The threads start with the first early delivery; a call with nothing sent early (the usual
    small batch) delivers in the caller's thread. After a configuration fault (Heap refusing
    the app ID, the URL...) the deliveries still queued are not sent: they would only fail alike.
    """

    def __init__(self, deliverer: Deliverer, deadline: float | None):
        self.deliverer = deliverer
        self.deadline = deadline
        self.executor: ThreadPoolExecutor | None = None
        self.sent: list[tuple[list[HeapItem], Future[list[Outcome]] | list[Outcome]]] = []
        self.fault: Outcome | None = None

    def send(self, items: list[HeapItem], *, last: bool = False) -> None:
        if not items:
            return
        if last and self.executor is None:
            self.sent.append((items, self._deliver(items)))
            return
        if self.executor is None:
            self.executor = ThreadPoolExecutor(
                max_workers=STREAM_CONCURRENCY, thread_name_prefix="heap-delivery"
            )
        self.sent.append((items, self.executor.submit(self._deliver, items)))

    def _deliver(self, items: list[HeapItem]) -> list[Outcome]:
        if self.fault is not None:
            return [self.fault] * len(items)
        outcomes = self.deliverer.deliver(items, deadline=self.deadline)
        for outcome in outcomes:
            if outcome.error_class is ErrorClass.CONFIG_FAULT:
                self.fault = retryable(
                    ErrorClass.CONFIG_FAULT, f"not sent after a configuration fault: {outcome.reason}"
                )
                break
        return outcomes

    def results(self) -> list[tuple[list[HeapItem], list[Outcome]]]:
        try:
            return [(items, done if isinstance(done, list) else done.result()) for items, done in self.sent]
        finally:
            self.close()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
