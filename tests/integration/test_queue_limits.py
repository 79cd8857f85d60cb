"""The API's queue on a redis-server of our own: concurrent requests share messages that carry
every one of them, and a full memory answers 503."""

from __future__ import annotations

import base64
import copy
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from celery import Celery

from clicktrail.config import Settings
from clicktrail.errors import Overloaded
from clicktrail.message import Message, Part
from clicktrail.queue import (
    CONTENT_TYPE,
    INGEST_TASK,
    QUEUE,
    celery_settings,
    decode_body,
    task_message,
)
from clicktrail.web.enqueue import CeleryEnqueuer
from tests.support.infra import RedisServer


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=False, maxmemory="3mb").start()
    yield server
    server.stop()


def test_a_redis_out_of_memory_is_a_503_queue_full_and_nothing_is_half_written(
    small_redis: RedisServer,
) -> None:
    enqueuer = CeleryEnqueuer(Settings.from_env({"REDIS_URL": small_redis.url}))
    events = [  # random padding: messages are compressed
        {"type": "track", "messageId": str(i), "properties": {"pad": secrets.token_hex(1000)}}
        for i in range(20)
    ]
    part = Part("src", {}, events)
    accepted: list[int] = []

    def fill() -> None:
        for attempt in range(1000):
            enqueuer.enqueue(part)
            accepted.append(attempt)

    with pytest.raises(Overloaded) as caught:
        fill()

    assert caught.value.code == "queue_full"
    assert caught.value.retry_after == 5
    assert redis.Redis.from_url(small_redis.url).llen(QUEUE) == len(accepted)


def test_concurrent_requests_share_messages_and_each_is_in_one_exactly(
    small_redis: RedisServer,
) -> None:
    enqueuer = CeleryEnqueuer(Settings.from_env({"REDIS_URL": small_redis.url}))
    start = threading.Barrier(16)

    def request(n: int) -> None:
        if n < 16:
            start.wait()
        event = {"type": "track", "messageId": f"m-{n}", "userId": "u"}
        enqueuer.enqueue(Part("src", {}, [event]))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(request, range(400)))

    queued = redis.Redis.from_url(small_redis.url).lrange(QUEUE, 0, -1)
    ids = []
    for raw in queued:
        message = orjson.loads(raw)  # kombu's envelope; the body is the task's arguments
        assert message["content-type"] == CONTENT_TYPE
        [payload], _, _ = decode_body(base64.b64decode(message["body"]))
        ids += Message.decode(payload).message_ids()
    assert sorted(ids) == sorted(f"m-{n}" for n in range(400))
    assert len(queued) < 400


def test_our_task_message_is_what_celery_writes_itself(small_redis: RedisServer) -> None:
    settings = Settings.from_env({"REDIS_URL": small_redis.url})
    celery = Celery("reference", set_as_current=False)
    celery.conf.update(celery_settings(settings))
    payload = Part("src", {"a": 1}, [{"type": "track", "messageId": "m"}]).to_wire()
    celery.send_task(INGEST_TASK, args=[payload], queue=QUEUE, argsrepr="repr")
    client = redis.Redis.from_url(small_redis.url)
    [theirs] = [orjson.loads(m) for m in client.lrange(QUEUE, 0, -1)]
    ours = orjson.loads(task_message(INGEST_TASK, QUEUE, [payload], "repr", "origin@host"))

    def comparable(message: dict[str, Any]) -> dict[str, Any]:
        message = copy.deepcopy(message)
        task_id = message["headers"]["id"]
        assert message["headers"]["root_id"] == message["properties"]["correlation_id"] == task_id
        for name in ("id", "root_id", "origin"):
            message["headers"].pop(name)
        for name in ("correlation_id", "delivery_tag", "reply_to"):
            message["properties"].pop(name, None)
        message["body"] = decode_body(base64.b64decode(message.pop("body")))
        return message

    assert comparable(ours) == comparable(theirs)
