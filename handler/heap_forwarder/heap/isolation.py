"""Isolating the items Heap refused: a hint verified, then halves. Pure of HTTP.

Heap fails a whole bulk request (400, or 413) for one bad item, and names the first bad item's
index at the head of its text. That index is a hint, verified by sending the item alone; the
rest is sent in two halves (so several offenders are found in parallel branches, and no event
is re-sent once per offender). Without a usable hint, halves. Only an item refused when sent
alone is rejected, with its own answer as the reason. Sending is the caller's: a function from
item positions to Heap's answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from heap_forwarder.heap.answers import Answer, Kind, field_path, refused
from heap_forwarder.outcome import DELIVERED, ErrorClass, Fate, Outcome, retryable

__all__ = ["Isolator", "Send", "Settle", "hinted_position", "pieces", "unfinished"]

Send = Callable[[list[int]], Answer]  # sends the items at these positions as one request
Settle = Callable[[Sequence[int], Outcome], None]

_ITEM_PATH = re.compile(r"postBody\.([a-z_]+)\[(\d{1,7})\]")


class Isolator:
    """Isolation for one ``deliver`` call: at most ``max_requests`` requests across its refusals."""

    def __init__(self, max_requests: int, settle: Settle) -> None:
        self.max_requests = max_requests
        self._settle = settle
        self.requests = 0  # isolation requests sent so far (the items re-sent: the observer's)

    def isolate(self, indices: list[int], refusal: Answer, bulk_key: str | None, send: Send) -> None:
        """Split a refused request until every refused item stands alone; deliver the rest now.

        ``refusal`` is Heap's SPLIT answer to the request of ``indices``; ``bulk_key`` the array
        its text names items in (``events``); every item of ``indices`` is settled on return.
        """
        todo = [(indices, refusal)]
        while todo:
            group, answer = todo.pop()
            if len(group) == 1:
                self._settle(group, refused(answer))
                continue
            for piece in pieces(group, hinted_position(answer.text, bulk_key, len(group))):
                if self.requests >= self.max_requests:
                    cause = f"isolation request budget ({self.max_requests}) used up"
                    self._settle(piece, retryable(ErrorClass.DEADLINE, f"isolation unfinished: {cause}"))
                    continue
                self.requests += 1
                result = send(piece)
                if result.kind is Kind.OK:
                    self._settle(piece, DELIVERED)
                elif result.kind is Kind.SPLIT:
                    todo.append((piece, result))
                else:
                    self._settle(piece, unfinished(result.outcome))


def hinted_position(text: str, bulk_key: str | None, size: int) -> int | None:
    """The position, within its request, of the item Heap's text names first; None if none or
    out of range (a hint only: it is verified by sending that item alone)."""
    match = _ITEM_PATH.match(field_path(text))
    if match is None or match.group(1) != bulk_key:
        return None
    position = int(match.group(2))
    return position if position < size else None


def pieces(group: list[int], hint: int | None) -> list[list[int]]:
    """The hinted item alone, then the rest in two halves; or just halves without a hint."""
    if hint is None:
        half = len(group) // 2
        return [group[:half], group[half:]]
    rest = group[:hint] + group[hint + 1 :]
    half = len(rest) // 2
    return [[group[hint]], *(piece for piece in (rest[:half], rest[half:]) if piece)]


def unfinished(outcome: Outcome) -> Outcome:
    """An isolation step that could not be made: retried later, never taken for Heap's refusal."""
    if outcome.fate is not Fate.RETRYABLE or outcome.error_class is ErrorClass.CONFIG_FAULT:
        return outcome
    detail = outcome.detail and f"isolation unfinished: {outcome.detail}"
    return retryable(outcome.error_class, f"isolation unfinished: {outcome.reason}", detail)
