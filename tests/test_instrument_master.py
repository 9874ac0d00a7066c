"""The instrument master as the running system holds it (issue 10, item 1): downloading Dhan's compact CSV
streaming, the book that swaps whole, and the refresher actor (restore, stale copy, daily schedule, a
failed refresh that keeps the old master and says so) on real storage and the fake Dhan's real socket."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from actors.clock import SystemClock
from actors.instruments import (
    InstrumentBook,
    MasterUnavailable,
    fetch_scrip_master,
    live_master,
    snapshot_book,
)
from actors.market_data.instrument_master import InstrumentMasterRefresher, MasterState, next_refresh_at
from config.reference import load_calendar
from config.settings import Settings
from core.instruments import Instrument, InstrumentIndex, UnknownInstrument
from core.market import IST
from storage.opening import open_storage
from storage.repositories import Storage
from supervision.scheduler import Scheduler
from tests.fakedhan import FakeDhan
from tests.fakedhan.rest import SCRIP_MASTER_PATH
from tests.fakedhan.scripmaster import compact_csv, fake_master
from tests.support.waiting import eventually

TODAY = datetime.now(IST).date()
REFRESHER_LOGGER = "mybot.InstrumentMasterRefresher"


@pytest.fixture
def fake() -> Iterator[FakeDhan]:
    with FakeDhan() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = open_storage(url)
    opened.migrate()
    yield opened
    opened.close()


def _nifty_options(instruments: list[Instrument]) -> list[Instrument]:
    return [i for i in instruments if i.underlying == "NIFTY" and i.is_option]


# -- downloading -----------------------------------------------------------------------------------------

def test_the_master_streams_from_the_url_into_instruments_with_their_lots_and_ticks(fake: FakeDhan) -> None:
    instruments, report = fetch_scrip_master(fake.scrip_master_url, timeout=5)
    expected = fake_master(TODAY)
    assert sorted(instruments, key=lambda i: (i.segment, i.security_id)) == \
        sorted(expected, key=lambda i: (i.segment, i.security_id))
    assert report.rows == len(expected) and report.rejected == 0
    nifty = _nifty_options(instruments)
    assert nifty and {i.lot_size for i in nifty} == {65} and {i.tick_size for i in nifty} == {0.05}


def test_a_local_copy_reads_through_a_file_url(tmp_path: Path) -> None:
    path = tmp_path / "master.csv"
    path.write_text(compact_csv(fake_master(TODAY)))
    instruments, _ = fetch_scrip_master(path.as_uri())
    assert len(instruments) == len(fake_master(TODAY))


def test_a_download_that_fails_or_is_not_the_master_is_refused_with_the_reason(fake: FakeDhan, tmp_path: Path) -> None:
    fake.rest.fail(SCRIP_MASTER_PATH, status=500)
    with pytest.raises(MasterUnavailable, match="HTTP 500"):
        fetch_scrip_master(fake.scrip_master_url, timeout=5)
    junk = tmp_path / "junk.csv"
    junk.write_text("hello,world\n1,2\n")
    with pytest.raises(MasterUnavailable, match="missing column"):
        fetch_scrip_master(junk.as_uri())
    only_equities = tmp_path / "equities.csv"
    header = compact_csv([]).strip()
    only_equities.write_text(header + "\nNSE,E,2885,EQUITY,0,RELIANCE,1.0,RELIANCE,,0.00000,XX,5.0000,NA,ES,EQ,\n")
    with pytest.raises(MasterUnavailable, match="no index, index option or index future"):
        fetch_scrip_master(only_equities.as_uri())
    with pytest.raises(MasterUnavailable, match="unreadable"):
        fetch_scrip_master((tmp_path / "missing.csv").as_uri())
    with pytest.raises(MasterUnavailable, match="ConnectionError"):
        fetch_scrip_master("http://127.0.0.1:9/api-scrip-master.csv", timeout=2)


# -- the book --------------------------------------------------------------------------------------------

def test_the_book_resolves_names_to_what_the_system_trades_and_swaps_whole() -> None:
    master = fake_master(TODAY)
    book = InstrumentBook(InstrumentIndex(master), source="dhan", loaded_at=1.0)
    monthly = next(i for i in master if i.is_option and i.expiry_flag == "M" and i.underlying == "NIFTY")
    assert book.canonical(monthly.trading_symbol) == monthly.symbol  # month-named: the monthly contract
    assert book.canonical(monthly.dated_symbol.lower()) == monthly.symbol
    assert book.canonical("nifty") == "NIFTY"
    assert book.lot_size(monthly.trading_symbol) == 65 and book.tick_size(monthly.symbol) == 0.05
    assert book.tick_size("NIFTY") is None  # an index has no tradable tick
    assert book.canonical("SEC_987654") == "SEC_987654"  # not in the master: still the system's form
    assert book.lot_size("SEC_987654") is None
    with pytest.raises(UnknownInstrument):
        book.canonical("NIFTY-Dec2099-1-CE")
    held = book.index
    book.replace(InstrumentIndex(master[:3]), source="storage", loaded_at=2.0)
    assert len(held) == len(master) and len(book) == 3 and book.source == "storage"  # readers keep theirs
    assert InstrumentBook().lot_size(monthly.symbol) is None  # nothing loaded: nothing known


def test_sim_paper_and_replay_use_the_shipped_snapshot_and_dhan_uses_its_own_master() -> None:
    assert not live_master(Settings())
    assert not live_master(Settings().replace(feed={"source": "replay", "replay_path": "x.csv"}))
    assert live_master(Settings().replace(broker={"kind": "dhan"}, dhan={"client_id": "1", "access_token": "t"}))
    book = snapshot_book(now=5.0)
    assert book.source == "snapshot" and book.lot_size("SEC_49081") == 65 and book.tick_size("SEC_49081") == 0.05


# -- the refresher ----------------------------------------------------------------------------------------

class Refresher:
    """The refresher actor over the fake's master URL, with fast retries."""

    def __init__(self, fake: FakeDhan, storage: Storage, book: InstrumentBook | None = None) -> None:
        self.book = book or InstrumentBook()
        self.state = MasterState()
        self.fetches = 0
        self.fetched = threading.Event()
        url = fake.scrip_master_url

        def fetch() -> tuple[list[Instrument], object]:
            self.fetches += 1
            try:
                return fetch_scrip_master(url, timeout=5)  # type: ignore[return-value]
            finally:
                self.fetched.set()

        self.ref = InstrumentMasterRefresher.start(
            None, self.book, fetch, storage, SystemClock(), Scheduler.shared(), load_calendar(), "08:30", self.state,
            retry_initial_seconds=0.05, retry_max_seconds=0.2)

    def stop(self) -> None:
        self.ref.stop()


