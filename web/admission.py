"""Whether the API may take a request: the queue's backlog and the source's rate.

- Backlog: beyond QUEUE_MAX_DEPTH queued messages the API answers 503 with Retry-After rather
  than accept what the pipeline may not keep up with; the depth is read at most once a second
  per process (one LLEN), so the check costs nothing per request.
- Rate: each source may send RATE_LIMIT_EVENTS_PER_SECOND events a second (its settings'
  ``rate_limit_events_per_second`` overrides it; 0 means no limit), counted in Redis over a
  sliding one-second window shared by every API process; beyond it, 429 with Retry-After. A
  process takes its allowance from Redis in slices of a fiftieth of the limit and spends them
  locally, so a busy source costs a few Redis calls a second, not one a request; a slice a
  process took but could not spend before its second ended is lost, so sources get at least
  the limit less a fiftieth per API process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis

from clicktrail.config import Settings
from clicktrail.errors import DependencyUnavailable, Overloaded, RateLimited
from clicktrail.queue import QUEUE
from clicktrail.redisconn import REDIS_DOWN, pipeline_redis
from clicktrail.sources import Source

DEPTH_CACHE_SECONDS = 1.0
# A process takes this fraction of a source's limit from Redis at a time.
SLICE_OF_LIMIT = 50
RATE_KEY = "ct:rate:{source}:{second}"

# KEYS: this second's count, the last second's. ARGV: limit, wanted, needed, the part of this
# second gone (0..1). The sliding window's estimate is this second's count plus the part of the
# last second's still inside the window. Grants up to ``wanted`` events within the limit, or
# nothing when even ``needed`` does not fit.
_LEASE = """
local limit, wanted, needed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
  + math.floor(last * (1 - tonumber(ARGV[4])))
local free = limit - used
if free < needed then return 0 end
local granted = math.min(wanted, free)
redis.call('INCRBY', KEYS[1], granted)
redis.call('EXPIRE', KEYS[1], 3)
return granted
"""


class RateCounter(Protocol):
    def lease(self, source_id: str, limit: int, wanted: int, needed: int, now: float) -> int:
        """Take up to ``wanted`` events of the source's allowance at ``now`` (at least
        ``needed``, else none): how many were granted."""


class RedisRateCounter:
    """Every API process's counts, in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._lease = client.register_script(_LEASE)

    def lease(self, source_id: str, limit: int, wanted: int, needed: int, now: float) -> int:
        second = int(now)
        keys = [
            RATE_KEY.format(source=source_id, second=second),
            RATE_KEY.format(source=source_id, second=second - 1),
        ]
        return int(self._lease(keys=keys, args=[limit, wanted, needed, now - second]))


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
            except REDIS_DOWN as exc:
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
        """429 (RateLimited) when the source is over its events-per-second limit."""
        limit = int(source.settings.get("rate_limit_events_per_second", self._default_rate))
        if not limit:
            return
        now = self._wall_clock()
        second = int(now)
        # A batch larger than a second's allowance passes when it has the whole second.
        needed = min(events, limit)
        with self._lock:
            current = self._slices.get(source.id)
            if current is not None and current.second == second and current.left >= needed:
                current.left -= needed
                return
        try:
            granted = self._rates.lease(
                source.id, limit, max(needed, limit // SLICE_OF_LIMIT), needed, now
            )
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        if granted < needed:
            raise RateLimited(
                "rate_limited", f"this source may send {limit} events a second", retry_after=1
            )
        with self._lock:
            self._slices[source.id] = _Slice(second, granted - needed)
