from __future__ import annotations

import pytest

from clicktrail.config import ConfigError, Settings


def test_defaults_serve_make_run() -> None:
    settings = Settings.from_env({})

    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.celery_broker_url == settings.redis_url
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/clicktrail"
    assert settings.kafka == {"bootstrap.servers": "127.0.0.1:9092"}
    assert (settings.topic_events, settings.topic_deadletter, settings.topic_profiles) == (
        "events",
        "events.deadletter",
        "profiles",
    )
    assert settings.session_timeout_seconds == 1800
    assert settings.schema_registry_url is None
    assert settings.log_format == "json"
    assert settings.api_bind == "127.0.0.1:8000"


def test_the_celery_broker_follows_redis_url_unless_set() -> None:
    assert Settings.from_env({"REDIS_URL": "redis://r:1/2"}).celery_broker_url == "redis://r:1/2"
    assert (
        Settings.from_env(
            {"REDIS_URL": "redis://r:1/2", "CELERY_BROKER_URL": "redis://q:3/0"}
        ).celery_broker_url
        == "redis://q:3/0"
    )


def test_kafka_variables_pass_through_as_client_properties() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "b1:9093,b2:9093",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "clicktrail",
            "KAFKA_SSL_CA_LOCATION": "/etc/ssl/ca.pem",
            "KAFKA_TOPIC_EVENTS": "ev",
            "KAFKA_TOPIC_PARTITIONS": "12",
        }
    )

    assert settings.kafka == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "clicktrail",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }
    assert settings.topic_events == "ev"
    assert settings.topic_partitions == 12


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SESSION_TIMEOUT_SECONDS": "soon"}, "SESSION_TIMEOUT_SECONDS"),
        ({"SESSION_TIMEOUT_SECONDS": "0"}, "SESSION_TIMEOUT_SECONDS"),
        ({"KAFKA_TOPIC_PARTITIONS": "-3"}, "KAFKA_TOPIC_PARTITIONS"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LOG_REQUESTS": "sometimes"}, "LOG_REQUESTS"),
        ({"PROFILE_RETENTION_DAYS": "forever"}, "PROFILE_RETENTION_DAYS"),
        # Timeouts that would hand a running task's message out twice or cut its Kafka wait.
        ({"VISIBILITY_TIMEOUT_SECONDS": "300"}, "VISIBILITY_TIMEOUT_SECONDS"),
        ({"KAFKA_MESSAGE_TIMEOUT_MS": "120000"}, "TASK_TIME_LIMIT_SECONDS"),
        ({"TASK_TIME_LIMIT_SECONDS": "40"}, "TASK_TIME_LIMIT_SECONDS"),
        ({"LEDGER_RETENTION_HOURS": "0"}, "LEDGER_RETENTION_HOURS"),
        ({"LEDGER_SETTLE_SECONDS": "-1"}, "LEDGER_SETTLE_SECONDS"),
        # A minute must be judged before its counts expire.
        ({"LEDGER_RETENTION_HOURS": "1", "LEDGER_SETTLE_SECONDS": "3600"}, "LEDGER_SETTLE"),
    ],
)
def test_a_bad_value_names_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_optional_values_are_none_when_empty() -> None:
    settings = Settings.from_env(
        {"SENTRY_DSN": "", "ADMIN_TOKEN": "", "PROFILE_RETENTION_DAYS": ""}
    )

    assert settings.sentry_dsn is None
    assert settings.admin_token is None
    assert settings.profile_retention_days is None
    assert Settings.from_env({"PROFILE_RETENTION_DAYS": "30"}).profile_retention_days == 30


def test_short_timeouts_are_accepted_when_they_fit_together() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_MESSAGE_TIMEOUT_MS": "5000",
            "TASK_TIME_LIMIT_SECONDS": "20",
            "RETRY_BACKOFF_MAX_SECONDS": "3",
            "VISIBILITY_TIMEOUT_SECONDS": "30",
        }
    )

    assert (settings.task_soft_time_limit_seconds, settings.task_time_limit_seconds) == (15, 20)


def test_the_ledger_keeps_a_week_and_judges_a_minute_five_minutes_after_it_ends() -> None:
    settings = Settings.from_env({})

    assert (settings.ledger_retention_hours, settings.ledger_settle_seconds) == (168, 300)
    assert settings.ledger_retention_seconds == 7 * 86400
    assert Settings.from_env({"LEDGER_SETTLE_SECONDS": "0"}).ledger_settle_seconds == 0
