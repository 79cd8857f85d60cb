"""At-least-once made cheap to consume: duplicates dropped by messageId within a window, and a
bound on how often one message may take a worker down.

- ``SeenIds``: the messageIds of a source delivered to Kafka in the last DEDUPE_WINDOW_SECONDS.
  The pipeline skips events already delivered (a client's retry of an accepted request, a
  message redelivered after the worker died between Kafka's confirmation and the ack) and
  remembers events only once Kafka confirmed them, so a crash never loses one. Costs one Redis
  key (~100 bytes) per event for the window.
- ``Deliveries``: how often a queue message was handed to a worker without it finishing, keyed
  by task id and retry number (a retry is a new message); a message that keeps killing the
  worker process (a segfault, the OOM killer, the hard time limit) is dead-lettered after a few.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import redis

from clicktrail.errors import DependencyUnavailable
from clicktrail.redisconn import REDIS_DOWN

SEEN_KEY = "ct:seen:{source}:{message_id}"
DELIVERY_KEY = "ct:delivery:{task_id}:{retries}"


class SeenIds:
    def __init__(self, client: redis.Redis, window_seconds: int) -> None:
        self._client = client
        self.window_seconds = window_seconds

    def seen(self, source_id: str, message_ids: Iterable[str]) -> set[str]:
        """Which of these were delivered within the window (one round-trip)."""
        ids = list(dict.fromkeys(message_ids))
        if not ids or self.window_seconds <= 0:
            return set()
        keys = [SEEN_KEY.format(source=source_id, message_id=m) for m in ids]
        try:
            found = self._client.mget(keys)
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        return {m for m, value in zip(ids, found, strict=True) if value is not None}

    def remember(self, source_id: str, message_ids: Iterable[str]) -> None:
        """Mark these as delivered (after Kafka confirmed them). Best effort: a failure here
        only lets a later duplicate through."""
        if self.window_seconds <= 0:
            return
        pipe = self._client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.set(
                SEEN_KEY.format(source=source_id, message_id=message_id), 1, ex=self.window_seconds
            )
        with contextlib.suppress(*REDIS_DOWN):
            pipe.execute()


class Deliveries:
    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self._client = client
        self._ttl = ttl_seconds

    def count(self, task_id: str, retries: int) -> int:
        """This delivery's number (1 for the first) of one message."""
        key = DELIVERY_KEY.format(task_id=task_id, retries=retries)
        pipe = self._client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, self._ttl)
        try:
            number, _ = pipe.execute()
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        return int(number)
