"""The history store against a real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clicktrail.db import Database
from clicktrail.history import (
    LEDGER_COLUMNS,
    DeadLetterRow,
    HistoryRow,
    HistoryStore,
    KafkaPosition,
    Row,
    Written,
)
from tests.support.events import published, uid


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


# The sink's side of the ledger and the dead letters, as the sink writes them.


def letter(event: dict[str, Any], reason: str = "schema_validation") -> dict[str, Any]:
    """A dead letter in the pipeline's form."""
    return {
        "reason": reason,
        "sourceId": event.get("sourceId", ""),
        "schema": "events/e/1-0-0",
        "errors": [{"path": "/properties/x", "keyword": "type", "message": "bad", "schema": ""}],
        "failedAt": event["receivedAt"],
        "event": event,
    }


def at(partition: int, offset: int) -> KafkaPosition:
    return KafkaPosition(partition, offset, datetime(2026, 4, 6, tzinfo=UTC))


def write(db: Database, batch: list[Row]) -> Written:
    with db.connection() as conn, conn.transaction():
        return HistoryStore().write(conn, batch)


def books(db: Database, source: str) -> dict[str, dict[str, int]]:
    """The ledger's rows of a source, by minute."""
    with db.connection() as conn:
        found = conn.execute(
            "SELECT minute, stored, duplicates, copies, erased FROM ledger WHERE source_id = %s",
            (source,),
        ).fetchall()
    return {
        f"{minute.astimezone(UTC):%H:%M}": dict(zip(LEDGER_COLUMNS, counts, strict=True))
        for minute, *counts in found
    }


def counts(**given: int) -> dict[str, int]:
    return {column: given.get(column, 0) for column in LEDGER_COLUMNS}


def test_the_ledger_counts_each_event_once_however_often_the_sink_reads_it(db: Database) -> None:
    source = uid("src")
    first = published("track", uid("user"), received="2026-04-06T10:00:30.000Z", event="A")
    second = published("track", uid("user"), received="2026-04-06T10:01:00.000Z", event="B")
    batch: list[Row] = [
        HistoryRow.from_event(first, source, at(0, 1)),  # type: ignore[list-item]
        HistoryRow.from_event(second, source, at(0, 2)),  # type: ignore[list-item]
    ]

    written = write(db, batch)
    write(db, batch)  # the sink read the batch again: it was killed before committing offsets

    assert written.history == {first["messageId"], second["messageId"]}
    assert books(db, source) == {"10:00": counts(stored=1), "10:01": counts(stored=1)}


def test_a_second_record_of_one_request_is_a_copy_and_one_of_another_request_a_duplicate(
    db: Database,
) -> None:
    source = uid("src")
    event = published("track", uid("user"), received="2026-04-06T11:00:00.000Z", event="A")
    resent = {**event, "receivedAt": "2026-04-06T11:05:00.000Z"}  # the client sent it again

    write(db, [HistoryRow.from_event(event, source, at(0, 10))])  # type: ignore[list-item]
    write(
        db,
        [
            HistoryRow.from_event(event, source, at(1, 3)),  # type: ignore[list-item]
            HistoryRow.from_event(resent, source, at(0, 11)),  # type: ignore[list-item]
        ],
    )

    assert books(db, source) == {
        "11:00": counts(stored=1, copies=1),
        "11:05": counts(duplicates=1),
    }
    assert count(db, [event["messageId"]]) == 1


def test_dead_letters_are_stored_and_a_replayed_one_that_passes_is_a_copy(db: Database) -> None:
    source = uid("src")
    event = published("track", uid("user"), received="2026-04-06T12:00:00.000Z", event="A")

    first = write(db, [DeadLetterRow.from_letter(letter(event), source, None, at(0, 5))])  # type: ignore[list-item]
    replayed = write(db, [HistoryRow.from_event(event, source, at(0, 40))])  # type: ignore[list-item]

    assert first.dead_letters == {event["messageId"]}
    assert replayed.history == {event["messageId"]}  # in the history now
    assert books(db, source) == {"12:00": counts(stored=1, copies=1)}
    with db.connection() as conn:
        row = conn.execute(
            "SELECT reason, errors, kafka_partition, kafka_offset, payload FROM dead_letters"
            " WHERE message_id = %s",
            (event["messageId"],),
        ).fetchone()
    assert row is not None
    assert row[:4] == ("schema_validation", letter(event)["errors"], 0, 5)
    assert row[4] == letter(event)


def test_a_dead_letter_of_an_event_too_large_is_found_by_its_header(db: Database) -> None:
    summary = {"messageId": None, "type": "track", "receivedAt": "2026-04-06T12:30:00.000Z"}
    row = DeadLetterRow.from_letter(
        {"reason": "kafka_rejected", "event": summary, "errors": []}, "src-1", "m-from-header"
    )

    assert row is not None
    assert (row.message_id, row.received_at.minute) == ("m-from-header", 30)


def test_events_of_an_erased_user_are_counted_as_erased_once_and_leave_their_id(
    db: Database,
) -> None:
    source, user = uid("src"), uid("erased")
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO erasure_requests (user_id, completed_at, erased_ids)"
            " VALUES (%s, '2026-04-07T12:00:00Z', %s)",
            (user, [user]),
        )
    event = published("track", user, received="2026-04-07T11:59:00.000Z", event="In Flight")
    batch: list[Row] = [
        HistoryRow.from_event(event, source, at(0, 1)),  # type: ignore[list-item]
        DeadLetterRow.from_letter(letter(event), source, None, at(0, 2)),  # type: ignore[list-item]
    ]

    written = write(db, batch)
    write(db, batch)

    assert written.history == written.dead_letters == set()
    assert books(db, source) == {"11:59": counts(erased=1)}
    with db.connection() as conn:
        kept = conn.execute(
            "SELECT source_id, received_at FROM erased_events WHERE message_id = %s",
            (event["messageId"],),
        ).fetchall()
    assert kept == [(source, datetime(2026, 4, 7, 11, 59, tzinfo=UTC))]
