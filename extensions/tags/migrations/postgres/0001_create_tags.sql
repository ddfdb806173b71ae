-- A machine's tags: one value per key. Machines are tombstoned, never
-- deleted; should that change, a machine's tags go with it instead of
-- blocking the delete.
CREATE TABLE extension_tags_tags (
    id         TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

-- Both the rule (a key once per machine, what adding a key again updates)
-- and the index that lists a machine's tags in key order.
CREATE UNIQUE INDEX extension_tags_by_machine ON extension_tags_tags (machine_id, key);
