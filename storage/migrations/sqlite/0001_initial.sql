-- mybot initial schema (SQLite). Times are REAL epoch seconds (candle ts: INTEGER), days TEXT
-- 'YYYY-MM-DD', JSON as TEXT. Same tables and columns as the PostgreSQL schema.

CREATE TABLE candles (
    symbol        TEXT    NOT NULL,
    ts            INTEGER NOT NULL,   -- bucket start, epoch seconds
    open          REAL    NOT NULL,
    high          REAL    NOT NULL,
    low           REAL    NOT NULL,
    close         REAL    NOT NULL,
    volume        INTEGER NOT NULL DEFAULT 0,
    ticks         INTEGER NOT NULL DEFAULT 0,
    revision      INTEGER NOT NULL DEFAULT 0,
    first_tick_ts REAL,               -- NULL when unknown
    last_tick_ts  REAL,
    updated_at    REAL    NOT NULL,
    PRIMARY KEY (symbol, ts)
) WITHOUT ROWID;

CREATE TABLE option_chains (
    idx        TEXT NOT NULL,
    expiry     TEXT NOT NULL,         -- YYYY-MM-DD
    payload    TEXT NOT NULL,         -- JSON
    updated_at REAL NOT NULL,
    PRIMARY KEY (idx, expiry)
);

CREATE TABLE trades (
    pos_id       TEXT    PRIMARY KEY,
    symbol       TEXT    NOT NULL,
    instrument   TEXT    NOT NULL,
    side         TEXT    NOT NULL,
    qty          INTEGER NOT NULL,
    filled_qty   INTEGER NOT NULL DEFAULT 0,
    entry_price  REAL,
    entry_time   REAL,
    exit_price   REAL,
    exit_time    REAL,
    fees         REAL    NOT NULL DEFAULT 0,
    realized_pnl REAL,
    state        TEXT    NOT NULL,
    opened_day   TEXT    NOT NULL,
    detail       TEXT    NOT NULL DEFAULT '{}',
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL
);
CREATE INDEX trades_state_idx ON trades (state);
CREATE INDEX trades_opened_day_idx ON trades (opened_day);

CREATE TABLE trade_events (
    pos_id     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    payload    TEXT    NOT NULL DEFAULT '{}',
    at         REAL    NOT NULL,
    PRIMARY KEY (pos_id, seq)
);

CREATE TABLE orders (
    correlation_id  TEXT    PRIMARY KEY,
    pos_id          TEXT    NOT NULL,
    leg             TEXT    NOT NULL,
    broker_order_id TEXT,
    status          TEXT    NOT NULL,
    qty             INTEGER NOT NULL,
    filled_qty      INTEGER NOT NULL DEFAULT 0,
    avg_price       REAL,
    expected_price  REAL,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL
);
CREATE INDEX orders_pos_id_idx ON orders (pos_id);

CREATE TABLE order_intents (
    correlation_id TEXT PRIMARY KEY,
    pos_id         TEXT NOT NULL,
    leg            TEXT NOT NULL,
    claimed_at     REAL NOT NULL
);
CREATE INDEX order_intents_pos_id_idx ON order_intents (pos_id);

CREATE TABLE bot_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
);
