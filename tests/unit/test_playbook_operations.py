"""Property operations (``edit``), global rows that hold, ``value: null``, and the constructs an
override can hold that would change nothing (refused by the check, never silently ignored)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from heap_forwarder.mapping.edits import hash_value
from heap_forwarder.mapping.engine import Mapper, MissingParameter
from heap_forwarder.mapping.loader import build_playbook
from heap_forwarder.mapping.playbook import Playbook, PlaybookError
from heap_forwarder.pipeline import Pipeline
from heap_forwarder_tools.cli import main
from playbook_support import track

KEY = b"test-hash-key"
EMAIL_HASH = hmac.new(KEY, b"ada@example.com", hashlib.sha256).hexdigest()


def playbook_of(override: str) -> Playbook:
    return build_playbook(parameter_text=override)


def bodies(override: str, *events: dict[str, Any], hash_key: bytes | None = KEY) -> list[dict[str, Any]]:
    playbook = playbook_of(override)
    mapper = Mapper(playbook, {"MY_APP_ID": "app"}, hash_key=hash_key if playbook.uses_hash else None)
    prepared = Pipeline(mapper, deliverer=None).prepare(list(events))  # type: ignore[arg-type]
    assert all(d is None for d in prepared.decided), prepared.problems
    return [item.body for item in prepared.items]


def problems(override: str) -> list[str]:
    with pytest.raises(PlaybookError) as caught:
        playbook_of(override)
    return caught.value.problems


PROPS = {"coupon_id": "SUMMER", "discount": 5, "email": "ada@example.com", "internal_a": 1, "internal_b": 2}


# ---------------------------------------------------------------------------------------------
# Each operation, table-driven: the edit, the event's properties, Heap's properties


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            "{rename: {coupon_id: coupon, discount: discount_usd}}",
            {
                "coupon": "SUMMER",
                "discount_usd": 5,
                "email": "ada@example.com",
                "internal_a": 1,
                "internal_b": 2,
            },
            id="rename",
        ),
        pytest.param(
            "{rename: {missing: there}}",
            PROPS,
            id="rename-missing-key-stays-missing",
        ),
        pytest.param(
            "{drop: [email]}",
            {k: v for k, v in PROPS.items() if k != "email"},
            id="drop-by-key",
        ),
        pytest.param(
            "{drop: ['internal_*']}",
            {"coupon_id": "SUMMER", "discount": 5, "email": "ada@example.com"},
            id="drop-by-pattern",
        ),
        pytest.param(
            "{keep: [coupon_id, 'disc*']}",
            {"coupon_id": "SUMMER", "discount": 5},
            id="keep-only",
        ),
        pytest.param(
            "{set: {source: server, discount: 0}}",
            {**PROPS, "source": "server", "discount": 0},
            id="set-replaces",
        ),
        pytest.param(
            "{default: {currency: USD, discount: 99}}",
            {**PROPS, "currency": "USD"},
            id="default-fills-only-missing",
        ),
        pytest.param(
            "{hash: [email]}",
            {**PROPS, "email": EMAIL_HASH},
            id="hash",
        ),
        pytest.param(
            "{rename: {email: user_email}, drop: ['internal_*'], hash: [user_email]}",
            {"coupon_id": "SUMMER", "discount": 5, "user_email": EMAIL_HASH},
            id="in-order-rename-drop-hash",
        ),
    ],
)
@pytest.mark.parametrize("where", ["event", "global"])
def test_each_operation(edit: str, expected: dict[str, Any], where: str) -> None:
    if where == "event":
        override = f"events:\n  Coupon Applied:\n    edit:\n      properties: {edit}\n"
    else:
        override = f"global:\n  edit:\n    properties: {edit}\n"
    [body] = bodies(override, track("Coupon Applied", properties=dict(PROPS)))
    assert body["properties"] == expected


def test_the_events_own_properties_are_not_changed() -> None:
    properties = dict(PROPS)
    bodies(
        "global: {edit: {properties: {drop: [email], rename: {coupon_id: c}}}}\n",
        track(properties=properties),
    )
    assert properties == PROPS


def test_a_global_edit_reaches_traits_sent_as_properties() -> None:
    identify = {
        "type": "identify",
        "anonymousId": "a",
        "messageId": "m",
        "timestamp": "2024-06-10T14:00:00Z",
        "traits": {"email": "ada@example.com", "plan": "pro"},
    }
    [body] = bodies("global: {edit: {properties: {hash: [email]}}}\n", identify)
    assert body["properties"] == {"email": EMAIL_HASH, "plan": "pro"}


def test_global_edits_run_before_the_events_own() -> None:
    override = """
global:
  edit:
    properties: {set: {tier: global}}
