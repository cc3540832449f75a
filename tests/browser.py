"""Headless Debian Chromium for the browser tests: one way to start it, and the marks they share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: The password of the personas browser tests log in as.
PASSWORD = "a-long-test-password"

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
        reason="headless Chromium or chromedriver not installed",
    ),
]


@contextmanager
def chromium(profile: Path, *, window: str = "1400,1100") -> Iterator[object]:
    """A headless Chromium that reaches nothing but localhost and keeps its console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={window}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    # The console log is read back to catch Content-Security-Policy violations.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def browser_errors(driver) -> list[str]:  # type: ignore[no-untyped-def]
    """The console's errors and Content Security Policy reports, less a missing favicon."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if (entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"])
        and "favicon.ico" not in entry["message"]
    ]
