"""Profiles, erasure and retention through the whole system: API, worker, Kafka, the history
sink, Postgres, and Celery beat (two of them, of which only one may fire) driving the purge."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from clicktrail.db import Database
from clicktrail.kafka import KafkaPublisher, Record
from clicktrail.profiles import ProfileWriter
from tests.integration.conftest import (
    ADMIN_TOKEN,
    PURGE_INTERVAL,
    RETENTION_DAYS,
    SourceUnderTest,
    TopicNames,
)
from tests.support.events import published, uid
from tests.support.infra import KafkaCollector, Service, start_beat, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def beats(stack_env: dict[str, str], logs_dir: Path) -> Iterator[list[Service]]:
    """Two beat processes: celery-redbeat's lock lets one send the periodic tasks."""
    started = [start_beat(stack_env, logs_dir / f"beat-{n}.log", name=f"beat-{n}") for n in (1, 2)]
    yield started
    for beat in started:
        beat.stop()


def send(pipeline: str, source: SourceUnderTest, *events: dict[str, Any]) -> list[str]:
    ids = []
    for event in events:
        event = {"messageId": f"e2e-{uuid.uuid4()}", **event}
        ids.append(event["messageId"])
        response = requests.post(
            f"{pipeline}/v1/{event.pop('type')}",
            json=event,
            auth=(source.write_key, ""),
            timeout=10,
        )
        assert response.status_code == 200, response.text
    return ids


def history_count(db: Database, ids: list[str]) -> int:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM event_history WHERE user_id = ANY(%s) OR anonymous_id = ANY(%s)",
            (ids, ids),
        ).fetchone()
    assert row is not None
    return int(row[0])


def profile(pipeline: str, user_id: str) -> requests.Response:
    return requests.get(f"{pipeline}/v1/users/{user_id}", headers=ADMIN, timeout=10)


def test_an_anonymous_visitor_who_identifies_has_one_profile_holding_the_anonymous_id(
    pipeline: str, sink: Service, source: SourceUnderTest
) -> None:
    anon, user = uid("anon"), uid("user")

    send(pipeline, source, {"type": "page", "anonymousId": anon, "name": "Home"})
    send(
        pipeline,
        source,
        {
            "type": "track",
            "anonymousId": anon,
            "event": "Product Viewed",
            "properties": {"product_id": "p"},
        },
    )
    send(
        pipeline,
        source,
        {
            "type": "identify",
            "userId": user,
            "anonymousId": anon,
            "traits": {"email": "ada@example.com"},
        },
    )
    shown = wait_for(
        lambda: (r := profile(pipeline, user)).status_code == 200 and r, "the profile", timeout=60
    )

    body = shown.json()
    assert body["userId"] == user
    assert body["aliases"] == [anon]
    assert body["traits"] == {"email": "ada@example.com"}
    assert profile(pipeline, anon).json()["userId"] == user
    assert profile(pipeline, uid("nobody")).status_code == 404


