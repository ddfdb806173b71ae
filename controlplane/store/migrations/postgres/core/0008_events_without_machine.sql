-- An event may concern no machine (node.image_created for a schematic's
-- image built on its own): events.machine_id becomes nullable. (SQLite
-- rebuilds the table for this; PostgreSQL changes the column in place.)
ALTER TABLE events ALTER COLUMN machine_id DROP NOT NULL;
