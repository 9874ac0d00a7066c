"""The operator's dashboard: the page and its assets (CSP, nothing inline, nothing from outside), the endpoints it
polls, and an operator's session in headless Chromium against a running daemon (sim feed, paper broker,
all-day session). Screenshots of every view go to tests/artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from httpapi.dashboard import CSP, STATIC_DIR
from tests.support.browser import chromium, requested_urls
from tests.support.daemon import LiveDaemon
from tests.support.waiting import eventually

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    with LiveDaemon(tmp_path_factory.mktemp("dashboard")) as live:
        yield live


# -- the page and its assets, without a browser -----------------------------------------------------------------

def test_the_page_is_served_with_a_strict_csp_and_nothing_inline(daemon: LiveDaemon) -> None:
    page = daemon.get("/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == CSP
    assert "default-src 'none'" in CSP and "script-src 'self'" in CSP and "unsafe" not in CSP
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.text
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js" defer>']
    assert "<style" not in html and " style=" not in html and not re.search(r"<[^>]+\son[a-z]+=", html)
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        answer = daemon.get(f"/static/{asset}")
        assert answer.status_code == 200 and kind in answer.headers["Content-Type"]
        assert answer.headers["Content-Security-Policy"] == CSP


def test_nothing_is_loaded_from_elsewhere_and_system_text_never_becomes_markup() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text(encoding="utf-8")
        assert set(re.findall(r"https?://[^\s\"'`)]+", text)) <= {"http://www.w3.org/2000/svg"}, path.name
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    assert ".innerHTML" not in script and ".outerHTML" not in script and "insertAdjacentHTML(" not in script
    assert "eval(" not in script and "document.write" not in script
    assert "document.cookie" not in script and "localStorage" not in script and "sessionStorage" in script


def test_static_files_are_package_data() -> None:
    setup = (Path(__file__).resolve().parent.parent / "setup.cfg").read_text()
    assert "httpapi = static/*.html, static/*.js, static/*.css" in setup
    assert {p.name for p in STATIC_DIR.iterdir()} >= {"index.html", "app.js", "app.css"}


def test_overview_and_market_endpoints(daemon: LiveDaemon) -> None:
    overview = daemon.get("/v1/overview").json()
    assert overview["role"] == "all" and overview["market"]["state"] in ("open", "closed")
    assert overview["views"] == ["overview", "positions", "trades", "risk", "market"]
    ids = _ids(overview["tree"])
    assert {"feed", "executor", "reconciler", "strategy", "candles:NIFTY"} <= ids
    assert set(overview["feed"]["ages"]) == {"NIFTY", "BANKNIFTY", "SEC_49081", "SEC_49082"}
    symbols = daemon.get("/v1/market/symbols").json()
    assert symbols["timeframes"] == [60, 300, 900]
    candles = daemon.get("/v1/market/candles", symbol="NIFTY", timeframe_seconds=300).json()
    assert candles["timeframe_seconds"] == 300 and candles["candles"]  # the forming candle at least
    bad = daemon.get("/v1/market/candles", symbol="NIFTY", timeframe_seconds=90)
    assert bad.status_code == 400 and bad.json()["param"] == "timeframe_seconds"
    assert daemon.get("/v1/market/candles", symbol="SEC_1").status_code == 404
    chain = eventually(lambda: daemon.get("/v1/market/option_chain", symbol="NIFTY"), 10, interval=0.1,
                       message="a NIFTY chain polled")  # 404 (falsy) until the poller's first answer
    assert chain.json()["payload"]["oc"]


def _ids(node: dict[str, Any]) -> set[str]:
    found = set()
    for child in node.get("children", []):
        found.add(child["id"])
        found |= _ids(child)
    return found


# -- an operator's session in a real browser ---------------------------------------------------------------------

def _shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"dashboard-{name}.png"
    assert driver.save_screenshot(str(target))
    assert target.stat().st_size > 10_000
    return target


def _wait(driver: Any, condition: Any, what: str, timeout: float = 15.0) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, message=what)


def _click(driver: Any, selector: str) -> None:
    """Click in one step: the views re-render their rows every second, so a found element may go stale."""
    assert driver.execute_script("const e = document.querySelector(arguments[0]); if (!e) return false; "
                                 "e.click(); return true;", selector), selector


def _text(driver: Any, selector: str) -> str:
    return str(driver.execute_script("const e = document.querySelector(arguments[0]); "
                                     "return e ? e.textContent : '';", selector))


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _view(driver: Any, name: str) -> None:
    _click(driver, f'#nav button[data-view="{name}"]')
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.view") == name, f"view {name}")


def _confirm(driver: Any) -> None:
    _wait(driver, lambda d: _css(d, "#modal")[0].is_displayed(), "the confirmation dialog")
    _click(driver, "#modal-ok")


def _restarts(driver: Any, actor: str) -> int:
    text = _text(driver, f'#tree-table tr[data-actor="{actor}"] td.restarts')
    return int(text) if text else -1


@pytest.mark.slow
def test_an_operators_session_in_the_browser(daemon: LiveDaemon) -> None:
    with chromium() as driver:
        requested_urls(driver)
        driver.get_log("browser")
        driver.get(daemon.control + "/")

        # 1. the tree, live
        _wait(driver, lambda d: _css(d, '#tree-table tr[data-actor="feed"]'), "the supervision tree")
        assert _text(driver, '#tree-table tr[data-actor="candles:NIFTY"] .pill') == "running"
        _wait(driver, lambda d: _text(d, "#h-health") == "healthy", "healthy headline")
        _shot(driver, "overview")

        # 2. log in: the token goes to sessionStorage, never a cookie
        _css(driver, "#token")[0].send_keys(daemon.token)
        _click(driver, "#login button")
        _wait(driver, lambda d: _css(d, "#session")[0].is_displayed(), "logged in")
        assert driver.execute_script("return sessionStorage.getItem('mybot.token')") == daemon.token
        assert driver.execute_script("return document.cookie") == ""

        # 3. a manual entry through the API appears under Positions (its reason is hostile text)
        entry = {"pos_id": "UI-1", "symbol": "SEC_49081", "side": "BUY", "qty": daemon.lot("SEC_49081"),
                 "reason": HOSTILE}
        accepted = daemon.post("/v1/trades", entry)
        assert accepted.status_code == 202, accepted.text
        _view(driver, "positions")
        _wait(driver, lambda d: _css(d, '#pos-table tr[data-pos-id="UI-1"]'), "UI-1 under Positions")
        _wait(driver, lambda d: "POSITION_OPEN" in _text(d, '#pos-table tr[data-pos-id="UI-1"]'), "UI-1 open")
        _shot(driver, "positions")

        # 4. Exit -> confirmation -> CLOSED
        _click(driver, '#pos-table button[data-pos-id="UI-1"]')
        _confirm(driver)
        eventually(lambda: daemon.get("/v1/trades/UI-1").json()["trade"]["state"] == "CLOSED", 15,
                   interval=0.1, message="UI-1 closed")
        _wait(driver, lambda d: not _css(d, '#pos-table tr[data-pos-id="UI-1"]'), "UI-1 gone from Positions")
        _view(driver, "trades")
        _wait(driver, lambda d: _css(d, '#trade-table tr[data-pos-id="UI-1"]'), "UI-1 under Trades")
        _wait(driver, lambda d: "CLOSED" in _text(d, '#trade-table tr[data-pos-id="UI-1"]'), "UI-1 CLOSED")
        _click(driver, '#trade-table tr[data-pos-id="UI-1"]')
        _wait(driver, lambda d: len(_css(d, "#td-timeline tbody tr")) >= 6, "UI-1's timeline")
        timeline = _text(driver, "#td-timeline")
        assert "OrderFilled" in timeline and HOSTILE in timeline  # shown as text
        assert driver.execute_script("return window.__pwned === undefined")
        assert driver.execute_script("return document.querySelectorAll('main img, main script').length") == 0
        _shot(driver, "trades")

        # 5. the kill switch from the page; /v1/risk agrees
        _view(driver, "risk")
        _wait(driver, lambda d: _css(d, "#kill-toggle")[0].get_attribute("data-engaged") == "false", "risk loaded")
        _click(driver, "#kill-toggle")
        _confirm(driver)
        eventually(lambda: daemon.get("/v1/risk").json()["kill_switch"]["engaged"], 10, interval=0.1,
                   message="kill switch engaged")
        _wait(driver, lambda d: _css(d, "#kill-toggle")[0].get_attribute("data-engaged") == "true", "page agrees")
        assert _text(driver, "#risk-enabled") == "entries halted"
        _shot(driver, "risk")

        # 6. restart an actor from the tree: its restart count rises
        _view(driver, "overview")
        _wait(driver, lambda d: _restarts(d, "reconciler") >= 0, "the reconciler's row")
        before = _restarts(driver, "reconciler")
        _click(driver, '#tree-table button[data-actor="reconciler"]')
        _confirm(driver)
        _wait(driver, lambda d: _restarts(d, "reconciler") == before + 1, "the restart count rises")
        status = daemon.get("/v1/status").json()
        assert _find(status["supervision"], "reconciler")["restarts"] == before + 1

        # the market view draws candles; fills of UI-1 are marked on its instrument's chart
        _view(driver, "market")
        select = _css(driver, "#m-symbol")[0]
        from selenium.webdriver.support.ui import Select

        Select(select).select_by_value("SEC_49081")
        _wait(driver, lambda d: len(_css(d, "#chart rect.candle")) >= 1, "candles drawn")
        _wait(driver, lambda d: len(_css(d, "#chart circle.marker")) >= 2, "entry and exit fills marked")
        Select(select).select_by_value("NIFTY")
        _wait(driver, lambda d: len(_css(d, "#oc-table tbody tr")) >= 5, "the option chain around ATM")
        assert len(_css(driver, "#oc-table tr.atm")) == 1
        _shot(driver, "market")

        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        origin = daemon.control
        assert all(url.startswith(origin) or url.startswith("data:") for url in requested_urls(driver))


def _find(node: dict[str, Any], actor: str) -> dict[str, Any]:
    for child in node.get("children", []):
        if child["id"] == actor:
            return child
        nested = child.get("supervisor")
        if nested:
            found = _find(nested, actor)
            if found:
                return found
    return {}


def test_off_loopback_the_page_loads_without_the_token_and_its_data_needs_it() -> None:
    import falcon
    import falcon.testing

    from httpapi.dashboard import IndexResource
    from httpapi.guard import ReadGuard

    class Data:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {"secret": "positions"}

    app = falcon.App(middleware=[ReadGuard(lambda: True, lambda: "t" * 20)])
    app.add_route("/", IndexResource())
    app.add_static_route("/static", str(STATIC_DIR))
    app.add_route("/v1/overview", Data())
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/").status_code == 200
    assert client.simulate_get("/static/app.js").status_code == 200
    assert client.simulate_get("/v1/overview").status_code == 401
    assert client.simulate_get("/v1/overview", headers={"Authorization": "Bearer " + "t" * 20}).status_code == 200
