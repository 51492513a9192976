"""Helpers of the proof suites (a plain module: test modules cannot import a conftest reliably).

The conservation law, as code: every input event ends in exactly one place (``heap``: stored
by the emulator, track events once per idempotency key; ``dlq:<class>``: a dead letter with
an ErrorClass and a Reason; ``queue``: a message of the main queue, waiting for a retry;
``refused``: the API answered the request carrying it with a 4xx; ``returned``: the API
answered 503 + Retry-After, so the caller still holds it). ``take_census`` looks at every
place; ``assert_conserved`` fails when an event is in none, or where it may not be.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heap_forwarder.entry import api as api_entry
from heap_forwarder.entry import sqs as sqs_entry
from heap_forwarder_tools.local.invoke import LocalContext
from heap_forwarder_tools.local.sandbox import LOCAL_WRITE_KEY, Sandbox, environment, peek_queue, queue_counts
from heap_forwarder_tools.local.server import http_api_event
from heap_forwarder_tools.local.template import FunctionSpec

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
WRITE_KEY = LOCAL_WRITE_KEY
APP_ID_PARAMETER = "/heap-forwarder/app-id"
TRACK_TYPES = frozenset({"track", "page", "screen"})

# The template's functions made fast: no backoff between receives (visibility 0), a short
# in-process retry budget and short Heap timeouts. MAX_RECEIVE_COUNT (19) and the main queue's
# maxReceiveCount (20) stay the template's.
FAST = {
    "BACKOFF_BASE_SECONDS": "0",
    "BACKOFF_CAP_SECONDS": "0",
    "RETRY_BUDGET_SECONDS": "0.05",
    "HEAP_CONNECT_TIMEOUT_SECONDS": "0.3",
    "HEAP_READ_TIMEOUT_SECONDS": "0.3",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
API_BUDGET = {"RETRY_BUDGET_SECONDS": "1"}


# ------------------------------------------------------------------------------------ events
def events_in(document: Any) -> list[Any]:
    """The events a record body / parked message / dead letter carries."""
    if isinstance(document, dict) and isinstance(document.get("batch"), list) and "type" not in document:
        return list(document["batch"])
    return [document]


def message_id(event: Any) -> str | None:
    value = event.get("messageId") if isinstance(event, dict) else None
    return None if value is None else str(value)


# ------------------------------------------------------------------------------------ functions
class SqsFunction:
    """The ConsumerFunction's real handler in one warm Lambda process (cold on the first call).

    ``remaining_seconds`` replaces the template's timeout in the context handed over (the time
    Lambda says is left); ``before``/``after`` run around each invocation (1-based number).
    """

    def __init__(self, spec: FunctionSpec, *, remaining_seconds: float | None = None) -> None:
        self.spec = spec
        self.remaining_seconds = remaining_seconds
        self.invocations = 0
        self.responses: list[dict[str, Any]] = []
        self.before: Callable[[int], None] = lambda n: None
        self.after: Callable[[int], None] = lambda n: None
        sqs_entry.reset()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.invocations += 1
        self.before(self.invocations)
        try:
            with environment(self.spec.environment):
                timeout: Any = self.spec.timeout if self.remaining_seconds is None else self.remaining_seconds
                context = LocalContext(self.spec.logical_id, self.spec.memory_mb, timeout)
                response: dict[str, Any] = sqs_entry.lambda_handler(event, context)
                self.responses.append(response)
                return response
        finally:
            self.after(self.invocations)


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def api_event(
    path: str,
    document: Any = None,
    *,
    data: bytes | None = None,
    key: str | None = WRITE_KEY,
    headers: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The HTTP API (v2) event API Gateway hands the function for ``POST path``."""
    body = data if data is not None else json.dumps(document).encode("utf-8")
    sent = [("Content-Type", "application/json"), ("User-Agent", "proof")]
    if key is not None:
        sent.append(("Authorization", basic(key)))
    sent.extend(headers)
    sent.append(("Content-Length", str(len(body))))
    return http_api_event("POST", path, sent, body)


class ApiFunction:
    """The ApiFunction's real handler in one warm Lambda process (cold on the first call)."""

    def __init__(self, spec: FunctionSpec, *, remaining_seconds: float | None = None) -> None:
        self.spec = spec
        self.remaining_seconds = remaining_seconds
        api_entry.reset()

    def invoke(self, event: dict[str, Any]) -> Answer:
        with environment(self.spec.environment):
            timeout: Any = self.spec.timeout if self.remaining_seconds is None else self.remaining_seconds
            context = LocalContext(self.spec.logical_id, self.spec.memory_mb, timeout)
            response = api_entry.lambda_handler(event, context)
        text = response.get("body") or ""
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        headers = {k.lower(): str(v) for k, v in (response.get("headers") or {}).items()}
        return Answer(int(response["statusCode"]), body, headers)

    def post(self, path: str, document: Any = None, **options: Any) -> Answer:
        return self.invoke(api_event(path, document, **options))


