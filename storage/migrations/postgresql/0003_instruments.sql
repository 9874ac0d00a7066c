-- The scrip master (core.instruments.Instrument rows), replaced whole by each load.
CREATE TABLE instruments (
    segment        TEXT             NOT NULL,   -- IDX_I, NSE_FNO, BSE_FNO, ...
    security_id    TEXT             NOT NULL,   -- unique within a segment only
    instrument     TEXT             NOT NULL,   -- INDEX, OPTIDX, FUTIDX
    trading_symbol TEXT             NOT NULL,   -- NIFTY-Dec2026-24000-CE
    underlying     TEXT             NOT NULL,
    lot_size       INTEGER          NOT NULL,
    tick_size      DOUBLE PRECISION NOT NULL,   -- rupees
    expiry         DATE,                        -- NULL for an index
    strike         DOUBLE PRECISION NOT NULL DEFAULT 0,
    option_type    TEXT             NOT NULL DEFAULT '',   -- CE, PE or ''
    expiry_flag    TEXT             NOT NULL DEFAULT '',   -- W, M or ''
    PRIMARY KEY (segment, security_id)
);
CREATE INDEX instruments_symbol_idx ON instruments (upper(trading_symbol));
CREATE INDEX instruments_underlying_idx ON instruments (underlying, expiry, strike);

-- One row: when the stored master was loaded.
CREATE TABLE instrument_master (
    id        INTEGER     PRIMARY KEY CHECK (id = 1),
    loaded_at TIMESTAMPTZ NOT NULL,
    row_count INTEGER     NOT NULL
);
