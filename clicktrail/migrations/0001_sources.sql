-- Sources: where events come from. Each has settings (enrichment switches and the like) and
-- one or more write keys, stored only as SHA-256 hashes. A rotated key keeps working until
-- expires_at; a revoked key stops at once.
CREATE TABLE sources (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE write_keys (
    key_hash    text PRIMARY KEY,
    source_id   uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE INDEX write_keys_source_id ON write_keys (source_id);
