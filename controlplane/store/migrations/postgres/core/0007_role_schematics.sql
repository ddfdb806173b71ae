-- A role can name a default schematic, which machines approved with the
-- role and no schematic of their own get ('' for none).
ALTER TABLE config_templates ADD COLUMN schematic_id TEXT NOT NULL DEFAULT '';
