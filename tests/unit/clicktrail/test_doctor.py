"""The doctor's findings and advice, over checks of the test's making."""

from __future__ import annotations

from clicktrail.config import Settings
from clicktrail.doctor import Finding, configuration, dependencies, redact, render


def test_passwords_never_reach_the_report() -> None:
    assert redact("rediss://:s3cret@cache:6380/0") == "rediss://:***@cache:6380/0"
    assert redact("postgresql://app:pw@db/clicktrail") == "postgresql://app:***@db/clicktrail"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_every_malformed_value_is_named_not_only_the_first() -> None:
    env = {"QUEUE_MAX_DEPTH": "lots", "LOG_FORMAT": "xml", "KAFKA_MESSAGE_TIMEOUT_MS": "1s"}

    found = configuration(None, env)

    assert {f.name for f in found if f.level == "fail"} == set(env)
    assert all(f.fix.startswith(f"correct {f.name}") for f in found)


def test_values_wrong_only_together_are_reported_together() -> None:
    env = {
        "VISIBILITY_TIMEOUT_SECONDS": "1000",
        "RETRY_BACKOFF_MAX_SECONDS": "700",
        "TASK_TIME_LIMIT_SECONDS": "400",
    }

    [finding] = configuration(None, env)

    assert (finding.name, finding.level) == ("combination", "fail")
    assert "VISIBILITY_TIMEOUT_SECONDS (1000) must exceed" in finding.detail


def test_well_formed_values_that_will_not_work_fail_and_soft_ones_warn() -> None:
    env = {"GEOIP_DATABASE": "/nowhere/city.mmdb", "LOG_LEVEL": "chatty"}

    found = {f.name: f for f in configuration(Settings.from_env(env), env)}

    assert found["GEOIP_DATABASE"].level == "fail"
    assert found["LOG_LEVEL"].level == "fail"
    assert found["ADMIN_TOKEN"].level == "warn"


def test_a_ledger_that_judges_minutes_too_soon_is_a_warning_and_one_settling_longer_than_kept_fails() -> (
    None
):
    hasty = {f.name: f for f in configuration(Settings(ledger_settle_seconds=10), {})}
    endless = configuration(None, {"LEDGER_RETENTION_HOURS": "1", "LEDGER_SETTLE_SECONDS": "3600"})

    assert hasty["LEDGER_SETTLE_SECONDS"].level == "warn"
    assert "LEDGER_SETTLE_SECONDS" not in {
        f.name for f in configuration(Settings(), {}) if f.level != "ok"
    }
    assert [
        (f.level, "LEDGER_SETTLE_SECONDS (3600) must be shorter" in f.detail) for f in endless
    ] == [("fail", True)]


def test_each_dependency_down_comes_with_its_fix() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://:pw@cache:6379/0"})

    def down() -> None:
        raise ConnectionError("refused")

    def no_topic() -> None:
        raise RuntimeError("topic 'events': None")

    found = {
        f.name: f
        for f in dependencies(settings, {"redis": down, "kafka": no_topic, "queue": lambda: None})
    }

    assert found["queue"].level == "ok"
    assert (
        found["redis"].fix
        == "start Redis, or point REDIS_URL at it (now redis://:***@cache:6379/0)"
    )
    assert found["kafka"].fix == "create the topics: make topics"


def test_the_report_puts_each_fix_under_its_problem() -> None:
    report = render(
        [
            Finding("dependencies", "redis", "ok", "answers"),
            Finding("dependencies", "kafka", "fail", "timed out", "start a broker"),
            Finding("setup", "sources", "warn", "no source", "clicktrail sources create"),
        ]
    )

    assert report.splitlines() == [
        "dependencies",
        "  ok    redis: answers",
        "  FAIL  kafka: timed out",
        "        fix: start a broker",
        "setup",
        "  WARN  sources: no source",
        "        fix: clicktrail sources create",
        "1 problem(s), 1 warning(s)",
    ]
