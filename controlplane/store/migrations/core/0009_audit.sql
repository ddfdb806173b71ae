-- The operator audit trail: who did what, when, to which machine, in
-- which request, and how it ended. A change an operator asked for writes
-- its record in the same transaction as the change; a refused one is
-- recorded in a transaction of its own. Records are never updated or
-- deleted. machine_id has no foreign key: a refused action may name a
-- machine that does not exist. Timestamps are Unix nanoseconds.
CREATE TABLE audit_records (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    INTEGER NOT NULL,
    actor_subject TEXT NOT NULL,
    actor_name    TEXT NOT NULL,
    action        TEXT NOT NULL,
    machine_id    TEXT,
    request_id    TEXT NOT NULL,
    -- 'ok', or the error's code and message.
    result        TEXT NOT NULL,
    detail        TEXT NOT NULL DEFAULT ''
) STRICT;
-- One per filter of ListAuditRecords, each ending in id, the list's order.
CREATE INDEX audit_records_by_machine ON audit_records (machine_id, id);
CREATE INDEX audit_records_by_subject ON audit_records (actor_subject, id);
CREATE INDEX audit_records_by_name ON audit_records (actor_name, id);
CREATE INDEX audit_records_by_action ON audit_records (action, id);
CREATE INDEX audit_records_by_time ON audit_records (created_at);

-- The operator whose action wrote an event; NULL for the events of
-- agents and of the daemon itself.
ALTER TABLE events ADD COLUMN actor_subject TEXT;
ALTER TABLE events ADD COLUMN actor_name TEXT;
