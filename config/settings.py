"""One frozen, validated Settings object: defaults < TOML file < environment < secret files.

Every knob is a dataclass field declared with `knob(...)`; the loader walks the dataclasses, so adding a
field is all it takes to make a new key configurable (TOML `section.key`, env `MYBOT_SECTION_KEY`).
Problems are collected, never raised one at a time: a bad config is refused with every problem listed.
Nothing else in the project reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from config.reference import SHIPPED_HOLIDAYS_FILE, calendar_problems
from config.security import (
    MIN_CONTROL_TOKEN_CHARS,
    READS_REQUIRE_TOKEN_CHOICES,
    is_loopback_host,
    mask_url,
    url_passwords,
)
from core.charges import DEFAULT_RATES, rate_table_problems

__all__ = [
    "ALERT_KINDS",
    "AlertSettings",
    "ConfigError",
    "Secret",
    "Settings",
    "load_settings",
    "secret_values",
    "settings_summary",
]


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every one of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class Secret:
    """A secret value that never prints itself (repr, str, logs, JSON)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def knob(default: Any, *, min: float | None = None, max: float | None = None,
         choices: tuple[str, ...] | None = None, pattern: str | None = None, help: str = "") -> Any:
    meta = {"min": min, "max": max, "choices": choices, "pattern": pattern, "help": help}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples / mappings built by default_factory for mutable defaults")
    return field(default=default, metadata=meta)


def knob_map(default: Mapping[str, Any], *, help: str = "") -> Any:
    frozen = dict(default)
    return field(default_factory=lambda: dict(frozen), metadata={"help": help})


HHMM = r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$"  # 24:00 = the end of the IST day


@dataclass(frozen=True)
class HttpSettings:
    host: str = knob("127.0.0.1", help="bind address of the MDS API")
    control_host: str = knob("127.0.0.1", help="bind address of the control API (a non-loopback address needs "
                                               "the control token, for reads too: control.reads_require_token)")
    mds_port: int = knob(8002, min=0, max=65535, help="Market Data Service API (0 = any free port)")
    control_port: int = knob(8000, min=0, max=65535, help="control/status API (0 = any free port)")
    threads: int = knob(8, min=1, max=64, help="waitress worker threads per server")
    connection_limit: int = knob(1000, min=10, max=100_000,
                                 help="open connections per server (at most a quarter of the open-files limit); "
                                      "at the limit the oldest idle ones are closed to make room")


@dataclass(frozen=True)
class StorageSettings:
    url: str = knob("sqlite:///var/mybot.db", pattern=r"^(sqlite:///.+|postgres(ql)?://.*)$",
                    help="sqlite:///path or postgresql://user@host:port/db")
    redis_url: str = knob("", pattern=r"^(|rediss?://.*)$", help="empty = in-process bus")
    redis_prefix: str = knob("", help="prefix for every Redis key and channel (isolates deployments)")
    candle_buffer_max: int = knob(200_000, min=100, help="closed candles held while the database is down")
    connect_timeout_seconds: float = knob(3.0, min=0.1, max=60)


@dataclass(frozen=True)
class FeedSettings:
    source: str = knob("sim", choices=("sim", "replay", "dhan"))
    replay_path: str = knob("", help="CSV ts,symbol,ltp,volume for source=replay")
    replay_speed: float = knob(1.0, min=0.0, help="x real time; 0 = as fast as possible")
    replay_max_wait_seconds: float = knob(5.0, min=0.01, max=3600,
                                          help="paced replay waits at most this long between batches "
                                               "(compresses nights and halts)")
    symbols: tuple[str, ...] = knob(("NIFTY", "BANKNIFTY", "SEC_49081", "SEC_49082"),
                                    help="NIFTY, BANKNIFTY or SEC_<security id>")
    record_path: str = knob("", help="write every received tick to this CSV (replay format)")
    stale_seconds: float = knob(10.0, min=0.5, help="no tick for this long on a symbol -> FEED_STALE")
    late_grace_seconds: float = knob(5.0, min=0.0, max=60.0, help="a late tick within this revises its candle")
    sim_seed: int = knob(20261120)
    sim_ticks_per_second: float = knob(20.0, min=0.1, max=100_000, help="per symbol")
    rest_fallback: bool = knob(True, help="dhan: poll REST LTP (<= 1 req/s) while the websocket is down")
    rest_fallback_interval_seconds: float = knob(1.0, min=1.0, max=60,
                                                 help="dhan: REST LTP poll period (Dhan quote API: 1 req/s)")
    dhan_mode: str = knob("quote", choices=("ticker", "quote", "full"),
                          help="dhan websocket packet: ticker (LTP only), quote (+ day volume), full (+ depth)")
    reconnect_initial_seconds: float = knob(0.5, min=0.01, max=60, help="dhan websocket: first reconnect delay")
    reconnect_max_seconds: float = knob(30.0, min=0.05, max=600,
                                        help="dhan websocket: backoff cap (also the wait after a 805 disconnect)")


