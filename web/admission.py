"""Whether the API may take a request: the queue's backlog and the source's rate.

- Backlog: beyond QUEUE_MAX_DEPTH queued requests the API answers 503 with Retry-After rather
  than accept what the pipeline may not keep up with; the depth is read at most once a second
  per process (one LLEN), so the check costs nothing per request.
- Rate: each source may send RATE_LIMIT_EVENTS_PER_SECOND events a second (its settings'
  ``rate_limit_events_per_second`` overrides it; 0 means no limit), counted in Redis over a
  sliding window shared by every API process (one round-trip); beyond it, 429 with Retry-After.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import redis
from limits import RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from clicktrail.config import Settings
from clicktrail.errors import DependencyUnavailable, Overloaded, RateLimited
from clicktrail.queue import QUEUE
from clicktrail.redisconn import REDIS_DOWN
from clicktrail.sources import Source

DEPTH_CACHE_SECONDS = 1.0


class Admission:
    def __init__(
        self,
        settings: Settings,
        broker: redis.Redis,
        clock: Callable[[], float] = time.monotonic,
        rate_storage: str | None = None,
    ) -> None:
        self._broker = broker
        self._max_depth = settings.queue_max_depth
        self._default_rate = settings.rate_limit_events_per_second
        self._retry_after = settings.retry_after_seconds
        self._clock = clock
        self._limiter = SlidingWindowCounterRateLimiter(
            storage_from_string(rate_storage or settings.redis_url)
        )
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
                f"{cached[1]} requests are waiting to be processed; retry later",
                retry_after=self._retry_after,
            )

    def check_rate(self, source: Source, events: int) -> None:
        """429 (RateLimited) when the source is over its events-per-second limit."""
        rate = source.settings.get("rate_limit_events_per_second", self._default_rate)
        if not rate:
            return
        item = RateLimitItemPerSecond(int(rate))
        try:
            # A batch larger than a second's allowance passes when it has the whole second.
            allowed = self._limiter.hit(item, "source", source.id, cost=min(events, int(rate)))
            if allowed:
                return
            reset = self._limiter.get_window_stats(item, "source", source.id).reset_time
        except REDIS_DOWN as exc:
            raise DependencyUnavailable("redis", str(exc)) from exc
        raise RateLimited(
            "rate_limited",
            f"this source may send {rate} events a second",
            retry_after=max(1, math.ceil(reset - time.time())),
        )
