"""What ``clicktrail doctor`` checks: every configuration value, every dependency (the checks
/readyz runs), and the set-up that ``make run`` does (migrations, topics, a source), each with
what to do when it is wrong. Nothing here changes anything."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg

from clicktrail.config import Settings, config_problems
from clicktrail.db import Database, pending_migrations
from clicktrail.health import Check, listed, run_checks
from clicktrail.kafka import admin_client

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One thing checked: ``fix`` says what to do when ``level`` is not ok."""

    section: str
    name: str
    level: Level
    detail: str
    fix: str = ""


def redact(url: str) -> str:
    """A URL fit to print: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def configuration(settings: Settings | None, env: Mapping[str, str] | None = None) -> list[Finding]:
    """Every malformed value (``settings`` is None when there are some), then what is well
    formed but will not work, or works with something off."""
    problems = config_problems(env)
    if problems:
        return [
            Finding(
                "configuration",
                name or "combination",
                "fail",
                message,
                f"correct {name}, or unset it for its default (README: Configuration)"
                if name
                else "change the values named so that they fit together",
            )
            for name, message in problems
        ]
    assert settings is not None
    found = [Finding("configuration", "values", "ok", "every variable is well formed")]
    if not settings.schema_registry and not any(settings.schemas_dir.glob("*/*/*.json")):
        found.append(
            Finding(
                "configuration",
                "SCHEMAS_DIR",
                "fail",
                f"no schemas in {settings.schemas_dir}",
                "point SCHEMAS_DIR at the schema catalogue (schemas/ in the repository)",
            )
        )
    if settings.geoip_database is not None and not settings.geoip_database.is_file():
        found.append(
            Finding(
                "configuration",
                "GEOIP_DATABASE",
                "fail",
                f"{settings.geoip_database} is not a file",
                "give the path of a MaxMind .mmdb file, or unset GEOIP_DATABASE",
            )
        )
    if not isinstance(logging.getLevelName(settings.log_level), int):
        found.append(
            Finding(
                "configuration",
                "LOG_LEVEL",
                "fail",
                f"{settings.log_level!r} is not a log level",
                "use DEBUG, INFO, WARNING or ERROR",
            )
        )
    if settings.flower_basic_auth is not None and ":" not in settings.flower_basic_auth:
        found.append(
            Finding(
                "configuration",
                "FLOWER_BASIC_AUTH",
                "fail",
                "not of the form user:password",
                "set FLOWER_BASIC_AUTH=user:password",
            )
        )
    multiproc = settings.prometheus_multiproc_dir
    if multiproc is not None and not Path(multiproc).is_dir():
        found.append(
            Finding(
                "configuration",
                "PROMETHEUS_MULTIPROC_DIR",
                "fail",
                f"{multiproc} is not a directory",
                "create it, or unset PROMETHEUS_MULTIPROC_DIR",
            )
        )
    if settings.admin_token is None:
        found.append(
            Finding(
                "configuration",
                "ADMIN_TOKEN",
                "warn",
                "unset: the admin endpoints are off, and the debugger opens only with write keys",
                "set ADMIN_TOKEN to a long random value (openssl rand -hex 24)",
            )
        )
    if settings.ledger_settle_seconds < 60:
        found.append(
            Finding(
                "configuration",
                "LEDGER_SETTLE_SECONDS",
                "warn",
                f"{settings.ledger_settle_seconds} s: the ledger judges minutes whose events may "
                "still be on their way to the history (they show as missing)",
                "set it above the pipeline's normal lag, queue to sink (300, the default)",
            )
        )
    if settings.debugger_retention_seconds == 0:
        found.append(
            Finding(
                "configuration",
                "DEBUGGER_RETENTION_SECONDS",
                "warn",
                "0: the live debugger is off",
                "set it above 0 (300 keeps events 5 minutes) to turn it on",
            )
        )
    return found


_DEPENDENCY_FIXES: dict[str, Callable[[Settings, str], str]] = {
    "redis": lambda s, _: f"start Redis, or point REDIS_URL at it (now {redact(s.redis_url)})",
    "queue": lambda s, _: (
        f"start Redis, or point CELERY_BROKER_URL at it (now {redact(s.celery_broker_url)})"
    ),
    "postgres": lambda s, error: (
        "create it and its tables: make migrate"
        if "does not exist" in error
        else f"start Postgres, or point DATABASE_URL at it (now {redact(s.database_url)})"
    ),
    "kafka": lambda s, error: (
        "create the topics: make topics"
        if error.startswith("RuntimeError: topic")
        else "start a Kafka broker, or point KAFKA_BOOTSTRAP_SERVERS at one "
        f"(now {s.kafka_bootstrap_servers}); make run starts one when none answers"
    ),
    "schema_registry": lambda s, error: (
        "register the catalogue: make schemas-register "
        f"(SCHEMA_SUBJECT_PREFIX={s.schema_subject_prefix}, SCHEMAS_DIR={s.schemas_dir})"
        if error.startswith("RuntimeError: missing subjects")
        else "start the registry, or fix SCHEMA_REGISTRY_URL "
        f"(now {s.schema_registry_url}); unset it to read schemas/ instead"
    ),
    "workers": lambda _, __: (
        "start a worker: celery --app clicktrail.workers.celery_app worker --queues clicktrail"
        " (make run does)"
    ),
}


def dependencies(settings: Settings, checks: Mapping[str, Check]) -> list[Finding]:
    """Each dependency answers within its timeout (the checks of /readyz)."""
    _, results = run_checks(dict(checks))
    found = []
    for name, result in results.items():
        if result["status"] == "ok":
            found.append(Finding("dependencies", name, "ok", "answers"))
            continue
        error = str(result.get("error", ""))
        if name == "postgres":  # the pool says it timed out; a plain connection says why
            error = _postgres_error(settings.database_url) or error
        advice = _DEPENDENCY_FIXES.get(name)
        fix = advice(settings, error) if advice is not None else ""
        found.append(Finding("dependencies", name, "fail", error, fix))
    return found


def _postgres_error(url: str) -> str | None:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


def setup(
    settings: Settings, db: Database, postgres_up: bool, kafka_up: bool, registry_up: bool = False
) -> list[Finding]:
    """What ``make run`` sets up: the migrations, the topics and a source to send with; with a
    registry, the catalogue's versions registered there."""
    found = []
    if postgres_up:
        try:
            found.extend(_database_setup(db))
        except Exception as exc:  # any failure here is a finding, not a crash of the doctor
            found.append(Finding("setup", "postgres", "fail", f"{type(exc).__name__}: {exc}"))
    if kafka_up:
        try:
            existing = set(admin_client(settings.kafka).list_topics(timeout=5).topics)
        except Exception as exc:
            found.append(Finding("setup", "topics", "fail", f"{type(exc).__name__}: {exc}"))
        else:
            missing = [t for t in settings.topics if t not in existing]
            found.append(
                Finding("setup", "topics", "fail", f"missing: {', '.join(missing)}", "make topics")
                if missing
                else Finding("setup", "topics", "ok", ", ".join(settings.topics))
            )
    if registry_up:
        try:
            found.append(_registry_setup(settings))
        except Exception as exc:
            found.append(Finding("setup", "schemas", "fail", f"{type(exc).__name__}: {exc}"))
    return found


