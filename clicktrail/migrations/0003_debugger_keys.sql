-- Debugger keys: what the live debugger takes for one source. Unlike a write key, which every
-- page running a browser SDK shows, a debugger key is given to operators only. Stored only as
-- SHA-256 hashes; making a new one revokes the source's earlier ones at once.
CREATE TABLE debugger_keys (
    key_hash    text PRIMARY KEY,
    source_id   uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX debugger_keys_source_id ON debugger_keys (source_id);
