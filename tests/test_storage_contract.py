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

import pytest

from core.market import Candle
from storage.errors import StorageConflict, StorageError
from storage.locks import advisory_key
from storage.records import OrderRecord, TradeRecord
from storage.repositories import Storage, open_storage

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_763_610_300  # 2025-11-20 09:15 IST, a bucket start


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
            assert storage.migrate() == [1]
            assert storage.migrate() == []
        with open_storage(storage_url) as again:
            assert again.migrate() == []
            again.bot_state.put("k", {"v": 1}, 1.0)
            assert again.bot_state.get("k") == {"v": 1}

    def test_two_storages_migrating_at_once_apply_each_version_once(self, storage_url: str) -> None:
        storages = [open_storage(storage_url) for _ in range(3)]
        try:
            applied = run_in_threads(3, lambda index: storages[index].migrate())
        finally:
            for storage in storages:
                storage.close()
        assert sorted(applied, key=len) == [[], [], [1]]

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
        first = storage.trades.append_event("P1", "ENTRY_SIGNAL", None, "SIGNAL_GENERATED", {"score": 0.9}, 10.5)
        second = storage.trades.append_event("P1", "ORDER_PLACED", "ENTRY_PENDING", "ORDER_PLACED", {}, 11.0)
        other = storage.trades.append_event("P2", "ENTRY_SIGNAL", None, "SIGNAL_GENERATED", {}, 12.0)
        assert (first.seq, second.seq, other.seq) == (1, 2, 1)
        assert first.payload == {"score": 0.9} and first.at == 10.5 and first.from_state is None
        assert storage.trades.events("P1") == [first, second]
        assert storage.trades.events("P3") == []

    def test_concurrent_appends_from_threads_get_unique_consecutive_seqs(self, storage: Storage) -> None:
        per_thread = 15
        run_in_threads(8, lambda index: [
            storage.trades.append_event("P1", "TICK", None, None, {"thread": index, "n": n}, float(n))
            for n in range(per_thread)])
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
            first = storage.trades.append_event("TX1", "SIGNAL_ACCEPTED", "NEW", "SIGNAL_GENERATED", {}, 1.0)
            with storage.transaction():  # nested: joins the outer one
                second = storage.trades.append_event("TX1", "ENTRY_REQUESTED", "SIGNAL_GENERATED",
                                                     "ENTRY_PENDING", {"limit": 1.5}, 1.0)
        assert (first.seq, second.seq) == (1, 2)
        assert [e.event for e in storage.trades.events("TX1")] == ["SIGNAL_ACCEPTED", "ENTRY_REQUESTED"]
        assert not storage.trades.claim_intent("TX1", "ENTRY", "TX1-E", 2.0)

    def test_a_failed_transaction_writes_nothing(self, storage: Storage) -> None:
        with pytest.raises(RuntimeError), storage.transaction():
            assert storage.trades.claim_intent("TX2", "ENTRY", "TX2-E", 1.0)
            storage.trades.append_event("TX2", "SIGNAL_ACCEPTED", "NEW", "SIGNAL_GENERATED", {}, 1.0)
            raise RuntimeError("the broker call was never reached")
        assert storage.trades.events("TX2") == []
        assert storage.trades.claim_intent("TX2", "ENTRY", "TX2-E", 2.0)  # the claim was rolled back too

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
from storage.repositories import open_storage
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
