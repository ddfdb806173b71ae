-- A config token is derived from its ID with a key kept outside the
-- database (DATA_DIR/config-token-key), so an unused token can be handed
-- out again, to an agent that reconnects, without being stored in clear.
ALTER TABLE config_tokens ADD COLUMN token_id TEXT NOT NULL DEFAULT '';
