"""The ledger against real Redis and Postgres: counts written where they happen, both sides read
together, the old rows trimmed. The sink's rows are inserted here as the sink writes them."""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.delivery import SeenIds
from clicktrail.errors import Overloaded
from clicktrail.ledger import (
    Books,
    LedgerCounter,
    Tally,
    by_source,
    label_of,
    readings,
)
from clicktrail.message import Part
from clicktrail.purge import Purger
from clicktrail.queue import QUEUE
from clicktrail.redisconn import make_redis
from clicktrail.sessions import SessionStore
from clicktrail.web.enqueue import CeleryEnqueuer
from tests.support.infra import RedisServer
from tests.support.twins import FixedClock, MemoryPublisher

NOW = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
SETTLE = 120  # minutes up to 11:57 are settled at NOW


def minute(hh_mm: str) -> datetime:
    hours, minutes = hh_mm.split(":")
    return datetime(2030, 1, 1, int(hours), int(minutes), tzinfo=UTC)


def received(hh_mm: str) -> str:
    return f"2030-01-01T{hh_mm}:07.250Z"


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return make_redis(redis_url)


@pytest.fixture
def source_id() -> str:
    return f"ledger-{uuid.uuid4().hex[:8]}"


def count(client: redis.Redis, source_id: str, hh_mm: str, **stages: int) -> None:
    """What the API and the workers count, as they count it."""
    tally = Tally()
    for stage, n in stages.items():
        tally.add(stage, source_id, received(hh_mm), n)
    assert LedgerCounter(client, 3600).note(tally)


def sink_counted(db: Database, source_id: str, hh_mm: str, **columns: int) -> None:
    """What the history sink counts, as it counts it (an upsert per source and minute)."""
    names = ["stored", "duplicates", "copies", "erased"]
    values = [columns.get(n, 0) for n in names]
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO ledger (source_id, minute, stored, duplicates, copies, erased)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source_id, minute) DO UPDATE SET"
            " stored = ledger.stored + EXCLUDED.stored,"
            " duplicates = ledger.duplicates + EXCLUDED.duplicates,"
            " copies = ledger.copies + EXCLUDED.copies, erased = ledger.erased + EXCLUDED.erased",
            (source_id, minute(hh_mm), *values),
        )


def books(client: redis.Redis, db: Database) -> Books:
    return Books(client, db.connection, SETTLE, FixedClock(NOW))


def test_the_books_set_the_sinks_counts_beside_the_api_and_workers_and_mark_what_is_off(
    client: redis.Redis, db: Database, source_id: str
) -> None:
    # 11:50 balances: one dead letter, one resend dropped, one resend the sink caught, one
    # event erased before it was published, the pipeline's own copy outside the balance.
    count(client, source_id, "11:50", accepted=13, published=10, dead_lettered=1, dropped=1)
    count(client, source_id, "11:50", erased=1)
    sink_counted(db, source_id, "11:50", stored=10, duplicates=1, copies=1)
    # 11:51: Kafka has two events the sink never stored.
    count(client, source_id, "11:51", accepted=5, published=5)
    sink_counted(db, source_id, "11:51", stored=3)
    # 11:52: three events never reached Kafka.
    count(client, source_id, "11:52", accepted=4, published=1)
    sink_counted(db, source_id, "11:52", stored=1)
    # 11:53: stored without having been accepted (a count Redis did not take).
    sink_counted(db, source_id, "11:53", stored=2)
    # 11:59: still settling.
    count(client, source_id, "11:59", accepted=2)
    other = f"{source_id}-other"
    count(client, other, "11:52", accepted=7)

    mine = books(client, db).read(minute("11:45"), NOW, source_id)
    everyone = books(client, db).read(minute("11:45"), NOW)

    rows = {f"{m.minute:%H:%M}": m for m in mine}
    assert list(rows) == ["11:50", "11:51", "11:52", "11:53", "11:59"]
    balanced = rows["11:50"]
    assert (balanced.accepted, balanced.stored, balanced.duplicates, balanced.copies) == (
        13,
        10,
        1,
        1,
    )
    assert (balanced.dropped, balanced.erased, balanced.balance, balanced.unbalanced) == (
        1,
        1,
        0,
        False,
    )
    assert (rows["11:51"].balance, rows["11:51"].stopped) == (2, "sink")
    assert (rows["11:52"].balance, rows["11:52"].stopped) == (3, "queue")
    assert (rows["11:53"].balance, rows["11:53"].stopped) == (-2, None)
    assert (rows["11:59"].settled, rows["11:59"].unbalanced) == (False, False)
    [summary] = by_source(mine).values()
    assert (summary.unbalanced_minutes, summary.missing, summary.extra) == (3, 5, 2)
    assert {m.source_id for m in everyone} >= {source_id, other}
    assert not books(client, db).read(minute("11:00"), minute("11:49"), source_id)


