"""The live debugger's data: what the pipeline made of each event of a watched source, kept for a
few minutes in a bounded Redis stream.

While a debugger page is open it marks its source as watched (``Watches.watch``, renewed on every
poll, lapsing ``WATCH_SECONDS`` after the last). A worker process learns which sources are
watched at most once a second (``DebugTap``); for any other source the tap costs a set lookup.
For a watched one it writes, in one round-trip per task, an entry per event: the event as
received (after IP anonymisation and pseudonymisation: what a dead letter holds), the enriched
event as published, and for a dead letter its reason and every error.

Keys (``REDIS_URL``):
- ``ct:debug:watched``: sorted set, source id -> when its watch lapses (ms); expires with them.
- ``ct:debug:events:<source id>``: stream, field ``e`` (JSON), at most ``max_events`` entries.
  Entries older than the retention are trimmed whenever the stream is written or read (a page
  reads it every second), and the stream is deleted once nothing was added for the retention:
  nothing is left a retention (plus a watch) after the last page closed.

Who may read a source's stream: the admin token, or that source's debugger key
(``DebuggerKeys``, Postgres ``debugger_keys``, hashed like write keys). Never its write key:
every page running a browser SDK shows that to anyone.

Nothing here imports Flask or Celery: workers write through ``DebugTap``, the API reads and
watches through ``DebugFeed``.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import redis
from cachetools import TTLCache

from clicktrail.clock import Clock, format_ts
from clicktrail.db import Database
from clicktrail.enrich import EnrichmentSettings
from clicktrail.errors import DependencyUnavailable
from clicktrail.kafka import Record
from clicktrail.message import Part
from clicktrail.redisconn import REDIS_DOWN
from clicktrail.sources import hash_write_key
from clicktrail.telemetry import dependency_span

log = logging.getLogger(__name__)

WATCHED_KEY = "ct:debug:watched"
STREAM_KEY = "ct:debug:events:{source}"
# A page renews its watch on every poll (each second); a closed page stops the tap this long after.
WATCH_SECONDS = 15
# How often a worker process asks which sources are watched.
REFRESH_SECONDS = 1.0
# An entry id; 19 digits at most, so that each half fits the 64 bits Redis gives it.
ENTRY_ID = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$")

# KEYS: the stream. ARGV: 1 most entries kept, 2 retention (ms), 3... the entries' JSON.
# Times come from the ids Redis gives the entries, so trimming never depends on a worker's clock.
_APPEND = """
local last
for i = 3, #ARGV do
  last = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'e', ARGV[i])
