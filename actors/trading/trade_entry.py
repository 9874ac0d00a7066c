"""How a trade begins (a part of TradeActor, kept apart to keep each file short; the actor's state lives in
actors/trading/trade_actor.py): an entry decided and journaled inside the database's entry gate, from what
every trader process holds, then sent; or units no live trade explains, taken on to be exited."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.trading.journal import Step
from actors.trading.messages import AdoptPosition, EntryDecision, EntryRefusal, OpenTrade
from actors.trading.trade_deps import TradeDeps, TradeOrigin
from core.protection import ProtectionError
from core.risk import Denied, EntryIntent
from core.trade import (
    EntryDenied,
    EntryRequested,
    Event,
    PositionAdopted,
    TradeContext,
    TradeState,
    opening_events,
)
from storage.errors import StorageConflict, StorageError
from telemetry.logs import EventLogger

__all__ = ["TradeEntry"]

S = TradeState


class TradeEntry:
    """Mixed into TradeActor (which defines the state and the step machinery declared here)."""

    pos_id: str
    deps: TradeDeps
    origin: TradeOrigin
    context: TradeContext
    log: EventLogger
    signal_sent_at: float
    entry_in_doubt: bool

    if TYPE_CHECKING:
        def _stage(self, events: list[Event]) -> list[Step]: ...

        def _record(self, steps: list[Step], order_row: None = None, fresh: bool = False) -> None: ...

        def _commit(self, steps: list[Step], source: str = "") -> None: ...

        def _finish(self) -> None: ...

        def _restore(self) -> None: ...

    # -- the entry ------------------------------------------------------------------------------------------

    def _open(self, message: OpenTrade) -> None:
        order, deps = message.order, self.deps
        deps.entries.bump("entries")
        self.signal_sent_at = message.sent_at
        if self.context.state is not S.NEW:
            self._answer(message, EntryRefusal.DUPLICATE, "duplicate pos_id: pos_id is already known")
            return
        if not deps.ready.is_set():
            self._answer(message, EntryRefusal.NOT_READY,
                         "entries are refused until the start-up reconciliation has passed")
            self._finish()
            return
        try:
            protection = deps.exits.merged(order.exits)
        except ProtectionError as exc:
            self._answer(message, EntryRefusal.INVALID_EXITS, f"protective exits: {exc}")
            self._finish()
            return
        now = deps.clock.now()
        quote = deps.quotes(order.symbol)
        intent = EntryIntent(symbol=order.symbol, qty=order.qty, price=order.price, quote=quote,
                             band_pct=deps.protection_band_pct, manual=order.source == "operator")
        try:
            # Decided and journaled inside the database's entry gate, from what every process holds: two
            # entries (here or in another process) never both take the last slot. Sent after it commits.
            with deps.risk.entry(now, intent, deps.leases.claim_of(self.pos_id)) as decision:
                events = opening_events(
                    at=now, pos_id=order.pos_id, symbol=order.symbol, instrument=order.instrument, side=order.side,
                    qty=order.qty, price=order.price, quote=quote, allowed=decision.allowed,
                    denial=f"{decision.code}: {decision.reason}" if isinstance(decision, Denied) else "",
                    band_pct=deps.protection_band_pct, reason=f"{order.source}: {order.reason}",
                    tick=deps.tick_size(order.symbol), protection=protection)
                staged = self._stage(events)
                self._record(staged, fresh=True)  # with its lease (claimed by the gate): ours from here on
        except StorageError as exc:
            if isinstance(exc, StorageConflict):  # another process journaled this pos_id first
                self._answer(message, EntryRefusal.DUPLICATE, f"duplicate pos_id: {exc}")
                self._finish()
                return
            self._answer(message, EntryRefusal.STORAGE, f"storage unavailable: {exc}")
            # Nothing was sent. But the gate's COMMIT may have reached the database while its answer was lost
            # (the connection cut in between: the soak met it): then the trade is journaled, ENTRY_PENDING,
            # with this process's lease, and nobody would ever end it. Read the journal once the database
            # answers: empty, this actor ends; journaled, it recovers the trade (resolved at the broker).
            self.entry_in_doubt = True
            self._restore()
            return
        self.origin.journaled = True  # from here on, a restart recovers this trade as its owner
        self._commit(staged, source=order.source)
        accepted = isinstance(events[-1], EntryRequested)
        deps.entries.bump("accepted" if accepted else "denied")
        if message.reply is not None and not message.reply.done():
            denied = events[-1]
            code, _, reason = denied.reason.partition(": ") if isinstance(denied, EntryDenied) else ("", "", "")
            message.reply.set_result(EntryDecision(order.pos_id, accepted, code, reason))

    def _adopt(self, message: AdoptPosition) -> None:
        if self.context.state is not S.NEW:
            return  # adopted (or opened) already
        event = PositionAdopted(at=self.deps.clock.now(), pos_id=self.pos_id, symbol=message.symbol,
                                instrument=message.symbol, side=message.side, qty=message.qty,
                                avg_price=message.avg_price, reason=message.reason)
        try:
            with self.deps.storage.transaction():  # the journal's first step and the lease, together
                staged = self._stage([event])
                self._record(staged, fresh=True)
                self.deps.leases.claim(self.pos_id)
            self.origin.journaled = True
            self._commit(staged, source="reconciler")
        except StorageError as exc:  # adopted already (another pass, another process), or no database now
            self.log.event("POSITION_ADOPTION_FAILED", f"{self.pos_id}: {exc}", level=30, symbol=message.symbol)
            self._finish()

    def _answer(self, message: OpenTrade, code: EntryRefusal, reason: str) -> None:
        self.deps.entries.bump("duplicates" if code is EntryRefusal.DUPLICATE else "denied")
        self.log.event("ENTRY_DUPLICATE" if code is EntryRefusal.DUPLICATE else "ENTRY_DENIED",
                       f"{self.pos_id}: {reason}; nothing sent", level=30, code=code.value,
                       source=message.order.source)
        if message.reply is not None and not message.reply.done():
            message.reply.set_result(EntryDecision(self.pos_id, False, code.value, reason))
