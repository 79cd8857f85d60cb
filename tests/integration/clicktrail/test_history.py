"""The history store against a real Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from clicktrail.db import Database
from clicktrail.history import HistoryRow, HistoryStore
from tests.support.events import published, uid


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.close()


def rows(*events: dict[str, Any]) -> list[HistoryRow]:
    made = [HistoryRow.from_event(event, "src-1") for event in events]
    assert all(made)
    return [r for r in made if r is not None]


def store(db: Database, history: HistoryStore, batch: list[HistoryRow]) -> set[str]:
    with db.connection() as conn, conn.transaction():
        return history.store(conn, batch)


def count(db: Database, message_ids: list[str]) -> int:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM event_history WHERE message_id = ANY(%s)", (message_ids,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_rows_land_in_daily_partitions_and_a_replay_writes_nothing(db: Database) -> None:
    user = uid("user")
    events = [
        published("track", user, received="2026-04-01T23:59:59.000Z", event="Late"),
        published("track", user, received="2026-04-02T00:00:01.000Z", event="Early"),
    ]
    history = HistoryStore()

    first = store(db, history, rows(*events))
    replay = store(db, HistoryStore(), rows(*events))

    ids = [e["messageId"] for e in events]
    assert first == set(ids)
    assert replay == set()
    assert count(db, ids) == 2
    with db.connection() as conn:
        placed = dict(
            conn.execute(
                "SELECT message_id, tableoid::regclass::text FROM event_history WHERE message_id = ANY(%s)",
                (ids,),
            ).fetchall()
        )
    assert placed == {ids[0]: "event_history_20260401", ids[1]: "event_history_20260402"}


def test_a_duplicate_within_a_batch_is_written_once(db: Database) -> None:
    event = published("page", uid("user"), received="2026-04-03T12:00:00.000Z")

    written = store(db, HistoryStore(), rows(event, dict(event)))

    assert written == {event["messageId"]}
    assert count(db, [event["messageId"]]) == 1


def test_the_row_keeps_the_event_and_its_keys(db: Database) -> None:
    user, anon = uid("user"), uid("anon")
    event = published(
        "track",
        user,
        anon,
        received="2026-04-04T08:00:00.000Z",
        event="Bought",
        context={"session": {"id": "s-1"}},
    )

    store(db, HistoryStore(), rows(event))

    with db.connection() as conn:
        row = conn.execute(
            "SELECT day, source_id, type, event, user_id, anonymous_id, session_id, payload FROM event_history"
            " WHERE message_id = %s",
            (event["messageId"],),
        ).fetchone()
    assert row is not None
    assert [str(row[0]), *row[1:7]] == ["2026-04-04", "src-1", "track", "Bought", user, anon, "s-1"]
    assert row[7] == event


def test_events_of_an_erased_user_received_before_the_erasure_are_not_written_back(
    db: Database,
) -> None:
    user, anon = uid("erased"), uid("anon")
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO erasure_requests (user_id, completed_at, erased_ids)"
            " VALUES (%s, '2026-04-05T12:00:00Z', %s)",
            (user, [user, anon]),
        )
    before = published(
        "track", anonymous_id=anon, received="2026-04-05T11:59:00.000Z", event="In Flight"
    )
    after = published("track", user, received="2026-04-05T12:01:00.000Z", event="Came Back")

    written = store(db, HistoryStore(), rows(before, after))

    assert written == {after["messageId"]}


def test_a_rolled_back_partition_is_created_again(db: Database) -> None:
    event = published("page", uid("user"), received="2031-01-01T00:00:00.000Z")
    history = HistoryStore()

    with db.connection() as conn:
        transaction = conn.transaction()
        transaction.__enter__()
        history.store(conn, rows(event))
        transaction.__exit__(RuntimeError, RuntimeError("roll back"), None)  # a failed batch
    written = store(db, history, rows(event))

    assert written == {event["messageId"]}
