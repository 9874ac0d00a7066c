-- mybot initial schema (PostgreSQL). Times are TIMESTAMPTZ so operators can query them by hand;
-- the adapter converts to and from epoch seconds. Applied once by Storage.migrate(), inside a transaction.

-- 1-minute candles; a row is only ever replaced by an equal or higher revision.
CREATE TABLE candles (
    symbol        TEXT             NOT NULL,
    ts            TIMESTAMPTZ      NOT NULL,   -- bucket start
    open          DOUBLE PRECISION NOT NULL,
    high          DOUBLE PRECISION NOT NULL,
    low           DOUBLE PRECISION NOT NULL,
    close         DOUBLE PRECISION NOT NULL,
    volume        BIGINT           NOT NULL DEFAULT 0,
    ticks         INTEGER          NOT NULL DEFAULT 0,
    revision      INTEGER          NOT NULL DEFAULT 0,
    first_tick_ts TIMESTAMPTZ,                 -- NULL when unknown
    last_tick_ts  TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ      NOT NULL,
    PRIMARY KEY (symbol, ts)
);

-- Latest option chain per underlying and expiry (the seed's table).
CREATE TABLE option_chains (
    idx        TEXT        NOT NULL,
    expiry     DATE        NOT NULL,
    payload    JSONB       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (idx, expiry)
);

-- One row per position: its latest state. How it got there is in trade_events.
CREATE TABLE trades (
    pos_id       TEXT             PRIMARY KEY,
    symbol       TEXT             NOT NULL,
    instrument   TEXT             NOT NULL,
    side         TEXT             NOT NULL,
    qty          INTEGER          NOT NULL,
    filled_qty   INTEGER          NOT NULL DEFAULT 0,
    entry_price  DOUBLE PRECISION,
    entry_time   TIMESTAMPTZ,
    exit_price   DOUBLE PRECISION,
    exit_time    TIMESTAMPTZ,
    fees         DOUBLE PRECISION NOT NULL DEFAULT 0,
    realized_pnl DOUBLE PRECISION,
    state        TEXT             NOT NULL,
    opened_day   DATE             NOT NULL,   -- IST trading day
    detail       JSONB            NOT NULL DEFAULT '{}'::jsonb,
    created_at   TIMESTAMPTZ      NOT NULL,
    updated_at   TIMESTAMPTZ      NOT NULL
);
CREATE INDEX trades_state_idx ON trades (state);
CREATE INDEX trades_opened_day_idx ON trades (opened_day);

-- Append-only journal of TradeContext transitions; seq is 1, 2, 3, ... per position.
CREATE TABLE trade_events (
    pos_id     TEXT        NOT NULL,
    seq        INTEGER     NOT NULL,
    event      TEXT        NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    payload    JSONB       NOT NULL DEFAULT '{}'::jsonb,
    at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (pos_id, seq)
);

-- Broker orders, keyed by the correlation id sent with them.
CREATE TABLE orders (
    correlation_id  TEXT             PRIMARY KEY,
    pos_id          TEXT             NOT NULL,
    leg             TEXT             NOT NULL,
    broker_order_id TEXT,
    status          TEXT             NOT NULL,
    qty             INTEGER          NOT NULL,
    filled_qty      INTEGER          NOT NULL DEFAULT 0,
    avg_price       DOUBLE PRECISION,
    expected_price  DOUBLE PRECISION,
    created_at      TIMESTAMPTZ      NOT NULL,
    updated_at      TIMESTAMPTZ      NOT NULL
);
CREATE INDEX orders_pos_id_idx ON orders (pos_id);

-- One row per placement we decided to make: the unique key stops a second process placing it again.
CREATE TABLE order_intents (
    correlation_id TEXT        PRIMARY KEY,
    pos_id         TEXT        NOT NULL,
    leg            TEXT        NOT NULL,
    claimed_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX order_intents_pos_id_idx ON order_intents (pos_id);

-- Small named documents: risk counters, trading_enabled, ...
CREATE TABLE bot_state (
    key        TEXT        PRIMARY KEY,
    value      JSONB       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
