-- One row per event and target: the durable queue the sender works from
-- and the delivery log the API shows. Times are Unix nanoseconds.
CREATE TABLE extension_webhook_deliveries (
    id               TEXT PRIMARY KEY,
    target           TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    machine_id       TEXT NOT NULL DEFAULT '',
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_status_code INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    UNIQUE (target, event_id)
);

CREATE INDEX extension_webhook_deliveries_due
    ON extension_webhook_deliveries (target, status, next_attempt_at);

CREATE INDEX extension_webhook_deliveries_created
    ON extension_webhook_deliveries (created_at);
