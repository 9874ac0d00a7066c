"""Prometheus metrics: the recording hooks, the scrape-time views, and a live daemon scraped on both ports and
parsed with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from core.ratelimit import RateWindow
from telemetry import metrics
from tests.support.daemon import LiveDaemon
from tests.support.waiting import eventually

HISTOGRAMS = ("mybot_tick_to_candle_seconds", "mybot_candle_to_signal_seconds", "mybot_signal_to_order_seconds",
              "mybot_order_fill_seconds", "mybot_protective_stop_reaction_seconds",
              "mybot_http_request_duration_seconds")
COUNTERS = ("mybot_ticks", "mybot_ticks_late_dropped", "mybot_orders", "mybot_actor_restarts", "mybot_actor_crashes",
            "mybot_dead_letters", "mybot_actor_messages_dropped", "mybot_bus_failures", "mybot_database_failures",
            "mybot_alerts_sent", "mybot_http_requests")
GAUGES = ("mybot_actor_mailbox_depth", "mybot_open_positions", "mybot_pnl_realized_rupees",
          "mybot_pnl_unrealized_rupees", "mybot_daily_loss_headroom_rupees", "mybot_feed_age_seconds",
          "mybot_health_check_ok")


def scrape(url: str) -> dict[str, dict[str, object]]:
    """name -> {"type", "samples": {(sample name, sorted labels): value}}."""
    answer = requests.get(url + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families: dict[str, dict[str, object]] = {}
    for family in text_string_to_metric_families(answer.text):
        assert family.name not in families, f"{family.name} exposed twice"
        families[family.name] = {"type": family.type, "samples": {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}}
    return families


def value(families: dict[str, dict[str, object]], sample: str, **labels: str) -> float:
    family = families[sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")]
    samples = family["samples"]
    assert isinstance(samples, dict)
    return float(samples.get((sample, tuple(sorted(labels.items()))), 0.0))


# -- the recording hooks, without a daemon ----------------------------------------------------------------------

@pytest.fixture
def switch() -> Iterator[None]:
    yield
    metrics.configure(enabled=True)


def test_recording_is_a_no_op_when_metrics_are_off(switch: None) -> None:
    before = metrics.TICK_TO_CANDLE.collect()[0].samples
    count = next(s.value for s in before if s.name.endswith("_count"))
    metrics.configure(enabled=False)
    metrics.tick_to_candle(0.001)
    metrics.order_final("ENTRY", "FILLED")
    after = next(s.value for s in metrics.TICK_TO_CANDLE.collect()[0].samples if s.name.endswith("_count"))
    assert after == count
    metrics.configure(enabled=True)
    metrics.tick_to_candle(0.001)
    assert next(s.value for s in metrics.TICK_TO_CANDLE.collect()[0].samples if s.name.endswith("_count")) == count + 1


def test_a_failing_view_is_counted_and_the_rest_of_the_scrape_answers() -> None:
    def broken() -> list[object]:
        raise RuntimeError("stopping")

    collector = metrics.ScrapeCollector({"broken": broken, "fine": lambda: [metrics.gauge("mybot_x", "x",
                                                                                          samples=[((), 1.0)])]})
    text = metrics.render(collector).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["mybot_x"].samples[0].value == 1.0
    assert [(s.labels, s.value) for s in families["mybot_scrape_errors"].samples] == [({"view": "broken"}, 1.0)]


class _Client:
    def __init__(self) -> None:
        self.window = RateWindow(3.0)

    def headroom(self) -> dict[str, float]:
        wait = self.window.longest_wait(100.0)
        return {"option_chain": 1.0 - wait / self.window.min_interval}


def test_rate_limit_headroom_is_the_tightest_source_and_forgets_closed_ones() -> None:
    limits = metrics.RateLimits()  # the process-wide one also holds the Dhan clients of other tests
    idle, busy = _Client(), _Client()
    busy.window.acquire("NIFTY", 99.0)  # 2 s of its 3 s window left at t=100
    limits.register(idle.headroom)
    limits.register(busy.headroom)
    assert limits.headroom()["option_chain"] == pytest.approx(1 / 3)
    del busy
    assert limits.headroom()["option_chain"] == 1.0
    del idle
    assert limits.headroom() == {}


def test_dhan_clients_and_brokers_report_their_rate_limit_headroom() -> None:
    from actors.clock import SystemClock
    from actors.dhan.broker import DhanBroker
    from config.settings import Settings

    broker = DhanBroker(Settings(), SystemClock())
    try:
        assert broker.rate_headroom() == {"orders": 1.0}
        assert broker._client.rate_headroom() == {"option_chain": 1.0, "quote": 1.0}
        assert {"orders", "option_chain", "quote"} <= set(metrics.rate_limits.headroom())
        broker._order_slot("place")  # takes the one token of a burst-1 bucket
        assert broker.rate_headroom()["orders"] < 0.5
        assert metrics.rate_limits.headroom()["orders"] < 0.5
    finally:
        broker.close()


def test_token_expiry_hook_feeds_the_gauge() -> None:
    metrics.token_expiry.set(4_000_000_000.0)
    try:
        text = metrics.render(metrics.ScrapeCollector()).decode()
        (family,) = [f for f in text_string_to_metric_families(text) if f.name == "mybot_dhan_token_expiry_seconds"]
        assert family.samples[0].value > 1_000_000_000
    finally:
        metrics.token_expiry.set(None)


# -- a live daemon -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    with LiveDaemon(tmp_path_factory.mktemp("metrics")) as live:
        yield live


def test_both_ports_serve_parseable_metrics_with_the_expected_names_and_types(daemon: LiveDaemon) -> None:
    for url in (daemon.control, daemon.mds):
        families = scrape(url)
        for name in HISTOGRAMS:
            assert families[name]["type"] == "histogram", name
        for name in COUNTERS:
            assert families[name]["type"] == "counter", name
        for name in GAUGES:
            assert families[name]["type"] == "gauge", name
        assert all(name.startswith("mybot_") for name in families if not name.startswith(("process_", "python_")))
        ages = {dict(labels)["symbol"] for (sample, labels) in families["mybot_feed_age_seconds"]["samples"]}
        assert ages == {"NIFTY", "BANKNIFTY", "SEC_49081", "SEC_49082"}
        assert value(families, "mybot_health_check_ok", check="database") == 1.0
        assert value(families, "mybot_info", role="all") == 1.0


def test_a_trade_moves_the_trading_metrics(daemon: LiveDaemon) -> None:
    before = scrape(daemon.control)
    entry = {"pos_id": "MET-1", "symbol": "SEC_49081", "side": "BUY", "qty": daemon.lot("SEC_49081")}
    assert daemon.post("/v1/trades", entry).status_code == 202
    eventually(lambda: daemon.get("/v1/trades/MET-1").json()["trade"]["state"] == "POSITION_OPEN", 10,
               message="MET-1 open")
    during = scrape(daemon.control)
    assert value(during, "mybot_signal_to_order_seconds_count") == value(before, "mybot_signal_to_order_seconds_count") + 1
    assert value(during, "mybot_orders_total", leg="ENTRY", status="FILLED") == \
        value(before, "mybot_orders_total", leg="ENTRY", status="FILLED") + 1
    assert value(during, "mybot_order_fill_seconds_count", leg="ENTRY") >= 1
    assert value(during, "mybot_open_positions") == 1
    assert value(during, "mybot_actor_running", actor="trade:MET-1") == 1
    assert value(during, "mybot_http_requests_total", method="POST", route="/v1/trades", server="control",
                 status="202") >= 1

    assert daemon.post("/v1/trades/MET-1/exit", {"reason": "metrics test"}).status_code == 202
    eventually(lambda: daemon.get("/v1/trades/MET-1").json()["trade"]["state"] == "CLOSED", 10, message="MET-1 closed")
    after = scrape(daemon.control)
    assert value(after, "mybot_orders_total", leg="EXIT", status="FILLED") >= 1
    assert value(after, "mybot_open_positions") == 0
    realized = daemon.get("/v1/risk").json()["realized_pnl"]
    assert value(after, "mybot_pnl_realized_rupees") == pytest.approx(realized)
    assert value(after, "mybot_daily_loss_headroom_rupees") == pytest.approx(5000.0 + realized)


def test_an_operator_restart_counts_as_a_restart_not_a_crash(daemon: LiveDaemon) -> None:
    before = scrape(daemon.control)
    assert daemon.post("/v1/actors/reconciler/restart").status_code == 200
    after = scrape(daemon.control)
    assert value(after, "mybot_actor_restarts_total", actor="reconciler") == \
        value(before, "mybot_actor_restarts_total", actor="reconciler") + 1
    assert value(after, "mybot_actor_crashes_total", actor="reconciler") == \
        value(before, "mybot_actor_crashes_total", actor="reconciler")


def test_ticks_and_candles_are_counted(daemon: LiveDaemon) -> None:
    first = value(scrape(daemon.mds), "mybot_ticks_total")
    eventually(lambda: value(scrape(daemon.mds), "mybot_ticks_total") > first, 5, interval=0.2,
               message="ticks counted")
    families = scrape(daemon.mds)
    assert value(families, "mybot_tick_to_candle_seconds_count") > 0
    assert value(families, "mybot_http_request_duration_seconds_count", method="GET", route="/metrics",
                 server="mds") >= 1
