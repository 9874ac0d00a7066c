-- Owner leases: which process manages a trade (issue 9, several trader processes on one database).
-- A lease is live while now < heartbeat_at + ttl; the caller passes now and ttl (the database clock is
-- never read for the decision). A row may exist before its trade's row does.
CREATE TABLE trade_leases (
    pos_id       TEXT        PRIMARY KEY,
    owner        TEXT        NOT NULL,   -- a process id string
    acquired_at  TIMESTAMPTZ NOT NULL,   -- when this owner took it
    heartbeat_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX trade_leases_owner_idx ON trade_leases (owner);

-- The risk counters at restart read the trades closed since the session start, by exit time.
CREATE INDEX trades_exit_time_idx ON trades (exit_time);
