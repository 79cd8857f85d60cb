"""A Redis that refuses writes (full at its maxmemory with noeviction, or a read-only replica
after a failover) under a steady load: the worker lives through it, acknowledges nothing it has
not finished, and goes on once Redis takes writes again. Nothing accepted is lost."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from clicktrail.queue import QUEUE
from tests.faults.harness import Sender
from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.infra import KafkaCollector, RedisServer, Service, start_worker_and_api

# How long Redis refuses writes: twice kombu's restore tick, so pending acks wait through one.
REFUSING_FOR = 10


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    yield server
    server.stop()


def deliver_through(
    base: str,
    source: SourceUnderTest,
    kafka: KafkaCollector,
    topics: TopicNames,
    worker: Service,
    queue: redis.Redis,
    refuse: object,
    accept: object,
) -> None:
    """Send a steady load; refuse writes for REFUSING_FOR seconds in the middle of it; then
    every accepted event must reach Kafka, about once, from the worker that lived through it."""
    assert callable(refuse)
    assert callable(accept)
    sender = Sender(base, source.write_key, total=1200, batch=10, threads=2, rate=40).start()
    time.sleep(2)
    # A backlog for the worker to meet the refusals with (the API refuses requests meanwhile).
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    time.sleep(3)
    refuse()
    backlog = queue.llen(QUEUE)
    os.killpg(worker.proc.pid, signal.SIGCONT)
    try:
        assert backlog > 0
        time.sleep(REFUSING_FOR)
        assert worker.proc.poll() is None, worker.output()[-3000:]
    finally:
        accept()
    sender.join()

    assert sender.accepted
    got = kafka.wait_for(sender.accepted, topic=topics.events, timeout=120)
    duplicates = sum(len(records) - 1 for records in got.values())
    print(
        f"sent {sender.sent} accepted {len(sender.accepted)} delivered {len(got)}"
        f" duplicates {duplicates} client saw {dict(sender.statuses)}"
    )
    # A duplicate costs a message handed out again whose ids could not be noted; never a loop.
    assert duplicates <= len(sender.accepted) // 10, f"{duplicates} duplicates"
    assert worker.proc.poll() is None, worker.output()[-3000:]


@pytest.mark.parametrize(
    ("setting", "refusing"),
    [
        # Over maxmemory with noeviction: every command that may grow memory is refused.
        pytest.param("maxmemory", "1", id="full"),
        # A master set to write only with a replica in sync, and none left: NOREPLICAS, an
        # error redis-py has no class for, on every write (taking from the queue too).
        pytest.param("min-replicas-to-write", "1", id="noreplicas"),
    ],
)
def test_a_redis_refusing_writes_under_load_costs_no_event_and_no_worker(
    setting: str,
    refusing: str,
    stack_env: dict[str, str],
    own_redis: RedisServer,
    source: SourceUnderTest,
    topics: TopicNames,
    kafka: KafkaCollector,
    logs_dir: Path,
) -> None:
    env = {**stack_env, "REDIS_URL": own_redis.url}
    worker, api, base = start_worker_and_api(env, logs_dir, f"redis-{setting}")
    admin = redis.Redis.from_url(own_redis.url)
    try:
        deliver_through(
            base,
            source,
            kafka,
            topics,
            worker,
            admin,
            refuse=lambda: admin.config_set(setting, refusing),
            accept=lambda: admin.config_set(setting, "0"),
        )
    finally:
        api.stop()
        worker.stop()


def test_a_read_only_pipeline_redis_costs_no_event_and_no_republish_loop(
    stack_env: dict[str, str],
    own_redis: RedisServer,
    tmp_path: Path,
    source: SourceUnderTest,
    topics: TopicNames,
    kafka: KafkaCollector,
    logs_dir: Path,
) -> None:
    pipeline_redis = RedisServer(tmp_path / "pipeline-redis", persistent=False).start()
    env = {**stack_env, "CELERY_BROKER_URL": own_redis.url, "REDIS_URL": pipeline_redis.url}
    worker, api, base = start_worker_and_api(env, logs_dir, "redis-replica")
    admin = redis.Redis.from_url(pipeline_redis.url)
    try:
        deliver_through(
            base,
            source,
            kafka,
            topics,
            worker,
            redis.Redis.from_url(own_redis.url),
            # What a failover leaves behind: the old master is now a replica, and replicas
            # refuse writes (READONLY): the delivery counter, sessions, deduplication all fail.
            refuse=lambda: admin.replicaof("127.0.0.1", str(own_redis.port)),
            accept=lambda: admin.replicaof("NO", "ONE"),
        )
    finally:
        api.stop()
        worker.stop()
        pipeline_redis.stop()
