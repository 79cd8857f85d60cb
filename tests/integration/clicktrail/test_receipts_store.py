"""Receipts against real Postgres and Redis: what each table and the workers' deduplication ids
say of one event, and a source's view held to its own events."""

from __future__ import annotations

from datetime import UTC, datetime

from clicktrail.db import Database
from clicktrail.delivery import SeenIds
from clicktrail.history import DeadLetterRow, HistoryRow, HistoryStore, KafkaPosition
from clicktrail.receipts import Receipts
from clicktrail.redisconn import make_redis
from tests.support.events import published, uid


def receipts(db: Database, seen: SeenIds | None, sources: list[str], depth: int = 7) -> Receipts:
    return Receipts(db, "ev", "ev.dlq", lambda: sources, seen, lambda: depth)


def test_an_event_kafka_has_and_the_sink_has_not_written_is_delivered(
    db: Database, redis_url: str
) -> None:
    seen = SeenIds(make_redis(redis_url), 600)
    mine, other = uid("src"), uid("src")
    message_id = f"m-{uid('delivered')}"
    seen.remember({mine: [message_id]})

    found = receipts(db, seen, [other, mine]).find(message_id)
    theirs = receipts(db, seen, [other, mine]).find(message_id, other)

    assert (found.status, found.delivered_by) == ("delivered", [mine])
    assert found.to_json()["queue"] == {"depth": 7}
    assert (theirs.status, theirs.found) == ("not_found", False)


def test_a_dead_letter_replayed_and_published_shows_both_and_counts_as_published(
    db: Database,
) -> None:
    source = uid("src")
    event = published("track", uid("user"), received="2026-05-01T10:00:00.000Z", event="A")
    letter = {"reason": "unplanned", "errors": [], "failedAt": event["receivedAt"], "event": event}
    when = datetime(2026, 5, 1, 10, 0, 1, tzinfo=UTC)
    with db.connection() as conn, conn.transaction():
        HistoryStore().write(
            conn,
            [
                DeadLetterRow.from_letter(letter, source, None, KafkaPosition(0, 3, when)),  # type: ignore[list-item]
                HistoryRow.from_event(
                    event, source, KafkaPosition(1, 9, when), "calls/track/1-0-1"
                ),  # type: ignore[list-item]
            ],
        )

    receipt = receipts(db, None, [source]).find(event["messageId"])

    body = receipt.to_json()
    assert body["status"] == "published"
    [copy] = body["receipts"]
    assert copy["deadLettered"]["reason"] == "unplanned"
    assert (copy["deadLettered"]["partition"], copy["deadLettered"]["offset"]) == (0, 3)
    assert copy["published"] == {
        "topic": "ev",
        "partition": 1,
        "offset": 9,
        "schema": "calls/track/1-0-1",
        "at": "2026-05-01T10:00:01.000Z",
    }
    assert "queue" not in body
