"""A day of daemon logs for the review tests and its benchmark: real lines through telemetry.logs.

Lines are written by `configure_logging` to a (rotating) file, at virtual times (a handler filter sets
each record's time), with the same loggers, calls and fields as the daemon's parts: the trade lines come
from the real trade state machine (`core.trade.apply`) and are logged the way TradeActor._log_event and
ExecutorActor._journal_entry log them; the strategy's signal line is built by the real `signal_record`.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from actors.signals.strategy import signal_record
from core.market import Candle
from core.orders import Leg, Side
from core.scoring import Score
from core.signals import EntrySignalRaised, ExitSignalRaised
from core.trade import (
    AlertOperator,
    EntryDenied,
    EntryRequested,
    Event,
    ExitRequested,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderPlaced,
    OrderRejected,
    OrderSlippageDetected,
    OrderTimedOut,
    RecordClosedTrade,
    SignalAccepted,
    TradeContext,
    apply,
)
from telemetry.logs import EventLogger, configure_logging, get_logger, set_process_context

DAY = "2026-11-20"


def ist(hhmmss: str, day: str = DAY) -> float:
    """'10:58:03.120' on the day, IST -> epoch seconds."""
    return datetime.fromisoformat(f"{day}T{hhmmss}+05:30").timestamp()


class VirtualClock(logging.Filter):
    """Stamps every record with the virtual time (the formatter reads record.created)."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.now = start

    def at(self, hhmmss: str) -> VirtualClock:
        self.now = ist(hhmmss)
        return self

    def advance(self, seconds: float) -> VirtualClock:
        self.now += seconds
        return self

    def filter(self, record: logging.LogRecord) -> bool:
        record.created = self.now
        record.msecs = (self.now - int(self.now)) * 1000
        return True


@contextmanager
def process_log(path: Path, clock: VirtualClock, max_bytes: int = 0, backups: int = 9, pid: int | None = None,
                role: str | None = None) -> Iterator[None]:
    """One process writing its log: configure_logging to `path` (rotating past max_bytes). Its lines carry
    the simulated process's `pid` and `role` (none when not given: many simulated processes share this
    test's real pid)."""
    with open(os.devnull, "w") as devnull:
        configure_logging("INFO", str(path), max_bytes=max_bytes, backups=backups, stream=devnull)
        set_process_context(pid=pid, role=role)
        root = logging.getLogger()
        writer = threading.get_ident()
        for handler in root.handlers:
            # Only this thread's lines: a thread an earlier test left behind must not add one to the day.
            handler.addFilter(lambda record: record.thread == writer)
            handler.addFilter(clock)
        try:
            yield
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
                handler.close()


# -- the daemon's own lines ------------------------------------------------------------------------------------
runtime_log = get_logger("mybot.runtime")
supervision_log = get_logger("mybot.supervision")


def runtime_starting(role: str = "all") -> None:
    runtime_log.event("RUNTIME_STARTING", f"mybot starting, role {role}", role=role, storage="sqlite:///var/x.db",
                      feed="sim", broker="paper")


def runtime_started(pid: int, role: str = "all") -> None:
    runtime_log.event("RUNTIME_STARTED", f"mybot running ({role}) in 0.412 s", role=role, pid=pid)


def runtime_stopped(exit_code: int = 0) -> None:
    runtime_log.event("RUNTIME_STOPPED", "mybot stopped in 0.210 s", exit_code=exit_code)


def actor_started(supervisor: str, child: str, restarted: bool = False, generation: int = 0) -> None:
    event = "ACTOR_RESTARTED" if restarted else "ACTOR_STARTED"
    get_logger("mybot.supervision", actor=supervisor).event(
        event, f"{child} {'restarted' if restarted else 'started'}", child=child, generation=generation,
        restarts=generation, redelivered=0)


def actor_crashed(child: str, error: str, generation: int = 0, poison: str = "") -> None:
    supervision_log.event("ACTOR_CRASHED", f"{child} crashed in receive: {error}", level=40, actor=child,
                          phase="receive", generation=generation)
    if poison:
        supervision_log.event("DEAD_LETTER", f"message that crashed {child} is not redelivered", level=30,
                              actor=child, message_type=poison, detail=f"{poison}(...)")


