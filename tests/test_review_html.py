"""`--html`: one self-contained file, opened from file:// in headless Chromium: no console error, no request
of any kind, the charts drawn; log text (untrusted) escaped. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import review
from core.orders import Leg
from tests import review_support as day
from tests.conftest import IN_CI
from tests.review_support import DAY, Trade, VirtualClock, build_day, ist, process_log

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
HOSTILE = '"><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.fixture(scope="module")
def day_review(tmp_path_factory: pytest.TempPathFactory) -> review.Review:
    built = build_day(tmp_path_factory.mktemp("day"))
    return review.review([str(built["mds"]), str(built["trader"])], day=DAY)


@pytest.fixture(scope="module")
def hostile_review(tmp_path_factory: pytest.TempPathFactory) -> review.Review:
    log = tmp_path_factory.mktemp("hostile") / "mybot.log"
    clock = VirtualClock(ist("10:00:00"))
    with process_log(log, clock):
        day.feed_stale(HOSTILE)
        clock.advance(5)
        day.feed_resumed(HOSTILE)
        trade = Trade(f"X-{HOSTILE}", clock, symbol=f"SEC_{HOSTILE}")
        trade.signal(24500.0, 100.0)
        trade.accept(100.0, 101.0)
        trade.placed("P1", Leg.ENTRY, 101.0)
        trade.filled("P1", Leg.ENTRY, 75, 100.0)
        trade.exit_requested(HOSTILE, 99.0, 100.0)
        trade.placed("P2", Leg.EXIT, 99.0)
        trade.filled("P2", Leg.EXIT, 75, 101.0)
    with open(log, "a") as handle:
        handle.write(f"<script>window.__pwned=3</script> {HOSTILE}\n")
    return review.review([str(log)])


def test_the_page_needs_nothing_from_outside(day_review: review.Review) -> None:
    page = review.render_html(day_review)
    assert "<script" not in page.lower()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    urls = set(re.findall(r"(?:src|href)\s*=\s*['\"]([^'\"]*)", page))
    assert urls <= {"data:,"} | {f"#{i.id}" for i in day_review.incidents}
    assert set(re.findall(r"https?://[^'\" )]+", page)) == {"http://www.w3.org/2000/svg"}  # a namespace, not a load


def test_log_text_is_escaped(hostile_review: review.Review) -> None:
    page = review.render_html(hostile_review)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in page
    assert hostile_review.garbled == 1 and hostile_review.incidents[0].symbol == HOSTILE


# -- in a real browser ---------------------------------------------------------------------------------------
def _need(what: str) -> None:
    message = f"no headless browser for the HTML review test: {what} (run `make browser`)"
    if IN_CI:
        pytest.fail(f"{message}; CI is set: this test must not skip")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _need("selenium is not installed (pip install -e '.[test]')")
    binary = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                   if (found := shutil.which(name))), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _need("chromium and chromedriver are not on PATH")
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(argument)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: Any, path: Path) -> dict[str, Any]:
    """Load the page; what the browser said and fetched while doing so."""
    driver.get_log("browser")
    driver.get_log("performance")
    url = path.resolve().as_uri()
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"
    requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    return {
        "url": url,
        "console": driver.get_log("browser"),
        "requested": [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"],
        "resources": driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"),
        "navigation": driver.execute_script("return performance.getEntriesByType('navigation').map(e => e.name)"),
    }


def _screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(max(height, 800), 12_000))
    target = ARTIFACTS / name
    assert driver.save_screenshot(str(target))
    return target


def test_the_html_review_opens_offline_without_errors_and_draws_its_charts(
        browser: Any, day_review: review.Review, tmp_path: Path) -> None:
    page = tmp_path / "review.html"
    page.write_text(review.render_html(day_review), encoding="utf-8")
    loaded = _open(browser, page)
    assert loaded["console"] == []
    assert loaded["resources"] == [] and loaded["navigation"] == [loaded["url"]]
    assert loaded["requested"] == [loaded["url"]]

    count = browser.execute_script
    instants = sum(1 for i in day_review.incidents if i.instant)
    assert count("return document.querySelectorAll('#incident-timeline rect.incident').length") == \
        len(day_review.incidents) - instants
    assert count("return document.querySelectorAll('#incident-timeline path.incident').length") == instants
    assert count("return document.querySelectorAll('#incident-timeline rect.process').length") == 4
    assert count("return document.querySelectorAll('#equity-curve polyline.series').length") == 1
    assert count("return document.querySelectorAll('#equity-curve path.mark').length") == len(day_review.equity)
    assert count("return document.querySelectorAll('svg[id^=price-]').length") == len(day_review.prices) == 1
    assert count("return document.querySelectorAll('#price-0 path.mark.entry').length") == 5
    assert count("return document.querySelectorAll('#price-0 path.mark.exit').length") == 5
    assert count("return document.querySelectorAll('details.trade').length") == len(day_review.trades)
    sizes = count("return [...document.querySelectorAll('svg.chart')].map(s => s.getBoundingClientRect().width)")
    assert len(sizes) == 3 and all(width > 500 for width in sizes)
    assert "PROCESS_RESTART" in count("return document.getElementById('incident-timeline').textContent")
    shot = _screenshot(browser, "review-day.png")
    assert shot.stat().st_size > 20_000
    timeline = browser.find_element("id", "incident-timeline")
    ARTIFACTS.mkdir(exist_ok=True)
    assert timeline.screenshot(str(ARTIFACTS / "review-timeline.png"))


def test_hostile_log_text_runs_nothing_in_the_browser(browser: Any, hostile_review: review.Review,
                                                       tmp_path: Path) -> None:
    page = tmp_path / "hostile.html"
    page.write_text(review.render_html(hostile_review), encoding="utf-8")
    loaded = _open(browser, page)
    assert loaded["console"] == [] and loaded["requested"] == [loaded["url"]]
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.querySelectorAll('script, img').length") == 0
    assert HOSTILE in browser.execute_script("return document.body.textContent")
    _screenshot(browser, "review-hostile.png")
