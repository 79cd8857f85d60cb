"""At-least-once made cheap to consume: duplicates dropped by messageId within a window, and a
bound on how often one message may take a worker down.

- ``SeenIds``: the messageIds of a source delivered to Kafka in the last DEDUPE_WINDOW_SECONDS.
  The pipeline skips events already delivered (a client's retry of an accepted request, a
  message redelivered after the worker died between Kafka's confirmation and the ack) and
  remembers events only once Kafka confirmed them, so a crash never loses one. The ids live in
  one Redis set per source and window-long time bucket, expiring as a whole: a batch is
  remembered with one command and checked with one round-trip, at about 60 bytes per event.
  The ledger's worker counts (``clicktrail.ledger``) go in the same round-trip when the ledger
  lives in the same Redis, and are noted even with deduplication off.
- ``Deliveries``: how often a queue message was handed to a worker without it finishing, keyed
  by task id and retry number (a retry is a new message); a message that keeps killing the
  worker process (a segfault, the OOM killer, the hard time limit) is dead-lettered after a few.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import redis

from clicktrail.errors import DependencyUnavailable
from clicktrail.ledger import LedgerCounter, Tally, counts_lost
from clicktrail.metrics import DEDUPE_NOTE_FAILURES
from clicktrail.telemetry import dependency_span

log = logging.getLogger(__name__)

SEEN_KEY = "ct:seen:{source}:{bucket}"
DELIVERY_KEY = "ct:delivery:{task_id}:{retries}"


class SeenIds:
    def __init__(
        self,
        client: redis.Redis,
        window_seconds: int,
        clock: Callable[[], float] = time.time,
        ledger: LedgerCounter | None = None,
    ) -> None:
        self._client = client
        self.window_seconds = window_seconds
        self._clock = clock
        self._ledger = ledger

    def _key(self, source_id: str, bucket: int) -> str:
        return SEEN_KEY.format(source=source_id, bucket=bucket)

    def seen(self, ids: Mapping[str, list[str]]) -> dict[str, set[str]]:
        """By source, which of its ids were delivered within the window (one round-trip). An
        id is found for at least the window and at most twice it: this bucket and the last."""
        wanted = {source: list(dict.fromkeys(found)) for source, found in ids.items() if found}
        if not wanted or self.window_seconds <= 0:
            return {}
        bucket = int(self._clock()) // self.window_seconds
        pipe = self._client.pipeline(transaction=False)
        for source_id, message_ids in wanted.items():
            pipe.smismember(self._key(source_id, bucket), message_ids)
            pipe.smismember(self._key(source_id, bucket - 1), message_ids)
        try:
            with dependency_span("redis seen_ids.seen", "redis", "SMISMEMBER", len(pipe)):
                replies = pipe.execute()
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        found: dict[str, set[str]] = {}
        for n, (source_id, message_ids) in enumerate(wanted.items()):
            now, before = replies[2 * n], replies[2 * n + 1]
            found[source_id] = {
                m for m, a, b in zip(message_ids, now, before, strict=True) if a or b
            }
        return found

    def remember(self, ids: Mapping[str, list[str]], counts: Tally | None = None) -> None:
        """Mark these as delivered, by source (after Kafka confirmed them), and add ``counts``
        to the ledger. Best effort, never raises: Kafka has the events, and a failure here
        (Redis away, full, read-only) only lets a later copy through as a duplicate (and leaves
        the ledger's minutes unbalanced), where raising would republish them all now."""
        noting = self.window_seconds > 0 and any(ids.values())
        pipe = self._client.pipeline(transaction=False)
        if noting:
            bucket = int(self._clock()) // self.window_seconds
            for source_id, message_ids in ids.items():
                if message_ids:
                    key = self._key(source_id, bucket)
                    pipe.sadd(key, *message_ids)
                    pipe.expire(key, 2 * self.window_seconds)
        ledger = self._ledger if counts else None
        along = ledger is not None and ledger.client is self._client
        if ledger is not None and counts is not None and along:
            ledger.queue(pipe, counts)
        if len(pipe):
            try:
                with dependency_span("redis seen_ids.remember", "redis", "SADD", len(pipe)):
                    pipe.execute()
            except redis.RedisError as exc:
                if noting:
                    DEDUPE_NOTE_FAILURES.inc()
                    log.warning("delivered ids not noted for deduplication: %s", exc)
                if along:
                    counts_lost(exc)
        if ledger is not None and counts is not None and not along:
            ledger.note(counts)  # the ledger lives in another Redis: a round-trip of its own


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
        except redis.RedisError as exc:
            # Away, or refusing writes (full, read-only): the task is retried, never acked.
            raise DependencyUnavailable("redis", str(exc)) from exc
        return int(number)