events:
  Coupon Applied:
    edit:
      properties: {rename: {tier: level}}
"""
    [body] = bodies(override, track("Coupon Applied", properties={"a": 1}))
    assert body["properties"] == {"a": 1, "level": "global"}


def test_a_global_edit_keeps_to_its_endpoints() -> None:
    override = "global: {edit: {properties: {set: {x: 1}, endpoints: [add_account_properties]}}}\n"
    group = {"type": "group", "groupId": "g", "anonymousId": "a", "messageId": "m", "traits": {"n": 1}}
    track_body, group_body = bodies(override, track(properties={"a": 1}), group)
    assert track_body["properties"] == {"a": 1}
    assert group_body["properties"] == {"n": 1, "x": 1}


def test_hash_values_that_are_not_strings_hash_their_json() -> None:
    assert hash_value(5, KEY) == hmac.new(KEY, b"5", hashlib.sha256).hexdigest()
    assert hash_value({"b": 1, "a": 2}, KEY) == hmac.new(KEY, b'{"a":2,"b":1}', hashlib.sha256).hexdigest()


def test_a_playbook_that_hashes_needs_a_key() -> None:
    playbook = playbook_of("global: {edit: {properties: {hash: [email]}}}\n")
    assert playbook.uses_hash
    with pytest.raises(MissingParameter, match="HASH_KEY_PARAMETER"):
        Mapper(playbook, {"MY_APP_ID": "app"})
    assert not build_playbook().uses_hash


def test_the_hash_depends_on_the_key() -> None:
    override = "global: {edit: {properties: {hash: [email]}}}\n"
    [one] = bodies(override, track(properties={"email": "ada@example.com"}), hash_key=b"k1")
    [two] = bodies(override, track(properties={"email": "ada@example.com"}), hash_key=b"k2")
    assert one["properties"]["email"] != two["properties"]["email"]
    assert "ada" not in one["properties"]["email"]


# ---------------------------------------------------------------------------------------------
# The three everyday changes, each at most 6 lines of override YAML and no JMESPath

COUPON = """\
events:
  Coupon Applied:
    rows:
      - {key: event, value: coupon_applied}
    edit:
      properties: {rename: {coupon_id: coupon, discount: discount_usd}}
"""
DROP_EMAIL = """\
global:
  item:
    - {key: properties.email, value: null}
"""
IDENTITY_FROM_USER_ID = """\
global:
  item:
    - {key: identity, from: userId}
