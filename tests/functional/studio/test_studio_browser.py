"""The studio in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium loads the page, pastes an event, edits an override, checks the page shows what
``heap-forwarder preview`` prints, sends the event, flips a fault and watches it parked, then
delivered. The screenshot goes to ``.artifacts/`` (ignored); ``docs/images/studio.png`` is one.

Skipped, with the reason, when no Chromium or chromedriver is found; with
``HEAP_FORWARDER_REQUIRE_BROWSER=1`` (set by ``.ci/run``) that skip is a failure instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heap_forwarder_tools import cli
from heap_forwarder_tools.studio.server import StudioServer

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / ".artifacts"
INSTALL = "sudo apt-get install -y chromium chromium-driver && .venv/bin/pip install selenium"
EVENT = (
    '{"type": "track", "event": "Plan Chosen", "anonymousId": "anon-7", '
    '"timestamp": "2024-06-10T14:07:05Z", "properties": {"plan": "pro", "seats": 3}}'
)
# Typed line by line; the third line misspells ``endpoint``.
BROKEN_OVERRIDE = [
    "events:",
    "  Plan Chosen:",
    "    endpont: track",
    "    rows:",
    "      - {key: event, value: Plan Picked}",
    "      - {key: timestamp, from: timestamp, required: true}",
    "      - {key: properties, from: properties}",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("HEAP_FORWARDER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the studio's browser test cannot run: {reason} (install: {INSTALL})")
    pytest.skip(f"studio browser test skipped: {reason}; install with: {INSTALL}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _unavailable("no chromium" if chromium is None else "no chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    # No network beyond 127.0.0.1: the page must work offline (no CDN).
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    driver = webdriver.Chrome(service=Service(executable_path=str(driver_path)), options=options)
    # The viewport itself is 1280x800 (the window's size would include no browser frame anyway).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


# Read in one script run: the traffic view is redrawn every second, so an element found in one
# WebDriver call may be gone by the next.
def _text(driver: Any, selector: str) -> str:
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.textContent", selector
    )
    return str(found or "")


def _row_status(driver: Any) -> str:
    """The outcome of the newest event in the traffic table."""
    found = driver.execute_script(
        "const r = document.querySelector('#traffic-body tr[data-status]'); return r && r.dataset.status"
    )
    return str(found or "")


def test_the_page_previews_sends_and_shows_parking_then_delivery(
    browser: Any,
    studio: StudioServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(studio.url)
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sample option")) > 10)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280  # no sideways scroll

    # Paste an event.
    event = browser.find_element(By.ID, "event")
    event.send_keys(EVENT)
    _wait(browser, lambda d: "POST /api/track" in _text(d, "#preview-text"))
    assert _text(browser, "#verdicts .outcome") == "mapped"

    # Edit an override: a misspelt key is shown at its line, in the editor and in the list.
    override = browser.find_element(By.ID, "override")
    override.click()
    for line in BROKEN_OVERRIDE:
        override.send_keys(line + Keys.ENTER + Keys.HOME)
    mark = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#override-marks .mark[data-line="3"]'))
    assert "endpont" in mark[0].get_attribute("textContent")
    assert "bad" in browser.find_element(By.CSS_SELECTOR, "#override-gutter div:nth-child(3)").get_attribute(
        "class"
    )
    assert browser.find_elements(By.CSS_SELECTOR, '#problems li[data-line="3"] button')
    assert "problem(s)" in _text(browser, "#override-status")

    # Fix it from the keyboard: the problem's "line 3" button puts the caret on the line.
    browser.find_element(By.CSS_SELECTOR, '#problems li[data-line="3"] button').send_keys(Keys.ENTER)
    active = browser.switch_to.active_element
    assert active.get_attribute("id") == "override"
    active.send_keys(Keys.HOME, Keys.SHIFT, Keys.END)
    active.send_keys("    endpoint: track")
    _wait(browser, lambda d: "valid" in _text(d, "#override-status"))
    _wait(browser, lambda d: '"event": "Plan Picked"' in _text(d, "#preview-text"))
    override_text = browser.execute_script("return document.getElementById('override').value")
    shown = _text(browser, "#preview-text")

    # The page shows exactly what `heap-forwarder preview` prints for the same event and override.
    monkeypatch.chdir(tmp_path)
    Path("pasted event").write_text(EVENT, "utf-8")
    Path("override.yaml").write_text(override_text, "utf-8")
    assert cli.main(["preview", "--mapping", "override.yaml", "pasted event"]) == 0
    assert shown + "\n" == capsys.readouterr().out
    request = _text(browser, "#requests .request h4")
    assert request == "POST /api/track"

    # Send it: delivered, and what Heap stored is shown.
    browser.find_element(By.ID, "send-api").click()
    _wait(browser, lambda d: "HTTP 200" in _text(d, "#send-result"))
    _wait(browser, lambda d: _row_status(d) == "delivered")
    _wait(browser, lambda d: "Heap stored" in _text(d, "#send-followup"))
    assert '"Plan Picked"' in _text(browser, "#send-followup")

    # Flip a fault (from the keyboard) and send again: parked, then delivered once Heap is back.
    outage = browser.find_element(By.ID, "fault-outage")
    outage.send_keys(Keys.SPACE)
    _wait(browser, lambda d: d.find_element(By.ID, "fault-outage").is_selected())
    browser.find_element(By.ID, "send-api").click()
    _wait(browser, lambda d: "HTTP 202" in _text(d, "#send-result"))
    _wait(browser, lambda d: _row_status(d) in ("parked", "retrying"))
    _wait(browser, lambda d: _row_status(d) == "retrying")
    assert "parked" in _text(browser, "#send-answer")
    browser.find_element(By.ID, "fault-outage").send_keys(Keys.SPACE)
    _wait(browser, lambda d: _row_status(d) == "delivered")
    assert "by the consumer" in _text(browser, "#traffic-body tr:first-child")
    _wait(browser, lambda d: "Heap stored" in _text(d, "#send-followup"))

    browser.execute_script("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "studio.png"))
