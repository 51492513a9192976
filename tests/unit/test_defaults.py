"""One source for every default: template.yaml, the environment's model and the Heap client all
say what ``heap_forwarder.defaults`` says (a setting changed in one place only fails here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from heap_forwarder import defaults
from heap_forwarder.edge.config import Settings, load_settings
from heap_forwarder.heap.client import DeliverySettings
from heap_forwarder_tools.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def _number(value: Any) -> float:
    return float(str(value))


def test_the_templates_heap_regions_are_heaps_base_urls(template: dict[str, Any]) -> None:
    regions = template["Mappings"]["HeapRegions"]
    assert {region: spec["BaseUrl"] for region, spec in regions.items()} == defaults.HEAP_BASE_URLS
    assert template["Parameters"]["HeapRegion"]["Default"] == "us"
    assert defaults.HEAP_BASE_URLS["us"] == defaults.HEAP_API_URL


@pytest.mark.parametrize(
    ("variable", "default"),
    [
        ("HEAP_CONNECT_TIMEOUT_SECONDS", defaults.HEAP_CONNECT_TIMEOUT_SECONDS),
        ("HEAP_READ_TIMEOUT_SECONDS", defaults.HEAP_READ_TIMEOUT_SECONDS),
        ("RATE_LIMIT_BURST", defaults.RATE_LIMIT_BURST),
        ("POWERTOOLS_PARAMETERS_MAX_AGE", defaults.PARAMETERS_MAX_AGE_SECONDS),
    ],
)
def test_the_templates_global_settings_are_the_defaults(
    template: dict[str, Any], variable: str, default: float
) -> None:
    assert _number(template["Globals"]["Function"]["Environment"]["Variables"][variable]) == default


@pytest.mark.parametrize(
    ("variable", "default"),
    [
        ("BACKOFF_BASE_SECONDS", defaults.BACKOFF_BASE_SECONDS),
        ("BACKOFF_CAP_SECONDS", defaults.BACKOFF_CAP_SECONDS),
        ("MAX_RECEIVE_COUNT", defaults.MAX_RECEIVE_COUNT),
    ],
)
def test_the_consumers_redelivery_settings_are_the_defaults(
    template: dict[str, Any], variable: str, default: float
) -> None:
    variables = template["Resources"]["ConsumerFunction"]["Properties"]["Environment"]["Variables"]
    assert _number(variables[variable]) == default


def test_the_consumer_parks_one_receive_before_the_queue_redrives(template: dict[str, Any]) -> None:
    redrive = template["Resources"]["MainQueue"]["Properties"]["RedrivePolicy"]
    assert int(redrive["maxReceiveCount"]) == defaults.MAX_RECEIVE_COUNT + 1


def test_the_consumers_rate_parameter_defaults_to_the_default_share(template: dict[str, Any]) -> None:
    assert _number(template["Parameters"]["RateLimitEventsPerMinute"]["Default"]) == (
        defaults.RATE_LIMIT_EVENTS_PER_MINUTE
    )


def test_the_environment_model_and_the_client_start_from_the_same_defaults() -> None:
    settings = load_settings({})
    delivery = settings.delivery()
    assert delivery == DeliverySettings()  # what a library user gets is what the functions get
    assert settings.heap_api_url == defaults.HEAP_API_URL
    assert (delivery.connect_timeout_s, delivery.read_timeout_s) == (
        defaults.HEAP_CONNECT_TIMEOUT_SECONDS,
        defaults.HEAP_READ_TIMEOUT_SECONDS,
    )
    assert settings.max_receive_count == defaults.MAX_RECEIVE_COUNT
    assert settings.deadline_margin_seconds == defaults.DEADLINE_MARGIN_SECONDS
    assert isinstance(settings, Settings)
