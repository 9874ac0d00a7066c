-- The scrip master; same table as the PostgreSQL schema (expiry 'YYYY-MM-DD' text, NULL for an index).
CREATE TABLE instruments (
    segment        TEXT    NOT NULL,
    security_id    TEXT    NOT NULL,
    instrument     TEXT    NOT NULL,
    trading_symbol TEXT    NOT NULL,
    underlying     TEXT    NOT NULL,
    lot_size       INTEGER NOT NULL,
    tick_size      REAL    NOT NULL,
    expiry         TEXT,
    strike         REAL    NOT NULL DEFAULT 0,
    option_type    TEXT    NOT NULL DEFAULT '',
    expiry_flag    TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (segment, security_id)
) WITHOUT ROWID;
CREATE INDEX instruments_symbol_idx ON instruments (upper(trading_symbol));
CREATE INDEX instruments_underlying_idx ON instruments (underlying, expiry, strike);

CREATE TABLE instrument_master (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    loaded_at REAL    NOT NULL,
    row_count INTEGER NOT NULL
);
