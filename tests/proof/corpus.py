"""The hostile corpus: inputs a producer (broken, buggy or malicious) may send, as data.

Each input is the body of one SQS record and, for the API, either spliced into a /v1/batch
request next to a good event (``kind="event"``) or posted as the whole request body
(``kind="body"``). What must become of it, on each path:

* ``sqs``: ``delivered`` (Heap takes it as it is), an ErrorClass (every dead letter of the record
  has it, and its reason names ``field``), ``none`` (the record carries no event at all), or
  ``n/a`` (SQS itself refuses such a message body: the producer gets the error).
* ``api``: ``delivered`` (200, both events in Heap), ``rejected:<class>`` (200, listed as rejected
  and dead-lettered, the good one delivered), ``400:<error>`` (refused whole, ``field`` named at
  index 0 for ``invalid_events``; the good event is not sent), ``413`` (the event is too large for
  the API; index 0 named).

The texts are built here by hand, not by ``json.dumps``, wherever the hostility is in the JSON
text itself (NaN, 1e400, lone surrogate escapes, duplicate keys, depth, invalid UTF-8).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from typing import Any

GOOD_TIMESTAMP = "2024-06-10T14:07:05.017Z"
_RAW = "__RAW__"  # replaced in the JSON text by a literal JSON cannot otherwise hold


@dataclass(frozen=True)
class Hostile:
    id: str
    text: str | bytes
    sqs: str
    api: str
    field: str = ""
    kind: str = "event"  # "event": spliced next to a good event (API); "body": the whole body
    letters: int = 1  # SQS: dead letters the record yields (one per event)
    headers: tuple[tuple[str, str], ...] = ()  # API only: extra request headers
    note: str = ""

    def api_body(self, good: dict[str, Any]) -> bytes:
        """The /v1/batch request body: the hostile event first, then the good one."""
        raw = self.text if isinstance(self.text, bytes) else self.text.encode("utf-8")
        if self.kind == "body":
            return raw
        return b'{"batch":[' + raw + b"," + json.dumps(good).encode() + b"]}"


def event(case: str, *, raw: str | None = None, **fields: Any) -> str:
    """A valid track event as JSON text, with fields overridden (None removes one); ``raw``
    replaces the value ``__RAW__`` in the text with a literal (NaN, 1e400...)."""
    document: dict[str, Any] = {
        "type": "track",
        "event": "Hostile Probe",
        "messageId": f"hostile-{case}",
        "anonymousId": f"anon-{case}",
        "timestamp": GOOD_TIMESTAMP,
        "properties": {"plan": "pro"},
    }
    for key, value in fields.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    text = json.dumps(document, ensure_ascii=True)
    return text.replace(f'"{_RAW}"', raw) if raw is not None else text


def identify(case: str, **fields: Any) -> str:
    return event(
        case, **{"type": "identify", "event": None, "properties": None, "traits": {"plan": "pro"}, **fields}
    )


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


def with_properties(case: str, properties_text: str) -> str:
    return event(case, properties=_RAW, raw=properties_text)


WIDE = {f"key_{i:05d}": i for i in range(10_000)}

CORPUS: list[Hostile] = [
    # --- bodies that are not JSON, or not JSON the product can read
    Hostile("empty-body", "", "n/a", "400:invalid_json", kind="body", note="SQS refuses empty bodies"),
    Hostile("whitespace-body", "  \n\t ", "invalid_json", "400:invalid_json", kind="body"),
    Hostile("truncated-json", '{"type":"track","event":"x"', "invalid_json", "400:invalid_json", kind="body"),
    Hostile("trailing-garbage", event("tg") + "}}xyz", "invalid_json", "400:invalid_json", kind="body"),
    Hostile(
        "single-quoted", "{'type': 'track', 'event': 'x'}", "invalid_json", "400:invalid_json", kind="body"
    ),
    Hostile(
        "json-with-comment",
        '{"type":"track", /* hi */ "event":"x"}',
        "invalid_json",
        "400:invalid_json",
        kind="body",
    ),
    Hostile("bom-prefixed", "\ufeff" + event("bom"), "invalid_json", "400:invalid_json", kind="body"),
    Hostile("body-depth-300", "[" * 300 + "]" * 300, "invalid_json", "400:invalid_json", kind="body"),
    Hostile("body-depth-5000", "[" * 5000 + "]" * 5000, "invalid_json", "400:invalid_json", kind="body"),
    Hostile(
        "invalid-utf8-bytes",
        b'{"type":"track","event":"\xff\xfe\xfd"}',
        "n/a",
        "400:invalid_json",
        kind="body",
    ),
    Hostile("overlong-utf8", b'{"type":"track","event":"\xc0\xaf"}', "n/a", "400:invalid_json", kind="body"),
    Hostile("utf16-body", event("utf16").encode("utf-16"), "n/a", "400:invalid_json", kind="body"),
    Hostile(
        "not-gzip-but-says-gzip",
        event("gz").encode(),
        "n/a",
        "400:invalid_body",
        kind="body",
        headers=(("Content-Encoding", "gzip"),),
    ),
    Hostile(
        "gzip-bomb",
        gzip.compress(b'{"batch":[' + b" " * 20_000_000 + b"]}"),
        "n/a",
        "413",
        kind="body",
        headers=(("Content-Encoding", "gzip"),),
        note="20 MB of JSON in 20 KB: decompression stops at the limit",
    ),
    Hostile(
        "unknown-content-encoding",
        event("br").encode(),
        "n/a",
        "400:invalid_body",
        kind="body",
        headers=(("Content-Encoding", "br"),),
    ),
    # --- JSON, but not events
    Hostile("null-body", "null", "invalid_event", "400:invalid_body", kind="body"),
    Hostile("number-body", "42", "invalid_event", "400:invalid_body", kind="body"),
    Hostile("string-body", '"track"', "invalid_event", "400:invalid_body", kind="body"),
    Hostile("boolean-body", "true", "invalid_event", "400:invalid_body", kind="body"),
    Hostile("array-body", "[" + event("arr") + "]", "invalid_event", "400:invalid_body", kind="body"),
    Hostile("empty-object-body", "{}", "invalid_event", "400:invalid_body", field="type", kind="body"),
    Hostile(
        "batch-not-a-list",
        '{"batch":{"type":"track"}}',
        "invalid_event",
        "400:invalid_body",
        field="batch",
        kind="body",
    ),
    Hostile(
        "batch-of-garbage",
        '{"batch":[1,"x",null,true,[],{}]}',
        "invalid_event",
        "400:invalid_events",
        kind="body",
        letters=6,
    ),
    Hostile("empty-batch", '{"batch":[]}', "none", "delivered", kind="body"),
    Hostile(
        "batch-in-a-batch",
        '{"batch":[{"batch":[' + event("bib") + "]}]}",
        "invalid_event",
        "400:invalid_events",
        field="type",
        kind="body",
    ),
    # --- numbers JSON cannot carry to Heap
    Hostile(
        "nan-literal", event("nan", properties={"v": _RAW}, raw="NaN"), "invalid_json", "400:invalid_json"
    ),
    Hostile(
        "infinity-literal",
        event("inf", properties={"v": _RAW}, raw="Infinity"),
        "invalid_json",
        "400:invalid_json",
    ),
    Hostile(
        "minus-infinity-literal",
        event("minf", properties={"v": _RAW}, raw="-Infinity"),
        "invalid_json",
        "400:invalid_json",
    ),
    Hostile(
        "number-1e400",
        event("e400", properties={"v": _RAW}, raw="1e400"),
        "heap_rule",
        "400:invalid_json",
        note="an infinite float: the API refuses the body, the consumer's rules the property",
    ),
    Hostile(
        "integer-400-digits",
        event("int400", properties={"v": _RAW}, raw="9" * 400),
        "delivered",
        "delivered",
        note="a number as Heap takes numbers: kept as it is",
    ),
    Hostile(
        "tiny-and-negative-zero",
        event("tiny", properties={"a": _RAW}, raw='-0.0, "b": 5e-324'),
        "delivered",
        "delivered",
    ),
    # --- unicode edge cases
    Hostile(
        "lone-high-surrogate", event("hs", event=_RAW, raw='"\\ud800"'), "invalid_json", "400:invalid_json"
    ),
    Hostile(
        "lone-low-surrogate",
        event("ls", properties={"v": _RAW}, raw='"x\\udc00y"'),
        "invalid_json",
        "400:invalid_json",
    ),
    Hostile(
        "reversed-surrogate-pair",
        event("rsp", event=_RAW, raw='"\\ude00\\ud83d"'),
        "invalid_json",
        "400:invalid_json",
    ),
    Hostile(
        "escaped-emoji-pair", event("emoji", event="\U0001f600 Checkout \u2705"), "delivered", "delivered"
    ),
    Hostile("nul-in-event-name", event("nul", event="\x00"), "delivered", "delivered"),
    Hostile("noncharacters", event("nonchar", properties={"\ufffe": "\uffff"}), "delivered", "delivered"),
    Hostile(
        "rtl-zero-width-combining",
        event("rtl", event="\u202eevil\u200b\u0301\u0647"),
        "delivered",
        "delivered",
    ),
    Hostile(
        "control-characters", event("ctl", properties={"v": "\x01\x1b[31m\x7f"}), "delivered", "delivered"
    ),
    # --- types: missing, unknown, wrong
    Hostile("missing-everything", "{}", "invalid_event", "400:invalid_events", field="type"),
    Hostile("type-missing", event("tm", type=None), "invalid_event", "400:invalid_events", field="type"),
    Hostile(
        "type-unknown", event("tu", type="purchase"), "invalid_event", "400:invalid_events", field="type"
    ),
    Hostile("type-number", event("tn", type=7), "invalid_event", "400:invalid_events", field="type"),
    Hostile(
        "type-null",
        event("tnull", type=_RAW, raw="null"),
        "invalid_event",
        "400:invalid_events",
        field="type",
    ),
    Hostile(
        "type-wrong-case", event("tcase", type="Track"), "invalid_event", "400:invalid_events", field="type"
    ),
    Hostile("event-name-empty", event("ne", event=""), "invalid_event", "400:invalid_events", field="event"),
    Hostile(
        "event-name-blank", event("nb", event="   "), "invalid_event", "400:invalid_events", field="event"
    ),
    Hostile(
        "event-name-2000-chars",
        event("n2k", event="x" * 2000),
        "heap_rule",
        "400:invalid_events",
        field="event",
    ),
    Hostile(
        "event-name-missing", event("nm", event=None), "invalid_event", "400:invalid_events", field="event"
    ),
    Hostile("event-name-number", event("nn", event=42), "delivered", "delivered"),
    Hostile(
        "properties-list",
        event("pl", properties=[1, 2]),
        "invalid_event",
        "400:invalid_events",
        field="properties",
    ),
    Hostile(
        "properties-string",
        event("ps", properties="a=1"),
        "invalid_event",
        "400:invalid_events",
        field="properties",
    ),
    Hostile(
        "properties-null",
        event("pn", properties=_RAW, raw="null"),
        "invalid_event",
        "400:invalid_events",
        field="properties",
    ),
    Hostile(
        "traits-list", identify("tl", traits=["a"]), "invalid_event", "400:invalid_events", field="traits"
    ),
    Hostile("context-list", event("cl", context=[1]), "invalid_event", "400:invalid_events", field="context"),
    Hostile(
        "user-agent-object",
        event("ua", context={"userAgent": {"a": 1}}),
        "invalid_event",
        "400:invalid_events",
        field="context.userAgent",
    ),
    Hostile(
        "integrations-string",
        event("is", integrations="All"),
        "invalid_event",
        "400:invalid_events",
        field="integrations",
    ),
    Hostile(
        "session-id-object",
        event("sid", context={"sessionId": {"a": 1}}),
        "heap_rule",
        "400:invalid_events",
        field="session_id",
    ),
    Hostile(
        "group-without-group-id",
        event("gg", type="group", event=None, traits={"a": 1}),
        "invalid_event",
        "400:invalid_events",
        field="groupId",
    ),
    Hostile(
        "alias",
        event("alias", type="alias", event=None, previousId="old-user"),
        "unsupported",
        "rejected:unsupported",
    ),
    Hostile(
        "identify-heap-user-id-not-numeric",
        identify("hid", context={"heap": {"user_id": "abc"}}),
        "heap_rule",
        "400:invalid_events",
        field="user_id",
    ),
    Hostile(
        "identify-traits-id-and-email",
        identify("tid", traits={"id": 7, "email": "A@B.COM"}),
        "delivered",
        "delivered",
    ),
    # --- sizes and shapes
    Hostile(
        "10000-key-properties",
        event("wide", properties=WIDE),
        "delivered",
        "413",
        note="the API's 32 KB event limit",
    ),
    Hostile("100kb-string-value", event("big", properties={"v": "x" * 100_000}), "delivered", "413"),
    Hostile(
        "30kb-string-value",
        event("mid", properties={"v": "y" * 30_000}),
        "delivered",
        "delivered",
        note="cut to 1023 characters, as Heap stores it",
    ),
    Hostile(
        "2000-char-property-key",
        event("longkey", properties={"k" * 2000: 1}),
        "heap_rule",
        "400:invalid_events",
        field="properties",
    ),
    Hostile("properties-depth-150", with_properties("d150", nested(150)), "delivered", "delivered"),
    Hostile("properties-depth-300", with_properties("d300", nested(300)), "invalid_json", "400:invalid_json"),
    Hostile(
        "properties-depth-5000", with_properties("d5000", nested(5000)), "invalid_json", "400:invalid_json"
    ),
    Hostile(
        "arrays-of-arrays",
        event("aoa", properties={"a": [[1, [2, [3]]], {"b": [None, True]}]}),
        "delivered",
        "delivered",
    ),
    Hostile(
        "duplicate-keys", event("dup", properties=_RAW, raw='{"a": 1, "a": 2}'), "delivered", "delivered"
    ),
    Hostile(
        "prototype-keys",
        event("proto", properties={"__proto__": {"x": 1}, "constructor": "y"}),
        "delivered",
        "delivered",
    ),
    Hostile("write-key-in-event", event("wk", writeKey="someone-elses-key"), "delivered", "delivered"),
    # --- identities Heap would merge users under
    Hostile(
        "identity-null-string",
        event("idnull", anonymousId="null"),
        "heap_rule",
        "400:invalid_events",
        field="identity",
    ),
    Hostile(
        "identity-undefined",
        event("idundef", anonymousId="undefined"),
        "heap_rule",
        "400:invalid_events",
        field="identity",
    ),
    Hostile(
        "identity-NULL-padded",
        event("idNULL", anonymousId=" NULL "),
        "heap_rule",
        "400:invalid_events",
        field="identity",
    ),
    Hostile(
        "identity-empty",
        event("idempty", anonymousId=""),
        "heap_rule",
        "400:invalid_events",
        field="identity",
    ),
    Hostile(
        "identity-blank",
        event("idblank", anonymousId="   "),
        "heap_rule",
        "400:invalid_events",
        field="identity",
    ),
    Hostile(
        "identity-object-object",
        event("idobj", anonymousId="[object Object]"),
        "heap_rule",
        "400:invalid_events",
        field="identity",
    ),
    Hostile(
        "identity-300-chars",
        event("id300", anonymousId="u" * 300),
        "heap_rule",
        "400:invalid_events",
        field="identity",
    ),
    Hostile(
        "identity-missing",
        event("idmissing", anonymousId=None),
        "heap_rule",
        "400:invalid_events",
        field="identity",
    ),
    Hostile(
        "identity-as-object",
        event("idasobj", anonymousId={"id": 1}),
        "invalid_event",
        "400:invalid_events",
        field="anonymousId",
    ),
    Hostile("identity-as-number", event("idnum", anonymousId=12345), "delivered", "delivered"),
    Hostile(
        "identity-user-id-only", event("uidonly", anonymousId=None, userId="user-7"), "delivered", "delivered"
    ),
    # --- timestamps
    Hostile(
        "timestamp-not-a-date",
        event("tsbad", timestamp="not a date"),
        "invalid_event",
        "400:invalid_events",
        field="timestamp",
    ),
    Hostile(
        "timestamp-month-13",
        event("ts13", timestamp="2024-13-45"),
        "invalid_event",
        "400:invalid_events",
        field="timestamp",
    ),
    Hostile(
        "timestamp-far-future",
        event("tsfuture", timestamp="2999-01-01T00:00:00Z"),
        "delivered",
        "delivered",
        note="Heap accepts timestamps as sent; no window is configured",
    ),
    Hostile(
        "timestamp-ancient", event("tsancient", timestamp="1970-01-01T00:00:00Z"), "delivered", "delivered"
    ),
    Hostile("timestamp-epoch-ms", event("tsms", timestamp=1718028425017), "delivered", "delivered"),
    Hostile("timestamp-epoch-ms-string", event("tsmss", timestamp="1718028425017"), "delivered", "delivered"),
    Hostile(
        "timestamp-1e20",
        event("ts1e20", timestamp=1e20),
        "invalid_event",
        "400:invalid_events",
        field="timestamp",
    ),
    Hostile(
        "timestamp-year-1-east-of-utc",
        event("tsy1", timestamp="0001-01-01T00:00:00+01:00"),
        "invalid_event",
        "400:invalid_events",
        field="timestamp",
    ),
    Hostile(
        "timestamp-boolean",
        event("tsbool", timestamp=True),
        "invalid_event",
        "400:invalid_events",
        field="timestamp",
    ),
    Hostile(
        "timestamp-missing",
        event("tsnone", timestamp=None),
        "delivered",
        "delivered",
        note="one rule on both paths, Segment's: timestamp from receivedAt (API: the request's time;"
        " SQS: the record's SentTimestamp)",
    ),
    Hostile(
        "timestamp-from-original-timestamp",
        event("tsorig", timestamp=None, originalTimestamp=GOOD_TIMESTAMP),
        "delivered",
        "delivered",
        note="RudderStack's SDKs send originalTimestamp without timestamp; both paths derive it",
    ),
    # --- message ids (Heap's idempotency key)
    Hostile(
        "message-id-missing",
        event("midnone", messageId=None),
        "delivered",
        "delivered",
        note="SQS: <record messageId>:<position>, the same on every receive; API: a UUID assigned"
        " before the first attempt",
    ),
    Hostile("message-id-number", event("midnum", messageId=42), "delivered", "delivered"),
    Hostile(
        "message-id-2000-chars",
        event("midlong", messageId="m" * 2000),
        "heap_rule",
        "400:invalid_events",
        field="idempotency_key",
    ),
    Hostile(
        "message-id-object",
        event("midobj", messageId={"a": 1}),
        "invalid_event",
        "400:invalid_events",
        field="messageId",
    ),
]

IDS = [case.id for case in CORPUS]
assert len(IDS) == len(set(IDS)), "corpus ids must be unique"
