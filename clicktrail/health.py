"""Readiness checks of Clicktrail's dependencies, each bounded by a short timeout; the API's
/readyz and the worker side's ``python -m clicktrail.workers.health`` run the same ones."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.kafka import admin_client
from clicktrail.redisconn import pipeline_redis, queue_redis
from clicktrail.registry import expected_subjects, missing_subjects

CHECK_TIMEOUT = 2.0

# A check raises (anything) when its dependency is not usable.
Check = Callable[[], None]


# What the API needs to take events: the queue, Redis for rate limits, Postgres for write keys.
INTAKE_CHECKS = frozenset({"redis", "queue", "postgres"})


def dependency_checks(settings: Settings, db: Database) -> dict[str, Check]:
    """Redis, the queue, Postgres, Kafka (the events topic's metadata) and the registry."""
    sessions = pipeline_redis(settings, timeout=CHECK_TIMEOUT)
    broker = (
        sessions
        if settings.celery_broker_url == settings.redis_url
        else queue_redis(settings, timeout=CHECK_TIMEOUT)
    )
    admin: list[AdminClient] = []
    lock = threading.Lock()

    def check_redis() -> None:
        sessions.ping()

    def check_queue() -> None:
        broker.ping()

    def check_postgres() -> None:
        with db.connection() as conn:
            conn.execute("SELECT 1")

    def check_kafka() -> None:
        with lock:
            if not admin:
                admin.append(admin_client(settings.kafka))
        metadata = admin[0].list_topics(topic=settings.topic_events, timeout=CHECK_TIMEOUT)
        topic = metadata.topics.get(settings.topic_events)
        if topic is None or topic.error is not None:
            raise RuntimeError(f"topic {settings.topic_events!r}: {topic and topic.error}")

    checks: dict[str, Check] = {
        "redis": check_redis,
        "queue": check_queue,
        "postgres": check_postgres,
        "kafka": check_kafka,
    }
    if settings.schema_registry:
        registry = SchemaRegistryClient.new_client(
            {**settings.schema_registry, "timeout": CHECK_TIMEOUT, "max.retries": 0}
        )
        expected = expected_subjects(settings.schemas_dir, settings.schema_subject_prefix)

        def check_schema_registry() -> None:
            # A subject missing means its events are refused (an envelope's) or checked against
            # less than their schema (an event's): not ready until the catalogue is registered.
            missing = missing_subjects(registry.get_subjects(), expected)
            if missing:
                raise RuntimeError(f"missing subjects: {listed(missing)}")

        checks["schema_registry"] = check_schema_registry
    return checks


def listed(items: Sequence[str], limit: int = 8) -> str:
    """The first ``limit`` items, and how many more there are."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readiness")


def run_checks(checks: dict[str, Check]) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Run every check at once; whether all passed, and each one's state (with why, if down)."""
    futures = {name: _executor.submit(check) for name, check in checks.items()}
    results: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=CHECK_TIMEOUT + 1)
            results[name] = {"status": "ok"}
        except FutureTimeout:
            results[name] = {"status": "down", "error": "timed out"}
        except Exception as exc:  # any failure of a check means "not ready", with why
            results[name] = {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
    return all(r["status"] == "ok" for r in results.values()), results


def workers_check(ping: Callable[[], list[Any]]) -> Check:
    """At least one Celery worker answers a ping (``app.control.ping``)."""

    def check_workers() -> None:
        if not ping():
            raise RuntimeError("no Celery worker answered")

    return check_workers