def _registry_setup(settings: Settings) -> Finding:
    """Every version of the catalogue at SCHEMAS_DIR is in the registry."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from clicktrail.registry import subject_name, subject_versions
    from clicktrail.schemas import FileSchemaRegistry

    catalogue = FileSchemaRegistry(settings.schemas_dir)
    client = SchemaRegistryClient.new_client({**settings.schema_registry, "timeout": 5})
    held: dict[str, set[str]] = {}
    lacking, count = [], 0
    for record in catalogue.records():
        count += 1
        subject = subject_name(
            settings.schema_subject_prefix, record.kind, record.name, record.version.model
        )
        if subject not in held:
            held[subject] = {str(v) for v in subject_versions(client, subject)}
        if str(record.version) not in held[subject]:
            lacking.append(f"{subject} {record.version}")
    if lacking:
        return Finding(
            "setup",
            "schemas",
            "fail",
            f"not registered: {listed(lacking)}",
            "make schemas-register",
        )
    return Finding("setup", "schemas", "ok", f"all {count} record schema versions registered")


def _database_setup(db: Database) -> list[Finding]:
    pending = pending_migrations(db)
    if pending:
        return [
            Finding(
                "setup", "migrations", "fail", f"not applied: {', '.join(pending)}", "make migrate"
            )
        ]
    with db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM sources").fetchone()
    sources = int(row[0]) if row else 0
    return [
        Finding("setup", "migrations", "ok", "all applied"),
        Finding("setup", "sources", "ok", f"{sources} source(s)")
        if sources
        else Finding(
            "setup",
            "sources",
            "warn",
            "no source: nothing can send events yet",
            "clicktrail sources create <name> (it prints the write key)",
        ),
    ]


def render(findings: list[Finding]) -> str:
    """The report: a section at a time, one line a finding, the fix under what is wrong."""
    lines: list[str] = []
    section = ""
    for finding in findings:
        if finding.section != section:
            section = finding.section
            lines.append(section)
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[finding.level]
        said = (
            finding.detail
            if finding.detail.startswith(finding.name)
            else f"{finding.name}: {finding.detail}"
        )
        lines.append(f"  {mark}  {said}")
        if finding.level != "ok" and finding.fix:
            lines.append(f"        fix: {finding.fix}")
    failed = sum(f.level == "fail" for f in findings)
    warned = sum(f.level == "warn" for f in findings)
    lines.append(
        f"{failed} problem(s), {warned} warning(s)" if failed or warned else "everything is fine"
    )
    return "\n".join(lines)