def supervisor_escalated(supervisor: str, reason: str) -> None:
    get_logger("mybot.supervision", actor=supervisor).event("SUPERVISOR_ESCALATED", f"{supervisor}: {reason}",
                                                            level=50, reason=reason)


def runtime_escalated(reason: str) -> None:
    runtime_log.event("RUNTIME_ESCALATED", f"root supervisor gave up: {reason}; shutting down for a restart",
                      level=50, reason=reason)


feed_log = get_logger("mybot.FeedActor", actor="feed")


def feed_stale(symbol: str, age: float = 10.2) -> None:
    feed_log.event("FEED_STALE", f"no tick for {symbol} in {age:.1f} s", level=30, symbol=symbol,
                   age_seconds=round(age, 3))


def feed_resumed(symbol: str) -> None:
    feed_log.event("FEED_RESUMED", f"{symbol} ticking again", symbol=symbol)


def storage_unavailable(detail: str = "connection refused") -> None:
    get_logger("storage.postgres").event("STORAGE_UNAVAILABLE", "database unreachable", level=30, detail=detail)


def storage_recovered() -> None:
    get_logger("storage.postgres").event("STORAGE_RECOVERED", "database reachable again")


def bus_degraded() -> None:
    get_logger("mybot.Publisher", actor="publisher").event(
        "BUS_DEGRADED", "publishing failed: Error 111 connecting to 127.0.0.1:6379; candles keep building", level=30)


def bus_restored(failures: int) -> None:
    get_logger("mybot.Publisher", actor="publisher").event("BUS_RESTORED", "publishing works again",
                                                           failures=failures)


risk_log = get_logger("mybot.risk")


def kill_switch(engaged: bool, reason: str) -> None:
    risk_log.event("KILL_SWITCH_ENGAGED" if engaged else "KILL_SWITCH_RELEASED", reason,
                   level=40 if engaged else 20, reason=reason)


def flatten(reason: str, positions: list[str]) -> None:
    get_logger("mybot.Executor", actor="executor").event(
        "FLATTEN", f"exiting {len(positions)} positions: {reason}", reason=reason, positions=positions)


def trading_halted(code: str, reason: str, pos_id: str) -> None:
    risk_log.event("TRADING_HALTED", reason, level=40, code=code, reason=reason, pos_id=pos_id)


def session_rolled(day: str, previous: str) -> None:
    risk_log.event("RISK_SESSION_ROLLED", f"new session {day}: counters reset", day=day, previous_day=previous,
                   kill_switch=False, reconciliation_hold=False)


def reconcile_incident(symbol: str, broker_qty: int, book_qty: int) -> None:
    kind = "BROKER_POSITION_WITHOUT_TRADE" if book_qty == 0 else "POSITION_MISMATCH"
    incident = {"kind": kind, "symbol": symbol, "broker_qty": broker_qty, "book_qty": book_qty,
                "difference": broker_qty - book_qty,
                "detail": f"{symbol}: broker holds {broker_qty}, our trades' orders explain {book_qty} "
                          f"({kind.replace('_', ' ').lower()})"}
    get_logger("mybot.Reconciler", actor="reconciler").event("RECONCILE_INCIDENT", incident["detail"],
                                                                  level=40, **incident)
    risk_log.event("RECONCILIATION_HOLD", f"reconciliation: {kind} (acknowledge with POST /v1/control/reconcile/ack)",
                   level=40, engaged=True, reason=f"reconciliation: {kind} (acknowledge with POST "
                                                  "/v1/control/reconcile/ack)")


def reconcile_acknowledged(who: str, count: int, accepted: dict[str, int]) -> None:
    risk_log.event("RECONCILIATION_HOLD", "RECONCILIATION_HOLD", engaged=False, reason="")
    get_logger("mybot.reconciler").event("RECONCILE_ACKNOWLEDGED", f"{count} incidents acknowledged by {who}; "
                                         "hold released", incidents=count, accepted=accepted, released=True)


