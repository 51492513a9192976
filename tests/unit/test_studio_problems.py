"""The studio's override problems placed at their line (``studio/problems.py``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from heap_forwarder.mapping.loader import merge, parse_text
from heap_forwarder.mapping.playbook import PlaybookError, compile_playbook, validate_document
from heap_forwarder_tools.studio.problems import locate_problems

SOURCE = "override.yaml"


def problems_of(text: str) -> list[tuple[int | None, str]]:
    from heap_forwarder.mapping.loader import default_document

    try:
        document = merge(default_document(), parse_text(text, SOURCE), SOURCE)
        compile_playbook(validate_document(document, SOURCE), SOURCE)
    except PlaybookError as error:
        return [(p.line, p.text) for p in locate_problems(error, text, SOURCE)]
    pytest.fail("the override was accepted")


def test_a_misspelt_key_is_at_its_line() -> None:
    text = "events:\n  Plan Chosen:\n    endpont: track\n    rows:\n      - {key: event, value: x}\n"
    located = problems_of(text)
    assert any(line == 3 and "endpont" in message for line, message in located)


def test_a_missing_key_is_placed_at_the_row_that_lacks_it() -> None:
    text = "events:\n  Plan Chosen:\n    rows:\n      - {key: event, value: x}\n      - {from: properties}\n"
    located = problems_of(text)
    assert located and all(line == 5 for line, _ in located), located


def test_an_event_named_another_way_is_found() -> None:
    text = "params: {}\nevents:\n  order-completed:\n    endpoint: track\n    rows:\n      - {kee: x}\n"
    assert any(line == 6 for line, _ in problems_of(text))


def test_a_parse_error_is_at_the_line_the_parser_names() -> None:
    located = problems_of("events:\n  a: [\n    b\n  c: d\n")
    assert len(located) == 1
    line, message = located[0]
    assert "cannot parse" in message
    assert line == 4  # where the parser stopped, not where the open sequence began (line 2)


def test_an_old_style_parser_message_gives_its_last_position() -> None:
    text = (
        'cannot parse: while parsing\n  in "<unicode string>", line 2, column 6:\n'
        '...\n  in "<unicode string>", line 4, column 4:'
    )
    located = locate_problems(PlaybookError(SOURCE, [text]), "a: [\n", SOURCE)
    assert (located[0].line, located[0].column) == (4, 4)


def test_a_problem_outside_the_override_has_no_line() -> None:
    error = PlaybookError(SOURCE, ["rules.nested: something about the default's rules"])
    assert [p.line for p in locate_problems(error, "events:\n  page: null\n", SOURCE)] == [None]


def test_a_merged_row_index_is_not_taken_for_a_row_of_the_override() -> None:
    # global rows merge onto the default's by key: [7] counts the default's rows too.
    error = PlaybookError(SOURCE, ["global.item[7] (identity): bad row"])
    located = locate_problems(error, "global:\n  item:\n    - {key: x, value: 1}\n", SOURCE)
    assert [p.line for p in located] == [2]  # the section, not the override's first row


def test_a_position_the_error_carries_wins() -> None:
    detail: Any = SimpleNamespace(location=SimpleNamespace(source=SOURCE, line=4, column=7), path=())
    detail.__str__ = lambda: "x"  # type: ignore[method-assign]
    error = PlaybookError(SOURCE, ["x"])
    error.details = [detail]  # type: ignore[attr-defined]
    located = locate_problems(error, "a: 1\n", SOURCE)
    assert (located[0].line, located[0].column) == (4, 7)


def test_a_position_in_another_file_is_not_a_line_of_the_override() -> None:
    detail: Any = SimpleNamespace(location=SimpleNamespace(source="default_playbook.yaml", line=40, column=1))
    error = PlaybookError(SOURCE, ["x"])
    error.details = [detail]  # type: ignore[attr-defined]
    assert locate_problems(error, "a: 1\n", SOURCE)[0].line is None
