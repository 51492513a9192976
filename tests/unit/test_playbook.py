"""Playbooks: validation (every problem named by row and reason), `mapping check`, JMESPath rows,
overrides from a file, hot refresh, and connection parameters (the override from SSM, on moto:
``tests/functional/test_loader_ssm.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from heap_forwarder.mapping.engine import Mapper, MissingParameter
from heap_forwarder.mapping.loader import (
    DEFAULT_PLAYBOOK_NAME,
    PlaybookHolder,
    build_playbook,
    default_document,
    merge,
)
from heap_forwarder.mapping.playbook import PlaybookError, event_key
from heap_forwarder.pipeline import Pipeline
from heap_forwarder_tools.cli import main
from playbook_support import custom_event, prepare, track


def problems_of(override: Any) -> list[str]:
    """The problems an override (merged onto the default) has; fails if it has none."""
    with pytest.raises(PlaybookError) as caught:
        build_playbook(parameter_text=yaml.safe_dump(override, sort_keys=False))
    return caught.value.problems


# ---------------------------------------------------------------------------------------------
# Validation: every problem names the row and the reason


def test_the_bundled_playbook_is_valid() -> None:
    playbook = build_playbook()
    assert playbook.source == DEFAULT_PLAYBOOK_NAME
    assert set(playbook.events) == {
        "cartviewed",
        "checkoutstarted",
        "ordercompleted",
        "paymentinfoentered",
        "productadded",
        "productclicked",
        "productlistviewed",
        "productviewed",
        "productssearched",
        "page",
        "screen",
        "identify",
        "group",
    }
    assert "alias" not in playbook.events
    assert playbook.default


def test_unknown_transform() -> None:
    assert problems_of(
        {"events": {"X": custom_event({"key": "event", "from": "event", "transforms": ["shout"]})}}
    ) == [
        "events.X.rows[0] (event): unknown transform 'shout'; known: to_string, to_number, lowercase, "
        "snake_case, iso8601, flatten, truncate, join, default"
    ]


def test_two_inputs_in_one_row() -> None:
    assert problems_of({"events": {"X": custom_event({"key": "event", "from": "event", "value": "x"})}}) == [
        "events.X.rows[0] (event): needs exactly one input of from / value / param / expr (found from, value)"
    ]


def test_no_input_in_a_row() -> None:
    assert problems_of({"events": {"X": custom_event({"key": "event", "required": True})}}) == [
        "events.X.rows[0] (event): needs exactly one input of from / value / param / expr (found none)"
    ]


def test_unknown_param() -> None:
    assert problems_of({"events": {"X": custom_event({"key": "properties.app", "param": "MY_APP"})}}) == [
        "events.X.rows[0] (properties.app): unknown param 'MY_APP'; did you mean 'MY_APP_ID'?"
    ]


def test_bad_jmespath() -> None:
    [problem] = problems_of({"events": {"X": custom_event({"key": "event", "expr": "properties.[["})}})
    assert problem.startswith("events.X.rows[0] (event): bad JMESPath expression 'properties.[[': ")


@pytest.mark.parametrize("path", ["a..b", ".a", "a.", ""])
def test_bad_from_path(path: str) -> None:
    [problem] = problems_of({"events": {"X": custom_event({"key": "event", "from": path})}})
    assert problem.startswith("events.X.rows[0] (event): 'from' needs dotted paths like context.userAgent")


def test_duplicate_output_key() -> None:
    rows = [{"key": "event", "from": "event"}, {"key": "event", "value": "x"}]
    assert problems_of({"events": {"X": custom_event(*rows)}}) == [
        "events.X: output key 'event' is mapped twice"
    ]


def test_duplicate_output_key_in_a_request_list_names_the_request() -> None:
    rows = [{"key": "identity", "from": "anonymousId"}, {"key": "identity", "from": "userId"}]
    override = {"events": {"X": [custom_event({"key": "event", "from": "event"}), custom_event(*rows)]}}
    assert problems_of(override) == ["events.X[1]: output key 'identity' is mapped twice"]


def test_unknown_top_level_section() -> None:
    assert problems_of({"event": {}}) == ["event: unknown section; did you mean 'events'?"]
    assert problems_of({"zzz": {}}) == [
        "zzz: unknown section; known: version, params, global, events, default, rules"
    ]


def test_unknown_row_field_is_named() -> None:
    problems = problems_of({"events": {"X": [custom_event({"key": "event", "frm": "event"})]}})
    assert "events.X[0].rows[0].frm: unknown key; did you mean 'from'?" in problems


def test_bad_endpoint_name() -> None:
    problems = problems_of(
        {"events": {"X": [custom_event({"key": "event", "from": "event"}, endpoint="tracks")]}}
    )
    assert (
        "events.X[0].endpoint: Input should be 'track', 'add_user_properties', "
        "'add_account_properties' or 'identify'; did you mean 'track'?"
    ) in problems


def test_bad_endpoint_name_in_a_global_row() -> None:
    override = {"global": {"item": [{"key": "identity", "from": "userId", "endpoints": ["trak"]}]}}
    assert problems_of(override) == [
        "global.item[9].endpoints[0]: Input should be 'track', 'add_user_properties', "
        "'add_account_properties' or 'identify'; did you mean 'track'?"
    ]


_ENDPOINT_PROBLEM = (
    "endpoint: Input should be 'track', 'add_user_properties', 'add_account_properties' or 'identify'"
)


@pytest.mark.parametrize("as_list", [False, True])
def test_a_problem_in_an_event_mapping_is_reported_once(as_list: bool) -> None:
    # One request may be written as a mapping or as a list of one: either way, one problem
    # (not a second one from the other shape, "Input should be a valid list").
    request = custom_event({"key": "event", "from": "event"}, endpoint="tracks")
    [problem] = problems_of({"events": {"X": [request] if as_list else request}})
    # A single mapping has no [0] in its path; a list of one does.
    where = "events.X[0]." if as_list else "events.X."
    assert problem == where + _ENDPOINT_PROBLEM + "; did you mean 'track'?"


def test_bad_rules_and_version() -> None:
    assert problems_of({"rules": {"nested": "explode"}, "version": 2}) == [
        "version: Input should be 1",
        "rules.nested: Input should be 'flatten', 'stringify' or 'drop'",
    ]


def test_request_rows_cannot_read_event_data() -> None:
    override = {"global": {"request": [{"key": "ip", "from": "context.ip"}]}}
    assert problems_of(override) == [
        "global.request[1] (ip): request rows take a param or a value, not event data (from/expr)"
    ]


def test_request_rows_cannot_use_jmespath_either() -> None:
    override = {"global": {"request": [{"key": "app_id", "expr": "anonymousId"}]}}
    assert problems_of(override) == [
        "global.request[0] (app_id): request rows take a param or a value, not event data (from/expr)"
    ]


def test_request_row_problems_name_the_right_rows() -> None:
    # The row after a broken one is named by its own position (not shifted by one).
    override = {
        "global": {
            "request": [
                {"key": "a", "from": "context.ip", "param": "MY_APP_ID"},
                {"key": "b", "value": "fine"},
                {"key": "c", "from": "context.ip"},
            ]
        }
    }
    problems = problems_of(override)
    assert [p.partition(":")[0] for p in problems] == ["global.request[1] (a)", "global.request[3] (c)"]
    assert problems[1] == (
        "global.request[3] (c): request rows take a param or a value, not event data (from/expr)"
    )


def test_duplicate_event_names_after_normalisation() -> None:
    row = {"key": "event", "from": "event"}
    override = {"events": {"Video Played": custom_event(row), "video-played": custom_event(row)}}
    assert problems_of(override) == [
        "events.video-played: same event as events.Video Played (names match ignoring case and separators)"
    ]


def test_every_problem_is_listed_not_just_the_first() -> None:
    rows = [
        {"key": "identity", "from": "anonymousId", "value": "x"},
        {"key": "event"},
        {"key": "properties", "from": "properties", "transforms": ["shout"]},
        {"key": "properties.a", "param": "NOPE"},
    ]
    assert len(problems_of({"events": {"X": custom_event(*rows)}})) == 4


def test_a_problem_names_every_source() -> None:
    with pytest.raises(PlaybookError) as caught:
        build_playbook(
            parameter_text="events: {X: {endpoint: track, rows: [{key: event}]}}", parameter_name="/hf/map"
        )
    assert caught.value.source == "default_playbook.yaml + SSM parameter /hf/map"
    assert str(caught.value).startswith(
        "default_playbook.yaml + SSM parameter /hf/map: SSM parameter /hf/map:1:38: events.X.rows[0] (event)"
    )


def test_unparseable_and_non_mapping_overrides() -> None:
    with pytest.raises(PlaybookError, match="cannot parse"):
        build_playbook(parameter_text="events: [unclosed")
    with pytest.raises(PlaybookError, match="cannot parse"):
        build_playbook(parameter_text='{"events": ')
    with pytest.raises(PlaybookError, match="an override is a mapping at the top level, not list"):
        build_playbook(parameter_text="- a\n- b\n")


def test_a_missing_file_is_a_playbook_error(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="cannot read") as caught:
        build_playbook(file=tmp_path / "absent.yaml")
    assert caught.value.source == str(tmp_path / "absent.yaml")


def test_blank_parameter_text_means_no_override() -> None:
    assert build_playbook(parameter_text="  \n").source == DEFAULT_PLAYBOOK_NAME


# ---------------------------------------------------------------------------------------------
# `heap-forwarder mapping check`


BROKEN = """\
events:
  Video Played:
    endpoint: track
    rows:
      - {key: identity, from: anonymousId, value: x}
      - {key: event}
      - {key: properties, from: properties, transforms: [shout]}
      - {key: properties.a, param: NOPE}
      - {key: properties.b, expr: "foo[["}
      - {key: properties.c, from: x}
      - {key: properties.c, from: y}
      - {key: properties.d, from: z, transforms: [{truncate: 0}]}
