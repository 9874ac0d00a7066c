"""InstrumentMasterRefresher: keeps the instrument master (actors.instruments.InstrumentBook) current.

Runs in the market_data subtree when Dhan's master serves (the feed or the broker is Dhan):

* at start it restores the stored master (`instruments` table) into the book, then downloads a fresh one
  when the stored copy is missing or older than a day;
* each trading day at `dhan.scrip_master_refresh_time` IST (before the session) it downloads it again;
* a download streams Dhan's compact CSV into the core parser (actors.instruments.fetch_scrip_master),
  stores it (`instruments.replace_all`, one transaction) and swaps the new index into the book whole;
* a failed download keeps the master the book has, says so (`INSTRUMENTS_REFRESH_FAILED`, the status
  section) and tries again with exponential backoff (30 s doubling, at most 30 min). A database that is
  down does not stop the swap: the new master serves from memory and is stored next time.

Every step runs on this actor's own thread: the download and the bulk insert block only its mailbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from actors.clock import Clock
from actors.instruments import InstrumentBook, MasterUnavailable
from core.calendar import MarketCalendar
from core.instruments import Instrument, InstrumentIndex, ParseReport
from core.market import IST
from storage.errors import StorageError
from storage.repositories import Storage
from supervision.actor import SupervisedActor, tell_quietly
from supervision.scheduler import Scheduler, Timer
from supervision.supervisor import ChildLink

__all__ = ["InstrumentMasterRefresher", "MasterFetch", "MasterState", "next_refresh_at"]

MasterFetch = Callable[[], tuple[list[Instrument], ParseReport]]

MAX_AGE_SECONDS = 86_400.0
RETRY_INITIAL_SECONDS = 30.0
RETRY_MAX_SECONDS = 1_800.0


@dataclass(frozen=True)
class RestoreMaster:
    """At start: the stored master into the book; a download if it is missing or stale."""


@dataclass(frozen=True)
class RefreshMaster:
    reason: str


@dataclass
class MasterState:
    """The refresher's crash-only store: outlives its restarts, read by /v1/status (plain values only)."""

    refreshes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_refresh_seconds: float = 0.0
    last_rejected_rows: int = 0
    next_refresh_at: float = 0.0
    retry_at: float = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"refreshes": self.refreshes, "failures": self.failures,
                "consecutive_failures": self.consecutive_failures, "last_error": self.last_error or None,
                "last_refresh_seconds": self.last_refresh_seconds, "last_rejected_rows": self.last_rejected_rows,
                "next_refresh_at": self.next_refresh_at or None, "retry_at": self.retry_at or None}


def next_refresh_at(now: float, hhmm: str, calendar: MarketCalendar) -> float:
    """Epoch seconds of the next `hhmm` IST on a trading day, strictly after `now`."""
    hours, minutes = (int(part) for part in hhmm.split(":"))
    day = datetime.fromtimestamp(now, IST).date()
    for _ in range(400):
        at = (datetime(day.year, day.month, day.day, tzinfo=IST) + timedelta(hours=hours, minutes=minutes)).timestamp()
        if at > now and calendar.is_trading_day(day):
            return at
        day += timedelta(days=1)
    raise ValueError("no trading day within 400 days")  # a holidays file that closes every day


