"""The API's queue at its limits, on a redis-server of our own: full memory answers 503."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from clicktrail.config import Settings
from clicktrail.errors import Overloaded
from clicktrail.queue import QUEUE, ingest_payload
from tests.support.infra import RedisServer
from web.enqueue import CeleryEnqueuer


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=False, maxmemory="3mb").start()
    yield server
    server.stop()


def test_a_redis_out_of_memory_is_a_503_queue_full_and_nothing_is_half_written(
    small_redis: RedisServer,
) -> None:
    enqueuer = CeleryEnqueuer(Settings.from_env({"REDIS_URL": small_redis.url}))
    events = [
        {"type": "track", "messageId": str(i), "properties": {"pad": "x" * 2000}} for i in range(20)
    ]
    payload = ingest_payload("src", {}, events, None)
    accepted: list[int] = []

    def fill() -> None:
        for attempt in range(1000):
            enqueuer.enqueue(payload)
            accepted.append(attempt)

    with pytest.raises(Overloaded) as caught:
        fill()

    assert caught.value.code == "queue_full"
    assert caught.value.retry_after == 5
    assert redis.Redis.from_url(small_redis.url).llen(QUEUE) == len(accepted)
