-- attestation: foreign_keys=off
-- An event may concern no machine (node.image_created for a schematic's
-- image built on its own): events.machine_id becomes nullable. SQLite
-- changes a constraint by rebuilding the table; the sequence is kept, so
-- that no seq is ever handed out twice.
CREATE TABLE events_new (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    type           TEXT NOT NULL,
    machine_id     TEXT REFERENCES machines (id),
    ek_fingerprint TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    payload        TEXT NOT NULL
);
INSERT INTO events_new (seq, id, type, machine_id, ek_fingerprint, created_at, payload)
    SELECT seq, id, type, machine_id, ek_fingerprint, created_at, payload FROM events;
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'events')
    WHERE name = 'events_new' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events');
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events_new', seq FROM sqlite_sequence WHERE name = 'events'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events_new');
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_by_machine ON events (machine_id, seq);
