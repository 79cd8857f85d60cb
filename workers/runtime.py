"""Per-process resources of a worker: built after fork, once per process, closed on exit.

A Kafka producer (librdkafka threads) or a connection pool must never cross a fork, so they are
built in the pool child (``worker_process_init``) or, for pools without children, on first use;
the pid check catches anything inherited by accident.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from clicktrail.clock import SystemClock
from clicktrail.config import Settings
from clicktrail.kafka import KafkaPublisher
from clicktrail.pipeline import Pipeline, Topics
from clicktrail.redisconn import make_redis
from clicktrail.registry import make_registry
from clicktrail.sessions import SessionStore
from clicktrail.validation import EventValidator

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    publisher: KafkaPublisher
    pipeline: Pipeline

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        publisher = KafkaPublisher(settings.kafka)
        pipeline = Pipeline(
            validator=EventValidator(make_registry(settings)),
            sessions=SessionStore(make_redis(settings.redis_url), settings.session_timeout_seconds),
            publisher=publisher,
            topics=Topics(events=settings.topic_events, deadletter=settings.topic_deadletter),
            clock=SystemClock(),
        )
        return cls(settings=settings, publisher=publisher, pipeline=pipeline)

    def close(self) -> None:
        self.publisher.close()


_lock = threading.Lock()
_current: tuple[int, Runtime] | None = None


def runtime() -> Runtime:
    """This process's runtime, built on first use."""
    global _current
    pid = os.getpid()
    with _lock:
        if _current is None or _current[0] != pid:
            _current = (pid, Runtime.build(Settings.from_env()))
        return _current[1]


def close_runtime() -> None:
    global _current
    with _lock:
        if _current is not None and _current[0] == os.getpid():
            _current[1].close()
        _current = None
