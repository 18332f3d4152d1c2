-- Long-running cluster jobs (migrations, repairs) and the placement epoch each coordinator routes
-- with. SQLite twin: migrations/sqlite/0003_jobs.sql; leases use the database's clock.

CREATE TABLE jobs (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    done        BOOLEAN NOT NULL DEFAULT FALSE,
    owner       TEXT    NOT NULL DEFAULT '',
    lease_until TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
    created_at  TEXT    NOT NULL
);

CREATE TABLE epoch_acks (
    instance_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
