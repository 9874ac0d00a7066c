"""The soak's invariants: plain data in (what the journal, the trades table, the broker and the candle builders
say), a named verdict with its evidence out. No I/O here except `candle_invariants`, which asks PostgreSQL
for the set differences (hundreds of thousands of candles are compared where they are stored).

Names (bench/soak.py runs them after the runtime stopped):
- candles_persisted_once              every (symbol, ts) a candle builder closed or revised has exactly one
                                      row in `candles`, and no row exists that no builder emitted
- candles_latest_revision_persisted   each row holds the last revision a builder emitted for its minute
- trades_closed_or_open_at_broker     every trade is CLOSED, ended without a position (nothing filled), or
                                      POSITION_OPEN with the broker holding exactly its open quantity; per
                                      instrument the broker's net quantity is the trades' open quantity
- no_duplicate_order                  at most one broker order per correlation id, at most one filled entry
                                      order per trade, every broker order belongs to a journaled trade, and per
                                      trade the broker's filled quantities (entry, exit) equal the journal's
- trades_rows_match_journal           the `trades` row (what the API shows) says what the journal says
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.orders import BrokerOrder, BrokerPosition, Leg, correlation_id

__all__ = [
    "Invariant",
    "TradeFacts",
    "attribute_orders",
    "candle_invariants",
    "order_invariants",
    "trade_invariants",
]

ENDED_WITHOUT_POSITION = frozenset({"REJECTED", "CANCELLED", "DENIED"})
SETTLED = frozenset({"CLOSED", "POSITION_OPEN"}) | ENDED_WITHOUT_POSITION
EVIDENCE_SAMPLE = 20  # offending items listed per problem (the counts are always complete)
ATTEMPTS_SCANNED = 64  # correlation ids tried per leg when a trade's ids are digests


@dataclass(frozen=True)
class Invariant:
    name: str
    ok: bool
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "summary": self.summary, "evidence": self.evidence}


@dataclass(frozen=True)
class TradeFacts:
    """One trade as its `trades` row and its journal (rebuilt through core.trade) tell it."""

    pos_id: str
    instrument: str
    side: str  # BUY / SELL (of the entry)
    row_state: str
    row_entry_filled: int
    row_exit_filled: int
    journal_state: str
    journal_entry_filled: int
    journal_exit_filled: int
    adopted: bool = False  # the reconciler took on units nobody explained: no entry order of its own
    journal_error: str = ""  # the journal could not be replayed


@dataclass
class Attributed:
    entry: list[BrokerOrder] = field(default_factory=list)
    exit: list[BrokerOrder] = field(default_factory=list)

    def filled(self, leg: Leg) -> int:
        return sum(order.filled_qty for order in (self.entry if leg is Leg.ENTRY else self.exit))


def _sample(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if len(out) >= EVIDENCE_SAMPLE:
            break
        out.append(item)
    return out


def attribute_orders(orders: Sequence[BrokerOrder], pos_ids: Iterable[str],
                     known: dict[str, tuple[str, str]] | None = None) -> tuple[dict[str, Attributed], list[BrokerOrder]]:
    """Which trade (and leg) each broker order belongs to, by its correlation id. `known` adds the orders
    table's own correlation_id -> (pos_id, leg). Returns the orders per pos_id and those nobody owns."""
    owner: dict[str, tuple[str, Leg]] = {}
    for cid, (pos_id, leg) in (known or {}).items():
        owner[cid] = (pos_id, Leg(leg))
    ids = list(pos_ids)
    for pos_id in ids:
        for leg in (Leg.ENTRY, Leg.EXIT):
            for attempt in range(ATTEMPTS_SCANNED):
                owner.setdefault(correlation_id(pos_id, leg, attempt), (pos_id, leg))
    by_trade: dict[str, Attributed] = {pos_id: Attributed() for pos_id in ids}
    nobody: list[BrokerOrder] = []
    for order in orders:
        found = owner.get(order.correlation_id)
        if found is None:
            nobody.append(order)
            continue
        pos_id, leg = found
        bucket = by_trade.setdefault(pos_id, Attributed())
        (bucket.entry if leg is Leg.ENTRY else bucket.exit).append(order)
    return by_trade, nobody


def _signed(side: str, qty: int) -> int:
    return qty if side == "BUY" else -qty


