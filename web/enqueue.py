"""Hands requests to the workers through Celery, by task name; never imports task code."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from clicktrail.config import Settings
from clicktrail.errors import DependencyUnavailable, Overloaded
from clicktrail.health import CHECK_TIMEOUT
from clicktrail.queue import INGEST_TASK, QUEUE, celery_settings, describe_payload

# Publishing to a down Redis fails fast so the client gets its 503 quickly and retries later.
_PUBLISH_RETRY = {
    "max_retries": 2,
    "interval_start": 0.05,
    "interval_step": 0.1,
    "interval_max": 0.2,
}


class CeleryEnqueuer:
    def __init__(self, settings: Settings) -> None:
        self._celery = Celery("clicktrail-api", set_as_current=False)
        config = celery_settings(settings)
        config["broker_transport_options"] = {
            **config["broker_transport_options"],
            "socket_timeout": 2,
            "socket_connect_timeout": 1,
        }
        self._celery.conf.update(config)
        self._retry_after = settings.retry_after_seconds

    def enqueue(self, payload: dict[str, Any]) -> None:
        """Returns once Redis has the message (the publish is an acknowledged LPUSH)."""
        try:
            self._celery.send_task(
                INGEST_TASK,
                args=[payload],
                queue=QUEUE,
                retry=True,
                retry_policy=_PUBLISH_RETRY,
                # Monitors (Flower) and logs show this instead of the events themselves.
                argsrepr=describe_payload(payload),
            )
        except (OperationalError, ConnectionError, TimeoutError, redis.RedisError) as exc:
            if _out_of_memory(exc):
                # Redis at its maxmemory (noeviction, as a queue must be): nothing more fits.
                raise Overloaded(
                    "queue_full",
                    "the queue is out of memory; retry later",
                    retry_after=self._retry_after,
                ) from exc
            raise DependencyUnavailable("queue", str(exc)) from exc

    def ping_workers(self) -> list[Any]:
        """Replies of live workers to a broadcast ping (the first one is enough)."""
        return list(self._celery.control.ping(timeout=CHECK_TIMEOUT / 2, limit=1) or [])


def _out_of_memory(exc: BaseException | None) -> bool:
    """Redis refused a write for lack of memory (kombu may wrap the error)."""
    while exc is not None:
        if isinstance(exc, redis.OutOfMemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
