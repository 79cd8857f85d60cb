"""Settings: the only module that reads the environment.

Every process builds one `Settings` at start (``Settings.from_env()``); tests build their own
from a plain mapping. Nothing else in the code base looks at ``os.environ``.

Redis layout (one instance serves both roles by default):
- ``CELERY_BROKER_URL`` (defaults to ``REDIS_URL``): Celery's queues and unacked sets.
- ``REDIS_URL``: sessions and the other ``ct:``-prefixed keys of the pipeline.
Point them at different databases or instances to isolate the queue from session traffic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clicktrail.errors import ClicktrailError, Fault

# What the package carries: the schema catalogue and the migrations (package data in a wheel).
PACKAGE_DIR = Path(__file__).resolve().parent

# Our own KAFKA_* variables; every other KAFKA_* variable is a librdkafka client property.
_OWN_KAFKA_VARS = frozenset(
    {
        "KAFKA_TOPIC_EVENTS",
        "KAFKA_TOPIC_DEADLETTER",
        "KAFKA_TOPIC_PROFILES",
        "KAFKA_TOPIC_PARTITIONS",
        "KAFKA_TOPIC_REPLICATION_FACTOR",
    }
)


class ConfigError(ClicktrailError, ValueError):
    """A configuration value is missing or malformed; the message names the variable. Ours (the
    operator's), not a client's; a ValueError too, as it always was."""

    fault = Fault.INTERNAL


def client_properties(
    env: Mapping[str, str], prefix: str, exclude: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Client properties from prefixed variables: ``KAFKA_SASL_MECHANISM`` -> ``sasl.mechanism``."""
    return {
        name[len(prefix) :].lower().replace("_", "."): value
        for name, value in env.items()
        if name.startswith(prefix) and name not in exclude and value != ""
    }


def config_problems(env: Mapping[str, str] | None = None) -> list[tuple[str | None, str]]:
    """Every malformed configuration value, not only the first (as ``Settings.from_env`` raises):
    (variable, what is wrong) pairs; the variable is None for values wrong only together."""
    env = os.environ if env is None else env
    problems: list[tuple[str | None, str]] = []
    for name in sorted(env):
        try:
            Settings.from_env({name: env[name]})
        except ValueError as exc:
            problems.append((name, str(exc)))
    if not problems:
        try:
            Settings.from_env(env)
        except ValueError as exc:
            problems.append((None, str(exc)))
    return problems


def kafka_client_properties(env: Mapping[str, str]) -> dict[str, str]:
    """librdkafka properties from ``KAFKA_*`` variables, our own KAFKA_TOPIC_* excepted."""
    props = client_properties(env, "KAFKA_", _OWN_KAFKA_VARS)
    props.setdefault("bootstrap.servers", "127.0.0.1:9092")
    return props


def _int(env: Mapping[str, str], name: str, default: int, minimum: int | None = None) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "")
    return value or None


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "") or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Typed configuration of every Clicktrail process (see the README's configuration table)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    # With sentinel:// URLs, the name the Sentinels know the master by.
    redis_sentinel_master: str = "mymaster"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/clicktrail"
    kafka: dict[str, str] = field(default_factory=lambda: {"bootstrap.servers": "127.0.0.1:9092"})
    topic_events: str = "events"
    topic_deadletter: str = "events.deadletter"
    topic_profiles: str = "profiles"
    topic_partitions: int = 6
    # -1 asks the broker for its default.replication.factor (Kafka 2.4+).
    topic_replication_factor: int = -1
    # Schema Registry client properties from SCHEMA_REGISTRY_* (URL -> url,
    # BASIC_AUTH_USER_INFO -> basic.auth.user.info, ...); empty: the file registry in schemas/.
    schema_registry: dict[str, str] = field(default_factory=dict)
    # Subjects are <prefix>.<kind>.<name>.v<model>: environments sharing a registry differ in it.
    schema_subject_prefix: str = "clicktrail"
    schemas_dir: Path = PACKAGE_DIR / "catalogue"
    session_timeout_seconds: int = 1800
    profile_retention_days: int | None = None
    # How often Celery beat runs the purge (erasure requests, then retention).
    purge_interval_seconds: int = 300
    # How long the workers remember an erasure (in Redis), to drop the erased user's events that
    # were received before it but were still queued or retried.
    erasure_mark_seconds: int = 7 * 24 * 3600
    # celery-redbeat's lock: one beat sends the periodic tasks; a standby takes over this long
    # after the holder died. The holder renews it every fifth of it (beat's longest sleep).
    beat_lock_timeout_seconds: int = 90
    # A MaxMind GeoLite2/GeoIP2 database file for context.location; never downloaded.
    geoip_database: Path | None = None
    # Metrics: where the worker side and the sink serve them (0: not at all), and the directory
    # prometheus_client shares values through in processes with children (gunicorn, Celery).
    metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9101
    sink_metrics_port: int = 9102
    prometheus_multiproc_dir: Path | None = None
    # Sentry's environment tag and the release every report and trace carries.
    environment: str = "development"
    release: str = "clicktrail@0.1.0"
    # Reliability: a message not acknowledged this long is delivered again; retries back off up
    # to retry_backoff_max (which must stay well under it); a message whose delivery killed the
    # worker this many times is dead-lettered; a messageId delivered within dedupe_window is
    # dropped as a duplicate (0: no deduplication).
    visibility_timeout_seconds: int = 3600
    retry_backoff_max_seconds: int = 300
    # A task still running after this long is killed (its message goes back to the queue); it
    # is told to stop (soft limit) a quarter earlier. Must exceed the wait for Kafka's reports.
    task_time_limit_seconds: int = 120
    max_deliveries: int = 3
    dedupe_window_seconds: int = 600
    # The ledger (clicktrail.ledger): how long its counts are kept, in Redis and Postgres, and
    # how long after a minute ends its books must balance (the pipeline's normal lag: the queue,
    # the workers and the sink); a minute younger than that is still settling.
    ledger_retention_hours: int = 7 * 24
    ledger_settle_seconds: int = 300
    # Backpressure: the API answers 503 beyond this many queued requests, and 429 beyond this
    # many events a second from one source (a source's settings may set its own).
    queue_max_depth: int = 100000
    rate_limit_events_per_second: int = 20000
    # Security: the HMAC key for pseudonymised fields; a bearer token /metrics requires.
    pseudonymization_key: str | None = None
    metrics_token: str | None = None
    # The history sink's consumer group and the most records it writes in one transaction.
    sink_group_id: str = "clicktrail-history"
    sink_batch_size: int = 500
    sentry_dsn: str | None = None
    otel_exporter_otlp_endpoint: str | None = None
    log_level: str = "INFO"
    log_format: str = "json"
    # A line per accepted request (API) and per published request (workers), each with its trace
    # id: handy while developing (make run turns it on), costly at thousands of requests a second.
    log_requests: bool = False
    flower_basic_auth: str | None = None
    admin_token: str | None = None
    dev_write_key: str | None = None
    api_bind: str = "127.0.0.1:8000"
    # The API's processes, and the requests each handles at once (one thread each). A request
    # mostly waits: for Redis, and for the group commit that queues it with the requests arriving
    # beside it; the more wait together, the fewer and larger the queue messages.
    api_workers: int = 2
    api_threads: int = 32
    # How long an API process may hold a request to send it with others in one queue message.
    api_group_linger_ms: int = 20
    # How long the API trusts a cached source (write key -> source) before asking Postgres again.
    source_cache_seconds: int = 60
    # How many reverse proxies in front of the API set X-Forwarded-For (0: use the peer address).
    trusted_proxy_count: int = 0
    # Seconds a client is told to wait (Retry-After) when a dependency is down.
    retry_after_seconds: int = 5
    # The live debugger: how long its Redis stream keeps an event (0 turns the debugger off),
    # how many events it keeps per source, and how many a second one worker process adds per
    # source (a busier source is sampled).
    debugger_retention_seconds: int = 300
    debugger_max_events: int = 500
    debugger_events_per_second: int = 100

    def __post_init__(self) -> None:
        # A retry waits up to the backoff cap, unacknowledged, then runs up to the time limit:
        # the visibility timeout must cover both, or Redis hands the message out twice.
        limit = self.task_time_limit_seconds
        if self.retry_backoff_max_seconds + limit >= self.visibility_timeout_seconds:
            raise ConfigError(
                f"VISIBILITY_TIMEOUT_SECONDS ({self.visibility_timeout_seconds}) must exceed "
                f"RETRY_BACKOFF_MAX_SECONDS ({self.retry_backoff_max_seconds}) plus "
                f"TASK_TIME_LIMIT_SECONDS ({limit})"
            )
        # A task waits for Kafka's delivery reports up to message.timeout.ms + 5 s; stopping it
        # sooner would leave records whose fate is unknown.
        try:
            drain = int(self.kafka.get("message.timeout.ms", 30000)) / 1000 + 5
        except ValueError:
            raise ConfigError(
                "KAFKA_MESSAGE_TIMEOUT_MS must be an integer, "
                f"got {self.kafka['message.timeout.ms']!r}"
            ) from None
        if self.ledger_settle_seconds >= self.ledger_retention_seconds:
            raise ConfigError(
                f"LEDGER_SETTLE_SECONDS ({self.ledger_settle_seconds}) must be shorter than "
                f"LEDGER_RETENTION_HOURS ({self.ledger_retention_hours} h): a minute's counts "
                "must outlive its settling"
            )
        if self.task_soft_time_limit_seconds <= drain:
            raise ConfigError(
                f"TASK_TIME_LIMIT_SECONDS ({limit}) must leave three quarters of itself above "
                f"KAFKA_MESSAGE_TIMEOUT_MS plus 5 s ({drain:g} s)"
            )

    @property
    def task_soft_time_limit_seconds(self) -> int:
        return self.task_time_limit_seconds * 3 // 4

    @property
    def ledger_retention_seconds(self) -> int:
        return self.ledger_retention_hours * 3600

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.kafka["bootstrap.servers"]

    @property
    def schema_registry_url(self) -> str | None:
        return self.schema_registry.get("url")

    @property
    def topics(self) -> list[str]:
        return [self.topic_events, self.topic_deadletter, self.topic_profiles]

    @property
    def topic_configs(self) -> dict[str, dict[str, str]]:
        """The profiles topic is compacted: a user's tombstone removes them for good."""
        return {self.topic_profiles: {"cleanup.policy": "compact"}}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (``os.environ`` when omitted); ConfigError on a bad value."""
        env = os.environ if env is None else env
        redis_url = env.get("REDIS_URL") or cls.redis_url
        retention = _optional(env, "PROFILE_RETENTION_DAYS")
        return cls(
            redis_url=redis_url,
            celery_broker_url=env.get("CELERY_BROKER_URL") or redis_url,
            redis_sentinel_master=env.get("REDIS_SENTINEL_MASTER") or cls.redis_sentinel_master,
            database_url=env.get("DATABASE_URL") or cls.database_url,
            kafka=kafka_client_properties(env),
            topic_events=env.get("KAFKA_TOPIC_EVENTS") or cls.topic_events,
            topic_deadletter=env.get("KAFKA_TOPIC_DEADLETTER") or cls.topic_deadletter,
            topic_profiles=env.get("KAFKA_TOPIC_PROFILES") or cls.topic_profiles,
            topic_partitions=_int(env, "KAFKA_TOPIC_PARTITIONS", cls.topic_partitions, minimum=1),
            topic_replication_factor=_int(
                env, "KAFKA_TOPIC_REPLICATION_FACTOR", cls.topic_replication_factor, minimum=-1
            ),
            schema_registry=(
                client_properties(env, "SCHEMA_REGISTRY_") if env.get("SCHEMA_REGISTRY_URL") else {}
            ),
            schema_subject_prefix=env.get("SCHEMA_SUBJECT_PREFIX") or cls.schema_subject_prefix,
            schemas_dir=Path(env.get("SCHEMAS_DIR") or cls.schemas_dir),
            session_timeout_seconds=_int(
                env, "SESSION_TIMEOUT_SECONDS", cls.session_timeout_seconds, minimum=1
            ),
            profile_retention_days=(
                None if retention is None else _int(env, "PROFILE_RETENTION_DAYS", 0, minimum=1)
            ),
            purge_interval_seconds=_int(
                env, "PURGE_INTERVAL_SECONDS", cls.purge_interval_seconds, minimum=1
            ),
            erasure_mark_seconds=_int(
                env, "ERASURE_MARK_SECONDS", cls.erasure_mark_seconds, minimum=1
            ),
            beat_lock_timeout_seconds=_int(
                env, "BEAT_LOCK_TIMEOUT_SECONDS", cls.beat_lock_timeout_seconds, minimum=5
            ),
            geoip_database=Path(geoip) if (geoip := _optional(env, "GEOIP_DATABASE")) else None,
            metrics_host=env.get("METRICS_HOST") or cls.metrics_host,
            worker_metrics_port=_int(
                env, "WORKER_METRICS_PORT", cls.worker_metrics_port, minimum=0
            ),
            sink_metrics_port=_int(env, "SINK_METRICS_PORT", cls.sink_metrics_port, minimum=0),
            prometheus_multiproc_dir=(
                Path(path) if (path := _optional(env, "PROMETHEUS_MULTIPROC_DIR")) else None
            ),
            environment=env.get("ENVIRONMENT") or cls.environment,
            release=env.get("RELEASE") or cls.release,
            visibility_timeout_seconds=_int(
                env, "VISIBILITY_TIMEOUT_SECONDS", cls.visibility_timeout_seconds, minimum=10
            ),
            retry_backoff_max_seconds=_int(
                env, "RETRY_BACKOFF_MAX_SECONDS", cls.retry_backoff_max_seconds, minimum=1
            ),
            task_time_limit_seconds=_int(
                env, "TASK_TIME_LIMIT_SECONDS", cls.task_time_limit_seconds, minimum=10
            ),
            max_deliveries=_int(env, "MAX_DELIVERIES", cls.max_deliveries, minimum=1),
            dedupe_window_seconds=_int(
                env, "DEDUPE_WINDOW_SECONDS", cls.dedupe_window_seconds, minimum=0
            ),
            ledger_retention_hours=_int(
                env, "LEDGER_RETENTION_HOURS", cls.ledger_retention_hours, minimum=1
            ),
            ledger_settle_seconds=_int(
                env, "LEDGER_SETTLE_SECONDS", cls.ledger_settle_seconds, minimum=0
            ),
            queue_max_depth=_int(env, "QUEUE_MAX_DEPTH", cls.queue_max_depth, minimum=1),
            rate_limit_events_per_second=_int(
                env, "RATE_LIMIT_EVENTS_PER_SECOND", cls.rate_limit_events_per_second, minimum=0
            ),
            pseudonymization_key=_optional(env, "PSEUDONYMIZATION_KEY"),
            metrics_token=_optional(env, "METRICS_TOKEN"),
            sink_group_id=env.get("SINK_GROUP_ID") or cls.sink_group_id,
            sink_batch_size=_int(env, "SINK_BATCH_SIZE", cls.sink_batch_size, minimum=1),
            sentry_dsn=_optional(env, "SENTRY_DSN"),
            otel_exporter_otlp_endpoint=_optional(env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            log_level=(env.get("LOG_LEVEL") or cls.log_level).upper(),
            log_format=_choice(env, "LOG_FORMAT", cls.log_format, ("json", "console")),
            log_requests=_bool(env, "LOG_REQUESTS", cls.log_requests),
            flower_basic_auth=_optional(env, "FLOWER_BASIC_AUTH"),
            admin_token=_optional(env, "ADMIN_TOKEN"),
            dev_write_key=_optional(env, "DEV_WRITE_KEY"),
            api_bind=env.get("API_BIND") or cls.api_bind,
            api_workers=_int(env, "API_WORKERS", cls.api_workers, minimum=1),
            api_threads=_int(env, "API_THREADS", cls.api_threads, minimum=1),
            api_group_linger_ms=_int(
                env, "API_GROUP_LINGER_MS", cls.api_group_linger_ms, minimum=0
            ),
            trusted_proxy_count=_int(
                env, "TRUSTED_PROXY_COUNT", cls.trusted_proxy_count, minimum=0
            ),
            source_cache_seconds=_int(
                env, "SOURCE_CACHE_SECONDS", cls.source_cache_seconds, minimum=0
            ),
            debugger_retention_seconds=_int(
                env, "DEBUGGER_RETENTION_SECONDS", cls.debugger_retention_seconds, minimum=0
            ),
            debugger_max_events=_int(
                env, "DEBUGGER_MAX_EVENTS", cls.debugger_max_events, minimum=1
            ),
            debugger_events_per_second=_int(
                env, "DEBUGGER_EVENTS_PER_SECOND", cls.debugger_events_per_second, minimum=1
            ),
        )
