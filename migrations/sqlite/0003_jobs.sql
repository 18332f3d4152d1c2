-- Long-running cluster jobs (migrations, repairs) and the placement epoch each coordinator routes
-- with. PostgreSQL twin: migrations/postgres/0003_jobs.sql.

-- body is JSON the coordinator owns; owner/lease_until_ms say which coordinator runs the job and
-- until when (milliseconds since the Unix epoch): a job whose lease ran out is taken over.
CREATE TABLE jobs (
    id             TEXT    NOT NULL PRIMARY KEY,
    kind           TEXT    NOT NULL,
    body           TEXT    NOT NULL,
    done           INTEGER NOT NULL DEFAULT 0,
    owner          TEXT    NOT NULL DEFAULT '',
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT    NOT NULL
);

-- The placement epoch each live coordinator routes with; a row past expires_at_ms belongs to a
-- coordinator that is gone.
CREATE TABLE epoch_acks (
    instance_id   TEXT    NOT NULL PRIMARY KEY,
    epoch         INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