def trade_invariants(trades: Sequence[TradeFacts], orders: Sequence[BrokerOrder],
                     positions: Sequence[BrokerPosition],
                     known: dict[str, tuple[str, str]] | None = None) -> list[Invariant]:
    """trades_closed_or_open_at_broker and trades_rows_match_journal."""
    by_trade, nobody = attribute_orders(orders, (t.pos_id for t in trades), known)
    problems: dict[str, list[dict[str, Any]]] = defaultdict(list)
    states = Counter(t.row_state for t in trades)
    for t in trades:
        held = by_trade[t.pos_id].filled(Leg.ENTRY) - by_trade[t.pos_id].filled(Leg.EXIT)
        row_open = t.row_entry_filled - t.row_exit_filled
        what = {"pos_id": t.pos_id, "state": t.row_state, "row_open_qty": row_open, "broker_net_qty": held}
        if t.row_state not in SETTLED:
            problems["unsettled"].append(what)
        elif t.row_state == "CLOSED":
            if row_open != 0 or (held != 0 and not t.adopted):
                problems["closed_but_units_held"].append(what)
        elif t.row_state in ENDED_WITHOUT_POSITION:
            if t.row_entry_filled or by_trade[t.pos_id].filled(Leg.ENTRY):
                problems["no_position_but_filled"].append(what)
        elif row_open <= 0 or (held != row_open and not t.adopted):
            problems["open_qty_differs_from_broker"].append(what)
    # Per instrument, the broker's net quantity is what the open trades hold (orders nobody owns included).
    expected: Counter[str] = Counter()
    for t in trades:
        if t.row_state not in ENDED_WITHOUT_POSITION:
            expected[t.instrument] += _signed(t.side, t.row_entry_filled - t.row_exit_filled)
    broker_net = {p.symbol: p.net_qty for p in positions}
    for symbol in sorted(set(expected) | set(broker_net)):
        if expected.get(symbol, 0) != broker_net.get(symbol, 0):
            problems["instrument_net_differs"].append(
                {"instrument": symbol, "trades_open_qty": expected.get(symbol, 0),
                 "broker_net_qty": broker_net.get(symbol, 0)})
    open_trades = [t for t in trades if t.row_state == "POSITION_OPEN"]
    closed = Invariant(
        "trades_closed_or_open_at_broker", not problems,
        f"{len(trades)} trades: {dict(sorted(states.items()))}; {len(open_trades)} open, "
        f"{sum(t.row_entry_filled - t.row_exit_filled for t in open_trades)} units held"
        + ("" if not problems else "; " + ", ".join(f"{len(v)} {k}" for k, v in sorted(problems.items()))),
        {"states": dict(sorted(states.items())),
         "broker_positions": {p.symbol: p.net_qty for p in positions},
         "orders_owned_by_nobody": len(nobody),
         "problems": {k: {"count": len(v), "sample": _sample(v)} for k, v in sorted(problems.items())}})

    drift: list[dict[str, Any]] = []
    for t in trades:
        if t.journal_error or (t.row_state, t.row_entry_filled, t.row_exit_filled) != (
                t.journal_state, t.journal_entry_filled, t.journal_exit_filled):
            drift.append({"pos_id": t.pos_id, "row": [t.row_state, t.row_entry_filled, t.row_exit_filled],
                          "journal": [t.journal_state, t.journal_entry_filled, t.journal_exit_filled],
                          "journal_error": t.journal_error or None})
    rows = Invariant(
        "trades_rows_match_journal", not drift,
        f"{len(trades)} trades rows compared with their rebuilt journals: {len(drift)} differ",
        {"differ": {"count": len(drift), "sample": _sample(drift)}})
    return [closed, rows]


def order_invariants(trades: Sequence[TradeFacts], orders: Sequence[BrokerOrder],
                     known: dict[str, tuple[str, str]] | None = None) -> Invariant:
    """no_duplicate_order."""
    problems: dict[str, list[dict[str, Any]]] = defaultdict(list)
    per_cid = Counter(order.correlation_id for order in orders)
    for cid, count in sorted(per_cid.items()):
        if count > 1:
            problems["orders_per_correlation_id"].append(
                {"correlation_id": cid, "orders": [o.order_id for o in orders if o.correlation_id == cid]})
    by_trade, nobody = attribute_orders(orders, (t.pos_id for t in trades), known)
    for order in nobody:
        problems["order_of_no_trade"].append({"order_id": order.order_id, "correlation_id": order.correlation_id,
                                              "status": order.status.value, "filled_qty": order.filled_qty})
    for t in trades:
        mine = by_trade[t.pos_id]
        filled_entries = [o for o in mine.entry if o.filled_qty > 0]
        if len(filled_entries) > 1:
            problems["filled_entry_orders_per_trade"].append(
                {"pos_id": t.pos_id, "orders": [(o.order_id, o.correlation_id, o.filled_qty) for o in filled_entries]})
        entry, exit_ = mine.filled(Leg.ENTRY), mine.filled(Leg.EXIT)
        if exit_ > entry + (t.journal_entry_filled if t.adopted else 0):
            problems["exit_fills_exceed_entry_fills"].append({"pos_id": t.pos_id, "entry": entry, "exit": exit_})
        journal_entry = 0 if t.adopted else t.journal_entry_filled
        if (entry, exit_) != (journal_entry, t.journal_exit_filled):
            problems["broker_fills_differ_from_journal"].append(
                {"pos_id": t.pos_id, "broker": {"entry": entry, "exit": exit_},
                 "journal": {"entry": t.journal_entry_filled, "exit": t.journal_exit_filled,
                             "state": t.journal_state, "adopted": t.adopted}})
    filled = sum(1 for o in orders if o.filled_qty > 0)
    return Invariant(
        "no_duplicate_order", not problems,
        f"{len(orders)} broker orders ({filled} with fills) over {len(per_cid)} correlation ids, "
        f"{len(trades)} trades" + ("" if not problems else "; " + ", ".join(
            f"{len(v)} {k}" for k, v in sorted(problems.items()))),
        {"broker_orders": len(orders), "correlation_ids": len(per_cid),
         "problems": {k: {"count": len(v), "sample": _sample(v)} for k, v in sorted(problems.items())}})


