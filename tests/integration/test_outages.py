"""Dependencies down: nothing accepted is lost, nothing is accepted that cannot be kept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from clicktrail.kafka import ensure_topics
from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.infra import (
    KafkaCollector,
    TansuBroker,
    claim_redis_db,
    free_port,
    release_redis_db,
    start_api,
    start_worker,
)


@pytest.fixture
def own_redis_url(run_id: str) -> Iterator[str]:
    """A queue of this test's own, so the session's worker does not take its tasks."""
    db = claim_redis_db(owner=f"{run_id}-{uuid.uuid4().hex[:6]}")
    yield f"redis://127.0.0.1:6379/{db}"
    release_redis_db(db)


def test_worker_started_while_kafka_is_down_delivers_everything_once_it_is_up(
    stack_env: dict[str, str],
    own_redis_url: str,
    source: SourceUnderTest,
    topics: TopicNames,
    logs_dir: Path,
) -> None:
    broker = TansuBroker(port=free_port(), log_path=logs_dir / "outage-tansu.log")
    env = {
        **stack_env,
        "REDIS_URL": own_redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        # Let deliveries time out while the broker is away, so tasks go through their retries.
        "KAFKA_MESSAGE_TIMEOUT_MS": "3000",
    }
    worker = start_worker(env, logs_dir / "outage-worker.log", f"outage-{uuid.uuid4().hex[:6]}")
    api, base = start_api(env, logs_dir / "outage-api.log", name="outage-api")
    collector = None
    try:
        ids = [f"outage-{uuid.uuid4()}" for _ in range(60)]
        for start in range(0, len(ids), 20):
            batch = [
                {"type": "track", "userId": f"u{i % 7}", "messageId": m, "event": "Buffered"}
                for i, m in enumerate(ids[start : start + 20])
            ]
            response = requests.post(
                f"{base}/v1/batch", json={"batch": batch}, auth=(source.write_key, ""), timeout=10
            )
            assert response.status_code == 200, response.text
        # Deliveries fail (broker down) and the tasks schedule retries.
        worker.wait_for_output("retrying", timeout=30)

        broker.start()
        ensure_topics({"bootstrap.servers": broker.bootstrap}, topics.all(), partitions=3)
        collector = KafkaCollector(broker.bootstrap, topics.all()).start()

        got = collector.wait_for(ids, topic=topics.events, timeout=120)
        duplicates = sum(len(records) - 1 for records in got.values())
        assert len(got) == len(ids)
        assert duplicates <= len(ids) // 10, f"{duplicates} duplicates"
    finally:
        if collector:
            collector.stop()
        api.stop()
        worker.stop()
        broker.stop()


def test_api_answers_503_with_retry_after_when_the_queue_is_unreachable(
    stack_env: dict[str, str], source: SourceUnderTest, logs_dir: Path
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    api, base = start_api(
        {**stack_env, "REDIS_URL": dead_redis}, logs_dir / "noredis-api.log", name="noredis-api"
    )
    try:
        response = requests.post(
            f"{base}/v1/track",
            json={"userId": "u", "event": "Lost?"},
            auth=(source.write_key, ""),
            timeout=10,
        )
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["code"] == "unavailable"

        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["redis"]["status"] == "down"
        assert checks["queue"]["status"] == "down"
        assert checks["postgres"]["status"] == "ok"
    finally:
        api.stop()


def test_readyz_is_ok_when_everything_is_up(pipeline: str) -> None:
    ready = requests.get(f"{pipeline}/readyz", timeout=10)

    assert ready.status_code == 200, ready.text
    assert {name: check["status"] for name, check in ready.json()["checks"].items()} == {
        "redis": "ok",
        "queue": "ok",
        "postgres": "ok",
        "kafka": "ok",
        "workers": "ok",
    }


def test_api_answers_503_when_postgres_is_unreachable_for_an_uncached_key(
    stack_env: dict[str, str], logs_dir: Path
) -> None:
    dead_pg = f"postgresql://postgres@127.0.0.1:{free_port()}/clicktrail"
    api, base = start_api(
        {**stack_env, "DATABASE_URL": dead_pg}, logs_dir / "nopg-api.log", name="nopg-api"
    )
    try:
        response = requests.post(
            f"{base}/v1/track",
            json={"userId": "u", "event": "E"},
            auth=("some-key", ""),
            timeout=15,
        )
        assert response.status_code == 503
        assert "Retry-After" in response.headers
    finally:
        api.stop()
