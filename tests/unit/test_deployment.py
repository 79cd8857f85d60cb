"""The deployment files stay in step with the code: compose, Procfile, Dockerfile, settings."""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from clicktrail.config import PROJECT_ROOT, Settings


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def variables_read_by_settings() -> set[str]:
    env = RecordingEnv()
    Settings.from_env(env)
    return env.asked


def compose() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def procfile() -> dict[str, list[str]]:
    lines = (PROJECT_ROOT / "Procfile").read_text().splitlines()
    return {
        name: shlex.split(command)
        for name, command in (line.split(":", 1) for line in lines if line.strip())
    }


def test_settings_read_every_variable_the_spec_names() -> None:
    spec = {
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "DATABASE_URL",
        "KAFKA_TOPIC_EVENTS",
        "KAFKA_TOPIC_DEADLETTER",
        "KAFKA_TOPIC_PROFILES",
        "SCHEMA_REGISTRY_URL",
        "SESSION_TIMEOUT_SECONDS",
        "PROFILE_RETENTION_DAYS",
        "SENTRY_DSN",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "FLOWER_BASIC_AUTH",
        "ADMIN_TOKEN",
        "DEV_WRITE_KEY",
    }

    assert spec <= variables_read_by_settings()


def test_compose_sets_only_variables_clicktrail_reads() -> None:
    known = variables_read_by_settings()
    services = compose()["services"]

    for name, service in services.items():
        if service.get("image") != "clicktrail:local":
            continue
        for variable in service.get("environment", {}):
            assert variable in known or variable.startswith("KAFKA_"), f"{name}: unknown {variable}"


def test_every_procfile_process_runs_in_compose_with_the_same_program() -> None:
    services = compose()["services"]

    for name, argv in procfile().items():
        assert name in services, f"{name} is in the Procfile but not in docker-compose.yml"
        assert services[name]["command"][:4] == argv[:4]


def test_the_image_holds_every_package_the_processes_import() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()

    for package in ("clicktrail", "web", "workers", "tasks", "schemas", "migrations"):
        assert f"COPY {package} ./{package}" in dockerfile