def test_with_no_stored_master_it_downloads_stores_and_swaps_it_in(fake: FakeDhan, storage: Storage) -> None:
    refresher = Refresher(fake, storage)
    try:
        eventually(lambda: refresher.state.refreshes == 1, 10, message="the first refresh")
        assert refresher.book.source == "dhan" and len(refresher.book) == len(fake_master(TODAY))
        assert storage.instruments.loaded_at() == pytest.approx(refresher.book.loaded_at)
        assert len(storage.instruments.all()) == len(refresher.book)
        assert refresher.state.next_refresh_at > time.time()  # the next trading day's 08:30 IST, or today's
    finally:
        refresher.stop()


def test_a_stored_master_younger_than_a_day_serves_without_a_download(fake: FakeDhan, storage: Storage) -> None:
    storage.instruments.replace_all(fake_master(TODAY)[:10], loaded_at=time.time() - 3600)
    refresher = Refresher(fake, storage)
    try:
        # the start-up step ends by scheduling the daily refresh: once it has, it has decided not to download
        eventually(lambda: refresher.state.next_refresh_at > 0, 10, message="the start-up step done")
        assert refresher.book.source == "storage" and len(refresher.book) == 10
        assert fake.rest.requests_to(SCRIP_MASTER_PATH) == [] and refresher.fetches == 0
    finally:
        refresher.stop()


def test_a_stored_master_older_than_a_day_is_restored_then_replaced(fake: FakeDhan, storage: Storage) -> None:
    storage.instruments.replace_all(fake_master(TODAY)[:10], loaded_at=time.time() - 2 * 86_400)
    refresher = Refresher(fake, storage)
    try:
        eventually(lambda: refresher.state.refreshes == 1, 10, message="the fresh download, stored")
        assert refresher.book.source == "dhan" and len(refresher.book) == len(fake_master(TODAY)) == len(storage.instruments.all())
        assert len(fake.rest.requests_to(SCRIP_MASTER_PATH)) == 1
    finally:
        refresher.stop()


def test_a_failed_refresh_keeps_the_old_master_says_so_and_retries_with_backoff(
        fake: FakeDhan, storage: Storage, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=REFRESHER_LOGGER)
    old = fake_master(TODAY)[:10]
    storage.instruments.replace_all(old, loaded_at=time.time() - 2 * 86_400)
    fake.rest.fail(SCRIP_MASTER_PATH, status=503, times=2)
    refresher = Refresher(fake, storage)
    try:
        eventually(lambda: refresher.state.failures >= 1, 10, message="a failed refresh")
        assert refresher.book.source == "storage" and len(refresher.book) == 10  # the old master serves
        failed = [r for r in caplog.records if getattr(r, "event", "") == "INSTRUMENTS_REFRESH_FAILED"]
        assert failed and "HTTP 503" in failed[0].getMessage() and failed[0].kept_instruments == 10
        assert "keeping the storage master of 10 instruments" in failed[0].getMessage()
        eventually(lambda: refresher.state.refreshes == 1, 10, message="a retry that succeeds")
        assert refresher.book.source == "dhan" and refresher.state.failures == 2 and refresher.state.consecutive_failures == 0
        retries = [r.retry_in for r in caplog.records if getattr(r, "event", "") == "INSTRUMENTS_REFRESH_FAILED"]
        assert retries == [0.05, 0.1]  # exponential backoff
        assert len(storage.instruments.all()) == len(fake_master(TODAY))
    finally:
        refresher.stop()


def test_the_daily_refresh_is_before_the_session_of_the_next_trading_day() -> None:
    calendar = load_calendar()
    at = lambda *parts: datetime(*parts, tzinfo=IST).timestamp()  # noqa: E731
    assert next_refresh_at(at(2026, 12, 1, 7, 0), "08:30", calendar) == at(2026, 12, 1, 8, 30)  # later today
    assert next_refresh_at(at(2026, 12, 1, 8, 30), "08:30", calendar) == at(2026, 12, 2, 8, 30)  # strictly after
    assert next_refresh_at(at(2026, 12, 4, 9, 0), "08:30", calendar) == at(2026, 12, 7, 8, 30)  # Fri -> Mon
    assert next_refresh_at(at(2026, 12, 24, 10, 0), "08:30", calendar) == at(2026, 12, 28, 8, 30)  # Christmas