# -- candles: compared inside PostgreSQL --------------------------------------------------------------------

SEEN_TABLE = "soak_candles_seen"
CREATE_SEEN = f"""CREATE TABLE IF NOT EXISTS {SEEN_TABLE} (
    seq BIGINT PRIMARY KEY, symbol TEXT NOT NULL, ts BIGINT NOT NULL, revision INTEGER NOT NULL,
    close DOUBLE PRECISION NOT NULL, closed BOOLEAN NOT NULL)"""

_SEEN_KEYS = f"SELECT DISTINCT symbol, ts FROM {SEEN_TABLE}"
_STORED = "SELECT symbol, extract(epoch FROM ts)::bigint AS ts, revision, close FROM candles"
_MISSING = f"""SELECT s.symbol, s.ts FROM ({_SEEN_KEYS}) s
    WHERE NOT EXISTS (SELECT 1 FROM candles c WHERE c.symbol = s.symbol AND c.ts = to_timestamp(s.ts))
    ORDER BY s.ts, s.symbol"""
_UNEXPECTED = f"""SELECT c.symbol, c.ts FROM ({_STORED}) c
    WHERE NOT EXISTS (SELECT 1 FROM {SEEN_TABLE} s WHERE s.symbol = c.symbol AND s.ts = c.ts)
    ORDER BY c.ts, c.symbol"""
_DUPLICATES = ("SELECT symbol, extract(epoch FROM ts)::bigint, count(*) FROM candles GROUP BY symbol, ts "
               "HAVING count(*) > 1 ORDER BY 2, 1")
# The last emission of each minute: its highest revision, the latest emitted of those.
_LAST_SEEN = f"""SELECT DISTINCT ON (symbol, ts) symbol, ts, revision, close FROM {SEEN_TABLE}
    ORDER BY symbol, ts, revision DESC, seq DESC"""
_STALE = f"""SELECT l.symbol, l.ts, l.revision, l.close, c.revision, c.close FROM ({_LAST_SEEN}) l
    JOIN candles c ON c.symbol = l.symbol AND c.ts = to_timestamp(l.ts)
    WHERE c.revision <> l.revision OR c.close <> l.close ORDER BY l.ts, l.symbol"""


def _count_and_sample(conn: Any, query: str) -> tuple[int, list[list[Any]]]:
    rows = conn.execute(f"SELECT count(*) FROM ({query}) q").fetchone()
    sample = conn.execute(f"{query} LIMIT {EVIDENCE_SAMPLE}").fetchall()
    return int(rows[0]), [list(row) for row in sample]


def candle_invariants(conn: Any) -> list[Invariant]:
    """candles_persisted_once and candles_latest_revision_persisted, over a psycopg connection whose
    search_path holds both `candles` and the soak's table of emitted candles."""
    conn.execute(f"CREATE INDEX IF NOT EXISTS {SEEN_TABLE}_key ON {SEEN_TABLE} (symbol, ts)")
    conn.execute(f"ANALYZE {SEEN_TABLE}")  # a million rows: the planner must know (a nested loop takes hours)
    conn.execute("ANALYZE candles")
    emitted, closes, keys = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE closed), count(DISTINCT (symbol, ts)) FROM {SEEN_TABLE}").fetchone()
    stored = conn.execute("SELECT count(*) FROM candles").fetchone()[0]
    per_symbol = {row[0]: row[1] for row in conn.execute("SELECT symbol, count(*) FROM candles GROUP BY symbol")}
    missing, missing_sample = _count_and_sample(conn, _MISSING)
    unexpected, unexpected_sample = _count_and_sample(conn, _UNEXPECTED)
    duplicates, duplicate_sample = _count_and_sample(conn, _DUPLICATES)
    stale, stale_sample = _count_and_sample(conn, _STALE)
    once = Invariant(
        "candles_persisted_once", keys > 0 and missing == 0 and unexpected == 0 and duplicates == 0,
        f"{keys} minutes emitted by the builders ({closes} closes, {emitted - closes} revisions), {stored} rows: "
        f"{missing} missing, {duplicates} duplicated, {unexpected} not emitted",
        {"emitted": emitted, "closes": closes, "revisions": emitted - closes, "minutes": keys, "rows": stored,
         "rows_per_symbol": per_symbol,
         "missing": {"count": missing, "sample": missing_sample},
         "duplicated": {"count": duplicates, "sample": duplicate_sample},
         "not_emitted": {"count": unexpected, "sample": unexpected_sample}})
    latest = Invariant(
        "candles_latest_revision_persisted", keys > 0 and stale == 0,
        f"{keys - missing} stored minutes compared with their last emitted revision: {stale} differ",
        {"differ": {"count": stale, "sample": stale_sample,
                    "columns": ["symbol", "ts", "emitted_revision", "emitted_close", "row_revision", "row_close"]}})
    return [once, latest]
