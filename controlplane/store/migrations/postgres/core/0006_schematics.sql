-- Schematics, by ID (the hex SHA-256 of their canonical JSON, which
-- document holds): content-addressed, so a row never changes.
CREATE TABLE schematics (
    id         TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
