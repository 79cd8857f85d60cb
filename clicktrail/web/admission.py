"""Whether the API may take a request: the queue's backlog and the source's rate.

- Backlog: beyond QUEUE_MAX_DEPTH queued messages the API answers 503 with Retry-After rather
  than accept what the pipeline may not keep up with; the depth is read at most once a second
  per process (one LLEN), so the check costs nothing per request.
- Rate: each source may send RATE_LIMIT_EVENTS_PER_SECOND events a second (its settings'
  ``rate_limit_events_per_second`` overrides it; 0 means no limit), counted in Redis by every
  API process together; beyond it, 429 with Retry-After. Every endpoint that takes a write key
  counts: an ingest or validate request its events, any other request one. The count is a
  generic cell rate (GCRA): a source is owed the time its events take at its rate, and may run
  at most one second's allowance ahead. A batch larger than a second's allowance passes only
  when the source owes nothing, and is charged in full: the source then waits until its rate
  has paid for the batch, so batching never raises the rate, and a large batch (which an SDK
  would send again and again) is not refused forever. A process takes its allowance from Redis
  in slices of a fiftieth of the limit and spends them locally, so a busy source costs a few
  Redis calls a second, not one a request; a slice a process took but could not spend before
  its second ended is lost, so sources get at least the limit less a fiftieth per API process.
- Redis refusing (down, read-only after a failover, out of memory, a script error) answers
  503 with Retry-After, never 500.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from clicktrail.config import Settings
from clicktrail.errors import DependencyUnavailable, Overloaded, RateLimited
from clicktrail.queue import QUEUE
from clicktrail.redisconn import pipeline_redis
from clicktrail.sources import Source

DEPTH_CACHE_SECONDS = 1.0
# A process takes this fraction of a source's limit from Redis at a time.
SLICE_OF_LIMIT = 50
RATE_KEY = "ct:rate:{source}"

# KEYS: the source's paid-up time (when its events so far are paid for at its rate, in epoch
# seconds). ARGV: limit (events a second), wanted, needed, now. Grants up to ``wanted`` events of
# what the second ahead leaves free, at least ``needed``; more than a second's allowance only
# when nothing is owed. Refused: minus the milliseconds until ``needed`` would be granted.
_LEASE = """
local limit, wanted, needed, now =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local paid = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local free = math.floor((now + 1 - paid) * limit + 1e-6)
local granted
if free >= needed then
  granted = math.min(wanted, free)
elseif needed > limit and paid <= now then
  granted = needed
elseif needed > limit then
  return -math.ceil((paid - now) * 1000)
else
  return -math.ceil((paid - 1 + needed / limit - now) * 1000)
end
paid = paid + granted / limit
redis.call('SET', KEYS[1], string.format('%.6f', paid), 'PX', math.ceil((paid - now) * 1000) + 1000)
return granted
"""


class RateCounter(Protocol):
    def lease(self, source_id: str, limit: int, wanted: int, needed: int, now: float) -> int:
        """Take up to ``wanted`` events of the source's allowance at ``now`` (at least
        ``needed``, else none): how many were granted; refused, 0 or minus the milliseconds
        to wait."""


class RedisRateCounter:
    """Every API process's counts, in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._lease = client.register_script(_LEASE)

    def lease(self, source_id: str, limit: int, wanted: int, needed: int, now: float) -> int:
        keys = [RATE_KEY.format(source=source_id)]
        return int(self._lease(keys=keys, args=[limit, wanted, needed, repr(now)]))


@dataclass
class _Slice:
    """The part of a source's allowance this process holds for one second."""

    second: int
    left: int


class Admission:
    def __init__(
        self,
        settings: Settings,
        broker: redis.Redis,
        clock: Callable[[], float] = time.monotonic,
        rates: RateCounter | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = broker
        self._max_depth = settings.queue_max_depth
        self._default_rate = settings.rate_limit_events_per_second
        self._retry_after = settings.retry_after_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._rates = rates or RedisRateCounter(pipeline_redis(settings, timeout=2))
        self._slices: dict[str, _Slice] = {}
        self._leasing: dict[str, threading.Lock] = {}
        self._depth: tuple[float, int] | None = None
        self._lock = threading.Lock()

    def check_queue(self) -> None:
        """503 (Overloaded) when the backlog is over its bound."""
        now = self._clock()
        with self._lock:
            cached = self._depth
        if cached is None or now - cached[0] > DEPTH_CACHE_SECONDS:
            try:
                depth = int(self._broker.llen(QUEUE))
            except redis.RedisError as exc:
                raise DependencyUnavailable("queue", str(exc)) from exc
            with self._lock:
                self._depth = cached = (now, depth)
        if cached[1] >= self._max_depth:
            raise Overloaded(
                "queue_full",
                f"{cached[1]} messages are waiting to be processed; retry later",
                retry_after=self._retry_after,
            )

    def check_rate(self, source: Source, events: int) -> None:
        """429 (RateLimited) when the source is over its events-per-second limit; ``events``
        are charged (one for a request that sends none)."""
        limit = int(source.settings.get("rate_limit_events_per_second", self._default_rate))
        if not limit:
            return
        now = self._wall_clock()
        second = int(now)
        needed = max(events, 1)
        if self._spend(source.id, second, needed):
            return
        # One lease at a time per source: the requests starting a second together would
        # otherwise each take a slice, and that many slices can be more than the whole limit.
        with self._lock:
            leasing = self._leasing.setdefault(source.id, threading.Lock())
        with leasing:
            if self._spend(source.id, second, needed):
                return
            try:
                granted = self._rates.lease(
                    source.id, limit, max(needed, limit // SLICE_OF_LIMIT), needed, now
                )
            except redis.RedisError as exc:
                raise DependencyUnavailable("redis", str(exc)) from exc
            if granted < needed:
                raise RateLimited(
                    "rate_limited",
                    f"this source may send {limit} events a second",
                    retry_after=max(1, math.ceil(-granted / 1000)),
                )
            with self._lock:
                self._slices[source.id] = _Slice(second, granted - needed)

    def _spend(self, source_id: str, second: int, needed: int) -> bool:
        """Take ``needed`` events from the slice this process holds for ``second``, if it can."""
        with self._lock:
            current = self._slices.get(source_id)
            if current is not None and current.second == second and current.left >= needed:
                current.left -= needed
                return True
        return False
