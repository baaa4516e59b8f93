"""The console in a real browser (Debian's headless chromium, driven through
chromium-driver by Selenium) against a real plugin and agents: a load
balancer created through the API appears on the open resources page and
turns ACTIVE without a reload, and the page stays live across a restart
of the plugin.

``TETHER_CONSOLE_SCREENSHOT=PATH`` saves a picture of the page at the end.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.functional.daemons import Deployment

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "install Debian's chromium and chromium-driver (tools/install-system-deps.sh does)"

FLAGS = (
    "--headless",
    "--no-sandbox",  # as root, in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        # A failure, never a skip: a skipped browser test looks like a passing one.
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: {INSTALL_HINT}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, log_output=str(tmp_path / "driver.log")))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


def _until(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def _status(driver: Any, resource_id: str) -> str | None:
    value: str | None = driver.execute_script(
        "const n = document.getElementById(arguments[0]); return n ? n.dataset.status : null;", f"r-{resource_id}"
    )
    return value


def _live(driver: Any) -> bool:
    return bool(driver.execute_script("return document.body.dataset.live === '1';"))


def test_a_new_load_balancer_appears_and_turns_active_on_the_open_page_without_a_reload(
    deployment: Deployment, browser: Any
) -> None:
    browser.get(f"{deployment.base_url}/console/resources")
    assert "Resources" in browser.title
    _until(lambda: _live(browser), "the page's event stream opened")
    # Gone if the page were loaded again.
    browser.execute_script("window.tetherSamePage = true;")

    body = {"provider": "fake", "name": "web", "metadata": {"fake.delay_ms": "1500"}}
    lb = deployment.http.post("/v1/loadbalancers", json=body).json()
    seen = [_until(lambda: _status(browser, lb["id"]), "the new load balancer on the page")]
    _until(lambda: seen.append(_status(browser, lb["id"])) or seen[-1] == "ACTIVE", "it turned ACTIVE", 20)
    assert seen[0] == "PENDING_CREATE", seen

    # The plugin stops promptly with the page's stream open, and the page
    # reconnects to the new one by itself.
    started = time.monotonic()
    assert deployment.plugin.stop() == 0
    assert time.monotonic() - started < 10
    deployment.start_plugin()
    second = deployment.http.post("/v1/loadbalancers", json={"provider": "noop", "name": "after-restart"}).json()
    _until(lambda: _status(browser, second["id"]) == "ACTIVE", "a load balancer made after the restart", 20)
    assert browser.execute_script("return window.tetherSamePage === true;")

    if os.environ.get("TETHER_CONSOLE_SCREENSHOT"):
        browser.save_screenshot(os.environ["TETHER_CONSOLE_SCREENSHOT"])
