"""The strategy actor: history vs live candles, feed staleness, sessions, sizing, square-off, the bus path."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from actors.clock import SystemClock, VirtualClock
from actors.instruments import InstrumentBook
from actors.market_data.messages import candle_message
from actors.signals.assembly import assemble_signals, stored_chains
from actors.signals.messages import CandlesClosed, Drain, FeedStatusChanged, RecordingSink
from actors.signals.strategy import StrategyActor, StrategyOptions
from actors.wiring import Infrastructure
from config.settings import Settings
from core.instruments import Instrument, InstrumentIndex
from core.market import Candle
from core.orders import Side
from core.signals import EntrySignalRaised, ExitSignalRaised, position_direction
from storage.bus import InProcessBus
from storage.opening import open_storage
from supervision.scheduler import Scheduler
from supervision.supervisor import start_root
from telemetry.logs import configure_logging
from tests.support.series import SESSION_OPEN, UP, WARM, replay_settings, trend_ticks

MINUTE = 60


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    configure_logging("WARNING")


def candles_of(ticks: list[tuple[float, str, float]]) -> list[Candle]:
    bars: dict[int, list[float]] = {}
    for ts, _, price in ticks:
        bar = bars.setdefault(int(ts // MINUTE) * MINUTE, [price, price, price, price])
        bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
    return [Candle("NIFTY", ts, *bar) for ts, bar in sorted(bars.items())]


TREND = candles_of(trend_ticks())
ENTRY_MINUTE = 46  # where the constructed series first scores an entry (see test_replay)
RECORDS: dict[int, list[dict[str, Any]]] = {}


class Chains:
    def __init__(self, chain: Mapping[str, Any] | None) -> None:
        self.chain = chain

    def option_chain(self, symbol: str) -> Mapping[str, Any] | None:
        return self.chain


def master(*contracts: tuple[str, int]) -> InstrumentBook:
    """An instrument master holding these (security id, lot size) NIFTY 24000/24050 options."""
    rows = [Instrument("IDX_I", "13", "INDEX", "NIFTY", "NIFTY", 1, 0.01)]
    for n, (security_id, lot) in enumerate(contracts):
        rows.append(Instrument("NSE_FNO", security_id, "OPTIDX", f"NIFTY-Dec2026-{24000 + 50 * n}-CE", "NIFTY", lot,
                               0.05, "2026-12-29", 24000.0 + 50 * n, "CE", "M"))
    return InstrumentBook(InstrumentIndex(rows), source="test", loaded_at=1.0)


def start(settings: Settings | None = None, market: Any = None,
          positions: Any = None, instruments: InstrumentBook | None = None) -> tuple[Any, RecordingSink, StrategyOptions]:
    settings = settings or replay_settings(strategy={"entry_max_candle_age_seconds": 0})
    recorder = RecordingSink()
    records: list[dict[str, Any]] = []
    parts = StrategyOptions(signal_listeners=(records.append,))
    RECORDS[id(parts)] = records
    ref = StrategyActor.start(None, settings, recorder, market, VirtualClock(), Scheduler.shared(), parts,
                              None, positions, None, instruments)
    return ref, recorder, parts


def records_of(parts: StrategyOptions) -> list[dict[str, Any]]:
    """What the strategy's signal listener saw (ENTRY_SIGNAL, EXIT_SIGNAL, ENTRY_SKIPPED records)."""
    return RECORDS[id(parts)]


def test_history_is_scored_but_never_traded() -> None:
    ref, recorder, parts = start()
    ref.tell(CandlesClosed("NIFTY", tuple(TREND), history=True))
    status = ref.ask(Drain())
    assert recorder.signals == [] and status["history"] == len(TREND) and status["warm"] == ["NIFTY"]
    ref.tell(CandlesClosed("NIFTY", tuple(TREND[:10])))  # older than the history: dropped, not re-scored
    assert ref.ask(Drain())["duplicates"] == 10