def test_an_erasure_leaves_no_row_key_or_session_of_the_user_and_one_tombstone(
    pipeline: str,
    sink: Service,
    worker: Service,
    beats: list[Service],
    source: SourceUnderTest,
    db: Database,
    redis_url: str,
    kafka: KafkaCollector,
    kafka_bootstrap: str,
    topics: TopicNames,
) -> None:
    anon, user, neighbour = uid("anon"), uid("gone"), uid("stays")
    sent = send(
        pipeline,
        source,
        {"type": "page", "anonymousId": anon, "name": "Home"},
        {
            "type": "identify",
            "userId": user,
            "anonymousId": anon,
            "traits": {"email": "gone@example.com"},
        },
        {"type": "track", "userId": user, "anonymousId": anon, "event": "Bought"},
        {"type": "identify", "userId": neighbour, "traits": {"email": "stays@example.com"}},
    )
    wait_for(
        lambda: (
            history_count(db, [user, anon]) == 3 and profile(pipeline, neighbour).status_code == 200
        ),
        "history written",
        timeout=60,
    )
    [published_event] = kafka.wait_for([sent[2]], topic=topics.events)[sent[2]]
    session_id = published_event.value["context"]["session"]["id"]
    assert (
        requests.get(f"{pipeline}/v1/sessions/{session_id}", headers=ADMIN, timeout=10).status_code
        == 200
    )

    filed = requests.delete(f"{pipeline}/v1/users/{anon}", headers=ADMIN, timeout=10)
    assert filed.status_code == 202
    assert (filed.json()["userId"], filed.json()["status"]) == (user, "pending")
    wait_for(lambda: profile(pipeline, user).status_code == 404, "the purge to run", timeout=60)

    with db.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM profiles WHERE user_id = %(u)s),"
            " (SELECT count(*) FROM profile_aliases WHERE user_id = %(u)s OR alias = ANY(%(ids)s)),"
            " (SELECT count(*) FROM event_history WHERE user_id = ANY(%(ids)s) OR anonymous_id = ANY(%(ids)s)),"
            " (SELECT tombstone_partition FROM erasure_requests WHERE user_id = %(u)s),"
            " (SELECT tombstone_offset FROM erasure_requests WHERE user_id = %(u)s)",
            {"u": user, "ids": [user, anon]},
        ).fetchone()
    assert row is not None
    assert row[:3] == (0, 0, 0)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert [key for key in client.scan_iter(match="ct:*") if user in key or anon in key] == []
    assert (
        requests.get(f"{pipeline}/v1/sessions/{session_id}", headers=ADMIN, timeout=10).status_code
        == 404
    )
    assert profile(pipeline, neighbour).status_code == 200
    notices = wait_for(
        lambda: [
            m for m in kafka.messages if m.topic == topics.profiles and m.key == user and m.value
        ],
        "profile_erased",
    )
    assert [(n.value["type"], n.value["reason"]) for n in notices] == [
        ("profile_erased", "erasure_request")
    ]
    partition, offset = row[3], row[4]
    assert (partition, offset) == (notices[0].partition, notices[0].offset + 1)
    marker = KafkaPublisher({"bootstrap.servers": kafka_bootstrap}).publish(
        [Record(topics.profiles, user, {"marker": True})]
    )[0]
    assert (marker.partition, marker.offset) == (
        partition,
        offset + 1,
    )  # the tombstone is stored between
    tombstones = [
        m
        for m in kafka.messages
        if m.topic == topics.profiles and m.key == user and m.value is None
    ]
    assert len(tombstones) <= 1


def test_retention_purges_only_stale_profiles(
    pipeline: str, worker: Service, beats: list[Service], db: Database
) -> None:
    stale, fresh = uid("stale"), uid("fresh")
    long_ago = (datetime.now(UTC) - timedelta(days=RETENTION_DAYS + 1)).isoformat()
    lately = (datetime.now(UTC) - timedelta(days=RETENTION_DAYS - 1)).isoformat()
    with db.connection() as conn, conn.transaction():
        ProfileWriter().apply(
            conn,
            [
                published("identify", stale, received=long_ago, traits={}),
                published("identify", fresh, received=lately, traits={}),
            ],
        )

    wait_for(
        lambda: profile(pipeline, stale).status_code == 404, "the stale profile to go", timeout=60
    )
    time.sleep(PURGE_INTERVAL * 2)  # a couple more runs

    assert profile(pipeline, fresh).status_code == 200


def test_with_two_beat_processes_only_one_sends_the_purge(beats: list[Service]) -> None:
    time.sleep(PURGE_INTERVAL * 4)

    sent = [len(re.findall(r"Sending due task purge-profiles", beat.output())) for beat in beats]

    assert sorted(sent)[0] == 0, sent
    assert sorted(sent)[1] >= 2, sent


def test_an_identify_stamped_in_the_year_9999_gives_way_to_a_later_one(
    pipeline: str, sink: Service, source: SourceUnderTest, db: Database
) -> None:
    user = uid("clock")
    ids = send(
        pipeline,
        source,
        {
            "type": "identify",
            "userId": user,
            "timestamp": "9999-12-31T23:59:59Z",
            "traits": {"plan": "free", "email": "ada@example.com"},
        },
    )
    wait_for(lambda: history_count(db, [user]) == 1, "the first identify's history", timeout=60)
    ids += send(pipeline, source, {"type": "identify", "userId": user, "traits": {"plan": "pro"}})
    wait_for(lambda: history_count(db, [user]) == 2, "the second identify's history", timeout=60)

    body = profile(pipeline, user).json()

    assert body["traits"] == {"plan": "pro", "email": "ada@example.com"}
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT message_id, payload->>'timestamp', payload->>'originalTimestamp',"
            " payload->>'receivedAt' FROM event_history WHERE message_id = ANY(%s)",
            (ids,),
        ).fetchall()
    stamped = next(row for row in rows if row[0] == ids[0])
    assert stamped[1] == stamped[3]  # on the receive time, the client's kept beside it
    assert stamped[2] == "9999-12-31T23:59:59Z"
