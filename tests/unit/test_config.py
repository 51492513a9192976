"""Configuration: environment variables into one typed model, with errors that name the variable;
and the template's numbers that together decide whether anything can be lost."""

from __future__ import annotations

import random

import pytest

from heap_forwarder.edge.config import ConfigurationError, load_settings
from heap_forwarder.edge.consumer import BackoffPolicy
from heap_forwarder_tools.local.template import Resolver, function_spec, load_template


@pytest.fixture(scope="module")
def template(kit) -> dict:
    return load_template(kit.ROOT / "template.yaml")


@pytest.fixture(scope="module")
def consumer_env(template) -> dict[str, str]:
    return function_spec(template, "ConsumerFunction", Resolver(template)).environment


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.heap_api_url == "https://heapanalytics.com"
    assert settings.heap_app_id_parameter is None
    assert settings.max_receive_count == 19
    assert settings.backoff_base_seconds == 30
    assert settings.backoff_cap_seconds == 1800
    assert settings.mapping_file is None


def test_every_variable_is_read() -> None:
    settings = load_settings(
        {
            "HEAP_APP_ID_PARAMETER": "/x/app-id",
            "HEAP_API_URL": "https://c.eu.heap-api.com/",
            "RETRY_QUEUE_URL": "https://sqs/main",
            "DEAD_LETTER_QUEUE_URL": "https://sqs/dlq",
            "MAPPING_FILE": "/opt/playbook.yaml",
            "MAPPING_PARAMETER": "/x/mapping",
            "RATE_LIMIT_EVENTS_PER_MINUTE": "1200.5",
            "RATE_LIMIT_BURST": "50",
            "BACKOFF_BASE_SECONDS": "1",
            "BACKOFF_CAP_SECONDS": "60",
            "MAX_RECEIVE_COUNT": "4",
            "RETRY_BUDGET_SECONDS": "0.5",
            "HEAP_CONNECT_TIMEOUT_SECONDS": "1.5",
            "HEAP_READ_TIMEOUT_SECONDS": "7",
            "HEAP_MAX_ITEMS_PER_REQUEST": "250",
            "DEADLINE_MARGIN_SECONDS": "2",
            "POWERTOOLS_PARAMETERS_MAX_AGE": "0",
            "SOMETHING_ELSE": "ignored",
        }
    )
    assert settings.heap_api_url == "https://c.eu.heap-api.com"  # trailing slash dropped
    assert settings.heap_app_id_parameter == "/x/app-id"
    assert settings.retry_queue_url == "https://sqs/main"
    assert settings.dead_letter_queue_url == "https://sqs/dlq"
    assert str(settings.mapping_file) == "/opt/playbook.yaml"
    assert settings.mapping_parameter == "/x/mapping"
    assert settings.rate_limit_events_per_minute == 1200.5
    assert settings.rate_limit_burst == 50
    assert (settings.backoff_base_seconds, settings.backoff_cap_seconds) == (1, 60)
    assert settings.max_receive_count == 4
    assert settings.deadline_margin_seconds == 2
    assert settings.parameters_max_age == 0
    delivery = settings.delivery()
    assert delivery.base_url == "https://c.eu.heap-api.com"
    assert (delivery.connect_timeout_s, delivery.read_timeout_s) == (1.5, 7)
    assert delivery.max_items_per_request == 250
    assert delivery.retry_budget_s == 0.5
    assert settings.delivery(retry_budget_seconds=3).retry_budget_s == 3


@pytest.mark.parametrize(
    "variable",
    [
        "HEAP_APP_ID_PARAMETER",
        "RETRY_QUEUE_URL",
        "DEAD_LETTER_QUEUE_URL",
        "MAPPING_PARAMETER",
        "HASH_KEY_PARAMETER",
    ],
)
def test_blank_optional_values_are_unset(variable: str) -> None:
    # CloudFormation cannot leave a variable out conditionally everywhere: "" must mean unset.
    assert getattr(load_settings({variable: "  "}), variable.lower()) is None


def test_a_blank_mapping_file_is_unset() -> None:
    assert load_settings({"MAPPING_FILE": ""}).mapping_file is None