class InstrumentMasterRefresher(SupervisedActor):
    def __init__(self, link: ChildLink | None, book: InstrumentBook, fetch: MasterFetch, storage: Storage,
                 clock: Clock, scheduler: Scheduler, calendar: MarketCalendar, refresh_time: str,
                 state: MasterState, *, max_age_seconds: float = MAX_AGE_SECONDS,
                 retry_initial_seconds: float = RETRY_INITIAL_SECONDS,
                 retry_max_seconds: float = RETRY_MAX_SECONDS) -> None:
        super().__init__(link)
        self.book = book
        self.fetch = fetch
        self.storage = storage
        self.clock = clock
        self.scheduler = scheduler
        self.calendar = calendar
        self.refresh_time = refresh_time
        self.state = state
        self.max_age = max_age_seconds
        self.retry_initial = retry_initial_seconds
        self.retry_max = retry_max_seconds
        self.timers: list[Timer] = []

    def started(self) -> None:
        self.actor_ref.tell(RestoreMaster())

    def release(self) -> None:
        for timer in self.timers:
            timer.cancel()

    def receive(self, message: Any) -> Any:
        if isinstance(message, RestoreMaster):
            self._restore()
            self._schedule_daily()
        elif isinstance(message, RefreshMaster):
            self._refresh(message.reason)
            if message.reason == "daily":
                self._schedule_daily()
        else:
            return super().receive(message)
        return None

    # -- steps ---------------------------------------------------------------------------------------------
    def _restore(self) -> None:
        now = self.clock.now()
        try:
            stored_at = self.storage.instruments.loaded_at()
            if stored_at is not None and stored_at > self.book.loaded_at:
                rows = self.storage.instruments.all()
                self.book.replace(InstrumentIndex(rows), source="storage", loaded_at=stored_at)
                self.log.event("INSTRUMENTS_LOADED", f"instrument master restored from the database: {len(rows)} "
                               f"instruments downloaded {_age(now - stored_at)} ago", source="storage",
                               instruments=len(rows), loaded_at=stored_at)
        except StorageError as exc:
            stored_at = None
            self.log.event("INSTRUMENTS_RESTORE_FAILED", f"stored instrument master unavailable: {exc}", level=30)
        if stored_at is None:
            self._refresh("no stored master")
        elif now - stored_at >= self.max_age:
            self._refresh(f"the stored master is {_age(now - stored_at)} old")

    def _refresh(self, reason: str) -> None:
        started = time.monotonic()
        try:
            rows, report = self.fetch()
        except MasterUnavailable as exc:
            self._failed(str(exc), reason)
            return
        index = InstrumentIndex(rows)
        loaded_at = self.clock.now()
        self.book.replace(index, source="dhan", loaded_at=loaded_at)
        try:
            self.storage.instruments.replace_all(rows, loaded_at)
        except (StorageError, ValueError) as exc:
            self.log.event("INSTRUMENTS_STORE_FAILED", f"instrument master not stored ({exc}); it serves from "
                           "memory and is stored at the next refresh", level=30)
        seconds = round(time.monotonic() - started, 3)
        state = self.state
        state.refreshes += 1
        state.consecutive_failures = 0
        state.retry_at = 0.0
        state.last_refresh_seconds = seconds
        state.last_rejected_rows = report.rejected
        self.log.event("INSTRUMENTS_REFRESHED", f"instrument master loaded ({reason}): {len(index)} instruments "
                       f"kept of {report.rows} rows in {seconds:.2f} s", reason=reason, instruments=len(index),
                       rows=report.rows, rejected=report.rejected, problems=report.problems[:5], seconds=seconds,
                       duplicates=index.duplicates)

    def _failed(self, error: str, reason: str) -> None:
        state = self.state
        state.failures += 1
        state.consecutive_failures += 1
        state.last_error = error
        delay = min(self.retry_max, self.retry_initial * 2 ** (state.consecutive_failures - 1))
        state.retry_at = self.clock.now() + delay
        kept = (f"keeping the {self.book.source} master of {len(self.book)} instruments" if len(self.book)
                else "no master loaded yet: lots and ticks are unknown")
        self.log.event("INSTRUMENTS_REFRESH_FAILED", f"instrument master refresh ({reason}) failed: {error}; "
                       f"{kept}; retry in {delay:g} s", level=40, error=error, reason=reason,
                       kept_source=self.book.source or None, kept_instruments=len(self.book),
                       kept_loaded_at=self.book.loaded_at or None, retry_in=delay,
                       attempt=state.consecutive_failures)
        self._later(delay, RefreshMaster("retry"))

    def _schedule_daily(self) -> None:
        now = self.clock.now()
        at = next_refresh_at(now, self.refresh_time, self.calendar)
        self.state.next_refresh_at = at
        self._later(at - now, RefreshMaster("daily"))

    def _later(self, delay: float, message: Any) -> None:
        ref = self.actor_ref
        self.timers = [t for t in self.timers if not t.cancelled]
        self.timers.append(self.scheduler.call_later(max(0.0, delay), tell_quietly, ref, message))


def _age(seconds: float) -> str:
    hours = seconds / 3600.0
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
