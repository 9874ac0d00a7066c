-- Owner leases: which process manages a trade. Same table as the PostgreSQL schema; times are REAL
-- epoch seconds.
CREATE TABLE trade_leases (
    pos_id       TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    acquired_at  REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
CREATE INDEX trade_leases_owner_idx ON trade_leases (owner);

CREATE INDEX trades_exit_time_idx ON trades (exit_time);
