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

from clicktrail.clock import Clock, SystemClock, epoch_seconds
from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.debugger import DebugTap
from clicktrail.delivery import Deliveries, SeenIds
from clicktrail.enrich import Enricher, load_user_agent_rules, open_geoip
from clicktrail.kafka import KafkaPublisher
from clicktrail.ledger import LedgerCounter, ledger_redis, shares_ledger_redis
from clicktrail.pipeline import Pipeline, Topics
from clicktrail.profiles import ProfileStore
from clicktrail.purge import ErasureMarks, Purger
from clicktrail.redisconn import pipeline_redis
from clicktrail.registry import make_registry
from clicktrail.sessions import SessionStore
from clicktrail.validation import EventValidator

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    publisher: KafkaPublisher
    pipeline: Pipeline
    purger: Purger
    deliveries: Deliveries

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        """Every part reading time from ``clock`` (the system's by default)."""
        clock = clock or SystemClock()
        db = Database(settings.database_url, name="clicktrail-worker")
        publisher = KafkaPublisher(settings.kafka)
        redis_client = pipeline_redis(settings)
        sessions = SessionStore(redis_client, settings.session_timeout_seconds, clock)
        geoip = open_geoip(settings.geoip_database) if settings.geoip_database else None
        enricher = Enricher(geoip, settings.pseudonymization_key)
        profiles = ProfileStore(db)
        marks = ErasureMarks(redis_client, settings.erasure_mark_seconds, profiles.forget)
        # The ledger's counts share the deduplication's round-trip when they live in its Redis.
        ledger = LedgerCounter(
            redis_client if shares_ledger_redis(settings) else ledger_redis(settings),
            settings.ledger_retention_seconds,
        )
        pipeline = Pipeline(
            validator=EventValidator(make_registry(settings)),
            sessions=sessions,
            publisher=publisher,
            topics=Topics(events=settings.topic_events, deadletter=settings.topic_deadletter),
            clock=clock,
            enricher=enricher,
            profiles=profiles,
            seen=SeenIds(
                redis_client, settings.dedupe_window_seconds, epoch_seconds(clock), ledger
            ),
            log_requests=settings.log_requests,
            tap=_debug_tap(settings, enricher, clock),
            erasures=marks,
        )
        purger = Purger(
            db,
            sessions,
            publisher,
            settings.topic_profiles,
            clock,
            settings.profile_retention_days,
            marks=marks,
            debug_client=redis_client,
            ledger_retention_hours=settings.ledger_retention_hours,
        )
        deliveries = Deliveries(redis_client, 2 * settings.visibility_timeout_seconds)
        return cls(settings, db, publisher, pipeline, purger, deliveries)

    def warm_up(self) -> None:
        """Connect to Kafka and load the user-agent rules before the first task, so that the
        first events after a start do not wait for them (half a second in all)."""
        self.publisher.connect([self.settings.topic_events, self.settings.topic_deadletter])
        load_user_agent_rules()

    def close(self) -> None:
        self.publisher.close()
        self.db.close()


def _debug_tap(settings: Settings, enricher: Enricher, clock: Clock) -> DebugTap | None:
    """The live debugger's tap, unless the debugger is off. Its own client with a short timeout:
    a slow Redis must not hold a task up for the debugger's sake."""
    if settings.debugger_retention_seconds <= 0:
        return None
    return DebugTap(
        pipeline_redis(settings, timeout=1.0),
        enricher.protect,
        retention_seconds=settings.debugger_retention_seconds,
        max_events=settings.debugger_max_events,
        per_second=settings.debugger_events_per_second,
        clock=clock,
    )


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
