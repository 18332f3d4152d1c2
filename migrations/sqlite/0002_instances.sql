-- Live gateway and coordinator instances: each heartbeats its row, pushing expires_at_ms
-- (milliseconds since the Unix epoch) ahead; a row past it belongs to an instance that is gone.
CREATE TABLE instances (
    role          TEXT    NOT NULL,
    instance_id   TEXT    NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (role, instance_id)
);
