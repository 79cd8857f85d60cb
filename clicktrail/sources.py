"""Sources and their write keys, in Postgres, with a short in-process cache for the API.

Write keys are random tokens of 192 bits, so a plain SHA-256 is a sound way to store them: a
slow password hash would only make every request dearer.

The API's cache keeps known keys and unknown ones apart, each bounded, so that a flood of made-up
keys never pushes a real one out; and it looks up at most ``miss_lookups_per_second`` keys it
has never seen answer (a process's budget, refilled continuously), so that such a flood is not
one Postgres query a request: beyond it, a never-seen key gets 503 with Retry-After (a key that
was known once, however long ago, is always looked up).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cachetools import LRUCache, TTLCache
from psycopg.types.json import Jsonb

from clicktrail.db import Database
from clicktrail.errors import Conflict, InvalidSettings, NotFound, Overloaded

DEV_SOURCE_NAME = "development"
# Default settings of a new source; a source's own settings override them key by key.
DEFAULT_SETTINGS: dict[str, Any] = {"anonymize_ip": True}
SETTINGS = frozenset(
    {"anonymize_ip", "geoip", "user_agent", "campaign", "referrer", "profile_traits",
     "internal_domains", "pseudonymize", "tracking_plan", "allowed_origins",
     "rate_limit_events_per_second"}
)  # fmt: skip


def validate_settings(settings: dict[str, Any]) -> None:
    """InvalidSettings (a ValueError) naming what is wrong with a source's settings (checked
    before they are stored, so the pipeline never meets settings it cannot read)."""
    from clicktrail.enrich import EnrichmentSettings
    from clicktrail.validation import TrackingPlan

    unknown = set(settings) - SETTINGS
    if unknown:
        raise InvalidSettings(
            f"unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(SETTINGS))}"
        )
    TrackingPlan.from_settings(settings)
    EnrichmentSettings.from_settings(settings)
    origins = settings.get("allowed_origins")
    if origins is not None and (
        not isinstance(origins, list)
        or not all(isinstance(o, str) and o.startswith(("http://", "https://")) for o in origins)
    ):
        raise InvalidSettings(
            "allowed_origins must be a list of origins such as https://shop.example"
        )
    rate = settings.get("rate_limit_events_per_second")
    if rate is not None and (not isinstance(rate, int) or isinstance(rate, bool) or rate < 0):
        raise InvalidSettings("rate_limit_events_per_second must be a whole number, 0 for no limit")


@dataclass(frozen=True)
class WriteKey:
    """A write key as operators see it: an id (the start of its hash), never the key itself."""

    id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def live(self, now: datetime) -> bool:
        """Whether the key works at ``now`` (the caller's clock)."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


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

    def __init__(
        self,
        db: Database,
        cache_seconds: int,
        max_entries: int = 10000,
        miss_lookups_per_second: float = 50.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._known: TTLCache[str, Source] | None = None
        self._unknown: TTLCache[str, bool] | None = None
        if cache_seconds > 0:
            self._known = TTLCache(maxsize=max_entries, ttl=cache_seconds)
            self._unknown = TTLCache(maxsize=max_entries, ttl=cache_seconds)
        # Hashes of keys that were live once: looked up whatever the budget.
        self._seen: LRUCache[str, bool] = LRUCache(maxsize=max_entries)
        self._budget_rate = miss_lookups_per_second
        self._budget = miss_lookups_per_second
        self._budget_at = clock()
        self._clock = clock
        self._lock = threading.Lock()

    def by_write_key(self, key: str) -> Source | None:
        """The key's source; None if unknown, revoked or expired. Raises DependencyUnavailable,
        or Overloaded when too many never-seen keys were looked up this second."""
        key_hash = hash_write_key(key)
        with self._lock:
            # One lookup each: an entry can expire between a membership test and a read.
            if self._known is not None and self._unknown is not None:
                known = self._known.get(key_hash)
                if known is not None:
                    return known
                if self._unknown.get(key_hash):
                    return None
            if key_hash not in self._seen:
                self._spend_budget()
        with self._db.connection() as conn:
            row = conn.execute(_LOOKUP, (key_hash,)).fetchone()
        source = None if row is None else Source(row[0], row[1], {**DEFAULT_SETTINGS, **row[2]})
        with self._lock:
            if source is not None:
                self._seen[key_hash] = True
            if self._known is not None and self._unknown is not None:
                if source is None:
                    self._known.pop(key_hash, None)
                    self._unknown[key_hash] = True
                else:
                    self._known[key_hash] = source
        return source

    def _spend_budget(self) -> None:
        """Take one lookup of a never-seen key from the budget (the lock held)."""
        now = self._clock()
        self._budget = min(
            self._budget_rate, self._budget + (now - self._budget_at) * self._budget_rate
        )
        self._budget_at = now
        if self._budget < 1:
            raise Overloaded(
                "too_many_unknown_keys",
                "too many unknown write keys were tried; retry later",
                retry_after=1,
            )
        self._budget -= 1

    def create(self, name: str, write_key: str, settings: dict[str, Any] | None = None) -> Source:
        """A new source with one write key."""
        validate_settings(settings or {})
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
        current = self.by_name(name)
        if current is None:
            return None
        merged = {k: v for k, v in {**current.settings, **kept}.items() if k not in removed}
        validate_settings(merged)
        with self._db.connection() as conn:
            row = conn.execute(
                "UPDATE sources SET settings = (settings - %s::text[]) || %s WHERE name = %s"
                " RETURNING id::text, name, settings",
                (removed, Jsonb(kept), name),
            ).fetchone()
        return None if row is None else Source(row[0], row[1], {**DEFAULT_SETTINGS, **row[2]})

    def listing(self) -> list[Source]:
        """Every source, by name (no keys)."""
        with self._db.connection() as conn:
            rows = conn.execute("SELECT id::text, name, settings FROM sources ORDER BY name")
            return [
                Source(sid, name, {**DEFAULT_SETTINGS, **settings}) for sid, name, settings in rows
            ]

    def all(self) -> list[tuple[Source, list[WriteKey]]]:
        """Every source with its write keys, oldest first."""
        with self._db.connection() as conn:
            sources = conn.execute(
                "SELECT id::text, name, settings FROM sources ORDER BY created_at, name"
            ).fetchall()
            keys = conn.execute(
                "SELECT source_id::text, left(key_hash, 12), created_at, expires_at, revoked_at"
                " FROM write_keys ORDER BY created_at"
            ).fetchall()
        by_source: dict[str, list[WriteKey]] = {}
        for source_id, key_id, created, expires, revoked in keys:
            by_source.setdefault(source_id, []).append(WriteKey(key_id, created, expires, revoked))
        return [
            (Source(sid, name, {**DEFAULT_SETTINGS, **settings}), by_source.get(sid, []))
            for sid, name, settings in sources
        ]

    def rotate(self, name: str, new_key: str, grace: timedelta) -> int:
        """Add ``new_key``; the source's live keys keep working for ``grace`` more. The number of
        keys put on notice; NotFound when there is no such source."""
        with self._db.connection() as conn, conn.transaction():
            row = conn.execute("SELECT id FROM sources WHERE name = %s", (name,)).fetchone()
            if row is None:
                raise NotFound("unknown_source", f"no source named {name!r}")
            noticed = conn.execute(
                "UPDATE write_keys"
                " SET expires_at = least(coalesce(expires_at, 'infinity'), now() + %s)"
                " WHERE source_id = %s AND revoked_at IS NULL"
                " AND (expires_at IS NULL OR expires_at > now())",
                (grace, row[0]),
            ).rowcount
            conn.execute(
                "INSERT INTO write_keys (key_hash, source_id) VALUES (%s, %s)",
                (hash_write_key(new_key), row[0]),
            )
        return noticed

    def revoke(self, name: str, key_id: str | None = None) -> int:
        """Stop a source's live key (the one whose id starts with ``key_id``, else all) now; how
        many were stopped. NotFound when there is no such source."""
        with self._db.connection() as conn, conn.transaction():
            row = conn.execute("SELECT id FROM sources WHERE name = %s", (name,)).fetchone()
            if row is None:
                raise NotFound("unknown_source", f"no source named {name!r}")
            return conn.execute(
                "UPDATE write_keys SET revoked_at = now() WHERE source_id = %s"
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
                " AND key_hash LIKE %s",
                (row[0], f"{key_id or ''}%"),
            ).rowcount

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
                raise Conflict(
                    "write_key_taken",
                    f"that write key already belongs to another source than {name!r}",
                )
        return Source(row[0], name, {**DEFAULT_SETTINGS, **row[1]})