@pytest.mark.parametrize(("value", "mode"), [(None, "WriteKey"), ("", "WriteKey"), ("IAM", "IAM")])
def test_the_api_auth_mode_is_write_key_unless_told_iam(value: str | None, mode: str) -> None:
    """Closed by default: unset or blank is WriteKey (the function checks callers itself)."""
    environ = {} if value is None else {"API_AUTH_MODE": value}
    assert load_settings(environ).api_auth_mode == mode


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(ValueError):
        settings.max_receive_count = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HEAP_API_URL", "heapanalytics.com"),
        ("HEAP_API_URL", "ftp://heap"),
        ("BACKOFF_BASE_SECONDS", "-1"),
        ("BACKOFF_CAP_SECONDS", "43201"),  # beyond SQS's 12-hour visibility limit
        ("BACKOFF_CAP_SECONDS", "lots"),
        ("MAX_RECEIVE_COUNT", "0"),
        ("MAX_RECEIVE_COUNT", "2.5"),
        ("RATE_LIMIT_EVENTS_PER_MINUTE", "0"),
        ("RATE_LIMIT_BURST", "0"),
        ("HEAP_MAX_ITEMS_PER_REQUEST", "1001"),  # Heap's bulk cap
        ("HEAP_CONNECT_TIMEOUT_SECONDS", "0"),
        ("HEAP_READ_TIMEOUT_SECONDS", "-2"),
        ("RETRY_BUDGET_SECONDS", "-0.1"),
        ("DEADLINE_MARGIN_SECONDS", "soon"),
        ("POWERTOOLS_PARAMETERS_MAX_AGE", "-5"),
        ("API_AUTH_MODE", "none"),
    ],
)
def test_an_invalid_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({variable: value})
    message = str(caught.value)
    assert message.startswith("invalid configuration: ")
    assert f"{variable}: " in message


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"MAX_RECEIVE_COUNT": "0", "HEAP_API_URL": "nope", "RATE_LIMIT_BURST": "x"})
    message = str(caught.value)
    for variable in ("MAX_RECEIVE_COUNT", "HEAP_API_URL", "RATE_LIMIT_BURST"):
        assert variable in message
    assert caught.value.__cause__ is None  # no pydantic traceback (with the values) chained


def test_the_process_environment_is_the_default_source(monkeypatch) -> None:
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "7")
    assert load_settings().max_receive_count == 7


# ---------------------------------------------------------------------------------- the template
def test_the_template_environment_is_a_valid_configuration(consumer_env) -> None:
    settings = load_settings(consumer_env)
    assert settings.heap_app_id_parameter == "/heap-forwarder/app-id"
    assert settings.heap_api_url == "https://heapanalytics.com"
    assert settings.retry_queue_url and settings.dead_letter_queue_url


def test_the_consumer_parks_events_before_sqs_redrives_them(template, consumer_env) -> None:
    """SQS moves a message on the receive after maxReceiveCount, without a reason: the consumer
    must get there first, on the receive before, and write the reason itself."""
    redrive = template["Resources"]["MainQueue"]["Properties"]["RedrivePolicy"]
    assert int(consumer_env["MAX_RECEIVE_COUNT"]) == int(redrive["maxReceiveCount"]) - 1


def test_a_message_cannot_expire_before_it_is_parked(template, consumer_env) -> None:
    """The whole retry window (every backoff, every invocation) fits the main queue's retention:
    otherwise SQS would delete events during a long outage, and they would be lost."""
    settings = load_settings(consumer_env)
    policy = BackoffPolicy(settings.backoff_base_seconds, settings.backoff_cap_seconds)
    timeout = function_spec(template, "ConsumerFunction", Resolver(template)).timeout
    always_max = random.Random(0)
    always_max.uniform = lambda a, b: b  # type: ignore[method-assign]  # the longest jitter
    window = sum(
        policy.visibility_timeout(n, always_max) + timeout for n in range(1, settings.max_receive_count + 1)
    )
    retention = int(template["Resources"]["MainQueue"]["Properties"]["MessageRetentionPeriod"])
    assert window < retention
    dlq_retention = int(template["Resources"]["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"])
    assert dlq_retention > retention  # a redriven message keeps its first enqueue time


def test_the_queue_outlasts_an_invocation(template) -> None:
    timeout = function_spec(template, "ConsumerFunction", Resolver(template)).timeout
    visibility = int(template["Resources"]["MainQueue"]["Properties"]["VisibilityTimeout"])
    assert visibility >= 6 * timeout  # AWS's advice for SQS event sources


def test_the_retry_budget_leaves_time_for_the_dlq(template, consumer_env) -> None:
    settings = load_settings(consumer_env)
    timeout = function_spec(template, "ConsumerFunction", Resolver(template)).timeout
    assert settings.retry_budget_seconds + settings.deadline_margin_seconds < timeout


def test_the_template_batch_reports_item_failures(template) -> None:
    events = template["Resources"]["ConsumerFunction"]["Properties"]["Events"]
    (source,) = events.values()
    assert source["Type"] == "SQS"
    assert "ReportBatchItemFailures" in source["Properties"]["FunctionResponseTypes"]


def test_eu_and_overridden_heap_urls(template) -> None:
    eu = function_spec(template, "ConsumerFunction", Resolver(template, {"HeapRegion": "eu"}))
    assert load_settings(eu.environment).heap_api_url == "https://c.eu.heap-api.com"
    proxy = function_spec(
        template, "ConsumerFunction", Resolver(template, {"HeapApiUrl": "https://proxy.example.com/heap/"})
    )
    assert load_settings(proxy.environment).heap_api_url == "https://proxy.example.com/heap"