def test_no_entry_while_the_feed_is_stale_and_entries_resume_after() -> None:
    ref, recorder, parts = start()
    ref.tell(FeedStatusChanged("FEED_STALE", "NIFTY", 0.0))
    ref.tell(CandlesClosed("NIFTY", tuple(TREND[:ENTRY_MINUTE + 3])))
    ref.ask(Drain())
    assert recorder.signals == []
    assert {r["reason"] for r in records_of(parts) if r["kind"] == "ENTRY_SKIPPED"} == {"feed stale"}
    ref.tell(FeedStatusChanged("FEED_RESUMED", "NIFTY", 0.0))
    ref.tell(CandlesClosed("NIFTY", tuple(TREND[ENTRY_MINUTE + 3:ENTRY_MINUTE + 5])))
    ref.ask(Drain())
    assert [type(s) for s in recorder.signals] == [EntrySignalRaised]
    assert recorder.signals[0].candle_ts == TREND[ENTRY_MINUTE + 3].ts


def test_an_index_entry_buys_the_atm_option_sized_within_the_capital() -> None:
    chain = {"data": {"last_price": 24020.0, "oc": {
        "24000.000000": {"ce": {"security_id": 49081, "last_price": 120.5}, "pe": {"security_id": 49082}},
        "24050.000000": {"ce": {"security_id": 49091, "last_price": 95.0}}}}}
    settings = replay_settings(strategy={"entry_max_candle_age_seconds": 0}, risk={"capital": 10_000})
    # a master of the days NIFTY's lot was 75
    ref, recorder, parts = start(settings, Chains(chain), instruments=master(("49081", 75), ("49091", 75)))
    ref.tell(CandlesClosed("NIFTY", tuple(TREND[:ENTRY_MINUTE + 1])))
    ref.ask(Drain())
    [entry] = recorder.signals
    assert isinstance(entry, EntrySignalRaised)
    assert entry.instrument == "SEC_49081" and entry.option_type == "CE" and entry.strike == 24000.0
    assert entry.side.value == "BUY" and entry.price == 120.5
    # the score's tier asks for 2 lots (150 units = 18,075 rupees): the capital allows one lot
    assert entry.score.entry_score >= 0.75 and entry.qty == 75 and entry.lots == 1


def test_the_quantity_is_lots_times_the_masters_lot_of_the_picked_contract_and_an_unknown_one_is_skipped() -> None:
    chain = {"data": {"last_price": 24020.0, "oc": {
        "24000.000000": {"ce": {"security_id": 49081, "last_price": 120.5}},
        "24050.000000": {"ce": {"security_id": 49091, "last_price": 95.0}}}}}
    settings = replay_settings(strategy={"entry_max_candle_age_seconds": 0, "lots_per_underlying": {"NIFTY": 2}})
    ref, recorder, parts = start(settings, Chains(chain), instruments=master(("49081", 65), ("49091", 65)))
    ref.tell(CandlesClosed("NIFTY", tuple(TREND[:ENTRY_MINUTE + 1])))
    ref.ask(Drain())
    [entry] = recorder.signals
    assert isinstance(entry, EntrySignalRaised) and entry.instrument == "SEC_49081"
    tier = 2 if entry.score.entry_score >= 0.75 else 1
    assert entry.lots == tier * 2 and entry.qty == entry.lots * 65

    ref, recorder, parts = start(settings, Chains(chain), instruments=master(("49091", 65)))  # 49081 unknown
    ref.tell(CandlesClosed("NIFTY", tuple(TREND[:ENTRY_MINUTE + 1])))
    ref.ask(Drain())
    assert recorder.signals == []
    skipped = [r["reason"] for r in records_of(parts) if r["kind"] == "ENTRY_SKIPPED"]
    assert skipped and skipped[0] == "lot size of SEC_49081 unknown: not in the instrument master nor execution.lot_sizes"


