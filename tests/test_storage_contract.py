"""One contract for every storage backend: the same specs run against SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from core.instruments import Instrument
from core.market import Candle
from storage.errors import JournalConflict, StorageConflict, StorageError
from storage.locks import advisory_key
from storage.opening import open_storage
from storage.records import JournalEntry, LeaseClaim, OrderRecord, TradeLease, TradeRecord
from storage.repositories import Storage
from storage.schema import load_migrations
from storage.sql import decode_json

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_763_610_300  # 2025-11-20 09:15 IST, a bucket start
ALL_VERSIONS = [1, 2, 3]  # storage/migrations/<backend>/000N_*.sql, the same versions for both backends


def candle(ts: int, close: float = 100.0, revision: int = 0, symbol: str = "NIFTY", **extra: float) -> Candle:
    return Candle(symbol, ts, close - 1, close + 2, close - 3, close, volume=int(extra.get("volume", 10)),
                  ticks=int(extra.get("ticks", 4)), revision=revision,
                  first_tick_ts=extra.get("first_tick_ts", ts + 0.25),
                  last_tick_ts=extra.get("last_tick_ts", ts + 59.5))


def trade(pos_id: str = "P1", state: str = "ENTRY_PENDING", day: str = "2025-11-20", created_at: float = 1000.0,
          **changes: object) -> TradeRecord:
    record = TradeRecord(
        pos_id=pos_id, symbol="NIFTY", instrument="NIFTY 20NOV 26000 CE", side="BUY", qty=75, filled_qty=0,
        entry_price=None, entry_time=None, exit_price=None, exit_time=None, fees=0.0, realized_pnl=None,
        state=state, opened_day=day, detail={"score": 0.8, "tags": ["mtf", "trend"]}, created_at=created_at,
        updated_at=created_at,
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def order(correlation_id: str = "C1", pos_id: str = "P1", **changes: object) -> OrderRecord:
    record = OrderRecord(correlation_id=correlation_id, pos_id=pos_id, leg="ENTRY", broker_order_id=None,
                         status="PENDING", qty=75, filled_qty=0, avg_price=None, expected_price=101.5,
                         created_at=2000.0, updated_at=2000.0)
    return replace(record, **changes)  # type: ignore[arg-type]


def instrument(security_id: str, underlying: str = "NIFTY", expiry: str = "2026-12-29", strike: float = 24000.0,
               option_type: str = "CE", **changes: object) -> Instrument:
    month = {"2026-12-29": "Dec2026", "2026-12-22": "Dec2026W", "2027-01-26": "Jan2027"}.get(expiry, expiry)
    record = Instrument(segment="NSE_FNO", security_id=security_id, instrument="OPTIDX",
                        trading_symbol=f"{underlying}-{month}-{strike:g}-{option_type}", underlying=underlying,
                        lot_size=65, tick_size=0.05, expiry=expiry, strike=strike, option_type=option_type,
                        expiry_flag="M")
    return replace(record, **changes)  # type: ignore[arg-type]


NIFTY_INDEX = Instrument("IDX_I", "13", "INDEX", "NIFTY", "NIFTY", 1, 0.05)
NIFTY_FUTURE = Instrument("NSE_FNO", "52000", "FUTIDX", "NIFTY-Dec2026-FUT", "NIFTY", 65, 0.1, "2026-12-29",
                          expiry_flag="M")
SENSEX_INDEX = Instrument("IDX_I", "51", "INDEX", "SENSEX", "SENSEX", 1, 0.05)
SENSEX_SAME_NAME = Instrument("BSE_FNO", "51", "INDEX", "SENSEX", "SENSEX", 1, 0.05)
MASTER = [
    NIFTY_INDEX, NIFTY_FUTURE, SENSEX_INDEX, SENSEX_SAME_NAME,
    instrument("40001", strike=24100.0, option_type="PE"),
    instrument("40002", strike=24000.0, option_type="PE"),
    instrument("40003", strike=24000.0, option_type="CE"),
    instrument("40004", expiry="2026-12-22", strike=24050.5, expiry_flag="W"),
    instrument("40005", expiry="2027-01-26", strike=23000.0),
    instrument("50001", underlying="BANKNIFTY", strike=52000.0, lot_size=30, tick_size=0.1),
]

# Numbers that must come back as they went in: a price of 1e20 (JSONB writes it as an integer literal
# beyond 64 bits), an integral float, a quantity, a negative fraction.
NUMBERS = {"huge": 1e20, "round": 100.0, "qty": 75, "neg": -0.5,
           "nested": [1e20, {"round": 100.0, "qty": 75}], "text": "12345678901234567890123"}


def assert_numbers_kept(value: dict[str, object]) -> None:
    assert value == NUMBERS
    nested = value["nested"]
    assert isinstance(nested, list)
    types = [type(value["huge"]), type(value["round"]), type(value["qty"]), type(value["neg"]),
             type(nested[0]), type(nested[1]["round"]), type(nested[1]["qty"])]
    assert types == [float, float, int, float, float, float, int]
    assert orjson.loads(orjson.dumps(value)) == NUMBERS  # every value encodes again


def run_in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Start `count` calls at the same moment (a barrier) and return their results."""
    barrier = threading.Barrier(count)

    def task(index: int) -> object:
        barrier.wait(timeout=10)
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(task, range(count)))


