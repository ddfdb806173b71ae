-- Machines, keyed by a UUID and unique by EK fingerprint. Timestamps are
-- Unix nanoseconds; NULL means "not yet".
CREATE TABLE machines (
    id                  TEXT PRIMARY KEY,
    ek_fingerprint      TEXT NOT NULL UNIQUE,
    state               TEXT NOT NULL CHECK (state IN ('registered', 'attested', 'provisioned', 'decommissioned')),
    macs                TEXT NOT NULL DEFAULT '[]',
    smbios_uuid         TEXT NOT NULL DEFAULT '',
    serial              TEXT NOT NULL DEFAULT '',
    product             TEXT NOT NULL DEFAULT '',
    ip                  TEXT NOT NULL DEFAULT '',
    hostname            TEXT NOT NULL DEFAULT '',
    role                TEXT NOT NULL DEFAULT '',
    schematic_id        TEXT NOT NULL DEFAULT '',
    pre_registered      INTEGER NOT NULL DEFAULT 0,
    tpm_available       INTEGER NOT NULL DEFAULT 0,
    registered_at       INTEGER NOT NULL,
    first_seen_at       INTEGER,
    approved_at         INTEGER,
    last_heartbeat_at   INTEGER,
    decommissioned_at   INTEGER,
    decommission_reason TEXT NOT NULL DEFAULT '',
    updated_at          INTEGER NOT NULL
);
CREATE INDEX machines_by_state ON machines (state, registered_at);
CREATE INDEX machines_by_role ON machines (role, registered_at);
CREATE INDEX machines_by_smbios_uuid ON machines (smbios_uuid);

-- The outbox and event log: written in the same transaction as the state
-- change that causes the event, never deleted.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    type           TEXT NOT NULL,
    machine_id     TEXT NOT NULL REFERENCES machines (id),
    ek_fingerprint TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    payload        TEXT NOT NULL
);
CREATE INDEX events_by_machine ON events (machine_id, seq);

-- How far each subscriber has been delivered.
CREATE TABLE event_cursors (
    subscriber TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Deliveries a subscriber gave up on after its retries.
CREATE TABLE event_failures (
    subscriber TEXT NOT NULL,
    seq        INTEGER NOT NULL REFERENCES events (seq),
    attempts   INTEGER NOT NULL,
    error      TEXT NOT NULL,
    failed_at  INTEGER NOT NULL,
    PRIMARY KEY (subscriber, seq)
);