@dataclass(frozen=True)
class DhanSettings:
    api_base_url: str = knob("https://api.dhan.co/v2")
    feed_url: str = knob("wss://api-feed.dhan.co")
    order_update_url: str = knob("wss://api-order-update.dhan.co")
    security_ids: dict[str, str] = knob_map({}, help="symbol -> 'SEGMENT:id' overrides, e.g. NIFTY=IDX_I:13")
    request_timeout_seconds: float = knob(5.0, min=0.1, max=60)
    scrip_master_url: str = knob("https://images.dhan.co/api-data/api-scrip-master.csv",
                                 pattern=r"^(https?|file)://.+",
                                 help="Dhan's compact scrip master CSV (lots, ticks, expiries); loaded when the "
                                      "feed or the broker is Dhan (sim, paper and replay use the shipped snapshot)")
    scrip_master_refresh_time: str = knob("08:30", pattern=HHMM,
                                          help="IST: the master is reloaded at this time each trading day (and at "
                                               "start when the stored copy is older than a day)")
    auth_base_url: str = knob("https://auth.dhan.co", help="Dhan's login host (TOTP token generation)")
    auto_renew_token: bool = knob(False, help="renew a web-generated token through Dhan's RenewToken before it "
                                              "expires; the new token is written back to dhan_access_token.txt")
    totp_secret_file: str = knob("", help="file holding the base32 TOTP secret: generate a new token with "
                                          "PIN + TOTP when renewal is off or fails (needs dhan.pin_file)")
    pin_file: str = knob("", help="file holding the Dhan login PIN (with dhan.totp_secret_file)")
    token_warn_before_seconds: float = knob(3600.0, min=0.0, max=86_400,
                                            help="log TOKEN_EXPIRING this long before the token expires")
    token_renew_before_seconds: float = knob(1800.0, min=0.0, max=86_400,
                                             help="renew (or generate) a new token this long before expiry")
    token_check_seconds: float = knob(30.0, min=0.05, max=600,
                                      help="how often the token keeper looks at the token's expiry")
    client_id: Secret = field(default=Secret(""), metadata={"secret": "dhan_client_id.txt"})
    access_token: Secret = field(default=Secret(""), metadata={"secret": "dhan_access_token.txt"})


@dataclass(frozen=True)
class OptionChainSettings:
    underlyings: tuple[str, ...] = knob(("NIFTY", "BANKNIFTY"))
    poll_seconds: float = knob(15.0, min=3.0, help="seed: FEED_POLL_SECONDS")
    expiries: tuple[str, ...] = knob((), help="YYYY-MM-DD; empty = nearest")
    min_interval_seconds: float = knob(3.0, min=3.0, help="Dhan: one unique request per 3 s")
    rate_key: str = knob("request", choices=("request", "global"),
                         help="what the 3 s window is keyed by: each (underlying, expiry) or all calls")


@dataclass(frozen=True)
class BrokerSettings:
    kind: str = knob("paper", choices=("paper", "dhan"))
    paper_latency_ms: float = knob(5.0, min=0.0, max=10_000)
    paper_slippage_pct: float = knob(0.0, min=0.0, max=50)
    paper_partial_fills: bool = knob(False)
    max_orders_per_second: float = knob(10.0, min=0.1, max=10.0, help="Dhan: 10 orders/s")
    protection_band_pct: float = knob(1.0, min=0.0, max=20, help="marketable LIMIT band around the LTP")
    product_type: str = knob("INTRADAY", choices=("INTRADAY", "MARGIN", "CNC"))
    order_burst: int = knob(1, min=1, max=10, help="dhan: orders sent back to back before pacing at "
                                                   "max_orders_per_second (1 keeps every 1 s window <= the rate)")
    max_order_wait_seconds: float = knob(1.0, min=0.0, max=10,
                                         help="dhan: longest the broker blocks for an order slot, else RateLimited")
    tick_size: float = knob(0.05, min=0.0, help="dhan: LIMIT prices are rounded to this (marketable side)")
    read_attempts: int = knob(3, min=1, max=10, help="dhan: tries for a read (orders, positions, ...)")
    read_retry_initial_seconds: float = knob(0.2, min=0.0, max=10, help="dhan: first wait between read tries")
    paper_poll_ms: float = knob(50.0, min=1.0, max=5000, help="paper: how often working orders are matched")


@dataclass(frozen=True)
class ExecutionSettings:
    order_timeout_seconds: float = knob(30.0, min=0.05, max=3600)
    max_slippage_pct: float = knob(0.5, min=0.0, max=100)
    submit_attempts: int = knob(3, min=1, max=10,
                                help="submits of one order when the broker answers 'not placed, try later' "
                                     "(or an ambiguous submit the correlationId lookup did not find)")
    submit_retry_seconds: float = knob(0.5, min=0.0, max=30, help="first wait before a deferred submit")
    lock_timeout_seconds: float = knob(5.0, min=0.05, max=120, help="wait for a pos_id's placement lock")
    ambiguous_settle_seconds: float = knob(15.0, min=0.0, max=600,
                                           help="after a submit whose outcome is unknown (timeout, 5xx), how long "
                                                "to keep looking the order up before it may be sent again: longer "
                                                "than the broker's worst processing delay")
    ambiguous_recheck_seconds: float = knob(1.0, min=0.01, max=60,
                                            help="how often an unknown submit is looked up while it settles")
    square_off_check_seconds: float = knob(1.0, min=0.05, max=60,
                                           help="how often the square-off time and a flatten are enforced")
    exit_retry_initial_seconds: float = knob(0.5, min=0.0, max=60,
                                             help="wait before another exit order after one ended unfilled "
                                                  "(doubles per failed attempt)")
    exit_retry_max_seconds: float = knob(10.0, min=0.0, max=300, help="the longest wait between exit orders")
    exit_band_step_pct: float = knob(0.5, min=0.0, max=50,
                                     help="each failed exit order widens the exit limit's band by this much "
                                          "(percent of the price, on top of broker.protection_band_pct)")
    exit_band_max_pct: float = knob(5.0, min=0.0, max=100, help="the widest exit band, in percent")
    lot_sizes: dict[str, int] = knob_map({}, help="symbol -> units per lot, for instruments the instrument master "
                                                  "does not know (the master's lot size wins); a manual entry's "
                                                  "qty must be a multiple")
    max_quote_age_seconds: float = knob(2.0, min=0.1, max=60,
                                        help="an exit limit is never priced from an older quote: a REST LTP is "
                                             "fetched (within Dhan's 1 quote request/s), else the band widens")