def token_expiring(hours_left: float) -> None:
    get_logger("actors.dhan.client").event("TOKEN_EXPIRING", f"Dhan token expires in {hours_left:.1f} h",
                                           level=30, hours_left=hours_left)


def token_renewed() -> None:
    get_logger("actors.dhan.client").event("TOKEN_RENEWED", "Dhan token renewed")


def entry_skipped(symbol: str, close: float, reason: str) -> None:
    candle = Candle(symbol, 0, close, close, close, close)
    record = signal_record("ENTRY_SKIPPED", symbol, candle, _score(symbol, 0.70), reason=reason)
    get_logger("mybot.StrategyActor", actor="strategy").event(
        "ENTRY_SKIPPED", f"{symbol} entry_score 0.700: {reason}", **{k: v for k, v in record.items() if k != "kind"})


def sdk_print(path: Path, text: str) -> None:
    """What the dhanhq SDK prints to stdout, in the middle of the captured log."""
    with open(path, "a") as handle:
        handle.write(text + "\n")


def _score(symbol: str, entry_score: float, ts: int = 0, direction: int = 1) -> Score:
    return Score(score_0_100=entry_score * 100, direction=direction, entry_score=entry_score, exit_score=0.1,
                 entry_confidence=0.8, exit_confidence=0.2, symbol=symbol, ts=ts,
                 components={"trend": 0.62, "momentum": 0.55, "volatility": 0.2, "volume": 0.4, "final": 0.58,
                             "saturation": 0.1})