class StorageContract:
    """The specs; subclasses provide `storage_url` (a fresh, empty database)."""

    backend: str

    @pytest.fixture
    def storage(self, storage_url: str) -> Iterator[Storage]:
        storage = open_storage(storage_url)
        storage.migrate()
        try:
            yield storage
        finally:
            storage.close()

    # --- lifecycle -------------------------------------------------------------------------------------

    def test_open_storage_picks_the_backend_from_the_url(self, storage: Storage) -> None:
        assert storage.backend == self.backend
        storage.ping()

    def test_migrate_is_idempotent(self, storage_url: str) -> None:
        with open_storage(storage_url) as storage:
            assert storage.migrate() == ALL_VERSIONS
            assert storage.migrate() == []
        with open_storage(storage_url) as again:
            assert again.migrate() == []
            again.bot_state.put("k", {"v": 1}, 1.0)
            assert again.bot_state.get("k") == {"v": 1}

    def test_a_database_at_version_1_is_upgraded_and_keeps_its_rows(
            self, storage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        import storage.sql

        first_only = lambda backend: load_migrations(backend)[:1]  # noqa: E731
        monkeypatch.setattr(storage.sql, "load_migrations", first_only)
        with open_storage(storage_url) as old:
            assert old.migrate() == [1]
            old.trades.upsert_trade(trade("P1", "POSITION_OPEN"))
        monkeypatch.undo()
        with open_storage(storage_url) as upgraded:
            assert upgraded.migrate() == ALL_VERSIONS[1:]
            assert upgraded.trades.get_trade("P1") == trade("P1", "POSITION_OPEN")
            assert upgraded.leases.adoptable("proc-A", now=1.0, ttl=10.0) == ["P1"]

    def test_two_storages_migrating_at_once_apply_each_version_once(self, storage_url: str) -> None:
        storages = [open_storage(storage_url) for _ in range(3)]
        try:
            applied = run_in_threads(3, lambda index: storages[index].migrate())
        finally:
            for storage in storages:
                storage.close()
        assert sorted(applied, key=len) == [[], [], ALL_VERSIONS]

    def test_calls_after_close_raise_storage_error(self, storage_url: str) -> None:
        storage = open_storage(storage_url)
        storage.migrate()
        storage.close()
        with pytest.raises(StorageError):
            storage.candles.last_ts("NIFTY")
        with pytest.raises(StorageError), storage.placement_lock("P1"):
            pass

    # --- candles ---------------------------------------------------------------------------------------

    def test_upserted_candles_come_back_oldest_first_with_every_field(self, storage: Storage) -> None:
        candles = [candle(T0 + 60 * i, close=100 + i) for i in range(5)]
        assert storage.candles.upsert_many(list(reversed(candles))) == 5
        assert storage.candles.latest("NIFTY", 3) == candles[2:]
        assert storage.candles.latest("NIFTY", 100) == candles

    def test_candle_upsert_is_idempotent(self, storage: Storage) -> None:
        candles = [candle(T0 + 60 * i) for i in range(3)]
        storage.candles.upsert_many(candles)
        storage.candles.upsert_many(candles)
        assert storage.candles.latest("NIFTY", 10) == candles

    def test_a_higher_revision_replaces_a_candle_and_a_lower_one_is_ignored(self, storage: Storage) -> None:
        storage.candles.upsert_many([candle(T0, close=100, revision=1)])
        assert storage.candles.upsert_many([candle(T0, close=90, revision=0)]) == 0
        assert storage.candles.latest("NIFTY", 1)[0].close == 100
        assert storage.candles.upsert_many([candle(T0, close=105, revision=2)]) == 1
        assert storage.candles.latest("NIFTY", 1)[0] == candle(T0, close=105, revision=2)

    def test_an_equal_revision_replaces_the_candle(self, storage: Storage) -> None:
        storage.candles.upsert_many([candle(T0, close=100, revision=1)])
        assert storage.candles.upsert_many([candle(T0, close=101, revision=1)]) == 1
        assert storage.candles.latest("NIFTY", 1)[0].close == 101

    def test_a_batch_holding_two_versions_of_a_candle_keeps_the_newest_revision(self, storage: Storage) -> None:
        storage.candles.upsert_many([candle(T0, close=101, revision=1), candle(T0, close=100, revision=0),
                                     candle(T0 + 60, close=7)])
        assert [c.close for c in storage.candles.latest("NIFTY", 5)] == [101, 7]

    def test_between_includes_the_start_and_excludes_the_end(self, storage: Storage) -> None:
        storage.candles.upsert_many([candle(T0 + 60 * i) for i in range(6)])
        got = storage.candles.between("NIFTY", T0 + 60, T0 + 240)
        assert [c.ts for c in got] == [T0 + 60, T0 + 120, T0 + 180]
        assert storage.candles.between("NIFTY", T0 + 600, T0 + 900) == []

    def test_last_ts_and_symbols(self, storage: Storage) -> None:
        assert storage.candles.last_ts("NIFTY") is None
        assert storage.candles.symbols() == []
        storage.candles.upsert_many([candle(T0), candle(T0 + 120), candle(T0, symbol="SEC_49081"),
                                     candle(T0 + 60, symbol="BANKNIFTY")])
        assert storage.candles.last_ts("NIFTY") == T0 + 120
        assert storage.candles.symbols() == ["BANKNIFTY", "NIFTY", "SEC_49081"]

    def test_unknown_tick_times_round_trip_as_zero(self, storage: Storage) -> None:
        bare = Candle("NIFTY", T0, 1.0, 2.0, 0.5, 1.5)
        storage.candles.upsert_many([bare])
        assert storage.candles.latest("NIFTY", 1) == [bare]

    def test_a_batch_of_a_thousand_candles_is_stored_whole(self, storage: Storage) -> None:
        candles = [candle(T0 + 60 * i, close=100 + i * 0.05) for i in range(1000)]
        assert storage.candles.upsert_many(candles) == 1000
        assert storage.candles.latest("NIFTY", 1000) == candles
        assert storage.candles.upsert_many([]) == 0

    def test_only_one_minute_candles_are_accepted(self, storage: Storage) -> None:
        with pytest.raises(ValueError):
            storage.candles.upsert_many([replace(candle(T0), timeframe=300)])

    # --- option chains ---------------------------------------------------------------------------------

    def test_option_chain_round_trips_its_payload(self, storage: Storage) -> None:
        payload = {"last_price": 26012.5, "oc": {"26000.000000": {"ce": {"ltp": 120.5, "oi": 1200}}}, "n": None}
        storage.option_chains.upsert("NIFTY", "2025-11-25", payload, 1000.5)
        record = storage.option_chains.latest("NIFTY", "2025-11-25")
        assert record is not None
        assert (record.idx, record.expiry, record.payload, record.updated_at) == (
            "NIFTY", "2025-11-25", payload, 1000.5)
        assert storage.option_chains.latest("NIFTY", "2025-12-02") is None
        assert storage.option_chains.latest("BANKNIFTY") is None

    def test_an_older_option_chain_does_not_overwrite_a_newer_one(self, storage: Storage) -> None:
        storage.option_chains.upsert("NIFTY", "2025-11-25", {"v": 2}, 2000.0)
        storage.option_chains.upsert("NIFTY", "2025-11-25", {"v": 1}, 1000.0)
        assert storage.option_chains.latest("NIFTY", "2025-11-25").payload == {"v": 2}  # type: ignore[union-attr]
        storage.option_chains.upsert("NIFTY", "2025-11-25", {"v": 3}, 3000.0)
        assert storage.option_chains.latest("NIFTY", "2025-11-25").payload == {"v": 3}  # type: ignore[union-attr]

    def test_latest_option_chain_without_expiry(self, storage: Storage) -> None:
        storage.option_chains.upsert("NIFTY", "2025-11-18", {"e": "18"}, 3000.0)
        storage.option_chains.upsert("NIFTY", "2025-12-02", {"e": "02"}, 2000.0)
        storage.option_chains.upsert("NIFTY", "2025-11-25", {"e": "25"}, 1000.0)
        storage.option_chains.upsert("BANKNIFTY", "2025-11-25", {"e": "bn"}, 9000.0)
        nearest = storage.option_chains.latest("NIFTY", today="2025-11-20")
        assert nearest is not None and nearest.expiry == "2025-11-25"
        on_expiry_day = storage.option_chains.latest("NIFTY", today="2025-11-25")
        assert on_expiry_day is not None and on_expiry_day.expiry == "2025-11-25"
        assert storage.option_chains.latest("NIFTY", today="2025-12-03") is None
        freshest = storage.option_chains.latest("NIFTY")
        assert freshest is not None and freshest.expiry == "2025-11-18"
        assert storage.option_chains.expiries("NIFTY") == ["2025-11-18", "2025-11-25", "2025-12-02"]
        assert storage.option_chains.expiries("FINNIFTY") == []

    def test_a_malformed_expiry_is_refused(self, storage: Storage) -> None:
        with pytest.raises(ValueError):
            storage.option_chains.upsert("NIFTY", "25-11-2025", {}, 1.0)

    # --- trades ----------------------------------------------------------------------------------------

    def test_trade_round_trips_and_an_update_keeps_created_at(self, storage: Storage) -> None:
        assert storage.trades.get_trade("P1") is None
        opened = trade()
        storage.trades.upsert_trade(opened)
        assert storage.trades.get_trade("P1") == opened
        filled = replace(opened, state="POSITION_OPEN", filled_qty=75, entry_price=120.25, entry_time=1500.125,
                         fees=20.5, detail={"fill": {"avg": 120.25}}, created_at=9999.0, updated_at=1500.5)
        storage.trades.upsert_trade(filled)
        assert storage.trades.get_trade("P1") == replace(filled, created_at=1000.0)
        closed = replace(filled, state="CLOSED", exit_price=130.0, exit_time=1800.0, realized_pnl=711.25)
        storage.trades.upsert_trade(closed)
        assert storage.trades.get_trade("P1") == replace(closed, created_at=1000.0)

    def test_list_trades_filters_by_state_and_day(self, storage: Storage) -> None:
        storage.trades.upsert_trade(trade("P1", "CLOSED", "2025-11-19", created_at=1.0))
        storage.trades.upsert_trade(trade("P2", "POSITION_OPEN", "2025-11-20", created_at=2.0))
        storage.trades.upsert_trade(trade("P3", "CLOSED", "2025-11-20", created_at=3.0))
        pos_ids = lambda trades: [t.pos_id for t in trades]  # noqa: E731
        assert pos_ids(storage.trades.list_trades()) == ["P1", "P2", "P3"]
        assert pos_ids(storage.trades.list_trades(state="CLOSED")) == ["P1", "P3"]
        assert pos_ids(storage.trades.list_trades(day="2025-11-20")) == ["P2", "P3"]
        assert pos_ids(storage.trades.list_trades(state="CLOSED", day="2025-11-20")) == ["P3"]
        assert storage.trades.list_trades(state="EXIT_PENDING") == []

    def test_open_pos_ids_leave_out_terminal_states(self, storage: Storage) -> None:
        states = ["ENTRY_PENDING", "CLOSED", "POSITION_OPEN", "REJECTED", "EXIT_PENDING", "CANCELLED"]
        for index, state in enumerate(states):
            storage.trades.upsert_trade(trade(f"P{index}", state, created_at=float(index)))
        assert storage.trades.open_pos_ids() == ["P0", "P2", "P4"]

    def test_journal_events_get_consecutive_seq_per_position(self, storage: Storage) -> None:
        [first] = storage.trades.append_events("P1", 0, [("ENTRY_SIGNAL", None, "SIGNAL_GENERATED", {"score": 0.9},
                                                          10.5)])
        [second] = storage.trades.append_events("P1", 1, [("ORDER_PLACED", "ENTRY_PENDING", "ORDER_PLACED", {}, 11.0)])
        [other] = storage.trades.append_events("P2", 0, [("ENTRY_SIGNAL", None, "SIGNAL_GENERATED", {}, 12.0)])
        assert (first.seq, second.seq, other.seq) == (1, 2, 1)
        assert first.payload == {"score": 0.9} and first.at == 10.5 and first.from_state is None
        assert storage.trades.events("P1") == [first, second]
        assert storage.trades.events("P3") == []

    def test_concurrent_appends_from_threads_get_unique_consecutive_seqs(self, storage: Storage) -> None:
        per_thread = 15

        def append(index: int, n: int) -> None:
            """A writer that lost a race reads the journal's length again and retries: nothing is lost."""
            while True:
                length = len(storage.trades.events("P1"))
                try:
                    storage.trades.append_events("P1", length, [("TICK", None, None, {"thread": index, "n": n},
                                                                 float(n))])
                    return
                except JournalConflict:
                    continue

        run_in_threads(8, lambda index: [append(index, n) for n in range(per_thread)])
        events = storage.trades.events("P1")
        assert [e.seq for e in events] == list(range(1, 8 * per_thread + 1))
        for index in range(8):  # each thread's own appends stay in its order
            mine = [e.payload["n"] for e in events if e.payload["thread"] == index]
            assert mine == list(range(per_thread))

    def test_record_order_upserts_by_correlation_id(self, storage: Storage) -> None:
        assert storage.trades.order("C1") is None
        storage.trades.record_order(order("C1"))
        storage.trades.record_order(order("C2", leg="EXIT", created_at=2100.0, updated_at=2100.0))
        storage.trades.record_order(order("C9", pos_id="P9"))
        placed = order("C1", broker_order_id="DH-1", status="PLACED", updated_at=2001.0)
        storage.trades.record_order(placed)
        filled = order("C1", status="FILLED", filled_qty=75, avg_price=101.75, created_at=5000.0, updated_at=2002.0)
        storage.trades.record_order(filled)
        # the first created_at is kept, and a later update without the broker id does not erase it
        assert storage.trades.order("C1") == replace(filled, broker_order_id="DH-1", created_at=2000.0)
        assert [o.correlation_id for o in storage.trades.orders("P1")] == ["C1", "C2"]
        assert storage.trades.orders("P0") == []

    def test_an_order_intent_can_be_claimed_once(self, storage: Storage) -> None:
        assert storage.trades.claim_intent("P1", "ENTRY", "C1", 1.0) is True
        assert storage.trades.claim_intent("P1", "ENTRY", "C1", 2.0) is False
        assert storage.trades.claim_intent("P1", "EXIT", "C2", 3.0) is True

    def test_concurrent_claims_of_one_intent_let_exactly_one_win(self, storage: Storage) -> None:
        results = run_in_threads(8, lambda index: storage.trades.claim_intent("P1", "ENTRY", "C-race", 1.0))
        assert results.count(True) == 1

    # --- bot state -------------------------------------------------------------------------------------

    def test_bot_state_put_get_and_overwrite(self, storage: Storage) -> None:
        assert storage.bot_state.get("risk") is None
        storage.bot_state.put("risk", {"trading_enabled": True, "losses": 0}, 1.0)
        storage.bot_state.put("risk", {"trading_enabled": False, "losses": 3, "day": "2025-11-20"}, 2.0)
        assert storage.bot_state.get("risk") == {"trading_enabled": False, "losses": 3, "day": "2025-11-20"}

    # --- checked journal appends ----------------------------------------------------------------------

    def test_checked_appends_number_events_from_the_expected_seq(self, storage: Storage) -> None:
        first = storage.trades.append_events("P1", 0, [
            JournalEntry("SIGNAL_ACCEPTED", "NEW", "SIGNAL_GENERATED", {"score": 0.9}, 10.5),
            ("ENTRY_REQUESTED", "SIGNAL_GENERATED", "ENTRY_PENDING", {"limit": 101.5}, 10.75),
        ])
        assert [(e.pos_id, e.seq, e.event, e.from_state, e.to_state, e.payload, e.at) for e in first] == [
            ("P1", 1, "SIGNAL_ACCEPTED", "NEW", "SIGNAL_GENERATED", {"score": 0.9}, 10.5),
            ("P1", 2, "ENTRY_REQUESTED", "SIGNAL_GENERATED", "ENTRY_PENDING", {"limit": 101.5}, 10.75)]
        third = storage.trades.append_events("P1", 2, [("ORDER_PLACED", None, None, {}, 11.0)])
        assert [e.seq for e in third] == [3]
        assert storage.trades.events("P1") == first + third
        assert storage.trades.append_events("P1", 3, []) == []  # only checks the length
        assert [e.seq for e in storage.trades.append_events("P2", 0, [("A", None, None, {}, 1.0)])] == [1]

    def test_a_stale_expected_seq_conflicts_and_writes_nothing(self, storage: Storage) -> None:
        storage.trades.append_events("P1", 0, [("A", None, None, {}, 1.0), ("B", None, None, {}, 2.0)])
        for stale in (0, 1):
            with pytest.raises(JournalConflict) as caught:
                storage.trades.append_events("P1", stale, [("LATE", None, None, {}, 3.0), ("LATER", None, None, {}, 4.0)])
            assert (caught.value.pos_id, caught.value.expected_seq) == ("P1", stale)
        with pytest.raises(JournalConflict):
            storage.trades.append_events("P1", 1, [])
        assert [e.event for e in storage.trades.events("P1")] == ["A", "B"]

    def test_an_expected_seq_beyond_the_journal_conflicts_instead_of_leaving_a_gap(self, storage: Storage) -> None:
        storage.trades.append_events("P1", 0, [("A", None, None, {}, 1.0)])
        with pytest.raises(JournalConflict):
            storage.trades.append_events("P1", 3, [("GAP", None, None, {}, 2.0)])
        with pytest.raises(JournalConflict):
            storage.trades.append_events("P-new", 1, [("GAP", None, None, {}, 2.0)])
        assert [e.seq for e in storage.trades.events("P1")] == [1]
        assert storage.trades.events("P-new") == []
        assert isinstance(JournalConflict("P1", 0), StorageConflict)  # callers that know only conflicts

    def test_a_trade_step_writes_the_journal_and_its_rows_together_or_not_at_all(self, storage: Storage) -> None:
        step = [("SignalAccepted", "NEW", "SIGNAL_GENERATED", {}, 1.0),
                ("EntryRequested", "SIGNAL_GENERATED", "ENTRY_PENDING", {"limit_price": 101.5}, 1.0)]
        records = storage.trades.record_step("P1", 0, step, trade("P1", "ENTRY_PENDING"))
        assert [r.seq for r in records] == [1, 2] and storage.trades.get_trade("P1").state == "ENTRY_PENDING"
        placed = order("P1-E", status="PENDING", broker_order_id="B1")
        storage.trades.record_step("P1", 2, [("OrderPlaced", "ENTRY_PENDING", "ORDER_PLACED", {}, 2.0)],
                                   trade("P1", "ORDER_PLACED"), placed)
        assert storage.trades.order("P1-E") == placed and storage.trades.get_trade("P1").state == "ORDER_PLACED"
        with pytest.raises(JournalConflict):  # another writer's step: nothing of it is written
            storage.trades.record_step("P1", 2, [("OrderFilled", "ORDER_PLACED", "POSITION_OPEN", {}, 3.0)],
                                       trade("P1", "POSITION_OPEN"), order("P1-E", status="TRADED"))
        assert storage.trades.get_trade("P1").state == "ORDER_PLACED"
        assert storage.trades.order("P1-E").status == "PENDING" and len(storage.trades.events("P1")) == 3

    def test_a_placement_claims_its_intent_under_the_lock_once(self, storage: Storage) -> None:
        submitting = order("P1-E", status="SUBMITTING")
        with storage.placement_lock("P1", 2.0, submitting) as claimed:
            assert claimed
        assert storage.trades.order("P1-E") == submitting  # committed with the lock's release
        with storage.placement_lock("P1", 2.0, order("P1-E", status="SUBMITTING", qty=1)) as again:
            assert not again
        assert storage.trades.order("P1-E").qty == 75  # a refused claim leaves the row alone
        with storage.placement_lock("P1", 2.0) as plain:
            assert plain
        with pytest.raises(RuntimeError), storage.placement_lock("P2", 2.0, order("P2-E", pos_id="P2")):
            raise RuntimeError("the broker call failed in an unexpected way")
        if storage.backend == "postgresql":  # rolled back with the lock: a later placement may claim it
            assert storage.trades.order("P2-E") is None
            assert storage.trades.claim_intent("P2", "ENTRY", "P2-E", 3.0)

    def test_writers_racing_for_the_same_expected_seq_let_exactly_one_win(self, storage: Storage) -> None:
        writers = 4
        for round_ in range(10):
            pos_id = f"RACE-{round_}"
            storage.trades.append_events(pos_id, 0, [("START", None, None, {}, 0.0)])

            def append(index: int, pos_id: str = pos_id) -> object:
                try:
                    return storage.trades.append_events(pos_id, 1, [
                        ("FILL", None, None, {"writer": index}, 1.0), ("MORE", None, None, {"writer": index}, 2.0)])
                except JournalConflict:
                    return None

            results = run_in_threads(writers, append)
            winners = [index for index, result in enumerate(results) if result is not None]
            assert len(winners) == 1, results
            journal = storage.trades.events(pos_id)
            assert [e.seq for e in journal] == [1, 2, 3]
            assert [e.payload.get("writer") for e in journal[1:]] == [winners[0], winners[0]]

    def test_checked_appends_join_a_transaction(self, storage: Storage) -> None:
        with storage.transaction():
            assert storage.trades.claim_intent("TX3", "ENTRY", "TX3-E", 1.0)
            storage.trades.append_events("TX3", 0, [("SIGNAL_ACCEPTED", None, "SIGNAL_GENERATED", {}, 1.0)])
            storage.trades.append_events("TX3", 1, [("ENTRY_REQUESTED", None, "ENTRY_PENDING", {}, 1.0)])
        assert [e.seq for e in storage.trades.events("TX3")] == [1, 2]

    def test_a_conflict_inside_a_transaction_rolls_the_whole_transaction_back(self, storage: Storage) -> None:
        storage.trades.append_events("TX4", 0, [("A", None, None, {}, 1.0)])
        with pytest.raises(JournalConflict), storage.transaction():
            assert storage.trades.claim_intent("TX4", "ENTRY", "TX4-E", 1.0)
            storage.trades.append_events("TX4", 0, [("STALE", None, None, {}, 2.0)])
        assert [e.event for e in storage.trades.events("TX4")] == ["A"]
        assert storage.trades.claim_intent("TX4", "ENTRY", "TX4-E", 2.0)  # rolled back with it

    def test_an_append_racing_an_open_transaction_conflicts_once_it_commits(self, storage: Storage) -> None:
        appended = threading.Event()
        outcome: list[object] = []

        def racer() -> None:
            try:
                outcome.append(storage.trades.append_events("TX5", 0, [("RACER", None, None, {}, 2.0)]))
            except JournalConflict as exc:
                outcome.append(exc)

        with storage.transaction():
            storage.trades.append_events("TX5", 0, [("OWNER", None, None, {}, 1.0)])
            appended.set()
            thread = threading.Thread(target=racer)
            thread.start()
            thread.join(0.3)  # the racer waits for our transaction (a row lock, or SQLite's write lock)
        thread.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], JournalConflict)
        assert [e.event for e in storage.trades.events("TX5")] == ["OWNER"]

    # --- JSON numbers ----------------------------------------------------------------------------------

    def test_json_numbers_read_back_as_floats_where_they_were_floats(self, storage: Storage) -> None:
        storage.trades.append_events("P1", 0, [("PRICED", None, None, NUMBERS, 1.0)])
        storage.trades.append_events("P1", 1, [("PRICED", None, None, NUMBERS, 2.0)])
        storage.trades.upsert_trade(trade("P1", detail=NUMBERS))
        storage.option_chains.upsert("NIFTY", "2025-11-25", NUMBERS, 1.0)
        storage.bot_state.put("numbers", NUMBERS, 1.0)
        merged = storage.bot_state.merge("merged", NUMBERS, 1.0)
        for event in storage.trades.events("P1"):
            assert_numbers_kept(event.payload)
        record = storage.trades.get_trade("P1")
        chain = storage.option_chains.latest("NIFTY", "2025-11-25")
        assert record is not None and chain is not None
        for value in (record.detail, chain.payload, storage.bot_state.get("numbers"), merged,
                      storage.bot_state.get("merged")):
            assert value is not None
            assert_numbers_kept(value)

    # --- owner leases ----------------------------------------------------------------------------------

    def test_a_lease_is_claimed_held_and_taken_over_only_when_expired(self, storage: Storage) -> None:
        leases = storage.leases
        assert leases.owner_of("P1") is None
        assert leases.claim("P1", "proc-A", now=100.0, ttl=10.0)
        assert leases.owner_of("P1") == TradeLease("P1", "proc-A", 100.0, 100.0)
        assert not leases.claim("P1", "proc-B", now=109.5, ttl=10.0)  # A's lease is live
        assert leases.claim("P1", "proc-A", now=105.0, ttl=10.0)  # ours: the heartbeat moves
        assert leases.owner_of("P1") == TradeLease("P1", "proc-A", 100.0, 105.0)
        assert not leases.claim("P1", "proc-B", now=114.5, ttl=10.0)
        assert leases.claim("P1", "proc-B", now=115.0, ttl=10.0)  # expired at heartbeat + ttl
        assert leases.owner_of("P1") == TradeLease("P1", "proc-B", 115.0, 115.0)
        assert not leases.claim("P1", "proc-A", now=116.0, ttl=10.0)

    def test_renew_heartbeats_every_lease_of_an_owner_and_tells_which_are_still_ours(self, storage: Storage) -> None:
        leases = storage.leases
        for pos_id in ("P2", "P1", "P3"):
            assert leases.claim(pos_id, "proc-A", now=100.0, ttl=10.0)
        assert leases.claim("P9", "proc-B", now=100.0, ttl=10.0)
        assert leases.claim("P3", "proc-B", now=111.0, ttl=10.0)  # A stalled past its ttl: B took P3
        assert leases.renew("proc-A", now=112.0) == ["P1", "P2"]
        assert leases.owner_of("P1") == TradeLease("P1", "proc-A", 100.0, 112.0)
        assert leases.owner_of("P9") == TradeLease("P9", "proc-B", 100.0, 100.0)
        assert leases.renew("proc-C", now=112.0) == []

    def test_release_drops_only_our_own_lease(self, storage: Storage) -> None:
        leases = storage.leases
        assert leases.claim("P1", "proc-A", now=100.0, ttl=10.0)
        assert not leases.release("P1", "proc-B")
        assert leases.owner_of("P1") is not None
        assert leases.release("P1", "proc-A")
        assert leases.owner_of("P1") is None
        assert not leases.release("P1", "proc-A")
        assert leases.claim("P1", "proc-B", now=101.0, ttl=10.0)

    def test_adoptable_trades_are_open_and_unleased_expired_or_ours(self, storage: Storage) -> None:
        for index, (pos_id, state) in enumerate([("P1", "POSITION_OPEN"), ("P2", "POSITION_OPEN"),
                                                 ("P3", "EXIT_PENDING"), ("P4", "ORDER_PLACED"),
                                                 ("P5", "CLOSED"), ("P6", "POSITION_OPEN")]):
            storage.trades.upsert_trade(trade(pos_id, state, created_at=float(index)))
        leases = storage.leases
        assert leases.claim("P2", "proc-A", now=100.0, ttl=10.0)  # live, A's
        assert leases.claim("P3", "proc-B", now=80.0, ttl=10.0)  # expired at 90
        assert leases.claim("P4", "proc-me", now=100.0, ttl=10.0)  # live, ours
        assert leases.claim("P5", "proc-B", now=80.0, ttl=10.0)  # expired, but the trade is closed
        assert leases.claim("P6", "proc-B", now=95.0, ttl=10.0)  # live until 105
        assert leases.adoptable("proc-me", now=100.0, ttl=10.0) == ["P1", "P3", "P4"]
        assert leases.adoptable("proc-A", now=100.0, ttl=10.0) == ["P1", "P2", "P3"]
        assert leases.adoptable("proc-me", now=105.0, ttl=10.0) == ["P1", "P3", "P4", "P6"]

    def test_owners_racing_for_an_expired_lease_let_exactly_one_win(self, storage: Storage) -> None:
        for round_ in range(10):
            pos_id = f"L-{round_}"
            assert storage.leases.claim(pos_id, "dead", now=0.0, ttl=10.0)
            results = run_in_threads(4, lambda index, pos_id=pos_id: storage.leases.claim(  # type: ignore[misc]
                pos_id, f"proc-{index}", now=100.0, ttl=10.0))
            assert results.count(True) == 1, results
            lease = storage.leases.owner_of(pos_id)
            assert lease is not None and lease.owner == f"proc-{results.index(True)}"

    # --- shared control state ---------------------------------------------------------------------------

    def test_merge_changes_only_the_fields_it_names(self, storage: Storage) -> None:
        state = storage.bot_state
        assert state.merge("control", {"kill_switch": True, "by": "A"}, 1.0) == {"kill_switch": True, "by": "A"}
        assert state.merge("control", {"losses": 3, "by": "B"}, 2.0) == {"kill_switch": True, "losses": 3, "by": "B"}
        assert state.merge("control", {"hold": {"reason": "x"}, "note": None}, 3.0, remove=["by", "absent"]) == {
            "kill_switch": True, "losses": 3, "hold": {"reason": "x"}, "note": None}
        assert state.merge("control", {"hold": {"since": 4}}, 4.0)["hold"] == {"since": 4}  # shallow
        assert state.get("control") == {"kill_switch": True, "losses": 3, "hold": {"since": 4}, "note": None}
        state.put("control", {"only": 1}, 5.0)  # put still replaces the whole document
        assert state.get("control") == {"only": 1}

    def test_concurrent_merges_from_two_storages_lose_no_field(self, storage_url: str) -> None:
        storages = [open_storage(storage_url) for _ in range(2)]
        try:
            storages[0].migrate()
            run_in_threads(8, lambda index: [storages[index % 2].bot_state.merge(
                "shared", {f"writer{index}": n, "last": index}, float(n)) for n in range(10)])
            final = storages[1].bot_state.get("shared")
        finally:
            for each in storages:
                each.close()
        assert final is not None
        assert {key: value for key, value in final.items() if key != "last"} == {f"writer{i}": 9 for i in range(8)}

    # --- risk counters at restart ----------------------------------------------------------------------

    def test_closed_since_and_partially_exited_trades(self, storage: Storage) -> None:
        rows = [
            trade("P1", "CLOSED", "2025-11-19", created_at=1.0, exit_time=1100.0, realized_pnl=-50.0),  # opened yesterday
            trade("P2", "CLOSED", "2025-11-20", created_at=2.0, exit_time=900.0, realized_pnl=10.0),  # before
            trade("P3", "CLOSED", "2025-11-20", created_at=3.0, exit_time=1000.0, realized_pnl=25.0),  # at ts
            trade("P4", "POSITION_OPEN", created_at=4.0),
            trade("P5", "EXIT_PARTIALLY_FILLED", created_at=5.0, realized_pnl=120.0),
            trade("P6", "REJECTED", created_at=6.0, realized_pnl=-5.0),
            trade("P7", "EXIT_PENDING", created_at=7.0, realized_pnl=-1.5),
            trade("P8", "CANCELLED", created_at=8.0, exit_time=1200.0),
        ]
        for row in rows:
            storage.trades.upsert_trade(row)
        assert [t.pos_id for t in storage.trades.closed_since(1000.0)] == ["P3", "P1"]
        assert storage.trades.closed_since(1000.0)[1] == rows[0]
        assert [t.pos_id for t in storage.trades.closed_since(1100.5)] == []
        assert [(t.pos_id, t.realized_pnl) for t in storage.trades.partially_exited()] == [("P5", 120.0), ("P7", -1.5)]

    def test_day_figures_aggregate_every_processs_trades_for_the_risk_guard(self, storage: Storage) -> None:
        rows = [
            trade("C1", "CLOSED", created_at=1.0, exit_time=1100.0, realized_pnl=-50.0, fees=10.0),  # opened before
            trade("C2", "CLOSED", created_at=2.0, exit_time=900.0, realized_pnl=500.0, fees=10.0),  # before the day
            trade("C3", "CLOSED", created_at=3.0, exit_time=1000.0, realized_pnl=25.0, fees=5.0),
            trade("C4", "CLOSED", created_at=4.0, exit_time=1050.0, realized_pnl=20.0, fees=20.0),  # net 0
            trade("L1", "POSITION_OPEN", filled_qty=75, entry_price=100.0, fees=12.0,
                  detail={"open_qty": 75, "entry_limit_price": 101.0}),
            trade("L2", "EXIT_PARTIALLY_FILLED", filled_qty=75, entry_price=110.0, realized_pnl=40.0, fees=20.0,
                  detail={"open_qty": 25}),
            trade("L3", "ORDER_PLACED", symbol="SEC_2", side="SELL", qty=50, detail={"entry_limit_price": 90.0}),
            trade("R1", "REJECTED", realized_pnl=-5.0),
            trade("D1", "DENIED"),
        ]
        for row in rows:
            storage.trades.upsert_trade(row)
        figures = storage.trades.day_figures(1000.0)
        assert (figures.trades_closed, figures.realized_net_closed) == (3, -60.0 + 20.0 + 0.0)
        assert figures.recent_outcomes == ((1100.0, -60.0), (1000.0, 20.0))  # today's, newest first, no net zero
        assert figures.live_trades == 3
        nifty, sec2 = figures.positions
        assert (nifty.symbol, nifty.side, nifty.open_qty, nifty.working_qty) == ("NIFTY", "BUY", 100, 0)
        assert nifty.avg_price == pytest.approx((75 * 100.0 + 25 * 110.0) / 100)
        assert nifty.realized_net == pytest.approx(-12.0 + 40.0 - 20.0)
        assert (sec2.symbol, sec2.side, sec2.open_qty, sec2.working_qty, sec2.working_price) == \
            ("SEC_2", "SELL", 0, 50, 90.0)
        assert storage.trades.day_figures(1000.0, streak_limit=1).recent_outcomes == ((1100.0, -60.0),)

    # --- instruments -----------------------------------------------------------------------------------

    def test_instrument_master_round_trips_and_answers_lookups(self, storage: Storage) -> None:
        instruments = storage.instruments
        assert instruments.loaded_at() is None
        assert instruments.replace_all(iter(MASTER), loaded_at=1000.25) == len(MASTER)  # a generator streams
        assert instruments.loaded_at() == 1000.25
        assert instruments.get("NSE_FNO", "40003") == MASTER[6]
        assert instruments.get("IDX_I", "13") == NIFTY_INDEX  # no expiry comes back as ""
        assert instruments.get("NSE_FNO", "52000") == NIFTY_FUTURE
        assert instruments.get("BSE_FNO", "40003") is None
        assert instruments.by_trading_symbol("nifty-Dec2026-24000-ce") == [MASTER[6]]
        assert instruments.by_trading_symbol("SENSEX") == [SENSEX_SAME_NAME, SENSEX_INDEX]  # by segment
        assert instruments.by_trading_symbol("NIFTY-Dec2030-1-CE") == []
        assert [i.security_id for i in instruments.options("NIFTY")] == ["40004", "40003", "40002", "40001", "40005"]
        assert [i.security_id for i in instruments.options("NIFTY", "2026-12-29")] == ["40003", "40002", "40001"]
        assert instruments.options("NIFTY", "2026-12-30") == []
        assert instruments.options("FINNIFTY") == []
        assert instruments.expiries("NIFTY") == ["2026-12-22", "2026-12-29", "2027-01-26"]
        assert instruments.expiries("BANKNIFTY") == ["2026-12-29"]
        assert instruments.expiries("SENSEX") == []
        everything = instruments.all()
        assert sorted(everything, key=lambda i: (i.segment, i.security_id)) == everything
        assert set(everything) == set(MASTER) and len(everything) == len(MASTER)

    def test_replace_all_replaces_the_whole_master(self, storage: Storage) -> None:
        storage.instruments.replace_all(MASTER, loaded_at=1000.0)
        fresh = [NIFTY_INDEX, instrument("60001", strike=25000.0, lot_size=75)]
        assert storage.instruments.replace_all(fresh, loaded_at=2000.0) == 2
        assert storage.instruments.get("NSE_FNO", "40003") is None
        assert storage.instruments.options("NIFTY") == [fresh[1]]
        assert storage.instruments.loaded_at() == 2000.0
        assert storage.instruments.replace_all([], loaded_at=3000.0) == 0
        assert storage.instruments.get("IDX_I", "13") is None

    def test_a_bad_master_changes_nothing(self, storage: Storage) -> None:
        storage.instruments.replace_all(MASTER, loaded_at=1000.0)
        with pytest.raises(ValueError):
            storage.instruments.replace_all([instrument("70001"), instrument("70002", expiry="29-12-2026")], 2000.0)
        with pytest.raises(StorageConflict):
            storage.instruments.replace_all([instrument("70001"), instrument("70001", strike=1.0)], 3000.0)
        assert storage.instruments.loaded_at() == 1000.0
        assert storage.instruments.get("NSE_FNO", "70001") is None
        assert storage.instruments.get("NSE_FNO", "40003") == MASTER[6]

    # --- placement lock --------------------------------------------------------------------------------

    def test_placement_lock_excludes_a_second_thread_until_released(self, storage: Storage) -> None:
        held = threading.Event()
        release = threading.Event()
        order_of_events: list[str] = []

        def first() -> None:
            with storage.placement_lock("P1"):
                order_of_events.append("first in")
                held.set()
                release.wait(10)
                order_of_events.append("first out")

        def second() -> None:
            with storage.placement_lock("P1"):
                order_of_events.append("second in")

        holder = threading.Thread(target=first)
        holder.start()
        assert held.wait(10)
        with pytest.raises(StorageConflict):  # times out while the other thread holds it
            with storage.placement_lock("P1", timeout=0.2):
                pass
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive()  # still waiting
        release.set()
        holder.join(10)
        waiter.join(10)
        assert order_of_events == ["first in", "first out", "second in"]

    def test_writes_in_a_transaction_commit_together(self, storage: Storage) -> None:
        with storage.transaction():
            assert storage.trades.claim_intent("TX1", "ENTRY", "TX1-E", 1.0)
            [first] = storage.trades.append_events("TX1", 0, [("SIGNAL_ACCEPTED", "NEW", "SIGNAL_GENERATED", {},
                                                                1.0)])
            with storage.transaction():  # nested: joins the outer one
                [second] = storage.trades.append_events("TX1", 1, [("ENTRY_REQUESTED", "SIGNAL_GENERATED",
                                                                    "ENTRY_PENDING", {"limit": 1.5}, 1.0)])
        assert (first.seq, second.seq) == (1, 2)
        assert [e.event for e in storage.trades.events("TX1")] == ["SIGNAL_ACCEPTED", "ENTRY_REQUESTED"]
        assert not storage.trades.claim_intent("TX1", "ENTRY", "TX1-E", 2.0)

    def test_a_failed_transaction_writes_nothing(self, storage: Storage) -> None:
        with pytest.raises(RuntimeError), storage.transaction():
            assert storage.trades.claim_intent("TX2", "ENTRY", "TX2-E", 1.0)
            storage.trades.append_events("TX2", 0, [("SIGNAL_ACCEPTED", "NEW", "SIGNAL_GENERATED", {}, 1.0)])
            raise RuntimeError("the broker call was never reached")
        assert storage.trades.events("TX2") == []
        assert storage.trades.claim_intent("TX2", "ENTRY", "TX2-E", 2.0)  # the claim was rolled back too

    def test_the_entry_gate_is_one_transaction_and_one_entry_at_a_time(self, storage: Storage) -> None:
        """What a risk check reads and the first journal step it allows commit together, and a second entry
        (another thread here; another process on PostgreSQL) looks only after the first committed."""
        inside = threading.Event()
        release = threading.Event()
        seen: list[list[str]] = []

        storage.bot_state.merge("risk", {"kill_switch_engaged": True}, 1.0)

        def first() -> None:
            with storage.entry_gate("risk", 0.0, LeaseClaim("G1", "proc-A", 10.0, 30.0)) as view:
                assert view.document == {"kill_switch_engaged": True} and view.lease_claimed is True
                storage.trades.append_events("G1", 0, [("SIGNAL_ACCEPTED", "NEW", "SIGNAL_GENERATED", {}, 1.0)])
                storage.trades.upsert_trade(trade("G1", "ENTRY_PENDING"))
                inside.set()
                release.wait(10)

        def second() -> None:
            with storage.entry_gate("risk", 0.0, LeaseClaim("G1", "proc-B", 11.0, 30.0)) as view:
                assert view.lease_claimed is False and view.figures.live_trades == 1  # A's lease and trade
                seen.append([e.event for e in storage.trades.events("G1")])

        holder = threading.Thread(target=first)
        holder.start()
        assert inside.wait(10)
        with pytest.raises(StorageError):  # the gate is held (PostgreSQL: lock timeout; SQLite: the writer lock)
            with storage.entry_gate("risk", 0.0, timeout=0.2):
                storage.trades.events("G1")
                raise StorageConflict("waited through the gate")  # SQLite's lock is process-wide: re-entered
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive() and not seen  # still waiting at the gate
        release.set()
        holder.join(10)
        waiter.join(10)
        assert seen == [["SIGNAL_ACCEPTED"]]  # it saw the first entry's committed step
        with pytest.raises(RuntimeError), storage.entry_gate("risk", 0.0, LeaseClaim("G2", "proc-A", 12.0, 30.0)):
            storage.trades.append_events("G2", 0, [("SIGNAL_ACCEPTED", "NEW", "SIGNAL_GENERATED", {}, 1.0)])
            raise RuntimeError("the risk check refused after all")
        assert storage.trades.events("G2") == [] and storage.leases.owner_of("G2") is None  # all rolled back

    def test_placement_lock_is_reentrant_and_per_position(self, storage: Storage) -> None:
        with storage.placement_lock("P1"), storage.placement_lock("P1", timeout=1.0):
            result = run_in_threads(1, lambda _: _try_lock(storage, "P2"))
        assert result == [True]