@dataclass(frozen=True)
class ExitsSettings:
    """Protective exits of every position (core/protection.py), percentages of the premium; 0 = off. A
    strategy signal or a manual entry may set its own; they are journaled with the trade."""

    stop_loss_pct: float = knob(0.0, min=0.0, max=99.99, help="exit when the premium moves this far against "
                                                              "the position from its entry (STOP_LOSS)")
    target_pct: float = knob(0.0, min=0.0, max=10_000, help="exit when the premium moves this far in the "
                                                            "position's favour from its entry (TARGET)")
    trailing_stop_pct: float = knob(0.0, min=0.0, max=99.99,
                                    help="exit when the premium falls back this far from the best price since "
                                         "entry (TRAILING_STOP); the level only tightens")
    max_holding_minutes: float = knob(0.0, min=0.0, max=10_000,
                                      help="exit this long after the first entry fill (TIME_EXIT)")
    broker_stop_pct: float = knob(2.0, min=0.0, max=50,
                                  help="while a position with a stop-loss or trailing stop is open, a stop-loss "
                                       "order rests at the broker this far beyond the local stop (moved as the "
                                       "trail moves, cancelled before any exit), so a dead process still leaves "
                                       "the position protected; 0 = none")
    check_seconds: float = knob(1.0, min=0.05, max=60,
                                help="how often the time exits are checked, and a position whose contract sent "
                                     "no tick for max_quote_age is checked against the latest known quote")


@dataclass(frozen=True)
class RiskSettings:
    trading_enabled: bool = knob(True)
    daily_max_loss: float = knob(5000.0, min=0.0, help="rupees")
    daily_max_loss_pct: float = knob(2.0, min=0.0, max=100, help="percent of capital")
    consecutive_losses_limit: int = knob(3, min=1)
    capital: float = knob(500_000.0, min=0.0)
    max_open_positions: int = knob(3, min=0)
    session_start: str = knob("09:15", pattern=HHMM, help="IST")
    session_end: str = knob("15:30", pattern=HHMM, help="IST")
    square_off_time: str = knob("15:15", pattern=HHMM, help="IST")
    max_qty_per_order: int = knob(1800, min=0, help="units per entry order (NSE's NIFTY freeze quantity); 0 = no "
                                                     "limit")
    max_notional_per_trade: float = knob(150_000.0, min=0.0,
                                         help="rupees: qty x price of one entry (the live quote, else its price); "
                                              "0 = no limit")
    max_exposure: float = knob(500_000.0, min=0.0,
                               help="rupees: open notional of every live position and working entry, across "
                                    "every trader process on the database; 0 = no limit")
    max_price: float = knob(200_000.0, min=0.01,
                            help="rupees: an entry naming a higher price is refused (a sanity bound, e.g. for a "
                                 "manual price typed with no quote to compare it with)")
    mark_to_market: bool = knob(True, help="the daily loss limits count the unrealized P&L of open positions at the "
                                           "latest quotes (replays switch it off: realized only)")
    flatten_on_daily_loss: bool = knob(True, help="a daily loss breach (rupees or percent, marked to market, net "
                                                  "of charges) also exits every position, not only halts entries")


