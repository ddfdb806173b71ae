-- Attestation: the AK bound to each machine's EK, SMBIOS UUID conflicts,
-- and the credentials handed to agents. A credential is stored only as the
-- SHA-256 of its value, so a copy of the database holds nothing an agent
-- could present. Timestamps are Unix nanoseconds; NULL means "not yet".

-- The AK (TPMT_PUBLIC) and its name, bound to the EK by a successful
-- credential activation.
ALTER TABLE machines ADD COLUMN ak_public BYTEA;
ALTER TABLE machines ADD COLUMN ak_name BYTEA;
-- ID of an older machine with the same SMBIOS UUID and another EK.
ALTER TABLE machines ADD COLUMN conflict_with TEXT NOT NULL DEFAULT '';
-- Last successful attestation.
ALTER TABLE machines ADD COLUMN attested_at BIGINT;
-- When the one-time config was fetched.
ALTER TABLE machines ADD COLUMN configured_at BIGINT;
-- Set when node.heartbeat_missed is emitted, cleared by the next heartbeat:
-- one event per missed deadline.
ALTER TABLE machines ADD COLUMN heartbeat_missed_at BIGINT;

-- Credential-activation challenges, single use, short-lived. The secret
-- and the quote nonce are kept as hashes: the quote carries the nonce
-- itself, which is hashed and compared.
CREATE TABLE attestation_challenges (
    id          TEXT PRIMARY KEY,
    machine_id  TEXT NOT NULL REFERENCES machines (id),
    tpm         BOOLEAN NOT NULL,
    ak_public   BYTEA,
    ak_name     BYTEA,
    secret_hash BYTEA,
    nonce_hash  BYTEA,
    pcrs        TEXT NOT NULL DEFAULT '[]',
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX attestation_challenges_by_expiry ON attestation_challenges (expires_at);

-- Agent sessions, issued on a successful attestation, renewed by heartbeats.
CREATE TABLE agent_sessions (
    token_hash     BYTEA PRIMARY KEY,
    machine_id     TEXT NOT NULL REFERENCES machines (id),
    ek_fingerprint TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX agent_sessions_by_machine ON agent_sessions (machine_id);
CREATE INDEX agent_sessions_by_expiry ON agent_sessions (expires_at);

-- One-time config tokens: GET /config/{token} works once, before
-- expires_at, unless a newer token of the machine revoked it.
CREATE TABLE config_tokens (
    token_hash BYTEA PRIMARY KEY,
    machine_id TEXT NOT NULL REFERENCES machines (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX config_tokens_by_machine ON config_tokens (machine_id);

-- Config templates by role (Go text/template).
CREATE TABLE config_templates (
    role       TEXT PRIMARY KEY,
    template   TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
