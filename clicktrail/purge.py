"""Purging profiles: erasure requests first, then retention, in bounded batches.

An erasure removes the user's profile and aliases, their history rows (by userId and by every
alias), ends their live sessions and forgets their session counts in Redis, and publishes to the
profiles topic, keyed by userId, a ``profile_erased`` record followed by a tombstone (null value)
for compacted-topic consumers. The request is marked done, with every id it erased and the
tombstone's position, in the same transaction as the deletions; if Kafka cannot take the
records, nothing is committed and the next run tries again. Every step is idempotent.

Retention removes profiles not seen for PROFILE_RETENTION_DAYS (and publishes the same records
with ``reason: retention``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg

from clicktrail.clock import Clock, format_ts
from clicktrail.db import Database
from clicktrail.errors import TransientError
from clicktrail.kafka import Delivery, Publisher, Record
from clicktrail.metrics import PROFILES_PURGED
from clicktrail.sessions import SessionStore

log = logging.getLogger(__name__)


@dataclass
class PurgeResult:
    erased: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


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
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._publisher = publisher
        self._topic = profiles_topic
        self._clock = clock
        self._retention_days = retention_days
        self._batch_size = batch_size
        self._max_batches = max_batches

    def run(self) -> PurgeResult:
        result = PurgeResult()
        result.erased = self.erase_requested()
        result.expired = self.expire_stale()
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
        conn.execute(
            "DELETE FROM event_history WHERE user_id = ANY(%s) OR anonymous_id = ANY(%s)",
            (ids, ids),
        )
        conn.execute("DELETE FROM profiles WHERE user_id = %s", (user_id,))
        conn.execute("DELETE FROM profile_aliases WHERE alias = ANY(%s)", (ids,))
        self._sessions.end_all(sources, ids)
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