@dataclass(frozen=True)
class StrategySettings:
    mds_entry_score_min: float = knob(0.65, min=0.0, max=1.0)
    mds_exit_score_min: float = knob(0.6, min=0.0, max=1.0)
    base_lot: int = knob(1, min=1, help="LOTS per entry before the sizing tiers; units = lots x the instrument "
                                        "master's lot size of the traded contract")
    lots_per_underlying: dict[str, int] = knob_map({}, help="underlying -> lots, overriding base_lot "
                                                             "(e.g. NIFTY=2,BANKNIFTY=1)")
    expiry: str = knob("nearest", choices=("nearest", "next", "monthly"),
                       help="which expiry the ATM option is picked from: the nearest not yet past (until "
                            "15:30 IST on its day), the one after it, or the nearest monthly")
    timeframes: tuple[int, ...] = knob((60, 300, 900), help="seconds; multiples of 60")
    timeframe_weights: dict[str, float] = knob_map({"60": 0.2, "300": 0.35, "900": 0.45})
    bucket_weights: dict[str, float] = knob_map(
        {"trend": 0.4, "momentum": 0.3, "volatility": 0.15, "volume": 0.15})
    sizing_tiers: dict[str, float] = knob_map({"0.65": 1, "0.75": 2, "0.85": 3},
                                              help="entry_score threshold -> lots")
    warmup_candles: int = knob(30, min=1)
    mtf_conflict_gamma: float = knob(1.0, min=0.0, max=10.0,
                                     help="final = weighted * agreement**gamma; 0 = no conflict reduction")
    score_saturation: float = knob(0.7, min=0.01, max=1.0,
                                   help="|final score| (-1..1) at which signal strength reaches 1")
    ema_fast: int = knob(9, min=1, max=500)
    ema_slow: int = knob(21, min=2, max=1000)
    rsi_period: int = knob(14, min=2, max=500)
    macd_fast: int = knob(12, min=1, max=500)
    macd_slow: int = knob(26, min=2, max=1000)
    macd_signal: int = knob(9, min=1, max=500)
    atr_period: int = knob(14, min=1, max=500)
    atr_regime_period: int = knob(20, min=2, max=500, help="ATR is compared with its own SMA of this length")
    bollinger_period: int = knob(20, min=2, max=500)
    bollinger_k: float = knob(2.0, min=0.1, max=10.0)
    supertrend_period: int = knob(10, min=1, max=500)
    supertrend_multiplier: float = knob(3.0, min=0.1, max=20.0)
    adx_period: int = knob(14, min=2, max=500)
    volume_avg_period: int = knob(20, min=2, max=500)
    history_minutes: int = knob(600, min=0, max=20_000,
                                help="stored 1m candles fed to the score engine before the first live candle "
                                     "(warm-up: 15m indicators need ~35 of their candles)")
    entry_max_candle_age_seconds: float = knob(120.0, min=0.0,
                                               help="no entry on a candle that closed longer ago than this "
                                                    "by the clock (catch-up after an outage); 0 = no limit")
    exit_reraise_seconds: float = knob(30.0, min=1.0, max=3600.0,
                                       help="an exit the strategy asked for a position still live this long "
                                            "after its last ask is asked again (EXIT_SIGNAL_REPEATED)")


@dataclass(frozen=True)
class MarketDataSettings:
    provider: str = knob("local", choices=("local", "mds", "dhan"), help="seed: MARKET_DATA_PROVIDER")
    mds_base_url: str = knob("http://127.0.0.1:8002/v1", help="seed: MDS_BASE_URL")
    request_timeout_seconds: float = knob(2.0, min=0.1, max=60)
    request_attempts: int = knob(3, min=1, max=10, help="mds client: tries per request (transport errors, 5xx)")
    retry_wait_seconds: float = knob(0.2, min=0.0, max=10, help="mds client: first wait between tries (doubles)")
    candle_poll_seconds: float = knob(60.0, min=0.1, max=60,
                                      help="mds client: fetch closed candles every N s, aligned to the clock "
                                           "(60 = right after each minute closes)")
    candle_fetch_delay_seconds: float = knob(2.0, min=0.0, max=30,
                                             help="mds client: wait this long after the minute closes "
                                                  "(the MDS closes a minute within ~1 s)")
    quote_max_age_seconds: float = knob(1.0, min=0.0, max=60,
                                        help="mds client: a cached quote younger than this is reused")


@dataclass(frozen=True)
class ReconcileSettings:
    interval_seconds: float = knob(7.0, min=0.2, max=600, help="5-10 s in production")
    flatten_orphans: bool = knob(True, help="at square-off (and on a flatten), adopt units the broker holds "
                                            "that no live trade explains, and exit them")
    owner_id: str = knob("", help="this trader process's name on its trades' leases; empty = host:role:control_port "
                                  "(host:pid with an ephemeral port). Keep it stable across restarts: a restarted "
                                  "process under another name waits for its old leases to expire")
    lease_ttl_seconds: float = knob(30.0, min=2.0, max=3600,
                                    help="a trade whose owner has not renewed its lease for this long is adopted "
                                         "by another trader process on the database")
    lease_renew_seconds: float = knob(5.0, min=0.2, max=600, help="how often this process renews its leases")


_DATED = "effective date 'YYYY-MM-DD' -> rate; a key replaces the whole series (core/charges.py)"


@dataclass(frozen=True)
class ChargesSettings:
    """Dated rate table for option charges (defaults and their sources: core.charges.DEFAULT_RATES)."""

    brokerage_per_order: dict[str, float] = knob_map(DEFAULT_RATES["brokerage_per_order"],
                                                     help="rupees per executed order; " + _DATED)
    stt_sell_pct: dict[str, float] = knob_map(DEFAULT_RATES["stt_sell_pct"],
                                              help="% of sell premium; " + _DATED)
    exchange_nse_pct: dict[str, float] = knob_map(DEFAULT_RATES["exchange_nse_pct"],
                                                  help="% of premium, NSE; " + _DATED)
    exchange_bse_pct: dict[str, float] = knob_map(DEFAULT_RATES["exchange_bse_pct"],
                                                  help="% of premium, BSE; " + _DATED)
    ipft_nse_pct: dict[str, float] = knob_map(DEFAULT_RATES["ipft_nse_pct"], help="% of premium; " + _DATED)
    ipft_bse_pct: dict[str, float] = knob_map(DEFAULT_RATES["ipft_bse_pct"], help="% of premium; " + _DATED)
    sebi_per_crore: dict[str, float] = knob_map(DEFAULT_RATES["sebi_per_crore"],
                                                help="rupees per crore of premium; " + _DATED)
    stamp_buy_pct: dict[str, float] = knob_map(DEFAULT_RATES["stamp_buy_pct"],
                                               help="% of buy premium; " + _DATED)
    gst_pct: dict[str, float] = knob_map(DEFAULT_RATES["gst_pct"],
                                         help="% of brokerage + exchange + IPFT + SEBI; " + _DATED)


