-- Secrets the instances of a control plane share, by name: the config
-- token key, from which config tokens and attestation challenges are
-- derived, so that any instance over this database opens what another
-- issued. A row is written once (the first instance to start inserts
-- it; the others read it back) and never updated. created_at is Unix
-- nanoseconds.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