def _try_lock(storage: Storage, pos_id: str) -> bool:
    try:
        with storage.placement_lock(pos_id, timeout=1.0):
            return True
    except StorageConflict:
        return False


def test_both_backends_ship_the_same_migration_versions() -> None:
    for backend in ("postgresql", "sqlite"):
        assert [m.version for m in load_migrations(backend)] == ALL_VERSIONS


@pytest.mark.parametrize(("text", "expected"), [
    ("9223372036854775807", 9223372036854775807),  # the largest int64 stays an int
    ("-9223372036854775808", -9223372036854775808),
    ("9223372036854775808", 9.223372036854775808e18),  # one beyond: a float
    ("-9223372036854775809", -9.223372036854775809e18),
    ("18446744073709551615", 1.8446744073709551615e19),  # orjson would keep this one an int
    ("100000000000000000000", 1e20),
    ("100.0", 100.0), ("1e+20", 1e20), ("0.00000015", 1.5e-7), ("75", 75), ("-0.5", -0.5),
    ("1e400", float("inf")),  # JSONB keeps numbers beyond a double; orjson refuses them
    ('{"id": "12345678901234567890", "n": [1, 2.5]}', {"id": "12345678901234567890", "n": [1, 2.5]}),
])
def test_decode_json_keeps_ints_within_64_bits_and_makes_every_other_number_a_float(
        text: str, expected: object) -> None:
    decoded = decode_json(text)
    assert decoded == expected and type(decoded) is type(expected)


