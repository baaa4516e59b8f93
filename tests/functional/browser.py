"""A real browser for the console's tests: Debian's chromium, headless,
driven through chromium-driver by Selenium, with a fresh profile."""

from __future__ import annotations

import os
import pathlib
import time
from typing import Any

import pytest

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


def start_browser(root: pathlib.Path) -> Any:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        # A failure, never a skip: a skipped browser test looks like a passing one.
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: {INSTALL_HINT}", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={root / 'profile'}")
    # Given the driver's path, Selenium fetches nothing.
    service = Service(CHROMEDRIVER, log_output=str(root / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(20)
    return driver


def until(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def resource_status(driver: Any, resource_id: str) -> str | None:
    """The provisioning status the console's open page shows for a resource."""
    value: str | None = driver.execute_script(
        "const n = document.getElementById(arguments[0]); return n ? n.dataset.status : null;",
        f"r-{resource_id}",
    )
    return value


def live(driver: Any) -> bool:
    """Whether the page's event stream is open."""
    return bool(driver.execute_script("return document.body.dataset.live === '1';"))
