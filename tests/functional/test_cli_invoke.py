"""`heap-forwarder invoke` works on every file under events/, and refuses a wrong shape clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from heap_forwarder_tools.cli import main

ROOT = Path(__file__).resolve().parents[2]
RAW = sorted((ROOT / "events/raw").glob("*.json"))
API = sorted((ROOT / "events/api").glob("*.json"))


@pytest.fixture(autouse=True)
def _at_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("path", RAW, ids=lambda p: p.stem)
def test_a_plain_event_is_wrapped_in_an_sqs_record(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["invoke", "ConsumerFunction", "-e", str(path)]) == 0
    captured = capsys.readouterr()
    assert "wrapped the plain event" in captured.err
    assert '"batchItemFailures": []' in captured.out


@pytest.mark.parametrize("path", [*API, ROOT / "events/raw/track.json"], ids=lambda p: p.stem)
def test_the_api_function_takes_its_events_and_plain_ones(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not path.exists():
        path = ROOT / "events/raw/custom_track.json"
    assert main(["invoke", "ApiFunction", "-e", str(path)]) == 0
    assert '"statusCode"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("function", "path", "message"),
    [
        ("ApiFunction", "events/sqs/page.json", "is an SQS event"),
        ("ConsumerFunction", "events/api/track.json", "is an HTTP API event"),
    ],
)
def test_an_event_of_the_other_trigger_is_refused_with_the_reason(
    function: str, path: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invoke", function, "-e", path]) == 2
    assert message in capsys.readouterr().err


def test_a_json_object_that_is_no_event_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text('{"hello": "world"}')
    assert main(["invoke", "ConsumerFunction", "-e", str(odd)]) == 2
    assert "neither an SQS event nor a Segment event" in capsys.readouterr().err


def test_the_response_comes_first_and_metrics_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["invoke", "ConsumerFunction", "-e", "events/sqs/page.json"]) == 0
    quiet = capsys.readouterr().out
    assert quiet.startswith("Response:\n")
    assert '"_aws"' not in quiet
    assert main(["invoke", "ConsumerFunction", "-e", "events/sqs/page.json", "--metrics"]) == 0
    loud = capsys.readouterr().out
    metrics, _, response = loud.partition("Response:\n")
    assert metrics.startswith("Metrics (CloudWatch EMF")
    assert '"EventsDelivered":[1.0]' in metrics
    assert response.startswith("{")


def test_outside_the_project_the_error_says_to_pass_the_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["invoke", "ConsumerFunction", "-e", str(ROOT / "events/sqs/page.json")]) == 2
    error = capsys.readouterr().err
    assert "cannot read template.yaml" in error
    assert "pass -t PATH/template.yaml" in error
    assert (
        main(
            [
                "invoke",
                "ConsumerFunction",
                "-e",
                str(ROOT / "events/sqs/page.json"),
                "-t",
                str(ROOT / "template.yaml"),
            ]
        )
        == 0
    )
