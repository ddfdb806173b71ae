-- Node certificates: the X.509 client certificates issued to keys the
-- machines' TPMs hold (IssueCertificate). A machine has at most one live
-- certificate: issuing another supersedes it; revoking the machine
-- revokes them all. Rows are never deleted: the serials of a machine's
-- certificates stay known, for the events that name them and for
-- checking a presented certificate. Timestamps are Unix nanoseconds;
-- NULL means "not yet".
CREATE TABLE node_certificates (
    -- Lower-case hex, as events and logs show it.
    serial        TEXT PRIMARY KEY,
    machine_id    TEXT NOT NULL REFERENCES machines (id),
    -- The TPM name of the certified key (nameAlg || H(TPMT_PUBLIC)).
    key_name      BYTEA NOT NULL,
    issued_at     BIGINT NOT NULL,
    not_after     BIGINT NOT NULL,
    superseded_at BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX node_certificates_by_machine ON node_certificates (machine_id, issued_at);
CREATE INDEX node_certificates_by_key ON node_certificates (key_name);
