"""Readiness checks of the API's dependencies, each bounded by a short timeout."""

from __future__ import annotations

import threading

from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.kafka import admin_client
from clicktrail.redisconn import make_redis
from web.services import HealthCheck

CHECK_TIMEOUT = 2.0


def readiness_checks(settings: Settings, db: Database) -> dict[str, HealthCheck]:
    sessions = make_redis(settings.redis_url, timeout=CHECK_TIMEOUT)
    broker = (
        sessions
        if settings.celery_broker_url == settings.redis_url
        else make_redis(settings.celery_broker_url, timeout=CHECK_TIMEOUT)
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
            raise RuntimeError(
                f"topic {settings.topic_events!r} unavailable: {topic and topic.error}"
            )

    checks = {
        "redis": check_redis,
        "queue": check_queue,
        "postgres": check_postgres,
        "kafka": check_kafka,
    }
    if settings.schema_registry:
        registry = SchemaRegistryClient.new_client(
            {**settings.schema_registry, "timeout": CHECK_TIMEOUT, "max.retries": 0}
        )

        def check_schema_registry() -> None:
            registry.get_subjects()

        checks["schema_registry"] = check_schema_registry
    return checks