"""


@pytest.mark.parametrize("override", [COUPON, DROP_EMAIL, IDENTITY_FROM_USER_ID])
def test_each_everyday_change_is_short(override: str) -> None:
    assert len(override.splitlines()) <= 6
    assert "expr" not in override


def test_a_custom_event_with_renamed_properties() -> None:
    event = track("Coupon Applied", properties={"coupon_id": "SUMMER", "discount": 5})
    [body] = bodies(COUPON, event)
    assert body["event"] == "coupon_applied"
    assert body["properties"] == {"coupon": "SUMMER", "discount_usd": 5}


@pytest.mark.parametrize(
    "event",
    [
        track(properties={"email": "ada@example.com", "a": 1}),
        track("Order Completed", properties={"email": "ada@example.com", "a": 1}),
        {
            "type": "page",
            "anonymousId": "a",
            "messageId": "m",
            "timestamp": "2024-06-10T14:00:00Z",
            "name": "Home",
            "properties": {"email": "ada@example.com", "a": 1},
        },
        {
            "type": "identify",
            "anonymousId": "a",
            "messageId": "m",
            "timestamp": "2024-06-10T14:00:00Z",
            "traits": {"email": "ada@example.com", "a": 1},
        },
    ],
    ids=["custom", "order_completed", "page", "identify"],
)
def test_dropping_a_property_everywhere(event: dict[str, Any]) -> None:
    [body] = bodies(DROP_EMAIL, event)
    assert "email" not in body["properties"]
    assert body["properties"]["a"] == 1


@pytest.mark.parametrize(
    "event",
    [
        track(userId="user-9"),
        track("Order Completed", userId="user-9"),
        {"type": "page", "anonymousId": "anon-1", "userId": "user-9", "messageId": "m", "properties": {}},
        {
            "type": "identify",
            "anonymousId": "anon-1",
            "userId": "user-9",
            "messageId": "m",
            "traits": {"a": 1},
        },
    ],
    ids=["custom", "order_completed", "page", "identify"],
)
def test_identity_from_user_id_for_every_event(event: dict[str, Any]) -> None:
    event.setdefault("timestamp", "2024-06-10T14:00:00Z")
    [body] = bodies(IDENTITY_FROM_USER_ID, event)
    assert body["identity"] == "user-9"


def test_identity_from_user_id_keeps_the_rows_endpoints() -> None:
    # The replacing row names no endpoints: it applies where the row it replaced applied, so
    # group's add_account_properties (which has no identity) does not get one.
    group = {
        "type": "group",
        "groupId": "g",
        "anonymousId": "a",
        "userId": "u",
        "messageId": "m",
        "traits": {},
    }
    [body] = bodies(IDENTITY_FROM_USER_ID, group)
    assert "identity" not in body


# ---------------------------------------------------------------------------------------------
# Global rows hold, event rows win, rows that add to an object keep working


def test_an_event_row_wins_over_the_global_row() -> None:
    override = "events:\n  Coupon Applied:\n    rows:\n      - {key: identity, from: userId}\n"
    [body] = bodies(override, track("Coupon Applied", userId="user-9"))
    assert body["identity"] == "user-9"
    [other] = bodies(override, track("Other", userId="user-9"))
    assert other["identity"] == "anon-1"


def test_page_name_is_added_to_the_global_properties() -> None:
    page = {"type": "page", "anonymousId": "a", "messageId": "m", "name": "Home", "properties": {"path": "/"}}
    page["timestamp"] = "2024-06-10T14:00:00Z"
    [body] = bodies("{}", page)
    assert body["event"] == "Pageview"
    assert body["properties"] == {"path": "/", "name": "Home"}


def test_a_narrower_override_row_splits_the_endpoints() -> None:
    override = "global:\n  item:\n    - {key: identity, from: userId, endpoints: [identify]}\n"
    playbook = playbook_of(override)
    identity_rows = [(r.from_, r.endpoints) for r in playbook.spec.global_.item if r.key == "identity"]
    assert identity_rows == [
        (["anonymousId", "userId"], ["track", "add_user_properties"]),
        ("userId", ["identify"]),
    ]


def test_a_null_row_in_an_event_mapping_drops_the_global_row_there() -> None:
    override = "events:\n  Coupon Applied:\n    rows:\n      - {key: session_id, value: null}\n"
    context = {"sessionId": "s-1"}
    [body] = bodies(override, track("Coupon Applied", context=context))
    assert "session_id" not in body
    [other] = bodies(override, track("Other", context=context))
    assert other["session_id"] == "s-1"


def test_a_null_object_row_lets_the_mapping_build_the_object() -> None:
    override = """\
events:
  Coupon Applied:
    rows:
      - {key: properties, value: null}
      - {key: properties.code, from: properties.coupon_id}
"""
    [body] = bodies(override, track("Coupon Applied", properties={"coupon_id": "S", "other": 1}))
    assert body["properties"] == {"code": "S"}


def test_a_null_global_row_that_replaces_a_row_removes_it_where_it_applied() -> None:
    [body] = bodies(
        "global:\n  item:\n    - {key: session_id, value: null}\n", track(context={"sessionId": "s"})
    )
    assert "session_id" not in body
    assert all(
        r.key != "session_id"
        for r in playbook_of("global: {item: [{key: session_id, value: null}]}").spec.global_.item
    )


# ---------------------------------------------------------------------------------------------
# No silent no-ops: each of these would change nothing, so the check refuses it


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        pytest.param(
            "global: {item: [{key: nothing, value: null}]}",
            "global.item[9] (nothing): value: null removes it from no mapping (every mapping of its "
            "endpoints sets the key itself, or none produces the object it is in)",
            id="global-null-of-a-key-no-row-sets",
        ),
        pytest.param(
            "events: {X: {rows: [{key: nothing, value: null}]}}",
            "events.X.rows[0] (nothing): value: null removes 'nothing', but no row of this mapping or of "
            "the global section sets it",
            id="event-null-of-a-key-no-row-sets",
        ),
        pytest.param(
            "events: {X: {rows: [{key: event, value: x, endpoints: [track]}]}}",
            "events.X.rows[0] (event): endpoints is for global item rows only; "
            "this mapping's endpoint is track",
            id="endpoints-on-an-event-row",
        ),
        pytest.param(
            "events: {X: {edit: {traits: {drop: [email]}}}}",
            "events.X.edit.traits: no row of this mapping produces 'traits'; identify's and group's "
            "traits reach Heap as the properties object: edit properties",
            id="edit-of-an-object-the-mapping-does-not-produce",
        ),
        pytest.param(
            "global: {edit: {context: {drop: [ip]}}}",
            "global.edit.context: no mapping of its endpoints produces this object",
            id="global-edit-of-an-object-no-mapping-produces",
        ),
        pytest.param(
            "events: {X: {edit: {properties: {}}}}",
            "events.X.edit.properties: no operation (rename, drop, keep, set, default, hash)",
            id="empty-edit",
        ),
        pytest.param(
            "events: {X: {edit: {properties: {drop: [a], endpoints: [track]}}}}",
            "events.X.edit.properties: endpoints is for global edits only",
            id="endpoints-on-an-event-edit",
        ),
        pytest.param(
            "events: {X: {rows: [{key: properties.a, value: null, required: true}]}}",
            "events.X.rows[0] (properties.a): value: null removes the key, so required would never apply",
            id="required-on-a-null-row",
        ),
        pytest.param(
            "global: {request: [{key: app_id, value: null}]}",
            "global.request[0] (app_id): request fields cannot be removed (value: null); Heap needs app_id "
            "on every request",
            id="null-request-row",
        ),
        pytest.param(
            "events: {alias: null}",
            "events.alias: null removes a mapping, but there is none for alias",
            id="removing-a-mapping-that-is-not-there",
        ),
        pytest.param(
            "global: {edit: {properties: null}}",
            "global.edit.properties: null removes an edit, but there is none",
            id="removing-an-edit-that-is-not-there",
        ),
    ],
)
def test_constructs_that_would_change_nothing_are_refused(override: str, expected: str) -> None:
    assert problems(override) == [expected]


def test_a_global_row_shadowed_by_every_mapping_is_refused() -> None:
    override = """
