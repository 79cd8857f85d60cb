"""Records Kafka will never accept are dead-lettered with Kafka's error, not retried forever,
and cost the others of their batch nothing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import ClicktrailCli, SourceUnderTest, TopicNames
from tests.support.infra import (
    KafkaCollector,
    claim_redis_db,
    release_redis_db,
    start_worker_and_api,
)

# The producer refuses records over this many bytes (librdkafka's own check, as a broker's
# message.max.bytes would): an event of 25 KB passes the API's 32 KB limit but not this.
MAX_BYTES = 20000


@pytest.fixture
def own_env(stack_env: dict[str, str], run_id: str) -> Iterator[dict[str, str]]:
    """A queue of the test's own, so the session's worker does not take its tasks."""
    db = claim_redis_db(owner=f"{run_id}-{uuid.uuid4().hex[:6]}")
    yield {**stack_env, "REDIS_URL": f"redis://127.0.0.1:6379/{db}"}
    release_redis_db(db)


def post_batch(base: str, source: SourceUnderTest, batch: list[dict[str, object]]) -> None:
    response = requests.post(
        f"{base}/v1/batch", json={"batch": batch}, auth=(source.write_key, ""), timeout=10
    )
    assert response.status_code == 200, response.text


def test_an_event_too_large_for_kafka_is_dead_lettered_and_its_batch_published(
    own_env: dict[str, str],
    source: SourceUnderTest,
    topics: TopicNames,
    kafka: KafkaCollector,
    logs_dir: Path,
    clicktrail_cli: ClicktrailCli,
) -> None:
    env = {**own_env, "KAFKA_MESSAGE_MAX_BYTES": str(MAX_BYTES)}
    worker, api, base = start_worker_and_api(env, logs_dir, "too-large")
    try:
        small = [f"small-{uuid.uuid4()}" for _ in range(3)]
        large = f"large-{uuid.uuid4()}"
        batch: list[dict[str, object]] = [
            {"type": "track", "userId": "u1", "messageId": m, "event": "Fits"} for m in small
        ]
        batch.insert(
            1,
            {
                "type": "track",
                "userId": "u1",
                "messageId": large,
                "event": "Grew",
                "properties": {"blob": "x" * 25000},
            },
        )
        post_batch(base, source, batch)

        kafka.wait_for(small, topic=topics.events, timeout=60)
        [letter] = kafka.wait_for([large], topic=topics.deadletter, timeout=60)[large]
        assert letter.headers["error-kind"] == "kafka_rejected"
        assert letter.value["reason"] == "kafka_rejected"
        [error] = letter.value["errors"]
        assert error["keyword"] == "MSG_SIZE_TOO_LARGE"
        assert "too large" in error["message"].lower()
        # The dead letter itself had to fit: it carries a summary of the event.
        event = letter.value["event"]
        assert event["messageId"] == large
        assert event["type"] == "track"
        assert event["size"] > 25000
        assert event["preview"].startswith("{")
        assert letter.raw is not None
        assert len(letter.raw) < MAX_BYTES
        assert not kafka.records(large)[1:], "dead-lettered once, never published"
        assert "publish incomplete" not in worker.output()

        # A summary cannot be replayed as the event it stands for: a replay says so and skips it.
        replay = clicktrail_cli("deadletters", "replay", "--reason", "kafka_rejected", "--dry-run")
        assert replay.returncode == 0, replay.stderr
        assert re.search(r"skipped [1-9]\d* event\(s\) too large for Kafka", replay.stdout)
    finally:
        api.stop()
        worker.stop()


def test_events_for_an_unknown_topic_are_dead_lettered_with_kafkas_error(
    own_env: dict[str, str],
    source: SourceUnderTest,
    topics: TopicNames,
    kafka: KafkaCollector,
    logs_dir: Path,
    run_id: str,
) -> None:
    env = {
        **own_env,
        # A topic nobody made, on a cluster that does not make topics on demand.
        "KAFKA_TOPIC_EVENTS": f"ct-{run_id}-never-created",
        "KAFKA_ALLOW_AUTO_CREATE_TOPICS": "false",
    }
    worker, api, base = start_worker_and_api(env, logs_dir, "unknown-topic")
    try:
        ids = [f"lost-topic-{uuid.uuid4()}" for _ in range(3)]
        post_batch(
            base,
            source,
            [{"type": "track", "userId": "u2", "messageId": m, "event": "Nowhere"} for m in ids],
        )

        got = kafka.wait_for(ids, topic=topics.deadletter, timeout=60)
        for message_id in ids:
            [letter] = got[message_id]
            assert letter.value["reason"] == "kafka_rejected"
            assert letter.value["errors"][0]["keyword"] == "UNKNOWN_TOPIC_OR_PART"
            # Not too large: the whole event is kept, to be replayed once the topic exists.
            assert letter.value["event"]["messageId"] == message_id
            assert letter.value["event"]["event"] == "Nowhere"
            assert "receivedAt" in letter.value["event"]
    finally:
        api.stop()
        worker.stop()
