"""Deduplication and delivery counts against a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from clicktrail.delivery import Deliveries, SeenIds
from clicktrail.errors import DependencyUnavailable
from clicktrail.metrics import DEDUPE_NOTE_FAILURES
from clicktrail.redisconn import make_redis
from tests.support.infra import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_ids_are_seen_for_at_least_the_window_and_forgotten_after_twice_it(
    redis_url: str,
) -> None:
    client: redis.Redis = make_redis(redis_url)
    clock = Clock()
    seen = SeenIds(client, window_seconds=100, clock=clock)
    source = f"src-{uuid.uuid4().hex}"
    delivered = [f"m-{n}" for n in range(300)]

    other = f"other-{source}"
    assert seen.seen({source: delivered}) == {source: set()}
    seen.remember({source: delivered})
    found = seen.seen({source: [*delivered, "new"], other: delivered})
    assert found == {source: set(delivered), other: set()}  # ids are per source

    clock.now += 99  # within the window, whatever the bucket boundaries
    assert seen.seen({source: delivered[:5]}) == {source: set(delivered[:5])}
    clock.now += 101  # two windows on: its bucket is no longer looked at
    assert seen.seen({source: delivered[:5]}) == {source: set()}

    keys = client.keys(f"ct:seen:{source}:*")
    assert keys
    assert all(0 < client.ttl(key) <= 200 for key in keys)
    client.delete(*keys)


def test_a_zero_window_turns_deduplication_off(redis_url: str) -> None:
    seen = SeenIds(make_redis(redis_url), window_seconds=0)
    seen.remember({"src": ["a"]})
    assert seen.seen({"src": ["a"]}) == {}


@pytest.fixture
def read_only_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A replica (as a failover leaves the old master): it refuses every write, READONLY."""
    master = RedisServer(tmp_path / "master", persistent=False).start()
    replica = RedisServer(tmp_path / "replica", persistent=False).start()
    client: redis.Redis = make_redis(replica.url)
    client.replicaof("127.0.0.1", str(master.port))
    yield client
    replica.stop()
    master.stop()


def test_noting_delivered_ids_on_a_redis_refusing_writes_never_raises(
    read_only_redis: redis.Redis,
) -> None:
    seen = SeenIds(read_only_redis, window_seconds=100)
    before = DEDUPE_NOTE_FAILURES._value.get()

    seen.remember({"src": ["a", "b"]})  # Kafka has them: raising would publish them again

    assert DEDUPE_NOTE_FAILURES._value.get() == before + 1
    assert seen.seen({"src": ["a"]}) == {"src": set()}


def test_a_delivery_counter_refused_by_redis_is_a_dependency_outage(
    read_only_redis: redis.Redis,
) -> None:
    with pytest.raises(DependencyUnavailable, match="read only replica"):
        Deliveries(read_only_redis, ttl_seconds=60).count("task", 0)