end
local now = tonumber(string.match(last, '^(%d+)'))
redis.call('XTRIM', KEYS[1], 'MINID', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return #ARGV - 2
"""

# KEYS: the stream. ARGV: 1 retention (ms), 2 exclusive start ('-' for none), 3 most entries.
# Returns the newest entries first, none older than the retention (trimmed on the way).
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XTRIM', KEYS[1], 'MINID', now - tonumber(ARGV[1]))
return redis.call('XREVRANGE', KEYS[1], '+', ARGV[2], 'COUNT', ARGV[3])
"""


# KEYS: streams. ARGV: the ids (userId, anonymousId, previousId) whose entries go.
# Returns how many entries were removed. A stream holds a few hundred entries at most.
_FORGET = """
local wanted = {}
for i = 1, #ARGV do wanted[ARGV[i]] = true end
local function names(event)
  if type(event) ~= 'table' then return false end
  for _, field in ipairs({'userId', 'anonymousId', 'previousId'}) do
    local value = event[field]
    if (type(value) == 'string' or type(value) == 'number') and wanted[tostring(value)] then
      return true
    end
  end
  return false
end
local removed = 0
for _, key in ipairs(KEYS) do
  for _, entry in ipairs(redis.call('XRANGE', key, '-', '+')) do
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'e' then
        local ok, e = pcall(cjson.decode, fields[j + 1])
        if ok and type(e) == 'table' and (names(e.raw) or names(e.enriched)) then
          removed = removed + redis.call('XDEL', key, entry[1])
        end
      end
    end
  end
end
return removed
"""


def forget_entries(
    client: redis.Redis, source_ids: Sequence[str], identities: Sequence[str]
) -> int:
    """Remove the entries of these ids from the sources' debugger streams (for an erasure); how
    many went. Raises DependencyUnavailable."""
    if not source_ids or not identities:
        return 0
    try:
        return int(client.eval(_FORGET, len(source_ids), *map(stream_key, source_ids), *identities))
    except REDIS_DOWN as exc:
        raise DependencyUnavailable("redis", str(exc)) from exc


def stream_key(source_id: str) -> str:
    return STREAM_KEY.format(source=source_id)


def _now_ms(clock: Clock) -> int:
    return int(clock.now().timestamp() * 1000)


def _name(event: dict[str, Any]) -> str | None:
    """What a person calls the event: a track's name, a page's or screen's name."""
    name = event.get("event") if event.get("type") == "track" else event.get("name")
    return name if isinstance(name, str) else None


class Watches:
    """Which sources a debugger page is watching."""

    def __init__(self, client: redis.Redis, clock: Clock, seconds: int = WATCH_SECONDS) -> None:
        self._client = client
        self._clock = clock
        self._seconds = seconds

    def watch(self, source_id: str) -> None:
        """Mark a source as watched for the next ``seconds`` (a page calls this on every poll)."""
        now = _now_ms(self._clock)
        pipe = self._client.pipeline(transaction=False)
        pipe.zadd(WATCHED_KEY, {source_id: now + self._seconds * 1000})
        pipe.zremrangebyscore(WATCHED_KEY, "-inf", now)
        pipe.pexpire(WATCHED_KEY, self._seconds * 1000)
        try:
            pipe.execute()
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc

    def watched(self) -> frozenset[str]:
        """The sources watched now (one round-trip)."""
        now = _now_ms(self._clock)
        return frozenset(str(m) for m in self._client.zrangebyscore(WATCHED_KEY, now, "+inf"))


@dataclass
class _Window:
    """Entries written for one source in the current second, and those left out since the last
    write (a source sending more than a person can read is sampled)."""

    second: int = -1
    written: int = 0
    skipped: int = 0


class DebugTap:
    """The pipeline's side: the requests a task prepared are offered to the debugger streams of
    their sources.

    ``protect`` is the enricher's ``protect`` (IP anonymisation and pseudonymisation), applied to
    the event as received before it is kept. At most ``per_second`` entries a second per source
    are written by one process; the rest are counted in a ``skipped`` entry.
    """

    def __init__(
        self,
        client: redis.Redis,
        protect: Callable[[dict[str, Any], EnrichmentSettings], None],
        *,
        retention_seconds: int,
        max_events: int,
        per_second: int,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._protect = protect
        self._retention_ms = retention_seconds * 1000
        self._max_events = max_events
        self._per_second = per_second
        self._monotonic = monotonic
        self._client = client
        self._watches = Watches(client, clock)
        self._append = client.register_script(_APPEND)
        self._watched: frozenset[str] = frozenset()
        self._refresh_at = float("-inf")
        self._windows: dict[str, _Window] = {}

    def offer(self, prepared: Sequence[tuple[Part, list[Record]]]) -> None:
        """Keep the entries of each prepared request whose source is watched, in one
        round-trip for all of them. Never raises: the debugger must not cost the pipeline an
        event."""
        watched = self._watched_sources()
        if not watched:
            return
        try:
            by_source: dict[str, list[bytes]] = {}
            for request, records in prepared:
                source_id = request.source_id
                if source_id not in watched:
                    continue
                kept = [r for r in records if r.value is not None]
                room, skipped = self._admit(source_id, len(kept))
                entries = self._entries(request, kept[:room])
                if skipped:
                    entries.append(orjson.dumps({"status": "skipped", "count": skipped}))
                by_source.setdefault(source_id, []).extend(entries)
            if not any(by_source.values()):
                return
            pipe = self._client.pipeline(transaction=False)
            for source_id, entries in by_source.items():
                if entries:
                    self._append(
                        keys=[stream_key(source_id)],
                        args=[self._max_events, self._retention_ms, *entries],
                        client=pipe,
                    )
            with dependency_span("redis debugger.offer", "redis", "EVALSHA", len(pipe)):
                pipe.execute()
        except Exception:  # the debugger is best effort; the events go on regardless
            log.warning("could not write to the debugger stream", exc_info=True)

    def _watched_sources(self) -> frozenset[str]:
        now = self._monotonic()
        if now >= self._refresh_at:
            self._refresh_at = now + REFRESH_SECONDS
            try:
                self._watched = self._watches.watched()
            except redis.RedisError as exc:
                log.debug("debugger watches unreadable: %s", exc)
                self._watched = frozenset()
        return self._watched

    def _entries(self, part: Part, records: Sequence[Record]) -> list[bytes]:
        settings = EnrichmentSettings.from_settings(part.settings)
        received = {
            str(event.get("messageId")): event for event in part.events if isinstance(event, dict)
        }
        entries = []
        for record in records:
            assert record.value is not None
            reason = record.headers.get("error-kind")
            if reason is not None:  # a dead letter already holds the protected event
                raw = record.value.get("event") or {}
                entry = {
                    "status": "dead_lettered",
                    "reason": reason,
                    "errors": record.value.get("errors") or [],
                    "raw": raw,
                    "enriched": None,
                }
            else:
                raw = self._protected(received.get(record.headers.get("event-id", "")), settings)
                entry = {
                    "status": "published",
                    "reason": None,
                    "errors": [],
                    "raw": raw,
                    "enriched": record.value,
                }
            event = raw or record.value
            entry.update(
                messageId=record.headers.get("event-id"),
                type=record.headers.get("event-type"),
                name=_name(event),
                schema=record.headers.get("schema"),
                receivedAt=event.get("receivedAt"),
            )
            entries.append(orjson.dumps(entry))
        return entries

    def _protected(
        self, event: dict[str, Any] | None, settings: EnrichmentSettings
    ) -> dict[str, Any] | None:
        if event is None:
            return None
        copy: dict[str, Any] = orjson.loads(orjson.dumps(event))
        copy.pop("writeKey", None)
        self._protect(copy, settings)
        return copy

    def _admit(self, source_id: str, count: int) -> tuple[int, int]:
        """How many of ``count`` entries this second still has room for, and how many left out
        so far to report with them."""
        window = self._windows.setdefault(source_id, _Window())
        second = int(self._monotonic())
        if second != window.second:
            window.second, window.written = second, 0
        room = min(count, max(0, self._per_second - window.written))
        window.written += room
        window.skipped += count - room
        if not room:
            # Reported with the next entries written: a burst costs one marker, not one a task.
            return 0, 0
        skipped, window.skipped = window.skipped, 0
        return room, skipped


# Tells a debugger key from a write key at a glance (in a shell history, in a support ticket).
DEBUGGER_KEY_PREFIX = "dbg_"


def new_debugger_key() -> str:
    return DEBUGGER_KEY_PREFIX + secrets.token_urlsafe(32)


class DebuggerKeys:
    """Debugger keys in Postgres, by hash. A key found is remembered for ``cache_seconds`` (a
    revoked key works that long, as a write key does); an unknown one is not, so that a new key
    works at once."""

    def __init__(self, db: Database, cache_seconds: int, max_entries: int = 1000) -> None:
        self._db = db
        self._cache: TTLCache[str, str] | None = (
            TTLCache(max_entries, cache_seconds) if cache_seconds > 0 else None
        )
        self._lock = threading.Lock()

    def source_of(self, key: str) -> str | None:
        """The id of the source a live debugger key is for. Raises DependencyUnavailable."""
        key_hash = hash_write_key(key)
        if self._cache is not None:
            with self._lock:
                cached = self._cache.get(key_hash)
            if cached is not None:
                return cached
        with self._db.connection() as conn:
            row = conn.execute(
                "SELECT source_id::text FROM debugger_keys"
                " WHERE key_hash = %s AND revoked_at IS NULL",
                (key_hash,),
            ).fetchone()
        if row is None:
            return None
        if self._cache is not None:
            with self._lock:
                self._cache[key_hash] = str(row[0])
        return str(row[0])

    def rotate(self, source_id: str, new_key: str) -> int:
        """Make ``new_key`` the source's debugger key; the earlier keys revoked now."""
        with self._db.connection() as conn, conn.transaction():
            revoked = conn.execute(
                "UPDATE debugger_keys SET revoked_at = now()"
                " WHERE source_id = %s AND revoked_at IS NULL",
                (source_id,),
            ).rowcount
            conn.execute(
                "INSERT INTO debugger_keys (key_hash, source_id) VALUES (%s, %s)",
                (hash_write_key(new_key), source_id),
            )
        return revoked

    def revoke(self, source_id: str) -> int:
        """Revoke the source's debugger keys; how many were live."""
        with self._db.connection() as conn:
            return conn.execute(
                "UPDATE debugger_keys SET revoked_at = now()"
                " WHERE source_id = %s AND revoked_at IS NULL",
                (source_id,),
            ).rowcount


class KeyLookup(Protocol):
    def source_of(self, key: str) -> str | None: ...


class DebugFeed:
    """The API's side: marks sources as watched, reads their entries, and says which source a
    debugger key is for."""

    def __init__(
        self,
        client: redis.Redis,
        clock: Clock,
        retention_seconds: int,
        keys: KeyLookup | None = None,
    ) -> None:
        self._client = client
        self.retention_seconds = retention_seconds
        self._watches = Watches(client, clock)
        self._read = client.register_script(_READ)
        self._keys = keys

    def source_of(self, key: str) -> str | None:
        """The source a debugger key is for; None when it is unknown or revoked."""
        return self._keys.source_of(key) if self._keys is not None else None

    def watch(self, source_id: str) -> None:
        self._watches.watch(source_id)

    def read(self, source_id: str, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Entries newer than ``after`` (an entry id), newest first, at most ``limit``."""
        start = f"({after}" if after else "-"
        try:
            found = self._read(
                keys=[stream_key(source_id)], args=[self.retention_seconds * 1000, start, limit]
            )
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        return [_decode(entry_id, fields) for entry_id, fields in _pairs(found)]


def _pairs(found: Iterable[Any]) -> Iterable[tuple[str, dict[str, str]]]:
    for entry_id, flat in found:
        yield entry_id, dict(zip(flat[::2], flat[1::2], strict=True))


def _decode(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    millis = int(entry_id.split("-", 1)[0])
    entry: dict[str, Any] = {
        "id": entry_id,
        "at": format_ts(datetime.fromtimestamp(millis / 1000, UTC)),
    }
    entry.update(orjson.loads(fields.get("e", "{}")))
    return entry