# -- one trade, as the strategy, the executor and its trade actor log it ------------------------------------
class Trade:
    def __init__(self, pos_id: str, clock: VirtualClock, symbol: str = "SEC_49081", underlying: str = "NIFTY",
                 instrument: str = "NIFTY 2026-11-27 24500 CE", side: Side = Side.BUY, qty: int = 75) -> None:
        self.pos_id, self.clock, self.symbol, self.underlying = pos_id, clock, symbol, underlying
        self.instrument, self.side, self.qty = instrument, side, qty
        self.context = TradeContext()
        self.seq = 0
        self.expected_price = 0.0
        self.log: EventLogger = get_logger("mybot.TradeActor", actor=f"trade:{pos_id}").bind(pos_id=pos_id)
        self.executor = get_logger("mybot.Executor", actor="executor")
        self.strategy = get_logger("mybot.StrategyActor", actor="strategy")

    # The strategy's ENTRY_SIGNAL (StrategyActor._send).
    def signal(self, close: float, premium: float, entry_score: float = 0.72) -> None:
        at = self.clock.now
        candle_ts = int(at // 60 * 60) - 60
        candle = Candle(self.underlying, candle_ts, close - 5, close + 3, close - 8, close, volume=1200, ticks=60)
        score = _score(self.underlying, entry_score, candle_ts)
        signal = EntrySignalRaised(self.pos_id, self.underlying, self.symbol, self.side, self.qty, score, candle_ts,
                                   float(candle_ts + 60), direction=1, price=premium, lots=1, strike=24500.0,
                                   option_type="CE", note="ATM CE")
        record = signal_record("ENTRY_SIGNAL", self.underlying, candle, score, signal)
        message = (f"{signal.side.value} {signal.qty} {signal.instrument} ({signal.lots} lot(s)): "
                   f"{signal.symbol} entry_score {score.entry_score:.3f}, direction {signal.direction:+d}")
        self.strategy.event("ENTRY_SIGNAL", message, **{k: v for k, v in record.items() if k != "kind"})

    def exit_signal(self, reason: str, exit_score: float = 0.66) -> None:
        at = self.clock.now
        candle_ts = int(at // 60 * 60) - 60
        candle = Candle(self.underlying, candle_ts, 24500, 24510, 24490, 24505)
        score = _score(self.underlying, 0.3, candle_ts)
        signal = ExitSignalRaised(self.pos_id, reason, score, float(candle_ts + 60), self.underlying, exit_score)
        record = signal_record("EXIT_SIGNAL", self.underlying, candle, score, signal)
        self.strategy.event("EXIT_SIGNAL", f"exit {self.pos_id}: {reason} {exit_score:.3f}",
                            **{k: v for k, v in record.items() if k != "kind"})

    # The executor's journal of the accepted signal and the risk verdict (ExecutorActor._journal_entry).
    def accept(self, premium: float, limit_price: float, denied: tuple[str, str] | None = None,
               source: str = "strategy") -> None:
        now = self.clock.now
        self.expected_price = premium
        correlation = f"{self.pos_id}-E"
        events: list[Event] = [SignalAccepted(at=now, pos_id=self.pos_id, symbol=self.symbol,
                                              instrument=self.instrument, side=self.side, qty=self.qty,
                                              expected_price=premium, reason=f"{source}: entry_score 0.720")]
        if denied is None:
            events.append(EntryRequested(at=now, limit_price=limit_price, expected_price=premium))
        else:
            events.append(EntryDenied(at=now, reason=f"{denied[0]}: {denied[1]}"))
        for event in events:
            before = self.context
            self.context, _ = apply(before, event)
            self.seq += 1
            level = 30 if isinstance(event, EntryDenied) else 20
            extra: dict[str, Any] = ({"code": denied[0], "reason": denied[1]} if denied is not None
                                     else {"limit_price": limit_price})
            self.executor.event(event.log_name, f"{self.pos_id}: {before.state} -> {self.context.state}",
                                level=level, pos_id=self.pos_id, correlation_id=correlation, db_id=self.seq,
                                seq=self.seq, symbol=self.symbol, side=self.side.value, qty=self.qty,
                                expected_price=premium, source=source, to_state=self.context.state.value,
                                **(extra if event is events[-1] else {}))

    # The executor's submit, with the paper broker's own line (ExecutorActor._submit, PaperBroker.place).
    def submitted(self, order_id: str, leg: Leg, price: float, attempt: int = 0) -> None:
        correlation = f"{self.pos_id}-{'E' if leg is Leg.ENTRY else 'X'}{attempt or ''}"
        side = self.side if leg is Leg.ENTRY else (Side.SELL if self.side is Side.BUY else Side.BUY)
        get_logger("mybot.broker.paper").event("PAPER_ORDER_ACCEPTED", "paper order accepted", order_id=order_id,
                                               correlation_id=correlation, symbol=self.symbol, side=side.value,
                                               qty=self.qty, price=price)
        self.executor.event("ORDER_SUBMITTED", f"{self.pos_id}: {leg} {side} {self.qty} {self.symbol} @ {price} sent",
                            pos_id=self.pos_id, order_id=order_id, correlation_id=correlation, leg=leg.value,
                            status="PENDING", limit_price=price)

    def submit_deferred(self, leg: Leg, attempt: int, why: str = "broker unavailable") -> None:
        correlation = f"{self.pos_id}-{'E' if leg is Leg.ENTRY else 'X'}"
        self.executor.event("ORDER_SUBMIT_DEFERRED", f"{self.pos_id}: {why}; retry {attempt + 1} in 0.50 s",
                            level=30, pos_id=self.pos_id, correlation_id=correlation, attempt=attempt)

    # The trade actor's transitions (TradeActor._apply / _log_event / _carry_out).
    def placed(self, order_id: str, leg: Leg, price: float) -> None:
        correlation = self.context.entry_correlation_id if leg is Leg.ENTRY else self.context.exit_correlation_id
        self._apply(OrderPlaced(at=self.clock.now, order_id=order_id, correlation_id=correlation, leg=leg,
                                qty=self.qty, price=price))

    def filled(self, order_id: str, leg: Leg, qty: int, avg_price: float, partial: bool = False) -> None:
        kind = OrderPartiallyFilled if partial else OrderFilled
        self._apply(kind(at=self.clock.now, order_id=order_id, leg=leg, filled_qty=qty, avg_price=avg_price))

    def timed_out(self, order_id: str, leg: Leg) -> None:
        self._apply(OrderTimedOut(at=self.clock.now, order_id=order_id, leg=leg))

    def cancelled(self, order_id: str, leg: Leg, reason: str = "cancelled after timeout") -> None:
        self._apply(OrderCancelled(at=self.clock.now, order_id=order_id, leg=leg, reason=reason))

    def rejected(self, leg: Leg, reason: str, order_id: str = "") -> None:
        self._apply(OrderRejected(at=self.clock.now, leg=leg, reason=reason, order_id=order_id))

    def slipped(self, limit_pct: float = 0.5) -> None:
        context = self.context
        pct = (context.avg_entry_price - self.expected_price) / self.expected_price * 100
        self._apply(OrderSlippageDetected(at=self.clock.now, order_id=context.entry_order_id,
                                          expected=self.expected_price, actual=context.avg_entry_price,
                                          pct=round(pct, 4), limit_pct=limit_pct))

    def exit_requested(self, reason: str, limit_price: float, expected: float) -> None:
        self._apply(ExitRequested(at=self.clock.now, reason=reason, limit_price=limit_price,
                                  expected_price=expected))

    def recovering(self) -> None:
        self.log.event("TRADE_RECOVERING", f"{self.pos_id}: rebuilt {self.context.state} from {self.seq} events; "
                       "reconciling with the broker", state=self.context.state.value, events=self.seq)

    def _apply(self, event: Event) -> None:
        before = self.context
        after, commands = apply(before, event)
        self.context = after
        self.seq += 1
        payload = {k: v for k, v in event.to_payload().items() if k not in ("at", "pos_id")}
        leg = payload.get("leg")
        if leg:
            default = after.entry_correlation_id if Leg(leg) is Leg.ENTRY else after.exit_correlation_id
        else:
            default = after.exit_correlation_id if isinstance(event, ExitRequested) and after.exit_correlation_id \
                else after.entry_correlation_id
        correlation = payload.pop("correlation_id", "") or default
        level = 30 if event.log_name in ("ORDER_TIMEOUT", "ORDER_SLIPPAGE", "ORDER_REJECTED", "ENTRY_DENIED") else 20
        self.log.event(event.log_name, f"{self.pos_id}: {before.state} -> {after.state} ({event.name})",
                       level=level, correlation_id=correlation, db_id=self.seq, seq=self.seq,
                       from_state=before.state.value, to_state=after.state.value, event_type=event.name, **payload)
        for command in commands:
            if isinstance(command, AlertOperator):
                self.log.event("OPERATOR_ALERT", command.message, level=50, pos_id=command.pos_id)
            elif isinstance(command, RecordClosedTrade):
                self.log.event("TRADE_CLOSED", f"{self.pos_id}: {command.qty} {command.symbol} "
                               f"{command.avg_entry_price:.2f} -> {command.avg_exit_price:.2f}, "
                               f"P&L {command.realized_pnl:+.2f} ({command.exit_reason})",
                               symbol=command.symbol, qty=command.qty, realized_pnl=round(command.realized_pnl, 2),
                               exit_reason=command.exit_reason)
                risk_log.event("RISK_TRADE_COUNTED", f"{self.pos_id}: P&L {command.realized_pnl:+.2f}",
                               pos_id=self.pos_id, pnl=round(command.realized_pnl, 2),
                               realized_pnl=round(command.realized_pnl, 2), consecutive_losses=0)

    # A whole round trip, `hold` seconds long, with typical latencies.
    def round_trip(self, entry: float, exit_price: float, hold: float, reason: str = "EXIT_SCORE",
                   order_ids: tuple[str, str] = ("", "")) -> None:
        entry_id = order_ids[0] or f"P{zlib.crc32(self.pos_id.encode()):010d}"
        exit_id = order_ids[1] or f"Q{zlib.crc32(self.pos_id.encode()):010d}"
        self.signal(24510.0, entry)
        self.clock.advance(0.004)
        self.accept(entry, round(entry * 1.01, 2))
        self.clock.advance(0.030)
        self.submitted(entry_id, Leg.ENTRY, round(entry * 1.01, 2))
        self.clock.advance(0.002)
        self.placed(entry_id, Leg.ENTRY, round(entry * 1.01, 2))
        self.clock.advance(0.250)
        self.filled(entry_id, Leg.ENTRY, self.qty, entry)
        self.clock.advance(hold)
        self.exit_signal(reason)
        self.clock.advance(0.003)
        self.exit_requested(reason, round(exit_price * 0.99, 2), exit_price)
        self.clock.advance(0.030)
        self.submitted(exit_id, Leg.EXIT, round(exit_price * 0.99, 2))
        self.clock.advance(0.002)
        self.placed(exit_id, Leg.EXIT, round(exit_price * 0.99, 2))
        self.clock.advance(0.300)
        self.filled(exit_id, Leg.EXIT, self.qty, exit_price)


# -- the reviewed day of the tests: two processes' logs, rotated, with a kill -9 in the middle of a trade ----
TRADE_WIN, TRADE_RESTARTED, TRADE_TIMEOUT = "NIFTY-2611200930-1", "NIFTY-2611201000-2", "NIFTY-2611201100-3"
TRADE_SLIPPED, TRADE_DENIED, TRADE_RETRIED = "NIFTY-2611201110-4", "NIFTY-2611201205-5", "NIFTY-2611201320-6"
TRADE_HALTING = "NIFTY-2611201440-7"


def _gzip_oldest(folder: Path, name: str) -> None:
    import gzip
    import shutil

    rotated = sorted(folder.glob(f"{name}.[0-9]*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    oldest = rotated[-1]
    with open(oldest, "rb") as src, gzip.open(f"{oldest}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    oldest.unlink()


def build_day(folder: Path) -> dict[str, Path]:
    """mds.log (+ rotations, the oldest gzipped) and trader.log (+ rotations): the day the tests review.

    mds process (pid 1001): candles for NIFTY and SEC_49081 every minute, FEED_STALE NIFTY 10:58:03.120 ->
    11:00:10.620, Redis down 11:20:00 -> 11:20:09.500, candles:BANKNIFTY crashes at 11:30:00 (a dead letter)
    and is restarted at 11:30:00.180.
    trader: pid 2001 until a kill -9 after 10:04:59.500 (a line cut short), pid 2002 from 10:05:20 (started
    10:05:21) until an escalation at 15:00:00 (exit 1 at 15:00:01), pid 2003 from 15:00:05 (started
    15:00:05.400). Database down 10:40:00 -> 10:41:30 (two STORAGE_UNAVAILABLE lines). Trades: a win
    (09:30), one across the kill (10:00 -> 10:20), an entry that times out (11:00:30, cancelled 11:00:30.200),
    a slippage exit (11:10:00.300 -> closed 11:10:01.000), a denial under the kill switch (12:00 -> 12:15),
    a reconciliation incident 13:00 acknowledged 13:05, an exit rejected once then retried (13:20), the token
    expiring 14:00 -> renewed 14:30, a loss at 14:40 that halts trading (still halted at the end).
    Two SDK prints and a line from the previous day are mixed in.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mds, trader = folder / "mds.log", folder / "trader.log"
    clock = VirtualClock(ist("09:00:00"))

    with process_log(mds, clock, max_bytes=40_000, pid=1001, role="mds"):
        runtime_starting("mds")
        clock.advance(0.4)
        runtime_started(1001, "mds")
        actor_started("root", "feed")
        builder = get_logger("mybot.CandleBuilder")
        price = {"NIFTY": 24500.0, "SEC_49081": 100.0}
        for minute in range(9 * 60 + 16, 15 * 60 + 31):
            clock.now = ist(f"{minute // 60:02d}:{minute % 60:02d}:00.010")
            for symbol in price:
                price[symbol] += 1.5 if (minute // 7) % 2 else -1.0
                if symbol == "SEC_49081":
                    price[symbol] = max(price[symbol], 60.0)
                builder.event("CANDLE_CLOSED", f"{symbol} closed", actor=f"candles:{symbol}", symbol=symbol,
                              candle_ts=int(clock.now // 60 * 60) - 60, close=round(price[symbol], 2))
            if minute == 10 * 60 + 58:
                clock.at("10:58:03.120")
                feed_stale("NIFTY")
            elif minute == 11 * 60:
                clock.at("11:00:10.620")
                feed_resumed("NIFTY")
            elif minute == 11 * 60 + 20:
                clock.at("11:20:00")
                bus_degraded()
                clock.at("11:20:09.500")
                bus_restored(14)
            elif minute == 11 * 60 + 30:
                clock.at("11:30:00")
                actor_crashed("candles:BANKNIFTY", "ValueError: tick without price", generation=0,
                              poison="TicksReceived")
                clock.at("11:30:00.180")
                actor_started("candles", "candles:BANKNIFTY", restarted=True, generation=1)
        clock.at("15:31:00")
        runtime_stopped(0)
    _gzip_oldest(folder, "mds.log")

    with open(trader, "w") as handle:  # yesterday's last line, outside --day
        handle.write('{"ts":"2026-11-19T18:29:00.000+00:00","level":"INFO","logger":"mybot.runtime",'
                     '"event":"RUNTIME_STOPPED","message":"mybot stopped","exit_code":0}\n')
    clock.at("09:00:01")
    with process_log(trader, clock, max_bytes=12_000, pid=2001, role="trader"):
        runtime_starting("trader")
        clock.advance(0.5)
        runtime_started(2001, "trader")
        clock.at("09:30:00")
        Trade(TRADE_WIN, clock).round_trip(101.5, 109.2, hold=600.0, order_ids=("P1001", "P1002"))
        clock.at("09:45:00")
        sdk_print(trader, "Connecting to Dhan order update websocket ...")
        restarted = Trade(TRADE_RESTARTED, clock)
        clock.at("10:00:00")
        restarted.signal(24510.0, 98.0)
        clock.advance(0.004)
        restarted.accept(98.0, 99.0)
        clock.advance(0.030)
        restarted.submitted("P2001", Leg.ENTRY, 99.0)
        clock.advance(0.002)
        restarted.placed("P2001", Leg.ENTRY, 99.0)
        clock.advance(0.250)
        restarted.filled("P2001", Leg.ENTRY, 75, 98.2)
        clock.at("10:04:59.500")
        get_logger("mybot.http").event("CONTROL_CALL", "GET /v1/positions", who="127.0.0.1")
    with open(trader, "a") as handle:  # kill -9 in the middle of a write
        handle.write('{"ts":"2026-11-20T04:35:00.100+00:00","level":"INFO","logger":"mybot.http","event":"CONT')

    clock.at("10:05:20")
    with process_log(trader, clock, max_bytes=12_000, pid=2002, role="trader"):
        runtime_starting("trader")
        clock.at("10:05:21")
        runtime_started(2002, "trader")
        clock.advance(0.05)
        restarted.recovering()
        clock.at("10:20:00")
        restarted.exit_signal("EXIT_SCORE")
        clock.advance(0.003)
        restarted.exit_requested("EXIT_SCORE", 95.0, 96.0)
        clock.advance(0.030)
        restarted.submitted("P2002", Leg.EXIT, 95.0)
        clock.advance(0.002)
        restarted.placed("P2002", Leg.EXIT, 95.0)
        clock.advance(0.400)
        restarted.filled("P2002", Leg.EXIT, 75, 96.1)

        clock.at("10:40:00")
        storage_unavailable("connection refused")
        clock.at("10:40:30")
        storage_unavailable("connection refused")
        clock.at("10:41:30")
        storage_recovered()

        timeout = Trade(TRADE_TIMEOUT, clock)
        clock.at("11:00:00")
        timeout.signal(24480.0, 97.0)
        clock.advance(0.004)
        timeout.accept(97.0, 98.0)
        clock.advance(0.030)
        timeout.submitted("P3001", Leg.ENTRY, 98.0)
        clock.advance(0.002)
        timeout.placed("P3001", Leg.ENTRY, 98.0)
        clock.at("11:00:30")
        timeout.timed_out("P3001", Leg.ENTRY)
        clock.at("11:00:30.200")
        timeout.cancelled("P3001", Leg.ENTRY)

        slipped = Trade(TRADE_SLIPPED, clock)
        clock.at("11:10:00")
        slipped.signal(24520.0, 100.0)
        clock.advance(0.004)
        slipped.accept(100.0, 101.0)
        clock.advance(0.030)
        slipped.submitted("P4001", Leg.ENTRY, 101.0)
        clock.advance(0.002)
        slipped.placed("P4001", Leg.ENTRY, 101.0)
        clock.at("11:10:00.300")
        slipped.filled("P4001", Leg.ENTRY, 75, 101.0)
        slipped.slipped(limit_pct=0.5)
        clock.at("11:10:00.310")
        slipped.exit_requested("ORDER_SLIPPAGE: entry filled at 101.0 vs expected 100.0", 99.0, 100.5)
        clock.at("11:10:00.350")
        slipped.placed("P4002", Leg.EXIT, 99.0)
        clock.at("11:10:01.000")
        slipped.filled("P4002", Leg.EXIT, 75, 100.4)

        clock.at("12:00:00")
        kill_switch(True, "news: RBI policy")
        denied = Trade(TRADE_DENIED, clock)
        clock.at("12:05:00")
        denied.signal(24550.0, 102.0)
        clock.advance(0.004)
        denied.accept(102.0, 103.0, denied=("KILL_SWITCH", "kill switch engaged: news: RBI policy"))
        clock.at("12:15:00")
        kill_switch(False, "news over")

        clock.at("13:00:00")
        reconcile_incident("SEC_49090", broker_qty=75, book_qty=0)
        clock.at("13:05:00")
        reconcile_acknowledged("operator", 1, {"SEC_49090": 75})

        retried = Trade(TRADE_RETRIED, clock)
        clock.at("13:20:00")
        retried.signal(24500.0, 99.0)
        clock.advance(0.004)
        retried.accept(99.0, 100.0)
        clock.advance(0.030)
        retried.placed("P6001", Leg.ENTRY, 100.0)
        clock.advance(0.300)
        retried.filled("P6001", Leg.ENTRY, 75, 99.1)
        clock.at("13:40:00")
        retried.exit_requested("EXIT_SCORE", 104.0, 105.0)
        clock.advance(0.030)
        retried.rejected(Leg.EXIT, "RMS: margin shortfall")
        clock.advance(0.010)
        retried.exit_requested("retry exit (exit order (unplaced) ended unfilled: RMS: margin shortfall); "
                               "reason: EXIT_SCORE", 104.0, 105.0)
        clock.advance(0.030)
        retried.placed("P6003", Leg.EXIT, 104.0)
        clock.at("13:40:01.000")
        retried.filled("P6003", Leg.EXIT, 75, 105.2)

        clock.at("14:00:00")
        token_expiring(2.0)
        sdk_print(trader, "dhanhq: token refreshed (plain print)")
        clock.at("14:30:00")
        token_renewed()

        halting = Trade(TRADE_HALTING, clock)
        clock.at("14:40:00")
        halting.round_trip(110.0, 40.0, hold=120.0, order_ids=("P7001", "P7002"))
        trading_halted("DAILY_MAX_LOSS", "daily loss 5250.00 >= limit 5000", TRADE_HALTING)

        clock.at("15:00:00")
        supervisor_escalated("trading", "executor exceeded 5 restarts in 10s (last: RuntimeError: broker)")
        runtime_escalated("trading: executor exceeded 5 restarts in 10s")
        clock.at("15:00:01")
        runtime_stopped(1)
    clock.at("15:00:05")
    with process_log(trader, clock, max_bytes=12_000, pid=2003, role="trader"):
        runtime_starting("trader")
        clock.at("15:00:05.400")
        runtime_started(2003, "trader")
        clock.at("15:30:00")
        get_logger("mybot.http").event("CONTROL_CALL", "GET /v1/status", who="127.0.0.1")
    _gzip_oldest(folder, "trader.log")
    return {"mds": mds, "trader": trader}
