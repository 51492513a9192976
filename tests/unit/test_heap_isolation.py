"""Isolating refused items (heap/isolation.py) against a fake Heap: a function from positions to an answer."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from heap_forwarder.heap.answers import OK, Answer, Kind, give_up
from heap_forwarder.heap.isolation import Isolator, hinted_position, pieces
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate, Outcome


class FakeHeap:
    """Refuses every request holding a chosen item, naming (or not) its position like Heap does."""

    def __init__(
        self, refused: Sequence[int], *, hint: str = "right", settled_after: int | None = None
    ) -> None:
        self.refused = set(refused)
        self.hint = hint  # "right": names the first refused item; "wrong": names another; "none"
        self.settled_after = settled_after  # answer a config fault from this request on
        self.requests: list[list[int]] = []

    def send(self, piece: list[int]) -> Answer:
        self.requests.append(piece)
        if self.settled_after is not None and len(self.requests) > self.settled_after:
            return give_up(ErrorClass.CONFIG_FAULT, "HTTP 401 from Heap: check HEAP_API_URL and the app ID")
        bad = [position for position, i in enumerate(piece) if i in self.refused]
        if not bad:
            return OK
        return Answer(Kind.SPLIT, 400, self.text(piece, bad[0]))

    def text(self, piece: list[int], position: int) -> str:
        if self.hint == "none":
            return "bad request"
        if self.hint == "wrong":
            position = (position + 1) % len(piece)
        return f"postBody.events[{position}].event: item {piece[position]} is not accepted"


def isolate(heap: FakeHeap, size: int, *, budget: int = 1000) -> tuple[dict[int, Outcome], Isolator]:
    outcomes: dict[int, Outcome] = {}

    def settle(indices: Sequence[int], outcome: Outcome) -> None:
        for i in indices:
            outcomes.setdefault(i, outcome)

    group = list(range(size))
    first = heap.send(group)  # the bulk request's own refusal, as the client gets it
    heap.requests.clear()
    assert first.kind is Kind.SPLIT
    isolator = Isolator(budget, settle)
    isolator.isolate(group, first, "events", heap.send)
    assert sorted(outcomes) == group  # every item settled
    return outcomes, isolator


def refused_in(outcomes: dict[int, Outcome]) -> set[int]:
    return {i for i, o in outcomes.items() if o.fate is Fate.REJECTED}


def test_a_right_hint_costs_three_requests() -> None:
    heap = FakeHeap([412])
    outcomes, isolator = isolate(heap, 1000)
    assert refused_in(outcomes) == {412}
    assert heap.requests[0] == [412]  # the named item, alone, first
    assert isolator.requests == len(heap.requests) == 3
    assert outcomes[412].error_class is ErrorClass.HEAP_REJECTED
    assert outcomes[412].reason == "HTTP 400 from Heap at postBody.events[0].event"
    assert "item 412 is not accepted" in outcomes[412].detail
    assert all(o == DELIVERED for i, o in outcomes.items() if i != 412)


def test_a_wrong_hint_delivers_the_named_item_and_still_finds_the_bad_one() -> None:
    heap = FakeHeap([7], hint="wrong")
    outcomes, _ = isolate(heap, 64)
    assert heap.requests[0] == [8]  # named, sent alone, taken
    assert outcomes[8] == DELIVERED
    assert refused_in(outcomes) == {7}


def test_without_a_hint_halves_find_the_bad_item() -> None:
    heap = FakeHeap([5], hint="none")
    outcomes, isolator = isolate(heap, 16)
    assert refused_in(outcomes) == {5}
    assert heap.requests[:2] == [list(range(8)), list(range(8, 16))]
    assert isolator.requests == 8  # two halves per level, four levels


@pytest.mark.parametrize("hint", ["right", "wrong", "none"])
@pytest.mark.parametrize("bad", [[0], [999], [0, 999], [3, 4, 5], [10, 200, 201, 777, 998]])
def test_several_refused_at_any_positions(hint: str, bad: list[int]) -> None:
    outcomes, _ = isolate(FakeHeap(bad, hint=hint), 1000)
    assert refused_in(outcomes) == set(bad)
    assert all(o == DELIVERED for i, o in outcomes.items() if i not in bad)


def test_an_exhausted_budget_leaves_the_rest_isolation_unfinished() -> None:
    heap = FakeHeap([1, 50, 90], hint="none")
    outcomes, isolator = isolate(heap, 100, budget=4)
    assert isolator.requests == len(heap.requests) == 4
    unfinished = [o for o in outcomes.values() if o.fate is Fate.RETRYABLE]
    assert unfinished
    assert {o.error_class for o in unfinished} == {ErrorClass.DEADLINE}
    assert unfinished[0].reason == "isolation unfinished: isolation request budget (4) used up"
    assert refused_in(outcomes) <= {1, 50, 90}  # nothing is refused that was not sent alone


def test_a_settled_answer_mid_way_settles_that_piece_as_it_is() -> None:
    heap = FakeHeap([3], hint="none", settled_after=2)
    outcomes, _ = isolate(heap, 8)
    faults = {i for i, o in outcomes.items() if o.error_class is ErrorClass.CONFIG_FAULT}
    assert faults  # a config fault is kept as it is, not taken for "isolation unfinished"
    assert all(outcomes[i].reason.startswith("HTTP 401") for i in faults)
    assert refused_in(outcomes) == set()


def test_a_transient_give_up_mid_way_is_isolation_unfinished() -> None:
    class Flaky(FakeHeap):
        def send(self, piece: list[int]) -> Answer:
            if len(self.requests) == 1:
                self.requests.append(piece)
                return give_up(ErrorClass.TRANSIENT, "HTTP 503 from Heap", "HTTP 503 from Heap: busy")
            return super().send(piece)

    outcomes, _ = isolate(Flaky([0], hint="none"), 4)
    flaky = [o for o in outcomes.values() if o.fate is Fate.RETRYABLE]
    assert flaky and all(o.reason == "isolation unfinished: HTTP 503 from Heap" for o in flaky)
    assert all(o.detail == "isolation unfinished: HTTP 503 from Heap: busy" for o in flaky)


@pytest.mark.parametrize(
    ("text", "key", "size", "hint"),
    [
        ("postBody.events[3].event: x", "events", 10, 3),
        ("postBody.events[3].event: x", "users", 10, None),  # another array
        ("postBody.events[12]: x", "events", 10, None),  # out of range
        ("it says postBody.events[3]", "events", 10, None),  # not at the head
        ("bad request", "events", 10, None),
    ],
)
def test_the_hint_is_read_at_the_head_only(text: str, key: str, size: int, hint: int | None) -> None:
    assert hinted_position(text, key, size) == hint


def test_pieces_put_the_hinted_item_first_and_halve_the_rest() -> None:
    assert pieces([10, 11, 12, 13, 14], 2) == [[12], [10, 11], [13, 14]]
    assert pieces([10, 11], 0) == [[10], [11]]
    assert pieces([10, 11, 12, 13], None) == [[10, 11], [12, 13]]
