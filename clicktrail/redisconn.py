"""Redis clients for the pipeline's own keys (sessions and the rest of ``ct:``)."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

# Errors that mean "Redis is not reachable right now"; callers turn them into
# DependencyUnavailable so the API answers 503 and tasks retry.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def make_redis(url: str, *, timeout: float = 5.0) -> redis.Redis:
    """A pooled client that rides out blips of a few hundred milliseconds before failing.

    Opens no connection until first used. ``rediss://`` URLs get TLS.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=25,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        retry_on_error=list(REDIS_DOWN),
        decode_responses=True,
    )


def is_redis_url(url: str) -> bool:
    """Whether a broker URL names a Redis server (not RabbitMQ or another kombu transport)."""
    return url.split("://", 1)[0].lower() in ("redis", "rediss")
