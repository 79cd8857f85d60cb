"""Redis clients for the pipeline's own keys (sessions and the rest of ``ct:``) and the queue.

A URL names one Redis (``redis://``, ``rediss://`` for TLS) or the Sentinels that watch a
replicated one: ``sentinel://[:password@]host:26379[;sentinel://host2:26379...]/db``, the master
being the one they know by REDIS_SENTINEL_MASTER. Celery's broker (kombu) reads the same form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from clicktrail.config import ConfigError

if TYPE_CHECKING:
    from clicktrail.config import Settings

# Errors that mean "Redis is not reachable right now"; callers turn them into
# DependencyUnavailable so the API answers 503 and tasks retry.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

DEFAULT_SENTINEL_MASTER = "mymaster"


@dataclass(frozen=True)
class SentinelUrl:
    """What a ``sentinel://`` URL names: the Sentinels, the database and the master's password."""

    sentinels: list[tuple[str, int]]
    db: int
    password: str | None
    username: str | None


def parse_sentinel_url(url: str) -> SentinelUrl | None:
    """The parts of a ``sentinel://`` URL (several separated by ``;``, as kombu takes them);
    None for any other URL."""
    if not url.lower().startswith("sentinel://"):
        return None
    sentinels, db, password, username = [], 0, None, None
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        if parsed.scheme.lower() != "sentinel" or not parsed.hostname:
            raise ConfigError(f"not a sentinel URL: {part!r}")
        sentinels.append((parsed.hostname, parsed.port or 26379))
        password = unquote(parsed.password) if parsed.password else password
        username = unquote(parsed.username) if parsed.username else username
        if parsed.path.strip("/"):
            db = int(parsed.path.strip("/"))
    return SentinelUrl(sentinels, db, password, username)


def make_redis(
    url: str, *, timeout: float = 5.0, sentinel_master: str = DEFAULT_SENTINEL_MASTER
) -> redis.Redis:
    """A pooled client that rides out blips of a few hundred milliseconds before failing.

    Opens no connection until first used. ``rediss://`` URLs get TLS; with ``sentinel://`` the
    client asks the Sentinels for the current master, again after a failover.
    """
    options = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "health_check_interval": 25,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        "retry_on_error": list(REDIS_DOWN),
        "decode_responses": True,
    }
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return redis.Redis.from_url(url, **options)
    watchers = Sentinel(  # type: ignore[no-untyped-call]
        sentinel.sentinels, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    master: redis.Redis = watchers.master_for(  # type: ignore[no-untyped-call]
        sentinel_master,
        db=sentinel.db,
        password=sentinel.password,
        username=sentinel.username,
        **options,
    )
    return master


def pipeline_redis(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    """The Redis at REDIS_URL: sessions, deduplication, rate counts and other ``ct:`` keys."""
    return make_redis(
        settings.redis_url, timeout=timeout, sentinel_master=settings.redis_sentinel_master
    )


def queue_redis(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    """The Redis holding Celery's queue (CELERY_BROKER_URL)."""
    return make_redis(
        settings.celery_broker_url, timeout=timeout, sentinel_master=settings.redis_sentinel_master
    )


def is_redis_url(url: str) -> bool:
    """Whether a broker URL names a Redis server (not RabbitMQ or another kombu transport)."""
    return url.split("://", 1)[0].lower() in ("redis", "rediss", "sentinel")
