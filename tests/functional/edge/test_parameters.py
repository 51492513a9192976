"""SSM Parameter Store through Powertools: decrypted, cached, and failures that never carry a value."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.stub import Stubber

from heap_forwarder.edge.parameters import ParameterStore, ParameterUnavailable

NAME = "/heap-forwarder/app-id"


@pytest.fixture
def ssm(aws) -> Any:
    return aws.ssm


def denied_client(boto_clients, *, code: str = "AccessDeniedException", times: int = 1) -> Stubber:
    _, ssm = boto_clients
    stubber = Stubber(ssm)
    for _ in range(times):
        stubber.add_client_error(
            "get_parameter",
            service_error_code=code,
            service_message="User: arn:aws:sts::123456789012:assumed-role/x is not authorized",
            http_status_code=400,
        )
    return stubber


def test_a_secure_string_is_read_decrypted(ssm) -> None:
    assert ParameterStore(300, client=ssm).get(NAME) == "demo-app-id"


def test_surrounding_whitespace_is_dropped(ssm) -> None:
    ssm.put_parameter(Name="/p/padded", Value="  my-app \n", Type="String")
    assert ParameterStore(300, client=ssm).get("/p/padded") == "my-app"


def test_a_blank_parameter_is_unavailable(ssm) -> None:
    ssm.put_parameter(Name="/p/blank", Value="   ", Type="SecureString")
    with pytest.raises(ParameterUnavailable, match="SSM parameter /p/blank is empty"):
        ParameterStore(300, client=ssm).get("/p/blank")


def test_a_missing_parameter_is_unavailable_and_named(ssm) -> None:
    with pytest.raises(ParameterUnavailable, match="cannot read SSM parameter /nowhere"):
        ParameterStore(300, client=ssm).get("/nowhere")


def test_denied_is_unavailable(boto_clients, aws) -> None:
    stubber = denied_client(boto_clients)
    with stubber, pytest.raises(ParameterUnavailable, match=f"cannot read SSM parameter {NAME}"):
        ParameterStore(300, client=boto_clients[1]).get(NAME)


@pytest.mark.parametrize("code", ["ParameterNotFound", "AccessDeniedException"])
def test_the_error_names_what_ssm_said(code: str, boto_clients, aws) -> None:
    stubber = denied_client(boto_clients, code=code)
    with stubber, pytest.raises(ParameterUnavailable) as caught:
        ParameterStore(300, client=boto_clients[1]).get(NAME)
    assert code in str(caught.value)


def test_an_error_chains_no_sdk_exception(ssm) -> None:
    with pytest.raises(ParameterUnavailable) as caught:
        ParameterStore(300, client=ssm).get("/nowhere")
    # `from None`: a logged traceback shows no SDK error (and no response body) under it.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_values_are_cached_for_max_age(ssm) -> None:
    store = ParameterStore(300, client=ssm)
    assert store.get(NAME) == "demo-app-id"
    ssm.put_parameter(Name=NAME, Value="rotated", Type="SecureString", Overwrite=True)
    assert store.get(NAME) == "demo-app-id"  # within the TTL: no SSM call


def test_max_age_zero_reads_every_time(ssm) -> None:
    store = ParameterStore(0, client=ssm)
    assert store.get(NAME) == "demo-app-id"
    ssm.put_parameter(Name=NAME, Value="rotated", Type="SecureString", Overwrite=True)
    assert store.get(NAME) == "rotated"


def test_a_cached_value_survives_ssm_going_away(boto_clients, aws) -> None:
    store = ParameterStore(300, client=boto_clients[1])
    assert store.get(NAME) == "demo-app-id"
    with denied_client(boto_clients):
        assert store.get(NAME) == "demo-app-id"  # warm: no call made


def test_the_provider_is_made_on_first_use() -> None:
    store = ParameterStore(300)
    assert store._provider is None  # no boto3 client built for a process that never reads SSM


# ---------------------------------------------------------------------------------- not a SecureString
PLAIN_SECRET = "plain-SECRET-value-42"


def test_a_secret_stored_as_a_plain_string_is_warned_about_without_its_value(ssm, logs, kit) -> None:
    """A String (not SecureString) app ID or write key works, but is named in a WARNING and counted;
    a String that holds no secret (the mapping override) is fine."""
    ssm.put_parameter(Name="/p/write-key", Value=PLAIN_SECRET, Type="String")
    ssm.put_parameter(Name="/p/mapping", Value="events: {}", Type="String")
    store = ParameterStore(300, client=ssm)

    assert store.get("/p/write-key", secret=True) == PLAIN_SECRET
    assert store.get("/p/mapping") == "events: {}"

    (warning,) = [r for r in logs.records() if r["level"] == "WARNING"]
    assert warning["parameter"] == "/p/write-key"
    assert warning["parameter_type"] == "String"
    assert "InsecureParameter" in kit.metric_names()
    assert PLAIN_SECRET not in logs.text()


def test_a_secure_string_secret_is_not_warned_about(ssm, logs, kit) -> None:
    ssm.put_parameter(Name="/p/write-key", Value=PLAIN_SECRET, Type="SecureString")

    assert ParameterStore(300, client=ssm).get("/p/write-key", secret=True) == PLAIN_SECRET

    assert logs.messages("WARNING") == []
    assert "InsecureParameter" not in kit.metric_names()


def test_the_warning_comes_once_per_cache_fill(ssm, logs) -> None:
    ssm.put_parameter(Name="/p/app-id", Value=PLAIN_SECRET, Type="String")
    store = ParameterStore(300, client=ssm)

    for _ in range(3):
        store.get("/p/app-id", secret=True)  # one SSM call, then the cache

    assert len(logs.messages("WARNING")) == 1