# ------------------------------------------------------------------------------------ queues
@dataclass
class Message:
    body: str
    attributes: dict[str, str]
    document: Any = None
    parsed: bool = False

    @property
    def error_class(self) -> str:
        return self.attributes.get("ErrorClass", "")

    @property
    def reason(self) -> str:
        return self.attributes.get("Reason", "")

    @property
    def has_reason(self) -> bool:
        return self.error_class not in ("", "-") and self.reason not in ("", "-")

    def events(self) -> list[Any]:
        return events_in(self.document) if self.parsed else []


def read_messages(sqs: Any, url: str) -> list[Message]:
    """Every visible message of a queue, left in place (a queue a test deleted holds nothing)."""
    seen: list[Message] = []
    for message in peek_queue(sqs, url):
        item = Message(message.body, message.attributes)
        with suppress(ValueError, RecursionError):  # a hostile body is kept as it came
            item.document, item.parsed = json.loads(message.body), True
        seen.append(item)
    return seen


# ------------------------------------------------------------------------------------ the census
@dataclass
class Census:
    """What every place holds at one moment."""

    tracked: Counter[str]  # idempotency key -> times stored (the emulator keeps one per key)
    tracked_events: list[dict[str, Any]]
    users: dict[str, dict[str, Any]]
    accounts: dict[str, dict[str, Any]]
    identified: set[str]  # identities linked to a Heap user id (/api/v1/identify)
    dead_letters: list[Message]
    queued: list[Message]
    in_flight: int
    stats: dict[str, Any]

    def letters_of(self, mid: str) -> list[Message]:
        return [m for m in self.dead_letters if any(message_id(e) == mid for e in m.events())]

    def queued_copies(self, mid: str) -> int:
        return sum(1 for m in self.queued for e in m.events() if message_id(e) == mid)


def take_census(sandbox: Sandbox) -> Census:
    emulator = sandbox.emulator
    sqs = sandbox.client("sqs")
    tracked_events = emulator.tracked_events()
    main = sandbox.queue_url("MainQueue")
    return Census(
        tracked=Counter(str(e.get("idempotency_key")) for e in tracked_events),
        tracked_events=tracked_events,
        users=emulator.user_properties(),
        accounts=emulator.account_properties(),
        identified={str(r["identity"]) for r in emulator.identifies()},
        dead_letters=read_messages(sqs, sandbox.queue_url("DeadLetterQueue")),
        queued=read_messages(sqs, main),
        in_flight=queue_counts(sqs, main)[1],
        stats=emulator.stats(),
    )


def identity_of(event: Mapping[str, Any]) -> str | None:
    for key in ("anonymousId", "userId"):
        value = event.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def delivered(event: Mapping[str, Any], census: Census) -> bool:
    """Is everything Heap should hold of this event there (every Heap item it maps to)?"""
    kind = event.get("type")
    if kind in TRACK_TYPES:
        return census.tracked[str(event["messageId"])] >= 1
    if kind == "identify":
        who = identity_of(event)
        linked = ((event.get("context") or {}).get("heap") or {}).get("user_id") is None or (
            who in census.identified
        )
        return who in census.users and linked
    if kind == "group":
        return str(event.get("groupId")) in census.accounts
    return False


@dataclass
class Verdict:
    fates: dict[str, str] = field(default_factory=dict)  # messageId -> places joined by "+"
    problems: list[str] = field(default_factory=list)


