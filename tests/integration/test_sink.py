"""The history sink under faults: killed mid-stream and restarted, Postgres cut away and back,
a record Postgres refuses. Its rows must match what Kafka holds: nothing lost, nothing twice."""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from confluent_kafka import Consumer, TopicPartition
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from clicktrail.db import Database
from clicktrail.kafka import KafkaPublisher, Record
from tests.integration.conftest import FAST_GROUP_JOIN, SourceUnderTest, TopicNames
from tests.support.infra import (
    KafkaCollector,
    history_counts,
    scratch_database,
    start_sink,
    wait_for,
)
from tests.support.proxy import TcpProxy


@pytest.fixture(scope="module")
def own_database(database_url: str) -> Iterator[str]:
    """A database of the module's own, so no other sink fills what these ones miss."""
    with scratch_database(f"{conninfo_to_dict(database_url)['dbname']}_sink") as url:
        yield url


@pytest.fixture
def postgres_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 5432).start()
    yield proxy
    proxy.cut()


def sink_env(stack_env: dict[str, str], database_url: str, group: str) -> dict[str, str]:
    return {
        **stack_env,
        **FAST_GROUP_JOIN,
        "DATABASE_URL": database_url,
        "SINK_GROUP_ID": group,
        "SINK_BATCH_SIZE": "25",
    }


