"""Event history and dead letters in Postgres, and the sink's side of the ledger.

``HistoryStore.write`` takes a batch of the sink's rows (events from the events topic, dead
letters from the dead-letter topic) in the caller's transaction: COPY into a staging table and
one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per table, which says which events are new:
the profile writer applies only those, so replaying a batch writes nothing twice. Events of a
user whose erasure was carried out after they were received are not written back; their ids
alone go to ``erased_events``. In the same transaction it counts, per source and minute of
``receivedAt``, what became of each record (``ledger``: stored, duplicates, copies, erased), so
a batch the sink reads again after a crash counts nothing twice.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql

from clicktrail.clock import minute_of, parse_ts

log = logging.getLogger(__name__)

_PARTITION_LOCK = 0x48697374  # serialises partition creation between sink processes

_HISTORY_COLUMNS = (
    "day", "message_id", "received_at", "event_time", "source_id", "type", "event",
    "user_id", "anonymous_id", "session_id", "payload", "kafka_partition", "kafka_offset",
    "schema", "published_at",
)  # fmt: skip
_LETTER_COLUMNS = (
    "day", "message_id", "received_at", "failed_at", "source_id", "type", "event", "user_id",
    "anonymous_id", "reason", "schema", "errors", "kafka_partition", "kafka_offset", "payload",
)  # fmt: skip

# What the ledger counts of each record the sink reads (clicktrail/migrations/0004).
STORED, DUPLICATES, COPIES, ERASED = "stored", "duplicates", "copies", "erased"
LEDGER_COLUMNS = (STORED, DUPLICATES, COPIES, ERASED)


@dataclass(frozen=True)
class KafkaPosition:
    """Where the sink read a record, and when Kafka took it."""

    partition: int | None = None
    offset: int | None = None
    published_at: datetime | None = None


_NOWHERE = KafkaPosition()


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
    position: KafkaPosition = _NOWHERE
    schema: str | None = None

    table = "event_history"

    @classmethod
    def from_event(
        cls,
        event: dict[str, Any],
        source_id: str,
        position: KafkaPosition = _NOWHERE,
        schema: str | None = None,
    ) -> HistoryRow | None:
        """The row of a published event; None when it lacks what a row needs."""
        received = parse_ts(event.get("receivedAt"))
        message_id = event.get("messageId")
        if received is None or not isinstance(message_id, str) or not event.get("type"):
            return None
        received = received.astimezone(UTC)
        context = event.get("context")
        session = context.get("session") if isinstance(context, dict) else None
        return cls(
            day=received.date(),
            message_id=message_id,
            received_at=received,
            event_time=parse_ts(event.get("timestamp")),
            source_id=source_id,
            type=str(event["type"]),
            event=_name(event),
            user_id=_text(event.get("userId")),
            anonymous_id=_text(event.get("anonymousId")),
            session_id=_text(session.get("id")) if isinstance(session, dict) else None,
            payload=orjson.dumps(event),
            position=position,
            schema=schema or None,
        )

    def values(self) -> tuple[Any, ...]:
        return (
            self.day, self.message_id, self.received_at, self.event_time, self.source_id,
            self.type, self.event, self.user_id, self.anonymous_id, self.session_id,
            self.payload.decode(), self.position.partition, self.position.offset, self.schema,
            self.position.published_at,
        )  # fmt: skip


@dataclass(frozen=True)
class DeadLetterRow:
    day: date
    message_id: str
    received_at: datetime
    failed_at: datetime | None
    source_id: str
    type: str | None
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    reason: str
    schema: str | None
    errors: bytes
    payload: bytes
    position: KafkaPosition = _NOWHERE

    table = "dead_letters"

    @classmethod
    def from_letter(
        cls,
        letter: dict[str, Any],
        source_id: str,
        event_id: str | None = None,
        position: KafkaPosition = _NOWHERE,
    ) -> DeadLetterRow | None:
        """The row of a dead letter (``clicktrail.pipeline``'s form); None when it names no
        event (no messageId in it or in its ``event-id`` header) or no time."""
        event = letter.get("event")
        event = event if isinstance(event, dict) else {}
        message_id = _text(event.get("messageId")) or _text(event_id)
        failed = parse_ts(letter.get("failedAt"))
        received = parse_ts(event.get("receivedAt")) or failed
        if message_id is None or received is None:
            return None
        errors = letter.get("errors")
        return cls(
            day=received.date(),
            message_id=message_id,
            received_at=received,
            failed_at=failed,
            source_id=source_id or str(letter.get("sourceId") or ""),
            type=_text(event.get("type")),
            event=_name(event),
            user_id=_text(event.get("userId")),
            anonymous_id=_text(event.get("anonymousId")),
            reason=str(letter.get("reason") or ""),
            schema=_text(letter.get("schema")),
            errors=orjson.dumps(errors if isinstance(errors, list) else []),
            payload=orjson.dumps(letter),
            position=position,
        )

    def values(self) -> tuple[Any, ...]:
        return (
            self.day, self.message_id, self.received_at, self.failed_at, self.source_id,
            self.type, self.event, self.user_id, self.anonymous_id, self.reason, self.schema,
            self.errors.decode(), self.position.partition, self.position.offset,
            self.payload.decode(),
        )  # fmt: skip


Row = HistoryRow | DeadLetterRow


@dataclass
class Written:
    """What one batch wrote: the message ids new to each table, and the ledger's counts by
    (source, minute) and column."""

    history: set[str] = field(default_factory=set)
    dead_letters: set[str] = field(default_factory=set)
    ledger: Counter[tuple[str, datetime, str]] = field(default_factory=Counter)


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


def _name(event: dict[str, Any]) -> str | None:
    name = event.get("event") if event.get("type") == "track" else event.get("name")
    return str(name) if name is not None else None


@dataclass(frozen=True)
class _Stored:
    """An event already in Postgres (or earlier in the batch): from which request (its
    receivedAt), and which record."""

    received_at: datetime
    table: str
    position: KafkaPosition


class HistoryStore:
    def __init__(self) -> None:
        self._days: set[date] = set()  # partitions known to exist

    def store(self, conn: psycopg.Connection, rows: list[HistoryRow]) -> set[str]:
        """Write history rows in the caller's transaction; the message ids written now."""
        return self.write(conn, rows).history

    def write(self, conn: psycopg.Connection, rows: Sequence[Row]) -> Written:
        """Write a batch of history rows and dead letters in the caller's transaction, and
        count it in the ledger."""
        written = Written()
        kept, erased = self._not_erased(conn, list(rows))
        self._count_erased(conn, erased, written.ledger)
        if not kept:
            self._book(conn, written.ledger)
            return written
        outcome = self._classify(conn, kept)
        events = [row for row in kept if isinstance(row, HistoryRow)]
        letters = [row for row in kept if isinstance(row, DeadLetterRow)]
        if events:
            self._ensure_partitions(conn, {row.day for row in events})
            written.history = self._insert(conn, HistoryRow.table, _HISTORY_COLUMNS, events)
        if letters:
            written.dead_letters = self._insert(conn, DeadLetterRow.table, _LETTER_COLUMNS, letters)
        for row, column in zip(kept, outcome, strict=True):
            new = written.history if isinstance(row, HistoryRow) else written.dead_letters
            if column == STORED and row.message_id not in new:
                column = COPIES  # another sink wrote it meanwhile
            if column is not None:
                written.ledger[row.source_id, minute_of(row.received_at), column] += 1
        self._book(conn, written.ledger)
        return written

    def _insert(
        self, conn: psycopg.Connection, table: str, columns: tuple[str, ...], rows: Sequence[Row]
    ) -> set[str]:
        staging = sql.Identifier(f"{table}_staging")
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            ).format(staging, sql.Identifier(table))
        )
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(staging, names)) as copy:
            for row in rows:
                copy.write_row(row.values())
        inserted = conn.execute(
            sql.SQL(
                "INSERT INTO {table} ({cols}) SELECT DISTINCT ON (day, message_id) {cols}"
                " FROM {staging} ORDER BY day, message_id"
                " ON CONFLICT (day, message_id) DO NOTHING RETURNING message_id"
            ).format(table=sql.Identifier(table), cols=names, staging=staging)
        ).fetchall()
        return {row[0] for row in inserted}

    def _classify(self, conn: psycopg.Connection, rows: list[Row]) -> list[str | None]:
        """The ledger's column for each row: ``stored`` the first time an event (a messageId on
        its day) reaches Postgres, in either table; ``duplicates`` for another request's copy
        of it (another receivedAt: a client resent it); ``copies`` for the same request's
        (the pipeline's at-least-once copies, a dead letter replayed); None for the very record
        stored already (the sink reading a batch again after a crash)."""
        known: dict[tuple[date, str], list[_Stored]] = {}
        days = sorted({row.day for row in rows})
        ids = sorted({row.message_id for row in rows})
        for table in (HistoryRow.table, DeadLetterRow.table):
            found = conn.execute(
                sql.SQL(
                    "SELECT day, message_id, received_at, kafka_partition, kafka_offset FROM {}"
                    " WHERE day = ANY(%s) AND message_id = ANY(%s)"
                ).format(sql.Identifier(table)),
                (days, ids),
            )
            for day, message_id, received_at, partition, offset in found:
                known.setdefault((day, message_id), []).append(
                    _Stored(received_at, table, KafkaPosition(partition, offset))
                )
        outcome: list[str | None] = []
        for row in rows:
            earlier = known.get((row.day, row.message_id))
            if not earlier:
                known[row.day, row.message_id] = [_Stored(row.received_at, row.table, row.position)]
                outcome.append(STORED)
            elif row.position.offset is not None and any(
                e.table == row.table
                and (e.position.partition, e.position.offset)
                == (row.position.partition, row.position.offset)
                for e in earlier
            ):
                outcome.append(None)
            elif any(e.received_at == row.received_at for e in earlier):
                outcome.append(COPIES)
            else:
                outcome.append(DUPLICATES)
        return outcome

    def _count_erased(
        self,
        conn: psycopg.Connection,
        rows: list[Row],
        ledger: Counter[tuple[str, datetime, str]],
    ) -> None:
        """Note the ids of events not written for their user's erasure; count the new ones."""
        if not rows:
            return
        noted = conn.execute(
            "INSERT INTO erased_events (day, message_id, source_id, received_at)"
            " SELECT * FROM unnest(%s::date[], %s::text[], %s::text[], %s::timestamptz[])"
            " ON CONFLICT (day, message_id) DO NOTHING RETURNING day, message_id",
            (
                [r.day for r in rows],
                [r.message_id for r in rows],
                [r.source_id for r in rows],
                [r.received_at for r in rows],
            ),
        ).fetchall()
        new = {(day, message_id) for day, message_id in noted}
        for row in rows:
            if (row.day, row.message_id) in new:
                new.discard((row.day, row.message_id))
                ledger[row.source_id, minute_of(row.received_at), ERASED] += 1

    @staticmethod
    def _book(conn: psycopg.Connection, ledger: Counter[tuple[str, datetime, str]]) -> None:
        """Add a batch's counts to the ledger, in a fixed order so sinks never deadlock."""
        totals: dict[tuple[str, datetime], list[int]] = {}
        for (source_id, minute, column), count in ledger.items():
            totals.setdefault((source_id, minute), [0] * len(LEDGER_COLUMNS))[
                LEDGER_COLUMNS.index(column)
            ] += count
        if not totals:
            return
        keys = sorted(totals)
        columns = sql.SQL(", ").join(map(sql.Identifier, LEDGER_COLUMNS))
        sums = sql.SQL(", ").join(
            sql.SQL("{c} = ledger.{c} + EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in LEDGER_COLUMNS
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO ledger (source_id, minute, {columns})"
                " SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[], %s::bigint[],"
                " %s::bigint[], %s::bigint[]) ORDER BY 1, 2"
                " ON CONFLICT (source_id, minute) DO UPDATE SET {sums}"
            ).format(columns=columns, sums=sums),
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                *([totals[k][i] for k in keys] for i in range(len(LEDGER_COLUMNS))),
            ),
        )

    def _not_erased(self, conn: psycopg.Connection, rows: list[Row]) -> tuple[list[Row], list[Row]]:
        """The rows to write, and those of users erased since they were received."""
        ids = list({i for row in rows for i in (row.user_id, row.anonymous_id) if i})
        erased = erasure_cutoffs(conn, ids) if ids else {}
        if not erased:
            return rows, []
        kept: list[Row] = []
        skipped: list[Row] = []
        for row in rows:
            cutoffs = [erased[i] for i in (row.user_id, row.anonymous_id) if i in erased]
            (skipped if cutoffs and row.received_at <= max(cutoffs) else kept).append(row)
        log.info("skipped %d event(s) of erased users", len(skipped))
        return kept, skipped

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
