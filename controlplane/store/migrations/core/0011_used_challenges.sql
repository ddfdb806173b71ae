-- Attestation challenges are sealed tokens the agent carries from
-- Register to Attest (any instance over this database can open them), so
-- only their use is recorded: the ID of each challenge answered, in the
-- transaction that records the answer, so that a replay on any instance
-- finds it and is refused. A row may go once its challenge has expired
-- (then the token is refused for that); the sweeper deletes them an hour
-- later, a margin for instances whose clocks differ. The key starts with
-- the expiry: inserts append at the end of the index, and the sweep
-- deletes a range of it. Timestamps are Unix nanoseconds.
CREATE TABLE used_challenges (
    expires_at INTEGER NOT NULL,
    -- The challenge's random 16-byte ID.
    id         BLOB NOT NULL,
    PRIMARY KEY (expires_at, id)
) STRICT, WITHOUT ROWID;
