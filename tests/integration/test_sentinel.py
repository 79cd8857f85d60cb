"""The pipeline on a Redis watched by Sentinel: API, worker and beat find the master through it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.infra import (
    KafkaCollector,
    RedisServer,
    free_port,
    start_api,
    start_beat,
    start_worker,
    wait_for,
)

MASTER = "clicktrail-test"


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A redis-server and a Sentinel watching it: the Sentinel's URL and the server's."""
    workdir = tmp_path_factory.mktemp("sentinel")
    master = RedisServer(workdir / "master", persistent=False).start()
    port = free_port()
    config = workdir / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1\n"
    )
    log = open(workdir / "sentinel.log", "ab")  # noqa: SIM115
    watcher = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
    )
    client = redis.Redis(port=port, decode_responses=True)

    def knows_the_master() -> bool:
        try:
            return client.sentinel_get_master_addr_by_name(MASTER) is not None  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return False

    wait_for(knows_the_master, "the sentinel", timeout=20)
    yield f"sentinel://127.0.0.1:{port}/0", master.url
    watcher.terminate()
    watcher.wait(10)
    master.stop()


def test_events_flow_and_beat_runs_through_sentinel(
    sentinel: tuple[str, str],
    stack_env: dict[str, str],
    kafka: KafkaCollector,
    source: SourceUnderTest,
    topics: TopicNames,
    logs_dir: Path,
) -> None:
    sentinel_url, master_url = sentinel
    env = {
        **stack_env,
        "REDIS_URL": sentinel_url,
        "CELERY_BROKER_URL": sentinel_url,
        "REDIS_SENTINEL_MASTER": MASTER,
    }
    worker = start_worker(env, logs_dir / "sentinel-worker.log", "sentinel-worker")
    api, base = start_api(env, logs_dir / "sentinel-api.log", "sentinel-api")
    beat = start_beat(env, logs_dir / "sentinel-beat.log", "sentinel-beat")
    try:
        message_id = f"sentinel-{uuid.uuid4()}"
        response = requests.post(
            f"{base}/v1/track",
            json={"userId": "u-sentinel", "event": "Signed Up", "messageId": message_id},
            auth=(source.write_key, ""),
            timeout=10,
        )
        [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
        ready = requests.get(f"{base}/readyz", timeout=10)
        master = redis.Redis.from_url(master_url)
        wait_for(lambda: master.exists("ct:redbeat::lock"), "beat's lock in the master", 30)

        assert response.status_code == 200
        assert record.value["context"]["session"]["eventIndex"] == 1
        assert ready.status_code == 200, ready.text
        assert master.keys("ct:session:*")  # sessions live in the master the sentinel names
    finally:
        beat.stop()
        api.stop()
        worker.stop()
