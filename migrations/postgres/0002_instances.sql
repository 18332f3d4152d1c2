-- Live gateway and coordinator instances: each heartbeats its row, pushing expires_at ahead by
-- the database's clock (one clock for every instance); a row past it belongs to an instance
-- that is gone.
CREATE TABLE instances (
    role        TEXT COLLATE "C" NOT NULL,
    instance_id TEXT COLLATE "C" NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (role, instance_id)
);
