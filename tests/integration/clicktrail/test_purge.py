"""Erasure and retention against real Postgres, Redis and Kafka."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis

from clicktrail.clock import SystemClock
from clicktrail.db import Database
from clicktrail.debugger import stream_key
from clicktrail.history import DeadLetterRow, HistoryRow, HistoryStore
from clicktrail.kafka import KafkaPublisher, Record
from clicktrail.message import Part
from clicktrail.profiles import ProfileStore, ProfileWriter
from clicktrail.purge import ErasureMarks, PurgeFailed, Purger
from clicktrail.redisconn import make_redis
from clicktrail.sessions import SessionStore, Touch, mark_key
from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.events import published, uid
from tests.support.infra import KafkaCollector, Message, free_port, wait_for


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return make_redis(redis_url)


def purger(
    db: Database,
    client: redis.Redis,
    bootstrap: str,
    topics: TopicNames,
    retention_days: int | None = None,
    batch_size: int = 100,
    **more: Any,
) -> Purger:
    publisher = KafkaPublisher({"bootstrap.servers": bootstrap, "message.timeout.ms": "3000"})
    sessions = SessionStore(client, 60)
    clock = SystemClock()
    return Purger(
        db, sessions, publisher, topics.profiles, clock, retention_days, batch_size, **more
    )


def remember(db: Database, *events: dict[str, object]) -> None:
    """What the history sink does with published events."""
    with db.connection() as conn, conn.transaction():
        rows = [HistoryRow.from_event(e, "src") for e in events]
        written = HistoryStore().store(conn, [r for r in rows if r])
        ProfileWriter().apply(conn, [e for e in events if e["messageId"] in written])


def notices(kafka: KafkaCollector, topics: TopicNames, user_id: str) -> list[Message]:
    """The profile_erased records of a user on the profiles topic (tombstones aside)."""
    return [
        m
        for m in kafka.messages
        if m.topic == topics.profiles and m.key == user_id and m.value is not None
    ]


def test_an_erasure_leaves_no_row_key_or_session_and_one_tombstone(
    db: Database,
    client: redis.Redis,
    kafka_bootstrap: str,
    topics: TopicNames,
    kafka: KafkaCollector,
    source: SourceUnderTest,
) -> None:
    user, anon, bystander = uid("erase"), uid("anon"), uid("keep")
    theirs_events = [
        published("page", anonymous_id=anon),
        published("identify", user, anon, traits={"email": "gone@example.com"}),
        published("track", user, event="Bought"),
    ]
    remember(db, *theirs_events, published("identify", bystander, traits={"email": "k@e.com"}))
    invalid = published("track", user, event="Bad", properties={"email": "gone@example.com"})
    with db.connection() as conn, conn.transaction():
        HistoryStore().write(
            conn, [DeadLetterRow.from_letter({"reason": "x", "event": invalid}, "src")]
        )  # type: ignore[list-item]
    sessions = SessionStore(client, 60)
    now = datetime.now(UTC).isoformat()
    [mine] = sessions.touch_many([Touch(source.id, user, anon, now, str(uuid.uuid4()))])
    [theirs] = sessions.touch_many([Touch(source.id, bystander, None, now, str(uuid.uuid4()))])
    request_id, _, _ = ProfileStore(db).request_erasure(user)

    erased = purger(db, client, kafka_bootstrap, topics).erase_requested()

    assert user in erased
    with db.connection() as conn:
        leftovers = conn.execute(
            "SELECT (SELECT count(*) FROM profiles WHERE user_id = %(u)s),"
            " (SELECT count(*) FROM profile_aliases WHERE alias = ANY(%(ids)s) OR user_id = %(u)s),"
            " (SELECT count(*) FROM event_history WHERE user_id = ANY(%(ids)s) OR anonymous_id = ANY(%(ids)s))",
            {"u": user, "ids": [user, anon]},
        ).fetchone()
        done = conn.execute(
            "SELECT completed_at, erased_ids, tombstone_partition, tombstone_offset FROM erasure_requests WHERE id = %s",
            (request_id,),
        ).fetchone()
        dead = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE user_id = %s", (user,)
        ).fetchone()
        kept = conn.execute(
            "SELECT message_id FROM erased_events WHERE message_id = ANY(%s)",
            ([e["messageId"] for e in [*theirs_events, invalid]],),
        ).fetchall()
    assert leftovers == (0, 0, 0)
    assert dead == (0,)
    # Only the ids of what was erased stay, so that a receipt can say so.
    assert sorted(m for (m,) in kept) == sorted(e["messageId"] for e in [*theirs_events, invalid])
    assert sessions.get(mine["id"]) is None
    assert not [k for k in client.scan_iter(match="ct:*") if user in k or anon in k]
    assert sessions.get(theirs["id"]) is not None
    assert ProfileStore(db).get(bystander) is not None
    assert done is not None
    completed_at, erased_ids, partition, offset = done
    assert completed_at is not None
    assert sorted(erased_ids) == sorted([user, anon])
    # The profile_erased record, then the tombstone right after it in the same partition.
    [notice] = wait_for(lambda: notices(kafka, topics, user), "profile_erased record")
    assert notice.value["type"] == "profile_erased"
    assert notice.value["userId"] == user
    assert notice.value["reason"] == "erasure_request"
    assert (partition, offset) == (notice.partition, notice.offset + 1)
    # Not every broker hands tombstones to consumers (Tansu stores them but does not), so prove
    # it is stored: the next record with the same key lands right after it.
    marker = KafkaPublisher({"bootstrap.servers": kafka_bootstrap}).publish(
        [Record(topics.profiles, user, {"marker": True})]
    )[0]
    assert (marker.partition, marker.offset) == (partition, offset + 1)


def test_purging_again_does_nothing(
    db: Database, client: redis.Redis, kafka_bootstrap: str, topics: TopicNames
) -> None:
    user = uid("twice")
    remember(db, published("identify", user, traits={}))
    ProfileStore(db).request_erasure(user)
    first = purger(db, client, kafka_bootstrap, topics)

    assert user in first.erase_requested()
    assert user not in first.erase_requested()


def test_an_erasure_waits_while_kafka_is_away(
    db: Database, client: redis.Redis, topics: TopicNames
) -> None:
    user = uid("waits")
    remember(db, published("identify", user, traits={"x": 1}))
    request_id, _, _ = ProfileStore(db).request_erasure(user)
    unreachable = purger(db, client, f"127.0.0.1:{free_port()}", topics)

    with pytest.raises(PurgeFailed):
        unreachable.erase_requested()

    assert ProfileStore(db).get(user) is not None  # nothing committed
    with db.connection() as conn:
        row = conn.execute(
            "SELECT completed_at FROM erasure_requests WHERE id = %s", (request_id,)
        ).fetchone()
    assert row == (None,)


def test_retention_removes_only_profiles_not_seen_for_the_period(
    db: Database,
    client: redis.Redis,
    kafka_bootstrap: str,
    topics: TopicNames,
    kafka: KafkaCollector,
) -> None:
    stale, fresh = uid("stale"), uid("fresh")
    old = (datetime.now(UTC) - timedelta(days=31)).isoformat()
    recent = (datetime.now(UTC) - timedelta(days=29)).isoformat()
    remember(
        db,
        published("identify", stale, received=old, traits={}),
        published("identify", fresh, received=recent, traits={}),
    )
    started = time.monotonic()

    expired = purger(
        db, client, kafka_bootstrap, topics, retention_days=30, batch_size=2
    ).expire_stale()

    assert stale in expired
    assert fresh not in expired
    assert ProfileStore(db).get(stale) is None
    assert ProfileStore(db).get(fresh) is not None
    [notice] = wait_for(lambda: notices(kafka, topics, stale), "retention record")
    assert notice.value["reason"] == "retention"
    assert time.monotonic() - started < 60


def test_without_a_retention_period_nothing_expires(
    db: Database, client: redis.Redis, kafka_bootstrap: str, topics: TopicNames
) -> None:
    ancient = uid("ancient")
    remember(db, published("identify", ancient, received="2001-01-01T00:00:00.000Z", traits={}))

    assert purger(db, client, kafka_bootstrap, topics, retention_days=None).expire_stale() == []
    assert ProfileStore(db).get(ancient) is not None


def test_an_erasure_marks_every_id_at_its_time_and_drops_only_what_came_before(
    db: Database,
    client: redis.Redis,
    kafka_bootstrap: str,
    topics: TopicNames,
    kafka: KafkaCollector,
) -> None:
    user, anon, bystander = uid("marked"), uid("marked-anon"), uid("unmarked")
    remember(db, published("identify", user, anon, traits={}))
    ProfileStore(db).request_erasure(user)
    forgotten: list[str] = []
    marks = ErasureMarks(client, 60, lambda ids: forgotten.extend(ids))
    erasing = purger(db, client, kafka_bootstrap, topics, marks=marks)
    before = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()

    erasing.erase_requested()
    after = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    queued = Part("s", events=[
        published("page", anonymous_id=anon, received=before),
        published("page", user, received=after),
        published("page", bystander, received=before),
    ])  # fmt: skip
    retried = Part("s", records=[
        Record("events.deadletter", user,
               {"reason": "unplanned", "event": published("track", user, received=before)}),
    ])  # fmt: skip
    [kept, none_left] = marks.without_erased([queued, retried])

    with db.connection() as conn:
        [(completed_at,)] = conn.execute(
            "SELECT completed_at FROM erasure_requests WHERE user_id = %s", (user,)
        ).fetchall()
    assert [e.get("userId") for e in kept.events] == [user, bystander]
    assert none_left.records == []
    assert sorted(set(forgotten)) == sorted([user, anon])
    assert marks.erased([user, anon, bystander]) == {
        user: int(completed_at.timestamp() * 1000),
        anon: int(completed_at.timestamp() * 1000),
    }
    assert 0 < client.ttl(mark_key(user)) <= 60
    assert not [k for k in client.scan_iter(match="ct:erased:*") if user in k or anon in k]


def test_an_erasure_takes_the_users_entries_out_of_the_debugger_streams(
    db: Database,
    client: redis.Redis,
    kafka_bootstrap: str,
    topics: TopicNames,
    kafka: KafkaCollector,
    source: SourceUnderTest,
) -> None:
    user, anon, bystander = uid("shown"), uid("shown-anon"), uid("still-shown")
    remember(db, published("identify", user, anon, traits={}))
    key = stream_key(source.id)
    for entry in (
        {"status": "published", "raw": {"anonymousId": anon}, "enriched": {"anonymousId": anon}},
        {"status": "dead_lettered", "raw": {"userId": user}, "enriched": None},
        {"status": "published", "raw": {"userId": bystander}, "enriched": {"userId": bystander}},
        {"status": "skipped", "count": 3},
    ):
        client.xadd(key, {"e": orjson.dumps(entry)})
    ProfileStore(db).request_erasure(user)
    erasing = purger(db, client, kafka_bootstrap, topics, debug_client=client)

    try:
        erasing.erase_requested()
        left = [orjson.loads(fields["e"]) for _, fields in client.xrange(key)]
    finally:
        client.delete(key)  # the shared source's stream: nothing for other tests to see

    assert [e["status"] for e in left] == ["published", "skipped"]
    assert left[0]["raw"] == {"userId": bystander}