@dataclass(frozen=True)
class CalendarSettings:
    enabled: bool = knob(True, help="false: every day trades 00:00-24:00 IST and only risk.session_start/"
                                    "session_end/square_off_time apply (simulations; the sim at night)")
    holidays_file: str = knob(str(SHIPPED_HOLIDAYS_FILE),
                              help="NSE holidays and special sessions, one 'YYYY-MM-DD description' or "
                                   "'YYYY-MM-DD HH:MM-HH:MM description' per line (default: the shipped file)")


@dataclass(frozen=True)
class SupervisionSettings:
    max_restarts: int = knob(5, min=0, help="per supervisor within max_seconds, then escalate")
    max_seconds: float = knob(10.0, min=0.1)
    ask_timeout_seconds: float = knob(2.0, min=0.01, max=60)
    tell_buffer: int = knob(10_000, min=0, help="tells held per child while it restarts")
    backoff_initial_seconds: float = knob(0.2, min=0.0)
    backoff_max_seconds: float = knob(30.0, min=0.0)
    shutdown_timeout_seconds: float = knob(4.0, min=0.1, max=60)
    gil_switch_interval_ms: float = knob(20.0, min=1.0, max=200.0,
                                         help="Python's thread switch interval; the 5 ms default makes "
                                              "hundreds of actor threads thrash the GIL under load")


