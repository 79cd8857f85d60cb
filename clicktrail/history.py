"""Event history in Postgres: one row per published event, in daily partitions.

``store`` writes a batch in the caller's transaction with COPY into a staging table and one
``INSERT ... ON CONFLICT DO NOTHING RETURNING``, which says which events are new: the profile
writer applies only those, so replaying a batch writes nothing twice. Events of a user whose
erasure was carried out after they were received are not written back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql

from clicktrail.clock import parse_ts

log = logging.getLogger(__name__)

_PARTITION_LOCK = 0x48697374  # serialises partition creation between sink processes

_COLUMNS = (
    "day", "message_id", "received_at", "event_time", "source_id", "type", "event",
    "user_id", "anonymous_id", "session_id", "payload",
)  # fmt: skip


@dataclass(frozen=True)
class HistoryRow:
    day: date
    message_id: str
    received_at: datetime
    event_time: datetime | None
    source_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    session_id: str | None
    payload: bytes

    @classmethod
    def from_event(cls, event: dict[str, Any], source_id: str) -> HistoryRow | None:
        """The row of a published event; None when it lacks what a row needs."""
        received = parse_ts(event.get("receivedAt"))
        message_id = event.get("messageId")
        if received is None or not isinstance(message_id, str) or not event.get("type"):
            return None
        received = received.astimezone(UTC)
        context = event.get("context")
        session = context.get("session") if isinstance(context, dict) else None
        name = event.get("event") if event.get("type") == "track" else event.get("name")
        return cls(
            day=received.date(),
            message_id=message_id,
            received_at=received,
            event_time=parse_ts(event.get("timestamp")),
            source_id=source_id,
            type=str(event["type"]),
            event=str(name) if name is not None else None,
            user_id=_text(event.get("userId")),
            anonymous_id=_text(event.get("anonymousId")),
            session_id=_text(session.get("id")) if isinstance(session, dict) else None,
            payload=orjson.dumps(event),
        )


def erasure_cutoffs(conn: psycopg.Connection, ids: list[str]) -> dict[str, datetime]:
    """When each of these ids was last erased (its events received until then are gone)."""
    if not ids:
        return {}
    return dict(
        conn.execute(
            "SELECT erased.id, max(e.completed_at)"
            " FROM erasure_requests e, unnest(e.erased_ids) AS erased(id)"
            " WHERE e.completed_at IS NOT NULL AND e.erased_ids && %s::text[]"
            " AND erased.id = ANY(%s) GROUP BY erased.id",
            (ids, ids),
        ).fetchall()
    )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class HistoryStore:
    def __init__(self) -> None:
        self._days: set[date] = set()  # partitions known to exist

    def store(self, conn: psycopg.Connection, rows: list[HistoryRow]) -> set[str]:
        """Write rows in the caller's transaction; the message ids written now (not before)."""
        rows = self._not_erased(conn, rows)
        if not rows:
            return set()
        self._ensure_partitions(conn, {row.day for row in rows})
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS history_staging"
            " (LIKE event_history INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with conn.cursor().copy(
            sql.SQL("COPY history_staging ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
            )
        ) as copy:
            for row in rows:
                copy.write_row(
                    (row.day, row.message_id, row.received_at, row.event_time, row.source_id,
                     row.type, row.event, row.user_id, row.anonymous_id, row.session_id,
                     row.payload.decode())
                )  # fmt: skip
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO event_history ({cols}) SELECT DISTINCT ON (day, message_id) {cols}"
                " FROM history_staging ORDER BY day, message_id"
                " ON CONFLICT (day, message_id) DO NOTHING RETURNING message_id"
            ).format(cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)))
        ).fetchall()
        return {row[0] for row in inserted}

    def _not_erased(self, conn: psycopg.Connection, rows: list[HistoryRow]) -> list[HistoryRow]:
        ids = list({i for row in rows for i in (row.user_id, row.anonymous_id) if i})
        if not ids:
            return rows
        erased = erasure_cutoffs(conn, ids)
        if not erased:
            return rows
        kept = []
        for row in rows:
            cutoffs = [erased[i] for i in (row.user_id, row.anonymous_id) if i in erased]
            if cutoffs and row.received_at <= max(cutoffs):
                continue
            kept.append(row)
        log.info("skipped %d event(s) of erased users", len(rows) - len(kept))
        return kept

    def _ensure_partitions(self, conn: psycopg.Connection, days: set[date]) -> None:
        missing = days - self._days
        if not missing:
            return
        # Remember only partitions that existed before this transaction created any: one made
        # now is gone again if the transaction rolls back.
        names = {f"event_history_{day:%Y%m%d}": day for day in missing}
        existing = {
            names[row[0]]
            for row in conn.execute(
                "SELECT relname FROM pg_class WHERE relname = ANY(%s)", (list(names),)
            )
        }
        self._days |= existing
        if not missing - existing:
            return
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        for day in sorted(missing - existing):
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF event_history"
                    " FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(f"event_history_{day:%Y%m%d}"),
                    sql.Literal(day),
                    sql.Literal(day + timedelta(days=1)),
                )
            )
