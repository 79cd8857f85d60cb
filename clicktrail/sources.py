"""Sources and their write keys, in Postgres, with a short in-process cache for the API.

Write keys are random tokens of 192 bits, so a plain SHA-256 is a sound way to store them: a
slow password hash would only make every request dearer.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache
from psycopg.types.json import Jsonb

from clicktrail.db import Database

DEV_SOURCE_NAME = "development"
# Default settings of a new source; a source's own settings override them key by key.
DEFAULT_SETTINGS: dict[str, Any] = {"anonymize_ip": True}


@dataclass(frozen=True)
class Source:
    id: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)


def hash_write_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_write_key() -> str:
    return secrets.token_urlsafe(24)


_LOOKUP = """
SELECT s.id::text, s.name, s.settings
FROM write_keys k JOIN sources s ON s.id = k.source_id
WHERE k.key_hash = %s AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
"""


class SourceStore:
    """Finds the source of a write key; remembers answers (unknown keys too) for a while."""

    def __init__(self, db: Database, cache_seconds: int, max_entries: int = 10000) -> None:
        self._db = db
        self._cache: TTLCache[str, Source | None] | None = (
            TTLCache(maxsize=max_entries, ttl=cache_seconds) if cache_seconds > 0 else None
        )
        self._lock = threading.Lock()

    def by_write_key(self, key: str) -> Source | None:
        """The key's source; None if unknown, revoked or expired. Raises DependencyUnavailable."""
        key_hash = hash_write_key(key)
        if self._cache is not None:
            with self._lock:
                if key_hash in self._cache:
                    return self._cache[key_hash]
        with self._db.connection() as conn:
            row = conn.execute(_LOOKUP, (key_hash,)).fetchone()
        source = None if row is None else Source(row[0], row[1], {**DEFAULT_SETTINGS, **row[2]})
        if self._cache is not None:
            with self._lock:
                self._cache[key_hash] = source
        return source

    def create(self, name: str, write_key: str, settings: dict[str, Any] | None = None) -> Source:
        """A new source with one write key."""
        with self._db.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO sources (name, settings) VALUES (%s, %s) RETURNING id::text, settings",
                (name, Jsonb(settings or {})),
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO write_keys (key_hash, source_id) VALUES (%s, %s)",
                (hash_write_key(write_key), row[0]),
            )
        return Source(row[0], name, {**DEFAULT_SETTINGS, **row[1]})

    def by_name(self, name: str) -> Source | None:
        with self._db.connection() as conn:
            row = conn.execute(
                "SELECT id::text, name, settings FROM sources WHERE name = %s", (name,)
            ).fetchone()
        return None if row is None else Source(row[0], row[1], {**DEFAULT_SETTINGS, **row[2]})

    def update_settings(self, name: str, changes: dict[str, Any]) -> Source | None:
        """Merge ``changes`` into a source's settings (a None value removes the key); the
        source, or None when there is none by that name. The API sees it within its cache time."""
        removed = [key for key, value in changes.items() if value is None]
        kept = {key: value for key, value in changes.items() if value is not None}
        with self._db.connection() as conn:
            row = conn.execute(
                "UPDATE sources SET settings = (settings - %s::text[]) || %s WHERE name = %s"
                " RETURNING id::text, name, settings",
                (removed, Jsonb(kept), name),
            ).fetchone()
        return None if row is None else Source(row[0], row[1], {**DEFAULT_SETTINGS, **row[2]})

    def ensure(self, name: str, write_key: str) -> Source:
        """The source ``name``, created if missing, accepting ``write_key`` (idempotent)."""
        key_hash = hash_write_key(write_key)
        with self._db.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO sources (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,)
            )
            row = conn.execute(
                "SELECT id::text, settings FROM sources WHERE name = %s", (name,)
            ).fetchone()
            assert row is not None
            owner = conn.execute(
                "INSERT INTO write_keys (key_hash, source_id) VALUES (%s, %s)"
                " ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL, expires_at = NULL"
                " WHERE write_keys.source_id = EXCLUDED.source_id"
                " RETURNING source_id::text",
                (key_hash, row[0]),
            ).fetchone()
            if owner is None:
                raise ValueError(f"that write key already belongs to another source than {name!r}")
        return Source(row[0], name, {**DEFAULT_SETTINGS, **row[1]})
