-- Selecting machines by tag (attestation machines list --tag KEY=VALUE).
CREATE INDEX extension_tags_by_key ON extension_tags_tags (key, value);
