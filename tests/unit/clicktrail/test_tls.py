"""TLS settings for Kafka (SASL_SSL), Redis (rediss://) and Postgres (sslmode) pass through to
the clients (no connection is made)."""

from __future__ import annotations

import ssl

import redis
from celery import Celery
from psycopg.conninfo import conninfo_to_dict

from clicktrail.config import Settings
from clicktrail.db import Database
from clicktrail.kafka import KafkaPublisher
from clicktrail.queue import celery_settings
from clicktrail.redisconn import make_redis

TLS_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1.internal:9093",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "clicktrail",
    "KAFKA_SASL_PASSWORD": "s3cret",
    "KAFKA_SSL_CA_LOCATION": "/etc/ssl/kafka-ca.pem",
    "REDIS_URL": "rediss://:pw@redis.internal:6380/0",
    "DATABASE_URL": "postgresql://clicktrail@db.internal:5432/clicktrail?sslmode=verify-full&sslrootcert=/etc/ssl/pg-ca.pem",
}


def test_kafka_clients_get_the_sasl_ssl_settings() -> None:
    settings = Settings.from_env(TLS_ENV)

    producer_config = KafkaPublisher(settings.kafka)._config

    for name, value in {
        "bootstrap.servers": "kafka-1.internal:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "clicktrail",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/kafka-ca.pem",
    }.items():
        assert producer_config[name] == value
    assert producer_config["enable.idempotence"] is True


def test_rediss_urls_use_tls_for_sessions_and_the_queue() -> None:
    settings = Settings.from_env(TLS_ENV)

    client = make_redis(settings.redis_url)
    celery = Celery("tls-test", set_as_current=False)
    celery.conf.update(celery_settings(settings))

    assert issubclass(client.connection_pool.connection_class, redis.SSLConnection)
    assert settings.celery_broker_url.startswith("rediss://")
    assert celery.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert celery.conf.broker_url == settings.celery_broker_url


def test_a_rediss_url_that_sets_its_own_certificate_rules_keeps_them() -> None:
    settings = Settings.from_env({"REDIS_URL": "rediss://redis.internal:6380/0?ssl_cert_reqs=none"})

    assert "broker_use_ssl" not in celery_settings(settings)


def test_postgres_sslmode_reaches_the_pool() -> None:
    settings = Settings.from_env(TLS_ENV)
    db = Database(settings.database_url)

    params = conninfo_to_dict(db._pool.conninfo)

    assert params["sslmode"] == "verify-full"
    assert params["sslrootcert"] == "/etc/ssl/pg-ca.pem"
