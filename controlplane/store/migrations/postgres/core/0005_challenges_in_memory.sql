-- Attestation challenges live in the daemon's memory now: they last a
-- minute, a restart voids them, and they are not machine state. The
-- table, and any challenges left in it, go.
DROP INDEX attestation_challenges_by_expiry;
DROP TABLE attestation_challenges;