global:
  item:
    - {key: account_id, from: context.groupId, endpoints: [add_account_properties]}
"""
    assert problems(override) == [
        "global.item[9] (account_id): it applies to no mapping (every mapping of its endpoints sets the "
        "key itself, or none produces the object it is in)"
    ]


def test_two_global_rows_for_one_key_and_endpoint_are_refused() -> None:
    override = yaml.safe_dump(
        {"global": {"item": [{"key": "x", "value": 1, "endpoints": ["track"]}, {"key": "y", "value": 2}]}}
    )
    assert playbook_of(override)  # distinct keys: fine
    document_rows = [
        {"key": "x", "value": 1, "endpoints": ["track"]},
        {"key": "x", "value": 2, "endpoints": ["track", "identify"]},
    ]
    # The second row replaces the first on track (the merge), so both never meet there.
    playbook = playbook_of(yaml.safe_dump({"global": {"item": document_rows}}))
    assert [(r.value, r.endpoints) for r in playbook.spec.global_.item if r.key == "x"] == [
        (2, ["track", "identify"])
    ]


# ---------------------------------------------------------------------------------------------
# The tools: `mapping check` describes the playbook in force; `preview --explain` names sources


HASHING = "global: {edit: {properties: {hash: [email]}}}\n"


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], str]:
    """Writes a file into the test's folder; its path, as the CLI takes it."""

    def write_file(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write_file


def test_mapping_check_lists_the_playbook_in_force(write, capsys: pytest.CaptureFixture[str]) -> None:
    override = write("o.yaml", "events:\n  page: null\n")
    assert main(["mapping", "check", override]) == 0
    out = capsys.readouterr().out
    assert "12 event mappings" in out
    assert " page," not in out and "page;" not in out
    assert main(["mapping", "check", override, "--print"]) == 0
    merged = yaml.safe_load(capsys.readouterr().out.split("\n", 1)[1].split("\n", 1)[1])
    assert "page" not in merged["events"]
    assert "screen" in merged["events"]


def test_mapping_check_says_a_hashing_playbook_needs_its_key(
    write, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mapping", "check", write("o.yaml", HASHING)]) == 0
    assert "hashes values: needs HASH_KEY_PARAMETER" in capsys.readouterr().out


def test_preview_explain_names_the_row_and_file_of_each_key(
    write, capsys: pytest.CaptureFixture[str]
) -> None:
    override = write("o.yaml", COUPON)
    event = write("e.json", json.dumps(track("Coupon Applied", properties={"coupon_id": "S", "n": 1})))
    assert main(["preview", "--explain", "--mapping", override, event]) == 0
    lines = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("    ")
    }
    assert "global.item[0] (identity) <- anonymousId | userId [default_playbook.yaml]" in lines["identity"]
    assert f"events.Coupon Applied.rows[0] (event) <- value 'coupon_applied' [{override}]" in lines["event"]
    assert f"({override}): renamed from coupon_id" in lines["properties.coupon"]
    assert "global.item[4] (properties) <- properties" in lines["properties.n"]
    assert "removed (renamed)" in lines["properties.coupon_id"]


def test_preview_of_a_hashing_playbook_without_a_key_says_what_to_pass(
    write, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["preview", "--mapping", write("o.yaml", HASHING), write("e.json", "{}")]) == 2
    assert "--hash-key-file" in capsys.readouterr().err
