"""The ledger: per source and minute of ``receivedAt``, what became of the events the API
accepted, counted where each thing happens and in round-trips that happen anyway.

- ``accepted``: the API, in the MULTI that queues the request (``clicktrail.web.enqueue``): a
  request acknowledged is counted exactly once, a request refused not at all.
- ``published`` and ``dead_lettered``: the workers, from Kafka's delivery reports; ``dropped``
  (events the deduplication skipped as delivered already) and ``erased`` (events of users
  erased since they were received, never published), on a message's first delivery only (on a
  redelivery after a worker died, what the deduplication skips is the pipeline's own copies).
  All in the round-trip that notes the delivered ids for deduplication
  (``clicktrail.delivery.SeenIds``), best effort: a failure there never fails a task whose
  records Kafka has (``clicktrail_ledger_count_failures_total``).
- ``stored``, ``duplicates``, ``copies`` and ``erased``: the history sink, in Postgres (the
  ``ledger`` table), in the transaction that writes the rows.

The Redis counts are one hash per minute, ``ct:ledger:<YYYY-MM-DDTHH:MM>`` (UTC), with a field
``<stage>:<source id>`` per stage and source, in the queue's Redis when the broker is Redis (so
that the API's count is part of its enqueue) and at REDIS_URL otherwise; each expires
LEDGER_RETENTION_HOURS after its last count, and the purge trims the Postgres rows as old.

The books (``Books``) put both sides together. A minute balances when

    accepted = stored + duplicates + dropped + erased

(``copies`` are outside: more records of events counted already). Once a minute is settled
(LEDGER_SETTLE_SECONDS after its end: the pipeline's normal lag) it must balance; where it does
not, ``published + dead_lettered`` says where the missing events stopped: short of the accepted
(less what the workers dropped or erased), they never reached Kafka (the queue, the workers);
otherwise Kafka has them and the sink has not stored them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from clicktrail.clock import minute_of, parse_ts
from clicktrail.config import Settings
from clicktrail.metrics import LEDGER_COUNT_FAILURES
from clicktrail.redisconn import is_redis_url, pipeline_redis, queue_redis
from clicktrail.telemetry import dependency_span

log = logging.getLogger(__name__)

ACCEPTED, PUBLISHED, DEAD_LETTERED, DROPPED, ERASED = (
    "accepted",
    "published",
    "dead_lettered",
    "dropped",
    "erased",
)
# What the API and the workers count in Redis, and what the sink counts in Postgres.
REDIS_STAGES = (ACCEPTED, PUBLISHED, DEAD_LETTERED, DROPPED, ERASED)
SINK_COLUMNS = ("stored", "duplicates", "copies", "erased")

LEDGER_KEY = "ct:ledger:{minute}"
_LABEL = "%Y-%m-%dT%H:%M"


def minute_label(received_at: object) -> str | None:
    """The minute (``2026-01-02T03:04``, UTC) of a ``receivedAt``; None when it has none.

    The API writes every receivedAt as ``2026-01-02T03:04:05.678Z``, whose minute is its first
    16 characters; anything else is parsed."""
    if (
        isinstance(received_at, str)
        and len(received_at) == 24
        and received_at[10] == "T"
        and received_at[23] == "Z"
        and received_at[:4].isdigit()
    ):
        return received_at[:16]
    moment = parse_ts(received_at)
    return None if moment is None else label_of(moment)


def label_of(moment: datetime) -> str:
    """The minute a moment falls in, as the ledger's keys name it."""
    return minute_of(moment).strftime(_LABEL)


def minute_at(label: str) -> datetime:
    return datetime.strptime(label, _LABEL).replace(tzinfo=UTC)


def received_minutes(events: Iterable[Any]) -> tuple[tuple[str, int], ...]:
    """How many of these events were received in each minute (an API request's events share
    one receivedAt: one minute, parsed once)."""
    by_time = Counter(e.get("receivedAt") for e in events if isinstance(e, dict))
    minutes: Counter[str] = Counter()
    for received_at, count in by_time.items():
        label = minute_label(received_at)
        if label is not None:
            minutes[label] += count
    return tuple(minutes.items())


def ledger_field(stage: str, source_id: str) -> str:
    return f"{stage}:{source_id}"


class Tally:
    """Counts on their way to Redis: by minute and ``<stage>:<source>`` field."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def add(self, stage: str, source_id: str, received_at: object, count: int = 1) -> None:
        label = minute_label(received_at)
        if label is not None and count:
            self.counts[label, ledger_field(stage, source_id)] += count

    def add_minutes(self, stage: str, source_id: str, minutes: Iterable[tuple[str, int]]) -> None:
        for label, count in minutes:
            if count:
                self.counts[label, ledger_field(stage, source_id)] += count

    def of(self, stage: str, source_id: str) -> int:
        """How many this tally holds of one stage and source (every minute)."""
        wanted = ledger_field(stage, source_id)
        return sum(n for (_, name), n in self.counts.items() if name == wanted)


class LedgerCounter:
    """Adds tallies to the ledger's Redis hashes: into a round-trip of the caller's
    (``queue``, which is how the API counts inside its enqueue and the workers beside their
    deduplication note), or in one of its own (``note``)."""

    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.client = client
        self._retention = retention_seconds

    def queue(self, pipe: Any, tally: Tally) -> None:
        """HINCRBY each count, then EXPIRE each minute's hash, in ``pipe`` (a redis-py pipeline
        of this counter's client)."""
        minutes: set[str] = set()
        for (label, name), count in tally.counts.items():
            if count:
                key = LEDGER_KEY.format(minute=label)
                pipe.hincrby(key, name, count)
                minutes.add(key)
        for key in sorted(minutes):
            pipe.expire(key, self._retention)

    def note(self, tally: Tally) -> bool:
        """Add a tally in a round-trip of its own. Best effort, never raises: False (logged and
        counted in clicktrail_ledger_count_failures_total) when Redis did not take it."""
        if not tally:
            return True
        pipe = self.client.pipeline(transaction=False)
        self.queue(pipe, tally)
        try:
            with dependency_span("redis ledger.note", "redis", "HINCRBY", len(pipe)):
                pipe.execute()
        except redis.RedisError as exc:
            counts_lost(exc)
            return False
        return True


def counts_lost(exc: BaseException) -> None:
    """A tally Redis did not take: its minutes will not balance."""
    LEDGER_COUNT_FAILURES.inc()
    log.warning("ledger counts lost, their minutes will not balance: %s", exc)


def ledger_redis(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    """Where the ledger's counts live: the queue's Redis when the broker is Redis (the API counts
    in the transaction that queues), REDIS_URL otherwise."""
    if is_redis_url(settings.celery_broker_url):
        return queue_redis(settings, timeout=timeout)
    return pipeline_redis(settings, timeout=timeout)


def shares_ledger_redis(settings: Settings) -> bool:
    """Whether the ledger lives in the Redis at REDIS_URL (its counts can then share the
    workers' deduplication round-trip)."""
    return not is_redis_url(settings.celery_broker_url) or (
        settings.celery_broker_url == settings.redis_url
    )
