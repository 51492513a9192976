"""The path of an event: parse (models) -> map (playbook) -> Heap rules -> deliver -> outcome.

No AWS here: the SQS and HTTP entry points hand decoded events in and translate the outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from heap_forwarder.heap.items import HeapItem
from heap_forwarder.heap.rules import HeapRuleError, RuleSettings, apply_rules
from heap_forwarder.mapping.engine import Mapper, MappingError
from heap_forwarder.models import InvalidEvent, Problem, quick_validate, validate_event
from heap_forwarder.outcome import ErrorClass, Outcome, combine, rejected


class Deliverer(Protocol):
    def deliver(
        self, items: Sequence[HeapItem], request_fields: Mapping[str, Any], *, deadline: float | None = None
    ) -> list[Outcome]: ...


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

    def prepare(self, raws: Sequence[Any]) -> Prepared:
        prepared = Prepared(decided=[None] * len(raws))
        for index, raw in enumerate(raws):
            try:
                # The models decide (and word the error) only for what is not plainly valid.
                event = (quick_validate(raw) if raw.__class__ is dict else None) or validate_event(raw, index)
                items = [apply_rules(i, self.rule_settings) for i in self.mapper.map(event, raw, index)]
            except InvalidEvent as error:
                reason = "; ".join(f"{p.field or '(event)'}: {p.message}" for p in error.problems)
                prepared.decided[index] = rejected(ErrorClass.INVALID_EVENT, reason)
                prepared.problems.extend(error.problems)
            except MappingError as error:
                prepared.decided[index] = rejected(error.error_class, str(error))
                prepared.problems.append(Problem(index, error.field, str(error)))
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
                prepared.items.extend(items)
        return prepared

    def deliver(self, prepared: Prepared, *, deadline: float | None = None) -> list[Outcome]:
        """One outcome per input event: decided ones as they are, the rest from Heap's answers."""
        item_outcomes = (
            self.deliverer.deliver(prepared.items, self.mapper.request_fields, deadline=deadline)
            if prepared.items
            else []
        )
        per_event: list[list[Outcome]] = [[] for _ in prepared.decided]
        for item, outcome in zip(prepared.items, item_outcomes, strict=True):
            per_event[item.source].append(outcome)
        return [
            decided if decided is not None else combine(per_event[i])
            for i, decided in enumerate(prepared.decided)
        ]

    def process(self, raws: Sequence[Any], *, deadline: float | None = None) -> list[Outcome]:
        return self.deliver(self.prepare(raws), deadline=deadline)
