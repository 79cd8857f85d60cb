"""An erasure leaves nothing of the user behind, through the real stack (API, worker, Kafka, the
history sink, Postgres, Redis): not their events still queued when it ran, not the traits a
worker had cached, not their entries in the live debugger, not their dead letters replayed
afterwards.

The purge runs in the test process, built as the worker builds it, so that it can run while the
worker is stopped with events queued."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import requests

from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.debugger import stream_key
from clicktrail.profiles import ProfileWriter
from clicktrail.sessions import mark_key
from clicktrail.sources import SourceStore, new_write_key
from clicktrail.workers.runtime import Runtime
from tests.integration.conftest import ADMIN_TOKEN, ClicktrailCli, TopicNames
from tests.support.events import published, uid
from tests.support.infra import KafkaCollector, Service, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# Workers look up which sources are watched at most once a second.
WATCH_NOTICED = 1.5


class Shop:
    def __init__(self, source_id: str, name: str, key: str) -> None:
        self.id, self.name, self.key = source_id, name, key


@pytest.fixture(scope="module")
def shop(database_url: str) -> Shop:
    """A source of this module's own (dead-letter replays pick it by name)."""
    db = Database(database_url)
    try:
        name, key = f"erasure-{uuid.uuid4().hex[:8]}", new_write_key()
        plan = {"events": [], "unplanned": "deadletter"}
        created = SourceStore(db, cache_seconds=0).create(name, key, {"tracking_plan": plan})
    finally:
        db.close()
    return Shop(created.id, name, key)


@pytest.fixture(scope="module")
def runtime(settings: Settings) -> Iterator[Runtime]:
    built = Runtime.build(settings)
    yield built
    built.close()


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def send(base: str, shop: Shop, *events: dict[str, Any]) -> list[str]:
    batch = [{"messageId": f"erase-{uuid.uuid4()}", **event} for event in events]
    response = requests.post(
        f"{base}/v1/batch", json={"batch": batch}, auth=(shop.key, ""), timeout=10
    )
    assert response.status_code == 200, response.text
    return [event["messageId"] for event in batch]


def erase(base: str, runtime: Runtime, user: str) -> None:
    filed = requests.delete(f"{base}/v1/users/{user}", headers=ADMIN, timeout=10)
    assert filed.status_code == 202, filed.text
    assert user in runtime.purger.run().erased


def feed(base: str, shop: Shop) -> list[dict[str, Any]]:
    response = requests.get(
        f"{base}/v1/debugger/events",
        params={"sourceId": shop.id, "limit": 500},
        headers=ADMIN,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def caught_up(base: str, shop: Shop, kafka: KafkaCollector, db: Database, topic: str) -> None:
    """An event sent now has gone through the worker and the sink: whatever was queued before
    it has been handled too."""
    [probe] = send(base, shop, {"type": "identify", "userId": uid("probe"), "traits": {}})
    kafka.wait_for([probe], topic=topic, timeout=60)

    def stored() -> bool:
        with db.connection() as conn:
            return (
                conn.execute(
                    "SELECT 1 FROM event_history WHERE message_id = %s", (probe,)
                ).fetchone()
                is not None
            )

    wait_for(stored, "the probe in the history", timeout=60)
    time.sleep(1)


def leftovers(db: Database, client: redis.Redis, shop: Shop, ids: list[str]) -> dict[str, Any]:
    """Everything Postgres and Redis hold that names one of ``ids``."""
    with db.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM profiles WHERE user_id = ANY(%(ids)s)),"
            " (SELECT count(*) FROM profile_aliases WHERE user_id = ANY(%(ids)s)"
            "   OR alias = ANY(%(ids)s)),"
            " (SELECT count(*) FROM event_history WHERE user_id = ANY(%(ids)s)"
            "   OR anonymous_id = ANY(%(ids)s)),"
            " (SELECT count(*) FROM dead_letters WHERE user_id = ANY(%(ids)s)"
            "   OR anonymous_id = ANY(%(ids)s))",
            {"ids": ids},
        ).fetchone()
    keys = [key for key in client.scan_iter(match="ct:*") if any(i in key for i in ids)]
    sessions = [
        key
        for key in client.scan_iter(match="ct:session:*")
        if client.type(key) == "hash"
        and {client.hget(key, "userId"), client.hget(key, "anonymousId")} & set(ids)
    ]
    stream = [
        entry_id
        for entry_id, fields in client.xrange(stream_key(shop.id))
        if any(i in fields.get("e", "") for i in ids)
    ]
    return {"postgres": row, "keys": keys, "sessions": sessions, "debugger": stream}


NOTHING = {"postgres": (0, 0, 0, 0), "keys": [], "sessions": [], "debugger": []}