class TestSqliteStorage(StorageContract):
    backend = "sqlite"

    @pytest.fixture
    def storage_url(self, sqlite_url: str) -> str:
        return sqlite_url

    def test_relative_path_is_relative_to_the_working_directory_and_parents_are_made(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        with open_storage("sqlite:///var/data/mybot.db") as storage:
            storage.migrate()
        assert (tmp_path / "var" / "data" / "mybot.db").is_file()


PLACEMENT_LOCK_HOLDER = """
import sys
from storage.opening import open_storage
storage = open_storage(sys.argv[1])
with storage.placement_lock(sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.readline()
storage.close()
print("released", flush=True)
"""


class TestPostgresStorage(StorageContract):
    backend = "postgresql"

    @pytest.fixture
    def storage_url(self, pg_url: str) -> str:
        return pg_url

    def test_candle_times_are_timestamptz_for_operators(self, storage: Storage, storage_url: str) -> None:
        import psycopg

        storage.candles.upsert_many([candle(T0)])
        with psycopg.connect(storage_url) as conn:
            row = conn.execute("SELECT ts AT TIME ZONE 'Asia/Kolkata', pg_typeof(ts)::text FROM candles").fetchone()
        assert row is not None and str(row[0]) == "2025-11-20 09:15:00" and row[1] == "timestamp with time zone"

    def test_jsonb_keeps_the_scale_of_floats_but_not_of_exponent_floats(self, storage: Storage) -> None:
        """What the read-back rule cannot restore: JSONB writes the float 1e16 (orjson: "1e+16") as
        10000000000000000, an int within 64 bits. Same value, still encodable; 100.0 keeps its ".0"."""
        storage.bot_state.put("scale", {"exp": 1e16, "round": 100.0, "beyond": 1e19}, 1.0)
        value = storage.bot_state.get("scale")
        assert value == {"exp": 10**16, "round": 100.0, "beyond": 1e19}
        assert value is not None and [type(value[k]) for k in ("exp", "round", "beyond")] == [int, float, float]

    def test_placement_lock_holds_the_md5_advisory_key_in_postgres(self, storage: Storage, storage_url: str) -> None:
        import psycopg

        with psycopg.connect(storage_url) as conn:
            sql_key = conn.execute("SELECT ('x' || substr(md5(%s), 1, 16))::bit(64)::bigint", ("P-42",)).fetchone()
            assert sql_key is not None and sql_key[0] == advisory_key("P-42")
            held_sql = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND ((classid::bigint << 32) | objid::bigint) = %s AND objsubid = 1")
            with storage.placement_lock("P-42"):
                assert conn.execute(held_sql, (advisory_key("P-42"),)).fetchone() == (1,)
            assert conn.execute(held_sql, (advisory_key("P-42"),)).fetchone() == (0,)

    def test_placement_lock_excludes_another_process(self, storage: Storage, storage_url: str) -> None:
        holder = subprocess.Popen([sys.executable, "-c", PLACEMENT_LOCK_HOLDER, storage_url, "P-proc"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "locked"
            started = time.monotonic()
            with pytest.raises(StorageConflict):
                with storage.placement_lock("P-proc", timeout=0.3):
                    pass
            assert time.monotonic() - started < 2.0
            assert _try_lock(storage, "P-other")  # other positions are not blocked
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "released"
            assert _try_lock(storage, "P-proc")
        finally:
            holder.kill()
            holder.wait(5)


pytestmark = pytest.mark.timeout(60)
