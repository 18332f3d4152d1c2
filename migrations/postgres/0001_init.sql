-- pairdb metadata schema, version 1 (PostgreSQL).
--
-- Twin of migrations/sqlite/0001_init.sql: the same tables, columns, constraints and index, column
-- for column. Type correspondence: INTEGER -> BIGINT (every integer is read back as a signed 64-bit
-- value), BLOB -> BYTEA, TEXT -> TEXT. Timestamps are RFC 3339 UTC text, compared as text. Ids and
-- timestamps that queries order by are COLLATE "C", so they sort byte-wise as in SQLite, whatever
-- the database's locale.

-- One row per tenant. replication_factor, rate_rps and rate_burst hold u32 values.
CREATE TABLE tenants (
    tenant_id           TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
    replication_factor  BIGINT NOT NULL,
    default_consistency TEXT   NOT NULL,
    rate_rps            BIGINT NOT NULL,
    rate_burst          BIGINT NOT NULL,
    created_at          TEXT   NOT NULL
);

-- API keys: only HMAC-SHA256(server secret, secret) is stored, never the secret.
CREATE TABLE api_keys (
    key_id      TEXT  COLLATE "C" NOT NULL PRIMARY KEY,
    tenant_id   TEXT  COLLATE "C" NOT NULL REFERENCES tenants (tenant_id),
    secret_hash BYTEA NOT NULL,
    created_at  TEXT  COLLATE "C" NOT NULL
);

CREATE INDEX api_keys_tenant_id ON api_keys (tenant_id);

-- Storage nodes; state is 'joining', 'active' or 'leaving'.
CREATE TABLE nodes (
    node_id    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    address    TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('joining', 'active', 'leaving')),
    created_at TEXT NOT NULL
);

-- The current placement: at most one row (id = 1). epoch duplicates body's epoch so that
-- compare-and-swap can compare it without parsing the JSON body.
CREATE TABLE placement (
    id    BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL,
    body  TEXT   NOT NULL -- JSON of pairdb_core::Placement
);