def assert_conserved(
    events: Sequence[Mapping[str, Any]],
    census: Census,
    *,
    refused: Iterable[str] = (),
    returned: Iterable[str] = (),
    strict: bool = True,
    max_letters: int = 1,
    reasonless_letters_ok: bool = False,
    others_ok: bool = False,
) -> dict[str, str]:
    """Fail unless every event is somewhere it may be; return messageId -> its place(s).

    ``strict`` (once everything settled): exactly one place per event, except that an event
    whose Heap items are repeat-safe (user / account properties, identify) may also be in Heap
    while it waits in the queue or the DLQ. Not strict (mid-way): at least one place. Always:
    a track event stored at most once, nothing stored under a key no input carries, every dead
    letter with a reason, at most ``max_letters`` letters per event, nothing left in flight;
    and (unless ``others_ok``: inputs not listed) nothing in Heap that no listed input carries.
    """
    refused_ids, returned_ids = set(refused), set(returned)
    verdict = Verdict()
    inputs = {str(e["messageId"]) for e in events}
    for key, times in census.tracked.items():
        if key not in inputs and not others_ok:
            verdict.problems.append(f"Heap holds a track event under key {key!r} that no input carries")
        if times > 1:
            verdict.problems.append(f"{key}: stored {times} times")
    for letter in census.dead_letters:
        if not letter.has_reason and not reasonless_letters_ok:
            verdict.problems.append(f"a dead letter without a reason: {letter.body[:120]!r}")
    if strict and census.in_flight:
        verdict.problems.append(f"{census.in_flight} message(s) in flight: they cannot be accounted for")
    for event in events:
        mid = str(event["messageId"])
        places = []
        if delivered(event, census):
            places.append("heap")
        letters = census.letters_of(mid)
        if len(letters) > max_letters:
            verdict.problems.append(f"{mid}: {len(letters)} dead letters")
        places.extend(sorted({f"dlq:{m.error_class or '-'}" for m in letters}))
        if census.queued_copies(mid):
            places.append("queue")
        if mid in refused_ids:
            places.append("refused")
        if mid in returned_ids:
            places.append("returned")
        verdict.fates[mid] = "+".join(places)
        if not places:
            verdict.problems.append(f"{mid} ({event.get('type')}): LOST, in no place")
            continue
        if strict and len(places) > 1:
            repeat_safe = event.get("type") in ("identify", "group") and places[0] == "heap"
            if not (repeat_safe and len(places) == 2 and places[1] != "refused"):
                verdict.problems.append(f"{mid} ({event.get('type')}): in several places {places}")
        if "refused" in places and len(places) > 1 and places != ["heap", "refused"]:
            verdict.problems.append(f"{mid}: refused to the caller yet also {places}")
        if "refused" in places and "heap" in places:
            verdict.problems.append(f"{mid}: refused to the caller yet delivered")
    assert not verdict.problems, "conservation law broken:\n  " + "\n  ".join(verdict.problems)
    return verdict.fates


# ------------------------------------------------------------------------------------ the stage
class Stage:
    """One Sandbox shared by a module, set back to the template's state before each test."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.emulator = sandbox.emulator
        self.sqs = sandbox.client("sqs")
        self.ssm = sandbox.client("ssm")

    @property
    def main_url(self) -> str:
        return self.sandbox.queue_url("MainQueue")

    @property
    def dlq_url(self) -> str:
        return self.sandbox.queue_url("DeadLetterQueue")

    def reset(self) -> None:
        for logical_id in list(self.sandbox.resources):
            with suppress(self.sqs.exceptions.QueueDoesNotExist):  # a test deleted it (DLQ outage)
                self.sqs.delete_queue(QueueUrl=self.sandbox.queue_url(logical_id))
        self.sandbox._create_queues()
        self.sandbox._create_parameters()
        self.emulator.reset()

    def send(self, bodies: Sequence[str]) -> list[str]:
        """To the main queue, in order; their SQS message ids."""
        return [self.sqs.send_message(QueueUrl=self.main_url, MessageBody=b)["MessageId"] for b in bodies]

    def consumer(
        self, overrides: Mapping[str, str] | None = None, *, remaining_seconds: float | None = None
    ) -> SqsFunction:
        spec = self.sandbox.function("ConsumerFunction", {**FAST, **(overrides or {})})
        return SqsFunction(spec, remaining_seconds=remaining_seconds)

    def api(
        self, overrides: Mapping[str, str] | None = None, *, remaining_seconds: float | None = None
    ) -> ApiFunction:
        # The API retries in process (it parks rather than waits): a budget that rides out a blip.
        spec = self.sandbox.function("ApiFunction", {**FAST, **API_BUDGET, **(overrides or {})})
        return ApiFunction(spec, remaining_seconds=remaining_seconds)

    # faults of the AWS side
    def set_app_id(self, value: str) -> None:
        self.ssm.put_parameter(Name=APP_ID_PARAMETER, Value=value, Type="SecureString", Overwrite=True)

    def delete_app_id(self) -> None:
        self.ssm.delete_parameter(Name=APP_ID_PARAMETER)

    def restore_parameters(self) -> None:
        self.sandbox._create_parameters()

    def delete_dlq(self) -> None:
        self.sqs.delete_queue(QueueUrl=self.dlq_url)

    def restore_dlq(self) -> None:
        # Same name, hence the same URL and ARN the main queue's redrive policy names.
        url = self.sqs.create_queue(QueueName=self.dlq_url.rsplit("/", 1)[-1])["QueueUrl"]
        assert url == self.dlq_url

    def heal_outage(self) -> None:
        """End a Heap outage that stored nothing (the emulator's fault plans go with a reset)."""
        state = self.emulator.state()
        assert not state["tracked_events"], "Heap stored events during what should be an outage"
        assert not state["user_properties"] and not state["account_properties"] and not state["identifies"]
        self.emulator.reset()
