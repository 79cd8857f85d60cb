"""Deduplication and delivery counts against a real Redis."""

from __future__ import annotations

import uuid

import redis

from clicktrail.delivery import SeenIds
from clicktrail.redisconn import make_redis


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