def test_the_gauges_say_what_did_not_balance_and_the_latest_settled_minute(
    client: redis.Redis, db: Database, source_id: str
) -> None:
    count(client, source_id, "11:10", accepted=3, published=3)  # unbalanced, in the window
    count(client, source_id, "11:57", accepted=6, published=6)  # the latest settled minute
    sink_counted(db, source_id, "11:57", stored=6)
    count(client, source_id, "11:59", accepted=9)  # settling: not in the gauges

    [reading] = [
        r for r in readings(books(client, db), timedelta(hours=1)) if r.source == source_id
    ]

    assert (reading.unbalanced_minutes, reading.missing, reading.extra) == (1, 3, 0)
    assert reading.latest["accepted"] == reading.latest["stored"] == 6
    assert reading.latest["dropped"] == 0


def test_the_counts_of_a_minute_expire_with_the_retention(
    client: redis.Redis, source_id: str
) -> None:
    tally = Tally()
    tally.add("accepted", source_id, received("11:50"))

    LedgerCounter(client, 7200).note(tally)

    key = f"ct:ledger:{label_of(minute('11:50'))}"
    assert client.hget(key, f"accepted:{source_id}") == "1"
    assert 7000 < client.ttl(key) <= 7200


def test_worker_counts_go_with_the_dedupe_note_and_without_it_when_it_is_off(
    client: redis.Redis, source_id: str
) -> None:
    tally = Tally()
    tally.add("published", source_id, received("11:50"), 2)
    key = f"ct:ledger:{label_of(minute('11:50'))}"

    SeenIds(client, 600, ledger=LedgerCounter(client, 3600)).remember({source_id: ["a"]}, tally)
    SeenIds(client, 0, ledger=LedgerCounter(client, 3600)).remember({source_id: ["b"]}, tally)

    assert client.hget(key, f"published:{source_id}") == "4"
    assert SeenIds(client, 600).seen({source_id: ["a", "b"]}) == {source_id: {"a"}}


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=False, maxmemory="3mb").start()
    yield server
    server.stop()


def test_every_acknowledged_request_is_counted_once_and_none_that_redis_refused(
    small_redis: RedisServer,
) -> None:
    enqueuer = CeleryEnqueuer(Settings.from_env({"REDIS_URL": small_redis.url}))
    events = [  # random padding: messages are compressed
        {
            "type": "track",
            "messageId": str(i),
            "receivedAt": received("11:50"),
            "properties": {"pad": secrets.token_hex(1000)},
        }
        for i in range(20)
    ]
    acknowledged = 0

    def fill() -> None:
        nonlocal acknowledged
        for _ in range(1000):
            enqueuer.enqueue(Part("src", {}, copy.deepcopy(events)))
            acknowledged += 1

    with pytest.raises(Overloaded):
        fill()

    queue = redis.Redis.from_url(small_redis.url, decode_responses=True)
    assert acknowledged > 0
    assert queue.llen(QUEUE) == acknowledged
    assert int(queue.hget("ct:ledger:2030-01-01T11:50", "accepted:src") or 0) == 20 * acknowledged


def test_a_replayed_request_is_queued_and_not_counted(small_redis: RedisServer) -> None:
    enqueuer = CeleryEnqueuer(Settings.from_env({"REDIS_URL": small_redis.url}))
    event: dict[str, Any] = {"type": "track", "messageId": "m", "receivedAt": received("11:50")}

    enqueuer.enqueue(Part("src", {}, [event], replay=True))

    queue = redis.Redis.from_url(small_redis.url)
    assert queue.llen(QUEUE) == 1
    assert queue.keys("ct:ledger:*") == []


def test_the_purge_trims_ledger_rows_past_the_retention_a_bounded_batch_at_a_time(
    db: Database, client: redis.Redis, source_id: str
) -> None:
    now = datetime.now(UTC)
    old = [now - timedelta(hours=30, minutes=n) for n in range(5)]
    kept = now - timedelta(hours=20)
    with db.connection() as conn:
        for moment in [*old, kept]:
            conn.execute(
                "INSERT INTO ledger (source_id, minute, stored) VALUES (%s, %s, 1)",
                (source_id, moment.replace(second=0, microsecond=0)),
            )
    purger = Purger(
        db,
        SessionStore(client, 60),
        MemoryPublisher(),
        "profiles",
        FixedClock(now),
        None,
        max_batches=2,
        ledger_retention_hours=24,
        ledger_batch_size=2,
    )

    trimmed = [purger.trim_ledger()]  # other tests' old rows may go first: oldest first
    while trimmed[-1] == 4 and len(trimmed) < 20:
        trimmed.append(purger.run().ledger_rows)

    with db.connection() as conn:
        left = conn.execute(
            "SELECT minute FROM ledger WHERE source_id = %s", (source_id,)
        ).fetchall()
    assert max(trimmed) == 4  # at most two batches of two a run
    assert trimmed[-1] < 4
    assert [row[0] for row in left] == [kept.replace(second=0, microsecond=0)]
