"""Playbook errors point at the source: file, line and column (through the merge onto the
default), paths without spurious indices, "did you mean" for slips, a warning for mapping names
close to an event type; and the event-side messages: a bad timestamp's value and formats.

Line and column numbers are those of the fixture files in tests/support/playbooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heap_forwarder.mapping.engine import Mapper
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import PlaybookError
from heap_forwarder.mapping.source_map import Location
from heap_forwarder.models import TIMESTAMPS_ACCEPTED, InvalidEvent, validate_event
from heap_forwarder.outcome import ErrorClass
from heap_forwarder.pipeline import Pipeline
from heap_forwarder_tools.cli import main
from playbook_support import track

PLAYBOOKS = Path(__file__).parents[1] / "support" / "playbooks"
ENDPOINTS = "Input should be 'track', 'add_user_properties', 'add_account_properties' or 'identify'"


def errors_of(name: str) -> PlaybookError:
    with pytest.raises(PlaybookError) as caught:
        build_playbook(PLAYBOOKS / name)
    return caught.value


def located(name: str) -> dict[str, tuple[int, int, str]]:
    """Each problem of the fixture by its place in the playbook: (line, column, message)."""
    error = errors_of(name)
    found = {}
    for problem in error.details:
        assert problem.location is not None, problem
        assert problem.location.source == str(PLAYBOOKS / name)
        found[problem.where] = (problem.location.line, problem.location.column, problem.message)
    return found


# ---------------------------------------------------------------------------------------------
# Schema problems: where, and "did you mean"


def test_each_schema_problem_names_its_line_and_column_in_the_override() -> None:
    assert located("misspelt.yaml") == {
        # merged after the default's nine item rows, yet it names the override's line
        "global.item[9].endpoints[0]": (7, 19, f"{ENDPOINTS}; did you mean 'track'?"),
        "evnts": (8, 1, "unknown section; did you mean 'events'?"),
        "events.Video Played.rows[0].requird": (15, 9, "unknown key; did you mean 'required'?"),
        # a single mapping: no spurious [0] after the event name
        "events.Video Paused.endpoint": (17, 5, f"{ENDPOINTS}; did you mean 'track'?"),
        "rules.arrays": (22, 3, "Input should be 'join' or 'stringify'; did you mean 'join'?"),
    }


def test_the_problem_text_starts_with_file_line_and_column() -> None:
    error = errors_of("misspelt.yaml")
    path = PLAYBOOKS / "misspelt.yaml"
    assert f"{path}:15:9: events.Video Played.rows[0].requird: unknown key; did you mean 'required'?" in [
        str(p) for p in error.details
    ]
    # `problems` keeps its texts without the location (its API is unchanged)
    assert "events.Video Played.rows[0].requird: unknown key; did you mean 'required'?" in error.problems
    assert str(error).startswith(f"default_playbook.yaml + {path}: {path}:")
    assert "<unicode string>" not in str(error)


def test_a_json_playbook_problem_names_its_line_and_column() -> None:
    assert located("misspelt.json") == {
        "events.Video Played.rows[0].frm": (6, 45, "unknown key; did you mean 'from'?"),
    }


def test_an_unknown_key_with_nothing_close_lists_the_known_ones() -> None:
    with pytest.raises(PlaybookError) as caught:
        build_playbook(
            parameter_text="events: {X: {endpoint: track, rows: [{key: event, value: x, shout: 1}]}}"
        )
    assert caught.value.problems == [
        "events.X.rows[0].shout: unknown key; known: key, from, value, param, expr, otherwise, transforms,"
        " required, endpoints, description"
    ]


def test_a_key_of_a_field_added_to_the_schema_is_suggested_without_a_list_to_update() -> None:
    # The names come from the models: `when` is a RequestSpec field, so `wen` is close to it.
    with pytest.raises(PlaybookError) as caught:
        build_playbook(
            parameter_text="events: {X: {endpoint: track, wen: a, rows: [{key: event, value: x}]}}"
        )
    assert caught.value.problems == ["events.X.wen: unknown key; did you mean 'when'?"]


# ---------------------------------------------------------------------------------------------
# Compiler problems (transforms, params) name their rows' lines too


def test_compiler_problems_name_the_rows_line() -> None:
    assert located("compile_slips.yaml") == {
        "events.Video Played.rows[1] (properties.title)": (
            8,
            9,
            "unknown transform 'lowercas'; did you mean 'lowercase'?",
        ),
        "events.Video Played.rows[2] (properties.app)": (
            11,
            9,
            "unknown param 'MY_AP_ID'; did you mean 'MY_APP_ID'?",
        ),
    }


def test_a_problem_in_the_ssm_override_names_the_parameter_not_the_file() -> None:
    ssm = "events:\n  Video Played:\n    endpoint: track\n    rows:\n      - {key: event, vale: x}\n"
    with pytest.raises(PlaybookError) as caught:
        build_playbook(PLAYBOOKS / "near_reserved.yaml", ssm, "/hf/map")
    [problem] = caught.value.details
    assert str(problem) == (
        "SSM parameter /hf/map:5:22: events.Video Played.rows[0].vale: unknown key; did you mean 'value'?"
    )
    assert problem.path == ("events", "Video Played", "rows", 0, "vale")


# ---------------------------------------------------------------------------------------------
# Text that does not parse


def test_yaml_that_does_not_parse_names_the_file_line_and_column() -> None:
    path = PLAYBOOKS / "unclosed.yaml"
    [problem] = errors_of("unclosed.yaml").details
    assert problem.location == Location(str(path), 5, 1)
    assert str(problem) == (
        f"{path}:5:1: cannot parse: did not find expected ',' or ']'"
        " (while parsing a flow sequence that starts at line 4 column 11)"
    )


def test_json_that_does_not_parse_names_the_file_line_and_column() -> None:
    path = PLAYBOOKS / "trailing_comma.json"
    [problem] = errors_of("trailing_comma.json").details
    # Python's own words and column for this (3.11: "Expecting property name enclosed in double
    # quotes" at 3:42; 3.13: "Illegal trailing comma before end of object" at 3:41).
    with pytest.raises(json.JSONDecodeError) as parser:
        json.loads(path.read_text("utf-8"))
    assert parser.value.lineno == 3
    assert str(problem) == (
        f"{path}:3:{parser.value.colno}: cannot parse: not valid JSON: {parser.value.msg}"
    )


# ---------------------------------------------------------------------------------------------
# Mapping names close to an event type: a warning, not an error


def test_names_close_to_an_event_type_are_warned_about_with_their_lines() -> None:
    playbook = build_playbook(PLAYBOOKS / "near_reserved.yaml")
    path = PLAYBOOKS / "near_reserved.yaml"
    assert [str(w) for w in playbook.warnings] == [
        f"{path}:3:3: events.pages: 'pages' is not the event type 'page':"
        " it maps track events named 'pages' (did you mean 'page'?)",
        f"{path}:7:3: events.identfy: 'identfy' is not the event type 'identify':"
        " it maps track events named 'identfy' (did you mean 'identify'?)",
        f"{path}:11:3: events.Screens: 'Screens' is not the event type 'screen':"
        " it maps track events named 'Screens' (did you mean 'screen'?)",
    ]
    # still valid: `pages` is a custom track event's mapping
    assert "pages" in playbook.events


def test_the_bundled_playbook_has_no_warnings() -> None:
    assert build_playbook().warnings == ()


def test_mapping_check_prints_problems_with_lines_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mapping", "check", str(PLAYBOOKS / "near_reserved.yaml")]) == 0
    out, err = capsys.readouterr()
    assert "OK (" in out
    assert f"  warning: {PLAYBOOKS / 'near_reserved.yaml'}:3:3: events.pages: 'pages' is not" in err
    assert main(["mapping", "check", str(PLAYBOOKS / "compile_slips.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"  - {PLAYBOOKS / 'compile_slips.yaml'}:11:9: events.Video Played.rows[2] (properties.app)" in err


# ---------------------------------------------------------------------------------------------
# A bad timestamp: the formats accepted, and the value only where the event goes


def test_a_bad_timestamp_names_the_formats_accepted_and_keeps_the_value_out_of_the_message() -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(track(timestamp="yesterday"))
    [problem] = caught.value.problems
    assert problem.field == "timestamp"
    assert problem.message == f"not a valid timestamp (input is too short); {TIMESTAMPS_ACCEPTED}"
    assert (
        problem.detail == f'"yesterday" is not a valid timestamp (input is too short); {TIMESTAMPS_ACCEPTED}'
    )
    assert TIMESTAMPS_ACCEPTED == (
        "accepted: ISO 8601 date and time like 2024-05-01T12:30:00Z or 2024-05-01T14:30:00.123+02:00"
        " (seconds and fraction optional; no offset = UTC), a date like 2024-05-01, or Unix time in"
        " seconds or milliseconds (a number or its digits)"
    )


@pytest.mark.parametrize(
    "accepted",
    [
        "2024-05-01T12:30:00Z",
        "2024-05-01T14:30:00.123+02:00",
        "2024-05-01T12:30",
        "2024-05-01",
        1714566600,
        "1714566600000",
    ],
)
def test_the_formats_said_to_be_accepted_are(accepted: object) -> None:
    validate_event(track(timestamp=accepted))


def test_a_long_bad_timestamp_is_shown_cut() -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(track(sentAt="x" * 500))
    [problem] = caught.value.problems
    assert problem.detail.startswith('"' + "x" * 56 + "... is not a valid timestamp (")


def test_a_bad_timestamp_value_reaches_the_letter_but_not_the_logged_reason() -> None:
    playbook = build_playbook()
    pipeline = Pipeline(Mapper(playbook, {"MY_APP_ID": "x"}), deliverer=None)  # type: ignore[arg-type]
    [outcome] = pipeline.prepare([track(timestamp="secret-looking 2024")]).decided
    assert outcome is not None
    assert outcome.error_class is ErrorClass.INVALID_EVENT
    assert "secret-looking" not in outcome.reason  # logged
    assert (
        outcome.reason
        == f"timestamp: not a valid timestamp (invalid character in year); {TIMESTAMPS_ACCEPTED}"
    )
    assert outcome.full_reason == (  # the dead letter, the sender's answer
        'timestamp: "secret-looking 2024" is not a valid timestamp (invalid character in year); '
        + TIMESTAMPS_ACCEPTED
    )


def test_the_api_answer_shows_the_senders_own_value() -> None:
    from heap_forwarder.edge.api_contract import invalid_events
    from heap_forwarder.models import Problem

    answer = invalid_events(
        [Problem(0, "timestamp", "not a valid timestamp", '"x" is not a valid timestamp')]
    )
    assert answer.response().body["problems"] == [
        {"index": 0, "field": "timestamp", "message": '"x" is not a valid timestamp'}
    ]