def test_events_queued_at_the_erasure_are_dropped_not_published(
    pipeline: str,
    worker: Service,
    sink: Service,
    shop: Shop,
    runtime: Runtime,
    kafka: KafkaCollector,
    topics: TopicNames,
    db: Database,
    client: redis.Redis,
) -> None:
    user, anon = uid("queued"), uid("queued-anon")
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    try:
        queued = send(
            pipeline,
            shop,
            {"type": "identify", "userId": user, "anonymousId": anon, "traits": {"plan": "pro"}},
            {"type": "page", "userId": user, "anonymousId": anon, "name": "Pricing"},
        )
        erase(pipeline, runtime, user)
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)
    caught_up(pipeline, shop, kafka, db, topics.events)

    assert [m for mid in queued for m in kafka.records(mid)] == []
    assert leftovers(db, client, shop, [user, anon]) == NOTHING
    assert "dropped 2 event(s) of erased users" in worker.output()


def test_a_workers_cached_traits_are_not_attached_after_the_erasure(
    pipeline: str,
    shop: Shop,
    runtime: Runtime,
    kafka: KafkaCollector,
    topics: TopicNames,
    db: Database,
) -> None:
    user = uid("cached")
    # The profile as the sink writes it (an identify through the worker would have the worker
    # cache "no traits" before the sink wrote them).
    now = datetime.now(UTC).isoformat()
    with db.connection() as conn, conn.transaction():
        ProfileWriter().apply(
            conn, [published("identify", user, received=now, traits={"email": "x@example.com"})]
        )
    # Every worker process looks the traits up once, and keeps them for a minute.
    warm = [send(pipeline, shop, {"type": "page", "userId": user, "name": "Home"})[0]
            for _ in range(6)]  # fmt: skip
    warmed = kafka.wait_for(warm, topic=topics.events)
    assert all(
        ms[0].value["context"]["traits"] == {"email": "x@example.com"} for ms in warmed.values()
    )

    erase(pipeline, runtime, user)
    after = [send(pipeline, shop, {"type": "page", "userId": user, "name": "Home"})[0]
             for _ in range(6)]  # fmt: skip
    arrived = kafka.wait_for(after, topic=topics.events)

    assert [ms[0].value["context"].get("traits") for ms in arrived.values()] == [None] * 6


def test_an_erased_users_events_leave_the_live_debugger(
    pipeline: str,
    worker: Service,
    shop: Shop,
    runtime: Runtime,
    kafka: KafkaCollector,
    topics: TopicNames,
    db: Database,
    client: redis.Redis,
) -> None:
    user, neighbour = uid("watched"), uid("watched-stays")
    feed(pipeline, shop)
    time.sleep(WATCH_NOTICED)
    gone = send(
        pipeline,
        shop,
        {"type": "identify", "userId": user, "traits": {"email": "w@example.com"}},
        {"type": "track", "userId": user, "properties": {}},  # no event name: dead-lettered
    )
    [stays] = send(pipeline, shop, {"type": "identify", "userId": neighbour, "traits": {}})
    wait_for(
        lambda: {*gone, stays} <= {e["messageId"] for e in feed(pipeline, shop)},
        "the events in the debugger",
    )

    erase(pipeline, runtime, user)
    shown = {e["messageId"] for e in feed(pipeline, shop)}

    assert not shown & set(gone)
    assert stays in shown
    assert leftovers(db, client, shop, [user])["debugger"] == []


def test_a_replay_after_the_erasure_skips_the_erased_users_dead_letters(
    pipeline: str,
    runtime: Runtime,
    clicktrail_cli: ClicktrailCli,
    kafka: KafkaCollector,
    topics: TopicNames,
    client: redis.Redis,
) -> None:
    name = f"erasure-replay-{uuid.uuid4().hex[:8]}"
    plan = '{"events": [], "unplanned": "deadletter"}'
    created = clicktrail_cli("sources", "create", name, "--setting", f"tracking_plan={plan}")
    assert created.returncode == 0, created.stderr
    [key] = [
        line.split("write key: ")[1] for line in created.stdout.splitlines() if "key: " in line
    ]
    shop = Shop("", name, key.strip())
    user, neighbour = uid("dead"), uid("dead-stays")
    [gone] = send(pipeline, shop, {"type": "track", "userId": user, "event": "Coupon Clipped"})
    [stays] = send(
        pipeline, shop, {"type": "track", "userId": neighbour, "event": "Coupon Clipped"}
    )
    kafka.wait_for([gone, stays], topic=topics.deadletter)
    erase(pipeline, runtime, user)
    # Long after the erasure the workers no longer remember it: the replay must not need them to.
    client.delete(mark_key(user))
    fixed = clicktrail_cli("sources", "plan", shop.name, "--any-event", "--unplanned", "allow")
    assert fixed.returncode == 0, fixed.stderr

    replayed = clicktrail_cli("deadletters", "replay", "--reason", "unplanned", "--source", shop.name,
                         "--idle", "2")  # fmt: skip
    kafka.wait_for([stays], topic=topics.events)
    time.sleep(2)

    assert replayed.returncode == 0, replayed.stderr
    assert "skipped 1 event(s) of users erased after they were received" in replayed.stdout
    assert "replayed 1 event(s) dead-lettered as unplanned" in replayed.stdout
    assert [m.topic for m in kafka.records(gone)] == [topics.deadletter]
    assert sorted(m.topic for m in kafka.records(stays)) == sorted(
        [topics.deadletter, topics.events]
    )