@dataclass(frozen=True)
class LogSettings:
    level: str = knob("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    file: str = knob("", help="also write JSON lines to this rotating file")
    file_max_bytes: int = knob(50_000_000, min=10_000)
    file_backups: int = knob(5, min=0)
    stdout: bool = knob(True, help="also write the lines to stdout; false with log.file set when stdout is "
                                   "captured anyway (supervisord keeps it for tracebacks and SDK prints)")


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = knob(True, help="record latency histograms and counters on the hot paths (GET /metrics "
                                    "still answers when off, with the scrape-time gauges)")


@dataclass(frozen=True)
class ControlSettings:
    token_file: str = knob("", help="file holding the bearer token (overrides secrets_dir)")
    token: Secret = field(default=Secret(""), metadata={"secret": "control_token.txt"})
    reads_require_token: str = knob("auto", choices=READS_REQUIRE_TOKEN_CHOICES,
                                    help="control API reads (positions, trades, risk, status) need the bearer "
                                         "token: auto = unless http.control_host is loopback; true; false "
                                         "(refused with a non-loopback http.control_host)")


ALERT_KINDS = ("KILL_SWITCH", "LOSS_LIMIT_HALT", "RECONCILE_INCIDENT", "ESCALATION", "TOKEN", "EXIT_RETRIES",
               "FEED_STALE", "DATABASE_OUTAGE", "FLATTEN_DONE", "TRADE_OWNERSHIP")


@dataclass(frozen=True)
class AlertSettings:
    telegram_token_file: str = knob("", help="file holding the Telegram bot token (else telegram_token.txt in "
                                             "secrets_dir, or MYBOT_ALERTS_TELEGRAM_TOKEN)")
    telegram_chat_id: str = knob("", help="the chat the bot writes to; Telegram alerts need it and the token")
    telegram_api_url: str = knob("https://api.telegram.org", help="the Bot API base URL (a local fake in tests)")
    webhook_url: str = knob("", help="POST every alert as JSON to this URL")
    webhook_secret_file: str = knob("", help="file holding the webhook's HMAC-SHA256 key (else "
                                             "alert_webhook_secret.txt in secrets_dir): signs X-Mybot-Signature")
    kinds: tuple[str, ...] = knob(ALERT_KINDS, help="what is alerted: " + ", ".join(ALERT_KINDS))
    exit_attempts: int = knob(2, min=1, max=20, help="alert when an exit needs this many orders or submit attempts")
    database_outage_seconds: float = knob(30.0, min=0.0, help="alert when the database is down this long")
    dedup_seconds: float = knob(6 * 3600.0, min=0.0, help="one alert per incident within this time")
    max_per_minute: int = knob(20, min=1, help="alerts sent per minute at most; the rest are counted and "
                                               "announced with the next one")
    queue_size: int = knob(200, min=1, help="alerts waiting to be sent; more are dropped and counted")
    max_attempts: int = knob(5, min=1, max=20, help="sends per alert and channel before giving up")
    retry_initial_seconds: float = knob(1.0, min=0.0, max=300.0, help="first retry delay (doubles, capped at 60 s)")
    timeout_seconds: float = knob(3.0, min=0.1, max=60.0, help="HTTP timeout per send")
    telegram_token: Secret = field(default=Secret(""), metadata={"secret": "telegram_token.txt"})
    webhook_secret: Secret = field(default=Secret(""), metadata={"secret": "alert_webhook_secret.txt"})


@dataclass(frozen=True)
class Settings:
    secrets_dir: str = knob("./secrets", help="holds dhan_client_id.txt, control_token.txt, ...")
    http: HttpSettings = field(default_factory=HttpSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    feed: FeedSettings = field(default_factory=FeedSettings)
    dhan: DhanSettings = field(default_factory=DhanSettings)
    option_chain: OptionChainSettings = field(default_factory=OptionChainSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    exits: ExitsSettings = field(default_factory=ExitsSettings)
    risk: RiskSettings = field(default_factory=RiskSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)
    market_data: MarketDataSettings = field(default_factory=MarketDataSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    charges: ChargesSettings = field(default_factory=ChargesSettings)
    calendar: CalendarSettings = field(default_factory=CalendarSettings)
    supervision: SupervisionSettings = field(default_factory=SupervisionSettings)
    log: LogSettings = field(default_factory=LogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    storage_password: Secret = field(default=Secret(""), metadata={"secret": "postgres_password.txt"})
    redis_password: Secret = field(default=Secret(""), metadata={"secret": "redis_password.txt"})

    def replace(self, **sections: Any) -> Settings:
        """A copy with some keys changed: replace(feed={"source": "replay"}) (tests, CLI flags)."""
        raw: dict[str, Any] = {}
        for name, value in sections.items():
            raw[name] = value
        return _build(_as_raw(self), raw, env={}, secret_dirs=(), problems=None)


# The seed's environment names keep working.
SEED_ENV_ALIASES = {
    "MARKET_DATA_PROVIDER": ("market_data", "provider"),
    "MDS_BASE_URL": ("market_data", "mds_base_url"),
    "FEED_POLL_SECONDS": ("option_chain", "poll_seconds"),
}
SECRET_ENV = {
    "MYBOT_DHAN_CLIENT_ID": ("dhan", "client_id"),
    "MYBOT_DHAN_ACCESS_TOKEN": ("dhan", "access_token"),
    "MYBOT_CONTROL_TOKEN": ("control", "token"),
    "MYBOT_ALERTS_TELEGRAM_TOKEN": ("alerts", "telegram_token"),
    "MYBOT_ALERTS_WEBHOOK_SECRET": ("alerts", "webhook_secret"),
}
# A secret whose file an explicit setting names (read instead of the secrets directory's file).
SECRET_FILE_SETTINGS = {
    ("control", "token"): "token_file",
    ("alerts", "telegram_token"): "telegram_token_file",
    ("alerts", "webhook_secret"): "webhook_secret_file",
}


def load_settings(config_file: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Settings:
    """Build Settings or raise ConfigError listing every problem."""
    env = dict(os.environ if env is None else env)
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            problems.append(f"config file {config_file}: {exc.strerror or exc}")
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"config file {config_file}: not valid TOML ({exc})")
    for section, values in (overrides or {}).items():
        if isinstance(values, Mapping):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    settings = _build(_as_raw(Settings()), raw, env=env, secret_dirs=None, problems=problems)
    if problems:
        raise ConfigError(problems)
    return settings


def _as_raw(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = _as_raw(value) if dataclasses.is_dataclass(value) else value
    return out


def _build(base: dict[str, Any], raw: Mapping[str, Any], *, env: Mapping[str, str],
           secret_dirs: tuple[str, ...] | None, problems: list[str] | None) -> Settings:
    collect: list[str] = [] if problems is None else problems
    merged = {k: (dict(v) if isinstance(v, dict) and k in _SECTIONS else v) for k, v in base.items()}

    # 1. TOML / overrides
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                collect.append(f"[{key}]: expected a table")
                continue
            for sub, subvalue in value.items():
                if sub not in _SECTIONS[key]:
                    collect.append(f"{key}.{sub}: unknown key")
                    continue
                merged[key][sub] = _coerce(f"{key}.{sub}", _SECTIONS[key][sub], subvalue, collect)
        elif key in _TOP:
            merged[key] = _coerce(key, _TOP[key], value, collect)
        else:
            collect.append(f"{key}: unknown key")

    # 2. environment: MYBOT_SECTION_KEY, then the seed's names
    for name, value in env.items():
        if name in SEED_ENV_ALIASES:
            section, sub = SEED_ENV_ALIASES[name]
            merged[section][sub] = _coerce(f"{name} ({section}.{sub})", _SECTIONS[section][sub], value, collect)
        elif name.startswith("MYBOT_") and name not in SECRET_ENV:
            target = _env_target(name)
            if target is None:
                collect.append(f"{name}: unknown setting")
                continue
            section, sub = target
            if section is None:
                merged[sub] = _coerce(name, _TOP[sub], value, collect)
            else:
                merged[section][sub] = _coerce(name, _SECTIONS[section][sub], value, collect)

    # 3. secrets: env var > control.token_file > secrets directory file
    if secret_dirs is None:
        dirs = [merged["secrets_dir"], "/run/secrets"]
        for section, sub, filename in _SECRET_FIELDS:
            value = _read_secret(section, sub, filename, dirs, merged, env, collect)
            if value is not None:
                if section is None:
                    merged[sub] = Secret(value)
                else:
                    merged[section][sub] = Secret(value)

    sections = {}
    for name, cls in _SECTION_CLASSES.items():
        try:
            sections[name] = cls(**merged[name])
        except TypeError as exc:  # pragma: no cover - guarded by _coerce
            collect.append(f"{name}: {exc}")
            sections[name] = cls()
    top = {k: merged[k] for k in _TOP}
    settings = Settings(**top, **sections)
    collect.extend(_cross_checks(settings))
    if problems is None and collect:
        raise ConfigError(collect)
    return settings


def _read_secret(section: str | None, sub: str, filename: str, dirs: list[str],
                 merged: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> str | None:
    for env_name, target in SECRET_ENV.items():
        if target == (section, sub) and env.get(env_name):
            return env[env_name].strip()
    file_setting = SECRET_FILE_SETTINGS.get((section or "", sub))
    if section is not None and file_setting and merged[section][file_setting]:
        path = Path(merged[section][file_setting])
        try:
            return path.read_text().strip()
        except OSError as exc:
            problems.append(f"{section}.{file_setting} {path}: unreadable ({exc.strerror or exc})")
            return None
    for directory in dirs:
        path = Path(directory) / filename
        if path.exists():
            try:
                return path.read_text().strip()
            except OSError as exc:
                problems.append(f"secret file {path}: unreadable ({exc.strerror or exc})")
                return None
    return None


def _env_target(name: str) -> tuple[str | None, str] | None:
    rest = name[len("MYBOT_"):].lower()
    if rest in _TOP:
        return None, rest
    for section in sorted(_SECTIONS, key=len, reverse=True):
        if rest.startswith(section + "_") and rest[len(section) + 1:] in _SECTIONS[section]:
            return section, rest[len(section) + 1:]
    return None


def _coerce(where: str, f: dataclasses.Field[Any], value: Any, problems: list[str]) -> Any:
    """Turn a TOML or env value into the field's type; record a problem and keep the default if it can't.

    A problem quotes the value: a connection URL's passwords are masked in it first."""
    hint = _HINTS[id(f)]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    try:
        converted = _convert(hint, value)
    except (TypeError, ValueError) as exc:
        problems.append(f"{where}: {exc}")
        return default
    meta = f.metadata
    if meta.get("min") is not None and converted < meta["min"]:
        problems.append(f"{where}: {_shown(converted)} is below the minimum {meta['min']}")
    if meta.get("max") is not None and converted > meta["max"]:
        problems.append(f"{where}: {_shown(converted)} is above the maximum {meta['max']}")
    if meta.get("choices") and converted not in meta["choices"]:
        problems.append(f"{where}: {_shown(converted)} is not one of {', '.join(meta['choices'])}")
    if meta.get("pattern") and not re.match(meta["pattern"], str(converted)):
        problems.append(f"{where}: {_shown(converted)} is not in the expected form")
    return converted


def _shown(value: Any) -> str:
    """A value as a config problem quotes it: a URL with its passwords masked."""
    return repr(mask_url(value) if isinstance(value, str) else value)


def _convert(hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.strip().lower() in ("1", "true", "yes", "on")
        raise ValueError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if hint is Secret:
        return value if isinstance(value, Secret) else Secret(str(value))
    if origin is tuple:
        (item,) = {a for a in get_args(hint) if a is not Ellipsis}
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(_convert(item, v) for v in value)
    if origin is dict:
        _, item = get_args(hint)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                value = json.loads(text)
            else:
                value = dict(pair.split("=", 1) for pair in text.split(",") if pair.strip())
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a table, got {value!r}")
        return {str(k).strip(): _convert(item, v if not isinstance(v, str) else v.strip())
                for k, v in value.items()}
    raise TypeError(f"unsupported setting type {hint}")  # pragma: no cover


def _cross_checks(s: Settings) -> list[str]:
    problems = []
    if s.risk.session_start >= s.risk.session_end:
        problems.append("risk.session_start must be before risk.session_end")
    for tf in s.strategy.timeframes:
        if tf % 60 or not 60 <= tf <= 86400:
            problems.append(f"strategy.timeframes: {tf} is not a multiple of 60 in 60..86400")
    for tf in s.strategy.timeframe_weights:
        if not tf.isdigit() or int(tf) not in s.strategy.timeframes:
            problems.append(f"strategy.timeframe_weights: {tf!r} is not one of strategy.timeframes")
    for bucket in s.strategy.bucket_weights:
        if bucket not in ("trend", "momentum", "volatility", "volume"):
            problems.append(f"strategy.bucket_weights: unknown bucket {bucket!r}")
    for underlying, lots in s.strategy.lots_per_underlying.items():
        if lots < 1:
            problems.append(f"strategy.lots_per_underlying.{underlying}: {lots} is not a positive number of lots")
    for symbol in s.feed.symbols:
        if not re.match(r"^(NIFTY|BANKNIFTY|FINNIFTY|SEC_\d+)$", symbol):
            problems.append(f"feed.symbols: {symbol!r} is not NIFTY, BANKNIFTY, FINNIFTY or SEC_<id>")
    for symbol, ref in s.dhan.security_ids.items():
        if not re.match(r"^[A-Z_]+:\d+$", ref):
            problems.append(f"dhan.security_ids.{symbol}: {ref!r} is not SEGMENT:id")
    if s.feed.source == "replay" and not s.feed.replay_path:
        problems.append("feed.replay_path: required when feed.source = replay")
    if s.feed.source == "dhan" and not (s.dhan.client_id and s.dhan.access_token):
        problems.append("feed.source = dhan needs dhan_client_id.txt and dhan_access_token.txt "
                        "(or MYBOT_DHAN_CLIENT_ID / MYBOT_DHAN_ACCESS_TOKEN)")
    if s.broker.kind == "dhan" and not (s.dhan.client_id and s.dhan.access_token):
        problems.append("broker.kind = dhan needs the Dhan client id and access token")
    if s.http.mds_port and s.http.mds_port == s.http.control_port:
        problems.append("http.mds_port and http.control_port must differ")
    problems.extend(_control_surface_problems(s))
    if s.reconcile.lease_renew_seconds * 2 > s.reconcile.lease_ttl_seconds:
        problems.append(f"reconcile.lease_renew_seconds ({s.reconcile.lease_renew_seconds:g}) must be at most half "
                        f"of reconcile.lease_ttl_seconds ({s.reconcile.lease_ttl_seconds:g})")
    for kind in s.alerts.kinds:
        if kind not in ALERT_KINDS:
            problems.append(f"alerts.kinds: {kind!r} is not one of {', '.join(ALERT_KINDS)}")
    if s.alerts.telegram_chat_id and not s.alerts.telegram_token:
        problems.append("alerts.telegram_chat_id needs the bot token (alerts.telegram_token_file, "
                        "telegram_token.txt or MYBOT_ALERTS_TELEGRAM_TOKEN)")
    if s.alerts.telegram_token and not s.alerts.telegram_chat_id:
        problems.append("alerts: a Telegram bot token is configured but alerts.telegram_chat_id is empty")
    for name in ("telegram_api_url", "webhook_url"):
        url = getattr(s.alerts, name)
        if url and not re.match(r"^https?://[^\s/]+", url):
            problems.append(f"alerts.{name}: {url!r} is not an http(s) URL")
    rates = {f.name: getattr(s.charges, f.name) for f in dataclasses.fields(s.charges)}
    problems.extend(f"charges.{problem}" for problem in rate_table_problems(rates))
    problems.extend(f"calendar.holidays_file: {problem}" for problem in calendar_problems(s.calendar.holidays_file))
    problems.extend(_totp_problems(s.dhan))
    return problems


def _totp_problems(dhan: DhanSettings) -> list[str]:
    """TOTP login needs both files, readable (their contents are secrets: read only when used)."""
    given = {"dhan.totp_secret_file": dhan.totp_secret_file, "dhan.pin_file": dhan.pin_file}
    if not any(given.values()):
        return []
    problems = [f"{key}: required with {other}" for (key, value), other in
                zip(given.items(), reversed(list(given)), strict=True) if not value]
    for key, value in given.items():
        if value and not os.access(value, os.R_OK):
            problems.append(f"{key}: {value} is not a readable file")
    return problems


def _control_surface_problems(s: Settings) -> list[str]:
    problems = []
    token = s.control.token.reveal()
    if token and len(token) < MIN_CONTROL_TOKEN_CHARS:
        problems.append(f"control.token: {len(token)} characters; at least {MIN_CONTROL_TOKEN_CHARS} are required "
                        "(a long random string, e.g. `openssl rand -hex 24`)")
    if not is_loopback_host(s.http.control_host):
        exposed = f"http.control_host = {s.http.control_host!r} is reachable from other hosts"
        if s.control.reads_require_token == "false":
            problems.append(f"control.reads_require_token = false: {exposed}; positions and trades would be "
                            "readable without the token (bind 127.0.0.1 or require the token)")
        if not token:
            problems.append(f"{exposed}: it needs a control token (control_token.txt or MYBOT_CONTROL_TOKEN)")
    return problems


def secret_values(s: Settings) -> list[str]:
    """Every secret the settings hold: the Secret fields and the passwords inside connection URLs.

    The runtime registers them with the log redaction at start (telemetry.logs.redact)."""
    found: list[str] = []

    def walk(obj: Any) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value)
            elif isinstance(value, Secret):
                found.append(value.reveal())
            elif isinstance(value, str) and "://" in value:
                found.extend(url_passwords(value))
    walk(s)
    return [value for value in dict.fromkeys(found) if value]


def settings_summary(s: Settings) -> dict[str, Any]:
    """The effective config as plain data, secrets masked (for `config check` and /v1/status)."""
    def render(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: render(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Secret):
            return "***" if obj else ""
        if isinstance(obj, tuple):
            return list(obj)
        if isinstance(obj, str) and "://" in obj:
            return mask_url(obj)  # storage.url, storage.redis_url and any other URL: passwords masked
        return obj
    out: dict[str, Any] = render(s)
    out["alerts"]["webhook_url"] = out["alerts"]["webhook_url"].split("?", 1)[0]  # a query may hold a key
    return out


_SECTION_CLASSES: dict[str, type] = {
    f.name: f.default_factory for f in dataclasses.fields(Settings)  # type: ignore[misc]
    if f.default_factory is not dataclasses.MISSING
}
_SECTIONS: dict[str, dict[str, dataclasses.Field[Any]]] = {
    name: {f.name: f for f in dataclasses.fields(cls)} for name, cls in _SECTION_CLASSES.items()
}
_TOP: dict[str, dataclasses.Field[Any]] = {
    f.name: f for f in dataclasses.fields(Settings) if f.name not in _SECTION_CLASSES
}
_HINTS: dict[int, Any] = {}
for _cls in (Settings, *_SECTION_CLASSES.values()):
    _hints = get_type_hints(_cls)
    for _f in dataclasses.fields(_cls):
        _HINTS[id(_f)] = _hints[_f.name]
_SECRET_FIELDS: list[tuple[str | None, str, str]] = [
    (None if cls is Settings else name, f.name, f.metadata["secret"])
    for name, cls in [("", Settings), *_SECTION_CLASSES.items()]
    for f in dataclasses.fields(cls) if "secret" in f.metadata
]
