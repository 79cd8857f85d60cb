"""Purging profiles: erasure requests first, then retention, in bounded batches.

An erasure first marks every id of the user as erased (``ErasureMarks``, in Redis, with the
erasure's time), so that from then on the workers drop that user's events received before it
(those still queued, retried or replayed) instead of publishing them, recreating sessions or
re-attaching cached traits; the history sink drops those already in Kafka. It then removes the
profile and aliases, their history rows (by userId and by every alias), ends their live sessions
and forgets their session counts, takes their events out of the live debugger's streams, and
publishes to the profiles topic, keyed by userId, a ``profile_erased`` record followed by a
tombstone (null value) for compacted-topic consumers. The request is marked done, with every id
it erased and the tombstone's position, in the same transaction as the deletions (its
``completed_at`` is the erasure's time); if Kafka cannot take the records, nothing is committed
and the next run tries again. Every step is idempotent.

Retention removes profiles not seen for PROFILE_RETENTION_DAYS (and publishes the same records
with ``reason: retention``), and the sink's ledger rows older than LEDGER_RETENTION_HOURS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
import redis
from psycopg import sql

from clicktrail.clock import Clock, format_ts, parse_ts
from clicktrail.db import Database
from clicktrail.debugger import forget_entries
from clicktrail.errors import DependencyUnavailable, TransientError
from clicktrail.kafka import Delivery, Publisher, Record
from clicktrail.message import Part
from clicktrail.metrics import PROFILES_PURGED
from clicktrail.redisconn import REDIS_DOWN
from clicktrail.sessions import SessionStore, mark_key
from clicktrail.telemetry import dependency_span

log = logging.getLogger(__name__)

_IDENTITIES = ("userId", "anonymousId", "previousId")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _identities(event: Any) -> set[str]:
    if not isinstance(event, dict):
        return set()
    return {str(event[name]) for name in _IDENTITIES if event.get(name) not in (None, "")}


def _received_ms(event: dict[str, Any]) -> int | None:
    received = parse_ts(event.get("receivedAt"))
    return None if received is None else _ms(received)


def _event_of(record: Record) -> Any:
    """The event a queued record carries (a dead letter wraps it)."""
    value = record.value
    if isinstance(value, dict) and isinstance(value.get("event"), dict) and "reason" in value:
        return value["event"]
    return value


class ErasureMarks:
    """Which ids were erased, and when, for ``seconds`` after (in Redis, one key per id).

    The pipeline asks once per task (one MGET) and drops the events of a marked id received at
    or before its erasure: events accepted before an erasure but still queued, retried or
    replayed never reach Kafka, the sessions, the debugger or the history. Events received
    later go through: an erasure is not a ban. ``on_erased`` hears of every marked id a task
    carries, so that the worker's traits cache forgets what it held of them.
    """

    def __init__(
        self,
        client: redis.Redis,
        seconds: int,
        on_erased: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self._client = client
        self._seconds = seconds
        self._on_erased = on_erased

    def mark(self, identities: Iterable[str], at: datetime) -> None:
        pipe = self._client.pipeline(transaction=False)
        for identity in identities:
            pipe.set(mark_key(identity), _ms(at), ex=self._seconds)
        try:
            pipe.execute()
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc

    def erased(self, identities: Iterable[str]) -> dict[str, int]:
        """The erasure time (ms) of each of these ids that was erased."""
        wanted = sorted(set(identities))
        if not wanted:
            return {}
        try:
            with dependency_span("redis erasure_marks.erased", "redis", "MGET", len(wanted)):
                found = self._client.mget([mark_key(i) for i in wanted])
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        return {i: int(at) for i, at in zip(wanted, found, strict=True) if at is not None}

    def without_erased(self, parts: Sequence[Part]) -> list[Part]:
        """The parts of a task without the events (or queued records) of erased ids received
        before their erasure. Raises DependencyUnavailable (the task is retried)."""
        ids: set[str] = set()
        for part in parts:
            for event in part.events:
                ids |= _identities(event)
            for record in part.records or ():
                ids |= _identities(_event_of(record))
        marks = self.erased(ids)
        if not marks:
            return list(parts)
        if self._on_erased is not None:
            self._on_erased(marks)

        def erased(event: Any) -> bool:
            if not isinstance(event, dict):
                return False
            received = _received_ms(event)
            cutoffs = [marks[i] for i in _identities(event) if i in marks]
            return bool(cutoffs) and (received is None or received <= max(cutoffs))

        kept_parts, dropped = [], 0
        for part in parts:
            if part.records is not None:
                records = [r for r in part.records if not erased(_event_of(r))]
                kept_parts.append(replace(part, records=records))
            else:
                events = [e for e in part.events if not erased(e)]
                kept_parts.append(replace(part, events=events))
            dropped += part.size - kept_parts[-1].size
        if dropped:
            log.info("dropped %d event(s) of erased users received before their erasure", dropped)
        return kept_parts


@dataclass
class PurgeResult:
    erased: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    ledger_rows: int = 0


class PurgeFailed(TransientError):
    """Kafka did not take the profile records; nothing was committed."""


class Purger:
    def __init__(
        self,
        db: Database,
        sessions: SessionStore,
        publisher: Publisher,
        profiles_topic: str,
        clock: Clock,
        retention_days: int | None,
        batch_size: int = 100,
        max_batches: int = 20,
        marks: ErasureMarks | None = None,
        debug_client: redis.Redis | None = None,
        ledger_retention_hours: int | None = None,
        ledger_batch_size: int = 5000,
    ) -> None:
        self._marks = marks
        self._debug_client = debug_client
        self._db = db
        self._sessions = sessions
        self._publisher = publisher
        self._topic = profiles_topic
        self._clock = clock
        self._retention_days = retention_days
        self._batch_size = batch_size
        self._max_batches = max_batches
        self._ledger_retention_hours = ledger_retention_hours
        self._ledger_batch_size = ledger_batch_size

    def run(self) -> PurgeResult:
        result = PurgeResult()
        result.erased = self.erase_requested()
        result.expired = self.expire_stale()
        result.ledger_rows = self.trim_ledger()
        return result

    def erase_requested(self) -> list[str]:
        """Carry out pending erasure requests, oldest first, each in its own transaction; the
        userIds erased. Stops at the first that cannot be finished (it stays pending)."""
        erased: list[str] = []
        with self._db.connection() as conn:
            pending = conn.execute(
                "SELECT id FROM erasure_requests WHERE completed_at IS NULL ORDER BY id LIMIT %s",
                (self._batch_size * self._max_batches,),
            ).fetchall()
            sources = [row[0] for row in conn.execute("SELECT id::text FROM sources")]
        for (request_id,) in pending:
            with self._db.connection() as conn, conn.transaction():
                row = conn.execute(
                    "SELECT user_id FROM erasure_requests WHERE id = %s AND completed_at IS NULL"
                    " FOR UPDATE SKIP LOCKED",
                    (request_id,),
                ).fetchone()
                if row is None:  # another purge has it, or has done it
                    continue
                self._erase(conn, request_id, row[0], sources)
            erased.append(row[0])
        return erased

    def _erase(
        self, conn: psycopg.Connection, request_id: int, user_id: str, sources: list[str]
    ) -> None:
        aliases = [
            row[0]
            for row in conn.execute(
                "SELECT alias FROM profile_aliases WHERE user_id = %s", (user_id,)
            )
        ]
        ids = [user_id, *aliases]
        # Marked first, at the transaction's time (completed_at's too): from now on no worker
        # publishes, sessions or caches this user's events received up to it.
        erased_at = conn.execute("SELECT now()").fetchone()
        assert erased_at is not None
        if self._marks is not None:
            self._marks.mark(ids, erased_at[0])
        for table in ("event_history", "dead_letters"):
            # Only their ids stay, so that a receipt can say the events were erased.
            conn.execute(
                sql.SQL(
                    "WITH gone AS (DELETE FROM {} WHERE user_id = ANY(%s) OR anonymous_id = ANY(%s)"
                    " RETURNING day, message_id, source_id, received_at)"
                    " INSERT INTO erased_events (day, message_id, source_id, received_at)"
                    " SELECT * FROM gone ON CONFLICT (day, message_id) DO NOTHING"
                ).format(sql.Identifier(table)),
                (ids, ids),
            )
        conn.execute("DELETE FROM profiles WHERE user_id = %s", (user_id,))
        conn.execute("DELETE FROM profile_aliases WHERE alias = ANY(%s)", (ids,))
        self._sessions.end_all(sources, ids)
        if self._debug_client is not None:
            forget_entries(self._debug_client, sources, ids)
        tombstone = self._announce([user_id], "erasure_request")[user_id]
        conn.execute(
            "UPDATE erasure_requests SET completed_at = now(), erased_ids = %s,"
            " tombstone_partition = %s, tombstone_offset = %s WHERE id = %s",
            (ids, tombstone.partition, tombstone.offset, request_id),
        )
        log.info("erased a user's profile, %d id(s), history and sessions", len(ids))

    def expire_stale(self) -> list[str]:
        """Remove profiles not seen for the retention period; the userIds removed."""
        if self._retention_days is None:
            return []
        cutoff = self._clock.now() - timedelta(days=self._retention_days)
        expired: list[str] = []
        for _ in range(self._max_batches):
            with self._db.connection() as conn, conn.transaction():
                removed = [
                    row[0]
                    for row in conn.execute(
                        "DELETE FROM profiles WHERE user_id IN (SELECT user_id FROM profiles"
                        " WHERE last_seen < %s ORDER BY last_seen LIMIT %s FOR UPDATE SKIP LOCKED)"
                        " RETURNING user_id",
                        (cutoff, self._batch_size),
                    )
                ]
                if removed:
                    self._announce(removed, "retention")
            expired += removed
            if len(removed) < self._batch_size:
                break
        if expired:
            log.info("removed %d profile(s) past the retention period", len(expired))
        return expired

    def trim_ledger(self) -> int:
        """Delete the sink's ledger rows of minutes older than the ledger's retention, oldest
        first, in batches (at most ``max_batches`` a run; what is left goes next run); how many
        were deleted. (The Redis side expires by itself.)"""
        if self._ledger_retention_hours is None:
            return 0
        cutoff = self._clock.now() - timedelta(hours=self._ledger_retention_hours)
        deleted = 0
        for _ in range(self._max_batches):
            with self._db.connection() as conn:
                cursor = conn.execute(
                    "DELETE FROM ledger WHERE (source_id, minute) IN (SELECT source_id, minute"
                    " FROM ledger WHERE minute < %s ORDER BY minute LIMIT %s)",
                    (cutoff, self._ledger_batch_size),
                )
            deleted += cursor.rowcount
            if cursor.rowcount < self._ledger_batch_size:
                break
        if deleted:
            log.info("removed %d ledger row(s) past the ledger's retention", deleted)
        return deleted

    def _announce(self, user_ids: list[str], reason: str) -> dict[str, Delivery]:
        """``profile_erased`` then a tombstone per user; the tombstones' deliveries by user.
        Raises PurgeFailed when any record was not delivered."""
        erased_at = format_ts(self._clock.now())
        records = []
        for user_id in user_ids:
            notice = {
                "type": "profile_erased",
                "userId": user_id,
                "erasedAt": erased_at,
                "reason": reason,
            }
            headers = {"event-type": "profile_erased"}
            records.append(Record(self._topic, user_id, notice, headers))
            records.append(Record(self._topic, user_id, None, headers))
        deliveries = self._publisher.publish(records)
        failed = [d for d in deliveries if d.error is not None]
        if failed:
            raise PurgeFailed(f"{len(failed)} profile record(s) not delivered: {failed[0].error}")
        PROFILES_PURGED.labels(reason).inc(len(user_ids))
        return {d.record.key or "": d for d in deliveries if d.record.value is None}
