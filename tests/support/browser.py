"""Headless Chromium through selenium (Debian's chromium + chromium-driver; `make browser` installs them).

Outside CI a test without a browser skips saying why; with CI set it fails instead.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.conftest import IN_CI


def need_browser(what: str) -> None:
    message = f"no headless browser: {what} (run `make browser`)"
    if IN_CI:
        pytest.fail(f"{message}; CI is set: this test must not skip")
    pytest.skip(message)


@contextmanager
def chromium(width: int = 1366, height: int = 768) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        need_browser("selenium is not installed (pip install -e '.[test]')")
    binary = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                   if (found := shutil.which(name))), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        need_browser("chromium and chromedriver are not on PATH")
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for since the last call (the performance log)."""
    entries = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    return [m["params"]["request"]["url"] for m in entries if m["method"] == "Network.requestWillBeSent"]
