"""Lambda handler of the ingest API: ``heap_forwarder.entry.api.lambda_handler``.

API Gateway HTTP API (payload 2.0), routes POST /v1/{track,page,screen,identify,group,alias,batch}.
Thin: ``Ingest.open`` authenticates and reads the request (before anything looks at the body),
Powertools routes it and validates the body against the route's model (the OpenAPI document is
generated from the same routes), ``Ingest.accept`` delivers or parks. An API in WriteKey mode
without a write key answers every request 503 instead of serving it unauthenticated. See docs/api.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from heap_forwarder.edge.api_contract import (
    ROUTES,
    ApiError,
    ApiResponse,
    ErrorCode,
    Route,
    invalid_events,
    problems_in,
    unavailable,
)
from heap_forwarder.edge.config import ApiAuthMode, Settings
from heap_forwarder.edge.ingest import Ingest, IngestRequest, is_ingest_route
from heap_forwarder.edge.letters import DeadLetterWriter
from heap_forwarder.edge.observability import count, logger, metered, traced
from heap_forwarder.edge.parking import RetryQueue
from heap_forwarder.edge.runtime import Runtime, build_runtime
from heap_forwarder.models import Problem

app = APIGatewayHttpResolver(enable_validation=True)

_REQUEST = "ingest_request"  # key of the opened request in the resolver's context


NO_WRITE_KEY = "the API is in WriteKey mode but no write key parameter is configured (WriteKeyParameterName)"


class _Warm:
    """What a warm process keeps: built on the first invocation (pool, SSM cache, playbook)."""

    runtime: Runtime | None = None
    service: Ingest | None = None
    # Set when the API must refuse every request: it has no way to authenticate its callers.
    closed: ApiError | None = None


_warm = _Warm()


def _closed_door(settings: Settings) -> ApiError | None:
    """Closed by default: in WriteKey mode without a key there is nothing to check a caller
    against, and serving anyway would store anyone's events. Said once per cold start (log and
    ConfigurationFaults, which raises the configuration-fault alarm); every request gets the 503."""
    if settings.api_auth_mode is not ApiAuthMode.WRITE_KEY or settings.write_key_parameter:
        return None
    logger.error(
        "the API refuses every request: it is in WriteKey mode but WRITE_KEY_PARAMETER is not set;"
        " set WriteKeyParameterName, or ApiAuthMode=IAM",
        extra={"api_auth_mode": str(settings.api_auth_mode)},
    )
    count("ConfigurationFaults", 1)
    return unavailable(NO_WRITE_KEY)


def service() -> Ingest:
    if _warm.service is None:
        runtime = _warm.runtime = build_runtime()
        settings = runtime.settings
        _warm.closed = _closed_door(settings)
        sqs = runtime.sqs()
        key_name = settings.write_key_parameter

        def write_key() -> str:
            assert key_name is not None
            return runtime.parameters.get(key_name, secret=True)

        _warm.service = Ingest(
            pipeline_factory=runtime.pipeline,
            retry_queue=RetryQueue(sqs, settings.retry_queue_url),
            dead_letters=DeadLetterWriter(sqs, settings.dead_letter_queue_url or ""),
            write_key=write_key if key_name else None,
        )
    return _warm.service


def install(worker: Ingest) -> None:
    """Serve with ``worker`` as the warm service (unit tests: an ``Ingest`` of stand-ins, reached
    through this very handler and its router). ``reset`` forgets it."""
    _warm.runtime, _warm.service, _warm.closed = None, worker, None


def reset() -> None:
    """Forget the warm state (tests and local invoke change the environment between runs)."""
    _warm.runtime = _warm.service = None
    _warm.closed = None


def _http(response: ApiResponse) -> Response[str]:
    return Response(
        response.status, content_type="application/json", body=response.text(), headers=response.headers
    )


def _accept() -> Response[str]:
    request: IngestRequest = app.context[_REQUEST]
    margin = _warm.runtime.settings.deadline_margin_seconds if _warm.runtime else 3.0
    remaining = max(0.0, app.lambda_context.get_remaining_time_in_millis() / 1000 - margin)
    return _http(service().accept(request, remaining))


def _route(route: Route) -> Callable[..., Response[str]]:
    """The handler of one route: its body is declared by the contract (the route's model, which
    the resolver validates the body against and the OpenAPI document names); the work is ``_accept``."""

    def handler(call: Any) -> Response[str]:
        return _accept()

    handler.__name__ = handler.__qualname__ = route.operation_id
    handler.__annotations__ = {
        "call": Annotated[route.call, Body(description=route.body)],
        "return": Response[str],
    }
    return handler


for _path, _declared in ROUTES.items():
    app.post(_path, **_declared.options())(_route(_declared))


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def _invalid(error: RequestValidationError) -> Response[str]:
    """Powertools answers 422 by default; this API answers 400 naming each event's index and field."""
    request: IngestRequest | None = app.context.get(_REQUEST)
    problems = problems_in(request.events) if request is not None else []
    if not problems:  # not expected: the same models judge both; translate Powertools' own findings
        problems = [_problem(e) for e in error.errors()]
    count("ApiResponses.400", 1)
    return _http(invalid_events(problems).response())


def _problem(detail: Any) -> Problem:
    loc = [str(p) for p in detail.get("loc", ())][1:]  # ("body", "batch", 2, "track", "event")
    index = 0
    if len(loc) >= 2 and loc[0] == "batch" and loc[1].isdigit():
        index, loc = int(loc[1]), loc[2:]
    return Problem(index, ".".join(loc), str(detail.get("msg", "invalid")))


@app.not_found
def _not_found(error: NotFoundError) -> Response[str]:
    method = app.current_event.http_method
    count("ApiResponses.404", 1)
    return _http(ApiError(404, ErrorCode.NOT_FOUND, f"no route {method} {app.current_event.path}").response())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metered
@traced
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not is_ingest_route(event):
        return app.resolve(event, context)
    try:
        worker = service()
    except Exception as error:  # the environment itself is unusable (settings): nothing to park with
        logger.error("configuration fault: the API cannot start", extra={"cause": str(error)})
        count("ConfigurationFaults", 1)
        return unavailable("the API is misconfigured; retry later").response().as_http_api()
    if _warm.closed is not None:  # before anything reads the request
        return worker.refuse(_warm.closed).as_http_api()
    try:
        request = worker.open(event)
    except ApiError as error:
        return worker.refuse(error).as_http_api()
    # The router validates the completed events (plain JSON now) against the route's model.
    normalised = {**event, "body": request.body_json(), "isBase64Encoded": False}
    headers = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "content-encoding"}
    normalised["headers"] = {**{k.lower(): v for k, v in headers.items()}, "content-type": "application/json"}
    app.context[_REQUEST] = request
    return app.resolve(normalised, context)