def from_now_on(bootstrap: str, topic: str, group: str) -> None:
    """Commit the group's offsets at the end of the topic, so that its sink reads what the test
    sends next rather than every event the test session sent before (the topic is shared)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in partitions
        ]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def send_batches(
    pipeline: str,
    source: SourceUnderTest,
    batches: int,
    size: int,
    pause: float = 0.0,
    ids: list[str] | None = None,
    invalid: bool = False,
) -> list[str]:
    """Post batches of events (``invalid``: without a name, so dead-lettered); their ids go
    into `ids` as each batch is accepted."""
    ids = [] if ids is None else ids
    for _ in range(batches):
        batch = [
            {
                "type": "track",
                "userId": f"sink-{i % 13}",
                "messageId": f"sink-{uuid.uuid4()}",
                **({} if invalid else {"event": "Tick"}),
            }
            for i in range(size)
        ]
        response = requests.post(
            f"{pipeline}/v1/batch", json={"batch": batch}, auth=(source.write_key, ""), timeout=10
        )
        assert response.status_code == 200
        ids += [event["messageId"] for event in batch]
        time.sleep(pause)
    return ids


def complete(
    database_url: str, ids: list[str], table: str = "event_history"
) -> dict[str, int] | None:
    """The rows of these events once every one has a row."""
    found = history_counts(database_url, ids, table)
    return found if len(found) == len(ids) else None


def test_killed_and_restarted_the_sink_writes_every_event_exactly_once(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames,
    stack_env: dict[str, str], own_database: str, logs_dir: Path,
) -> None:  # fmt: skip
    env = sink_env(stack_env, own_database, f"sink-kill-{uuid.uuid4().hex[:6]}")
    from_now_on(stack_env["KAFKA_BOOTSTRAP_SERVERS"], topics.events, env["SINK_GROUP_ID"])
    first = start_sink(env, logs_dir / "sink-killed.log", name="sink-killed")
    first.wait_for_output("partitions assigned")
    # Events keep coming while the sink dies, and more come while it is gone.
    with ThreadPoolExecutor(max_workers=1) as sender:
        sent: list[str] = []
        streaming = sender.submit(send_batches, pipeline, source, 12, 50, pause=0.2, ids=sent)
        wait_for(
            lambda: len(history_counts(own_database, list(sent))) >= 50,
            "a first share written",
            timeout=60,
        )
        killed_mid_stream = not streaming.done()
        first.stop(signal.SIGKILL)
        ids = streaming.result()
    ids += send_batches(pipeline, source, batches=4, size=50)
    second = start_sink(env, logs_dir / "sink-restarted.log", name="sink-restarted")
    try:
        kafka.wait_for(ids, topic=topics.events, timeout=60)
        written = wait_for(lambda: complete(own_database, ids), "every row", timeout=90)
    finally:
        second.stop()

    assert killed_mid_stream, "the sink was killed after the events had stopped coming"
    assert set(written) == {m for m in ids if kafka.records(m)}
    assert set(written.values()) == {1}


def test_the_sink_rides_out_postgres_going_away_and_coming_back(
    pipeline: str, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames,
    stack_env: dict[str, str], own_database: str, postgres_proxy: TcpProxy, logs_dir: Path,
) -> None:  # fmt: skip
    through_proxy = make_conninfo(own_database, port=postgres_proxy.port)
    env = sink_env(stack_env, through_proxy, f"sink-outage-{uuid.uuid4().hex[:6]}")
    from_now_on(stack_env["KAFKA_BOOTSTRAP_SERVERS"], topics.events, env["SINK_GROUP_ID"])
    sink = start_sink(env, logs_dir / "sink-outage.log", name="sink-outage")
    try:
        before = send_batches(pipeline, source, batches=2, size=50)
        wait_for(
            lambda: len(history_counts(own_database, before)) == len(before),
            "rows before the outage",
            timeout=60,
        )

        postgres_proxy.cut()
        # Dead letters come in the same batches, from the other topic: rewound alike.
        letters = send_batches(pipeline, source, batches=2, size=20, invalid=True)
        during = send_batches(pipeline, source, batches=4, size=50, pause=0.5)
        # Several batches fail, whichever records they hold.
        wait_for(lambda: sink.output().count("postgres unavailable") >= 3, "3 failed batches", 60)
        postgres_proxy.restore()
        after = send_batches(pipeline, source, batches=2, size=50)

        ids = before + during + after
        kafka.wait_for(ids, topic=topics.events, timeout=60)
        kafka.wait_for(letters, topic=topics.deadletter, timeout=60)
        written = wait_for(lambda: complete(own_database, ids), "every row", timeout=90)
        dead = wait_for(
            lambda: complete(own_database, letters, "dead_letters"), "every dead letter", 90
        )
    finally:
        sink.stop()

    assert set(written.values()) == {1}
    assert set(dead.values()) == {1}
    assert sink.proc.returncode == 0


def test_a_record_postgres_refuses_is_skipped_and_the_rest_flow(
    kafka_bootstrap: str,
    topics: TopicNames,
    stack_env: dict[str, str],
    own_database: str,
    logs_dir: Path,
) -> None:
    good, bad, nul = (f"sink-{uuid.uuid4()}" for _ in range(3))
    received = "2026-05-05T05:05:05.000Z"
    events = [
        # An identity too long for a btree index (published by something other than the API;
        # random, so that it does not compress).
        {"type": "alias", "userId": "long", "messageId": bad, "receivedAt": received,
         "previousId": "".join(chr(0x4E00 + random.randrange(20000)) for _ in range(1024))},
        # NUL, which Postgres text cannot hold, is stored as U+FFFD.
        {"type": "track", "userId": "nul\u0000", "messageId": nul, "receivedAt": received,
         "event": "Nul", "properties": {"x": "a\u0000b", "k\u0000": 1}},
        {"type": "track", "userId": "ok", "messageId": good, "receivedAt": received,
         "event": "Good"},
    ]  # fmt: skip
    env = sink_env(stack_env, own_database, f"sink-refused-{uuid.uuid4().hex[:6]}")
    from_now_on(kafka_bootstrap, topics.events, env["SINK_GROUP_ID"])
    KafkaPublisher({"bootstrap.servers": kafka_bootstrap}).publish(
        [Record(topics.events, e["userId"], e, {"source-id": "src"}) for e in events]
    )
    sink = start_sink(env, logs_dir / "sink-refused.log", name="sink-refused")
    try:
        written = wait_for(lambda: complete(own_database, [good, nul]), "the good rows", timeout=60)
        sink.wait_for_output("refused by postgres, skipped")
    finally:
        sink.stop()

    assert written == {good: 1, nul: 1}
    assert history_counts(own_database, [bad]) == {}
    db = Database(own_database)
    try:
        with db.connection() as conn:
            user_id, payload = conn.execute(
                "SELECT user_id, payload FROM event_history WHERE message_id = %s", (nul,)
            ).fetchone()  # type: ignore[misc]
    finally:
        db.close()
    assert user_id == "nul\ufffd"
    assert payload["properties"] == {"x": "a\ufffdb", "k\ufffd": 1}