"""


def test_mapping_check_lists_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, "utf-8")
    assert main(["mapping", "check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"default_playbook.yaml + {path}: 7 problem(s)"
    expected = [
        "rows[0] (identity): needs exactly one input of from / value / param / expr (found from, value)",
        "rows[1] (event): needs exactly one input of from / value / param / expr (found none)",
        "rows[2] (properties): unknown transform 'shout'",
        "rows[3] (properties.a): unknown param 'NOPE'",
        "rows[4] (properties.b): bad JMESPath expression 'foo[['",
        "rows[7] (properties.d): truncate needs a positive whole number, got 0",
        "events.Video Played: output key 'properties.c' is mapped twice",
    ]
    for fragment in expected:
        assert any(line.startswith("  - ") and fragment in line for line in lines), fragment


def test_mapping_check_on_a_schema_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"extras": 1, "rules": {"arrays": "concat"}}', "utf-8")
    assert main(["mapping", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert (
        f"  - {path}:1:2: extras: unknown section; known: version, params, global, events, default, rules"
        in err
    )
    assert f"  - {path}:1:25: rules.arrays: Input should be 'join' or 'stringify'" in err


def test_mapping_check_on_a_good_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(
        "events:\n  Video Played:\n    endpoint: track\n    rows:\n"
        "      - {key: event, from: event, required: true}\n"
        "      - {key: properties, from: properties}\n",
        "utf-8",
    )
    assert main(["mapping", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"default_playbook.yaml + {path}: OK (14 event mappings: ")
    assert "Video Played" in out
    assert out.rstrip().endswith("default: yes)")


def test_mapping_check_without_a_file_checks_the_bundled_playbook(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mapping", "check"]) == 0
    assert capsys.readouterr().out.startswith("default_playbook.yaml: OK (13 event mappings: cart_viewed, ")


def test_mapping_check_on_a_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mapping", "check", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# JMESPath rows


def test_jmespath_rows_read_the_normalised_event() -> None:
    override = {
        "events": {
            "Order Completed": custom_event(
                {"key": "event", "value": "Order Completed"},
                {"key": "identity", "expr": "userId || anonymousId"},
                {"key": "timestamp", "expr": "timestamp"},
                {"key": "properties", "value": None},  # not the event's properties: these rows
                {"key": "properties.product_count", "expr": "length(properties.products)"},
                {"key": "properties.skus", "expr": "properties.products[].sku"},
                {"key": "properties.first_sku", "expr": "properties.products[0].sku"},
                {"key": "properties.big_spender", "expr": "properties.total > `100`"},
                {"key": "properties.page", "expr": "context.page.path"},
                {"key": "properties.absent", "expr": "properties.nothing.here"},
            )
        }
    }
    event = track(
        "Order Completed",
        userId="user-1",
        timestamp=1718028195123,
        properties={"total": 146.1, "products": [{"sku": "A"}, {"sku": "B"}]},
        context={"page": {"path": "/checkout"}},
    )
    assert prepare(build_playbook(parameter_text=yaml.safe_dump(override)), event) == [
        (
            "/api/track",
            {
                "event": "Order Completed",
                "identity": "user-1",
                "timestamp": "2024-06-10T14:03:15.123Z",
                "properties": {
                    "product_count": 2,
                    "skus": "A||B",
                    "first_sku": "A",
                    "big_spender": "true",
                    "page": "/checkout",
                },
                "idempotency_key": "m1",
            },
        )
    ]


_TIME_ROWS = {
    "default": custom_event(
        {"key": "event", "from": "event"},
        {"key": "timestamp", "from": "timestamp"},
        {"key": "properties.sent_at", "from": "sentAt"},
        {"key": "properties.page", "expr": "context.page.path"},
    )
}


def test_a_time_field_mapped_into_properties_is_iso_8601_utc() -> None:
    playbook = build_playbook(parameter_text=yaml.safe_dump(_TIME_ROWS))
    event = track(timestamp="2024-06-10T16:05:01.239+02:00", sentAt="2024-06-10T16:05:02+02:00")
    [(_, body)] = prepare(playbook, event)
    assert body["timestamp"] == "2024-06-10T14:05:01.239Z"
    assert body["properties"]["sent_at"] == "2024-06-10T14:05:02.000Z"


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_out_of_range_timestamp_is_refused_not_a_crash(timestamp: str) -> None:
    playbook = build_playbook(parameter_text=yaml.safe_dump(_TIME_ROWS))
    pipeline = Pipeline(Mapper(playbook, {"MY_APP_ID": "x"}), deliverer=None)  # type: ignore[arg-type]
    good = track()
    prepared = pipeline.prepare([track(timestamp=timestamp), good])
    assert prepared.decided[0] is not None
    assert [(p.index, p.field) for p in prepared.problems] == [(0, "timestamp")]
    assert prepared.decided[1] is None


# ---------------------------------------------------------------------------------------------
# Overrides: merged section by section, event by event


def _write(tmp_path: Path, document: Any, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
    return path


def test_file_override_adds_a_custom_event(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "events": {
                "Video Played": custom_event(
                    {"key": "event", "value": "video_play", "required": True},
                    {"key": "timestamp", "from": "timestamp"},
                    {"key": "properties.video", "from": "properties.video_id", "required": True},
                )
            }
        },
    )
    playbook = build_playbook(file=path)
    assert playbook.source == f"default_playbook.yaml + {path}"
    assert prepare(playbook, track(context={"userAgent": "UA"})) == [
        (
            "/api/track",
            {
                "event": "video_play",
                "timestamp": "2024-06-10T14:00:00.000Z",
                # The global properties row holds; the mapping's row adds to it.
                "properties": {"video_id": "v1", "video": "v1", "user_agent": "UA"},
                "identity": "anon-1",
                "idempotency_key": "m1",
            },
        )
    ]
    # The rest of the default is untouched.
    assert set(build_playbook().events) < set(playbook.events)


def test_an_override_replaces_an_event_matched_by_normalised_name(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "events": {
                "Cart Viewed": custom_event(
                    {"key": "event", "value": "cart"}, {"key": "properties.n", "value": 1}
                )
            }
        },
    )
    playbook = build_playbook(file=path)
    assert "cart_viewed" not in playbook.spec.events
    assert "Cart Viewed" in playbook.spec.events
    assert prepare(playbook, track("cart_viewed")) == [
        (
            "/api/track",
            {
                "event": "cart",
                "properties": {"video_id": "v1", "n": 1},
                "identity": "anon-1",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "idempotency_key": "m1",
            },
        )
    ]


def test_an_event_can_map_to_several_requests(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "events": {
                "Signed Up": [
                    custom_event({"key": "event", "from": "event"}),
                    custom_event(
                        {"key": "properties.plan", "from": "properties.plan"}, endpoint="add_user_properties"
                    ),
                ]
            }
        },
    )
    assert prepare(build_playbook(file=path), track("Signed Up", properties={"plan": "pro"})) == [
        (
            "/api/track",
            {
                "event": "Signed Up",
                "properties": {"plan": "pro"},
                "identity": "anon-1",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "idempotency_key": "m1",
            },
        ),
        # The global row reads traits (required) where the mapping's own rows put nothing in
        # properties; here they do, so a track event without traits maps.
        ("/api/add_user_properties", {"properties": {"plan": "pro"}, "identity": "anon-1"}),
    ]


def test_null_removes_an_event_mapping(tmp_path: Path) -> None:
    # A marked default shows which mapping a track event fell back to.
    default = custom_event(
        {"key": "event", "from": "event"}, {"key": "properties.mapped_by", "value": "default"}
    )
    override = {"events": {"Page": None, "cart-viewed": None}, "default": default}
    playbook = build_playbook(file=_write(tmp_path, override))
    assert "page" not in playbook.events
    assert "cartviewed" not in playbook.events
    assert "productviewed" in playbook.events
    pipeline = Pipeline(Mapper(playbook, {"MY_APP_ID": "x"}), deliverer=None)  # type: ignore[arg-type]
    page = {"type": "page", "anonymousId": "a", "timestamp": "2024-06-10T14:00:00Z"}
    prepared = pipeline.prepare([page, track("Cart Viewed"), track("Product Viewed")])
    assert prepared.decided[0] is not None
    assert prepared.decided[0].error_class == "unsupported"
    assert prepared.decided[1:] == [None, None]
    cart, product = (item.body for item in prepared.items)
    assert cart["properties"] == {"video_id": "v1", "mapped_by": "default"}  # fell back to the default
    assert product["properties"] == {"video_id": "v1"}


def test_null_default_leaves_custom_events_unsupported() -> None:
    playbook = build_playbook(parameter_text="default: null\n")
    assert playbook.default == ()
    pipeline = Pipeline(Mapper(playbook, {"MY_APP_ID": "x"}), deliverer=None)  # type: ignore[arg-type]
    prepared = pipeline.prepare([track("Video Played"), track("Order Completed")])
    assert prepared.decided[0] is not None
    assert prepared.decided[0].error_class == "unsupported"
    assert [(p.index, p.field) for p in prepared.problems] == [(0, "event")]
    assert prepared.decided[1] is None


def test_a_global_row_is_replaced_by_key_and_new_keys_are_added(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "global": {
                "item": [
                    {"key": "session_id", "from": "properties.sid", "endpoints": ["track"]},
                    {"key": "properties.ip", "from": "context.ip", "endpoints": ["track"]},
                ]
            }
        },
    )
    playbook = build_playbook(file=path)
    keys = [row.key for row in playbook.spec.global_.item]
    assert keys == [
        "identity",
        "timestamp",
        "timestamp",
        "event",
        "properties",
        "properties",
        "properties.user_agent",
        "idempotency_key",
        "session_id",
        "properties.ip",
    ]
    event = track(properties={"sid": "s-9"}, context={"ip": "192.0.2.1", "sessionId": "ignored"})
    [(_, body)] = prepare(playbook, event)
    assert body["session_id"] == "s-9"
    assert body["properties"] == {"sid": "s-9", "ip": "192.0.2.1"}


def test_global_rows_only_apply_to_their_endpoints() -> None:
    playbook = build_playbook()
    endpoints: dict[str, set[str]] = {}
    for row in playbook.spec.global_.item:
        endpoints.setdefault(row.key, set()).update(row.endpoints or ())
    assert endpoints == {
        "identity": {"track", "add_user_properties", "identify"},
        "timestamp": {"track", "identify"},
        "event": {"track"},
        "properties": {"track", "add_user_properties", "add_account_properties"},
        "properties.user_agent": {"track"},
        "session_id": {"track"},
        "idempotency_key": {"track"},
    }
    keys_by_endpoint = {
        str(m.endpoint): {".".join(step.row.key) for step in m.steps}
        for mappings in playbook.events.values()
        for m in mappings
    }
    assert keys_by_endpoint["/api/add_account_properties"] == {"account_id", "properties"}


def test_rules_can_be_changed_by_an_override(tmp_path: Path) -> None:
    playbook = build_playbook(file=_write(tmp_path, {"rules": {"nested": "stringify"}}))
    assert playbook.rules.nested == "stringify"
    assert playbook.rules.arrays == "join"  # the other rule keeps its default
    event = track(properties={"order": {"id": "o1"}, "tags": ["a", "b"]})
    [(_, body)] = prepare(playbook, event)
    assert body["properties"] == {"order": '{"id":"o1"}', "tags": "a||b"}


def test_params_merge_key_by_key() -> None:
    playbook = build_playbook(parameter_text="params: {MY_REGION: {value: eu}}\n")
    assert set(playbook.spec.params) == {"MY_APP_ID", "MY_USER_ID", "MY_REGION"}
    assert playbook.spec.params["MY_APP_ID"].required is True


def test_the_ssm_text_is_merged_after_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path, {"events": {"Video Played": custom_event({"key": "event", "value": "from file"})}}
    )
    text = yaml.safe_dump({"events": {"video_played": custom_event({"key": "event", "value": "from ssm"})}})
    playbook = build_playbook(file=path, parameter_text=text, parameter_name="/hf/map")
    assert playbook.source == f"default_playbook.yaml + {path} + SSM parameter /hf/map"
    assert prepare(playbook, track()) == [
        (
            "/api/track",
            {
                "event": "from ssm",
                "properties": {"video_id": "v1"},
                "identity": "anon-1",
                "timestamp": "2024-06-10T14:00:00.000Z",
                "idempotency_key": "m1",
            },
        )
    ]


def test_merge_does_not_change_its_inputs() -> None:
    base = default_document()
    before = json.dumps(base, sort_keys=True)
    merged = merge(base, {"events": {"Page": None}, "rules": {"arrays": "stringify"}}, "t")
    assert json.dumps(base, sort_keys=True) == before
    assert "page" not in merged["events"]
    assert merged["rules"] == {"nested": "flatten", "arrays": "stringify"}


def test_event_key() -> None:
    assert event_key("Order Completed") == event_key("order_completed") == event_key("ORDER-COMPLETED")
    assert event_key("Order Completed") == "ordercompleted"


# ---------------------------------------------------------------------------------------------
# Hot refresh keeps the last good playbook


GOOD_TEXT = yaml.safe_dump({"events": {"Video Played": custom_event({"key": "event", "value": "played"})}})
BAD_TEXT = "events: {Video Played: {endpoint: nowhere, rows: []}}\n"


def test_refresh_with_a_bad_override_keeps_the_last_good_playbook() -> None:
    errors: list[PlaybookError] = []
    initial = build_playbook()
    holder = PlaybookHolder(initial, errors.append)

    good = holder.refresh(None, GOOD_TEXT)
    assert good is not initial
    assert holder.playbook is good
    assert "videoplayed" in good.events
    assert errors == []

    kept = holder.refresh(None, BAD_TEXT)
    assert kept is good
    assert holder.playbook is good
    assert len(errors) == 1
    assert isinstance(errors[0], PlaybookError)
    assert "SSM parameter" in errors[0].source
    [problem] = errors[0].problems
    assert problem.startswith("events.Video Played")
    assert "endpoint: Input should be" in problem


def test_refresh_with_the_same_text_does_not_rebuild() -> None:
    holder = PlaybookHolder(build_playbook(), lambda error: pytest.fail(str(error)))
    first = holder.refresh(None, GOOD_TEXT)
    assert holder.refresh(None, GOOD_TEXT) is first


def test_refresh_back_to_no_override_restores_the_default() -> None:
    holder = PlaybookHolder(build_playbook(), lambda error: pytest.fail(str(error)))
    holder.refresh(None, GOOD_TEXT)
    restored = holder.refresh(None, None)
    assert "videoplayed" not in restored.events


def test_refresh_reads_the_file_too(tmp_path: Path) -> None:
    path = _write(tmp_path, {"events": {"Video Played": custom_event({"key": "event", "value": "file"})}})
    holder = PlaybookHolder(build_playbook(), lambda error: pytest.fail(str(error)))
    playbook = holder.refresh(path, "rules: {arrays: stringify}\n")
    assert "videoplayed" in playbook.events
    assert playbook.rules.arrays == "stringify"


# ---------------------------------------------------------------------------------------------
# Connection parameters


@pytest.mark.parametrize("params", [{}, {"MY_APP_ID": None}, {"MY_APP_ID": ""}, {"MY_APP_ID": "   "}])
def test_a_missing_app_id_is_a_missing_parameter(params: dict[str, Any]) -> None:
    with pytest.raises(MissingParameter, match="MY_APP_ID"):
        Mapper(build_playbook(), params)


def test_the_optional_user_id_param_may_be_absent() -> None:
    mapper = Mapper(build_playbook(), {"MY_APP_ID": "app"})
    assert mapper.request_fields == {"app_id": "app"}


def test_param_rows_read_the_bound_values() -> None:
    override = {
        "default": custom_event(
            {"key": "event", "from": "event"}, {"key": "properties.heap_user", "param": "MY_USER_ID"}
        )
    }
    playbook = build_playbook(parameter_text=yaml.safe_dump(override))
    pipeline = Pipeline(Mapper(playbook, {"MY_APP_ID": "app", "MY_USER_ID": "42"}), deliverer=None)  # type: ignore[arg-type]
    [item] = pipeline.prepare([track()]).items
    assert item.body["properties"] == {"video_id": "v1", "heap_user": "42"}


def test_a_fixed_param_value_is_used_when_none_is_given() -> None:
    override = {
        "params": {"MY_APP_ID": {"required": True, "value": "fixed-app"}},
    }
    mapper = Mapper(build_playbook(parameter_text=yaml.safe_dump(override)), {})
    assert mapper.request_fields == {"app_id": "fixed-app"}


def test_a_param_passed_as_none_falls_back_to_the_fixed_value() -> None:
    override = {"params": {"MY_APP_ID": {"required": True, "value": "fixed-app"}}}
    mapper = Mapper(build_playbook(parameter_text=yaml.safe_dump(override)), {"MY_APP_ID": None})
    assert mapper.request_fields == {"app_id": "fixed-app"}