def test_the_reversal_exits_and_square_off_closes_what_is_left_in_candle_time() -> None:
    ref, recorder, parts = start()
    ref.tell(CandlesClosed("NIFTY", tuple(TREND)))
    ref.ask(Drain())
    entry, exit_ = recorder.signals[:2]
    assert isinstance(entry, EntrySignalRaised) and entry.direction == 1
    assert isinstance(exit_, ExitSignalRaised) and exit_.pos_id == entry.pos_id and exit_.reason == "EXIT_SCORE"
    assert WARM + UP <= (exit_.score.ts - SESSION_OPEN) // MINUTE

    square_off = replay_settings(strategy={"entry_max_candle_age_seconds": 0}, risk={"square_off_time": "10:20"})
    ref, recorder, parts = start(square_off)
    ref.tell(CandlesClosed("NIFTY", tuple(TREND)))
    ref.ask(Drain())
    entry, exit_ = recorder.signals
    assert exit_.reason == "SQUARE_OFF" and exit_.pos_id == entry.pos_id
    assert exit_.at == SESSION_OPEN + 65 * MINUTE  # the close of the first candle at/after 10:20 IST
    later = [r for r in records_of(parts) if r["kind"] == "ENTRY_SKIPPED"]
    assert later and all(r["reason"].startswith("at or after square-off") for r in later)


def test_a_restarted_strategy_adopts_the_traders_open_positions() -> None:
    held = {"NIFTY-2611201001-1": ("NIFTY", 1)}
    ref, recorder, parts = start(positions=lambda: dict(held))
    ref.tell(CandlesClosed("NIFTY", tuple(TREND[:WARM + UP]), history=True))
    ref.tell(CandlesClosed("NIFTY", tuple(TREND[WARM + UP:])))
    ref.ask(Drain())
    exits = [s for s in recorder.signals if isinstance(s, ExitSignalRaised)]
    assert exits and exits[0].pos_id == "NIFTY-2611201001-1"


def test_the_underlying_and_direction_of_a_trade() -> None:
    symbols = frozenset({"NIFTY", "BANKNIFTY"})
    assert position_direction("SEC_49082", "NIFTY 24000 PE", Side.BUY, symbols) == ("NIFTY", -1)
    assert position_direction("SEC_49081", "NIFTY 2026-11-27 24500 CE", Side.BUY, symbols) == ("NIFTY", 1)
    assert position_direction("BANKNIFTY", "BANKNIFTY", Side.SELL, symbols) == ("BANKNIFTY", -1)
    # selling an option is a position against its direction
    assert position_direction("SEC_49081", "NIFTY 24500 CE", Side.SELL, symbols) == ("NIFTY", -1)
    assert position_direction("SEC_49082", "NIFTY 24000 PE", Side.SELL, symbols) == ("NIFTY", 1)


def test_candles_published_before_the_strategy_runs_are_not_lost(tmp_path: Path) -> None:
    settings = replay_settings(strategy={"entry_max_candle_age_seconds": 0})
    storage = open_storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    storage.migrate()
    bus = InProcessBus()
    ready = threading.Event()
    ready.set()
    recorder = RecordingSink()
    infra = Infrastructure(settings, "all", storage, bus, SystemClock(), Scheduler.shared(), ready)
    handles = assemble_signals(infra, recorder, chains=stored_chains(storage, infra.clock))
    part = handles.subtree
    bus.publish("feed:status", b'{"event": "FEED_STALE", "symbol": "NIFTY", "at": 0}')
    for candle in TREND[:ENTRY_MINUTE + 1]:  # the MDS publishes while the tree is still starting
        bus.publish("candles:NIFTY", candle_message(candle))
    bus.publish("candles:NIFTY", candle_message(TREND[3], revised=True))  # a revision: ignored
    bus.publish("feed:status", b'{"event": "FEED_RESUMED", "symbol": "NIFTY", "at": 0}')
    bus.publish("candles:NIFTY", candle_message(TREND[ENTRY_MINUTE + 1]))
    tree = infra.supervisor("root")
    tree.add(part.spec)
    root = start_root(tree, lambda reason: None, **infra.supervisor_options())
    try:
        assert recorder.wait_for(lambda signals: len(signals) == 1, timeout=5)
        # every candle arrived, in order; none was traded on while the feed was stale
        assert recorder.signals[0].candle_ts == TREND[ENTRY_MINUTE + 1].ts
        assert handles.options.stats["candles"] == ENTRY_MINUTE + 2
    finally:
        for hook in part.before_stop:
            hook()
        assert root.owner is not None
        root.owner.ref.stop(block=True, timeout=5)  # type: ignore[union-attr]
        storage.close()
