"""Operator commands (`flask --app clicktrail.web ...`) against the test database."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from confluent_kafka.schema_registry import SchemaRegistryClient

from clicktrail.db import Database
from clicktrail.profiles import ProfileWriter
from clicktrail.sources import SourceStore, new_write_key
from tests.integration.conftest import ClicktrailCli, TopicNames
from tests.support.catalogue import copy_catalogue, evolved, require_sku
from tests.support.infra import KafkaCollector, free_port, wait_for
from tests.support.paths import PROJECT_ROOT
from tests.support.registry_server import RegistryServer


def test_sources_plan_shows_and_changes_a_tracking_plan(
    database_url: str, clicktrail_cli: ClicktrailCli
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    db = Database(database_url)
    try:
        SourceStore(db, cache_seconds=0).create(name, new_write_key())

        shown = clicktrail_cli("sources", "plan", name)
        changed = clicktrail_cli(
            "sources",
            "plan",
            name,
            "--event",
            "Signed Up",
            "--event",
            "Product Viewed",
            "--unplanned",
            "deadletter",
        )
        opened = clicktrail_cli("sources", "plan", name, "--any-event")
        stored = SourceStore(db, cache_seconds=0).by_name(name)
    finally:
        db.close()

    assert orjson.loads(shown.stdout)["tracking_plan"] == {"unplanned": "allow"}
    assert orjson.loads(changed.stdout)["tracking_plan"] == {
        "events": ["Product Viewed", "Signed Up"],
        "unplanned": "deadletter",
    }
    assert orjson.loads(opened.stdout)["tracking_plan"] == {"unplanned": "deadletter"}
    assert stored is not None
    assert stored.settings["tracking_plan"] == {"unplanned": "deadletter"}


def test_sources_plan_of_an_unknown_source_fails(clicktrail_cli: ClicktrailCli) -> None:
    result = clicktrail_cli("sources", "plan", "no-such-source")

    assert result.returncode == 1
    assert "no source named 'no-such-source'" in result.stderr


def _created_key(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if "write key: " in line]
    return line.split("write key: ")[1].strip()


def _status(base: str, key: str, **kwargs: Any) -> int:
    body = {"userId": "u", "event": "Signed Up"}
    return requests.post(
        f"{base}/v1/track", json=body, auth=(key, ""), timeout=10, **kwargs
    ).status_code


def test_keys_are_created_rotated_with_a_grace_period_and_revoked(
    pipeline: str, clicktrail_cli: ClicktrailCli
) -> None:
    name = f"keys-{uuid.uuid4().hex[:8]}"
    first = _created_key(clicktrail_cli("sources", "create", name))
    assert _status(pipeline, first) == 200

    rotated = clicktrail_cli("sources", "rotate", name, "--grace-hours", "0.002")  # 7.2 s
    assert rotated.returncode == 0, rotated.stderr
    second = rotated.stdout.split("new write key: ")[1].split()[0]
    time.sleep(1.5)  # past the API's source cache: what follows is the database's answer
    assert (_status(pipeline, first), _status(pipeline, second)) == (200, 200)
    wait_for(lambda: _status(pipeline, first) == 401, "the old key expiring", timeout=20)
    assert _status(pipeline, second) == 200

    listed = clicktrail_cli("sources", "list")
    revoked = clicktrail_cli("sources", "revoke", name)
    wait_for(lambda: _status(pipeline, second) == 401, "the revoked key refused", timeout=10)
    after = clicktrail_cli("sources", "list")

    assert first not in listed.stdout  # keys are shown by id (a hash prefix), never themselves
    assert second not in listed.stdout
    assert _key_states(listed.stdout, name) == ["expired", "live"]
    assert revoked.stdout.strip() == "revoked 1 key(s)"
    assert _key_states(after.stdout, name) == ["expired", "revoked"]


def _key_states(listing: str, name: str) -> list[str]:
    """The states of a source's keys in the output of `sources list`, oldest first."""
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}  "))
    states = []
    for line in lines[start + 1 :]:
        if not line.startswith("  key "):
            break
        states.append(line.split()[2])
    return states


def test_settings_are_checked_and_a_rate_limit_answers_429(
    pipeline: str, clicktrail_cli: ClicktrailCli
) -> None:
    name = f"rate-{uuid.uuid4().hex[:8]}"
    key = _created_key(clicktrail_cli("sources", "create", name))
    refused = clicktrail_cli("sources", "settings", name, "rate_limit_events_per_second=-5")
    set_rate = clicktrail_cli("sources", "settings", name, "rate_limit_events_per_second=3")
    time.sleep(1.5)  # the API's source cache
    batch = {"batch": [{"type": "track", "userId": "u", "event": "Signed Up"}] * 3}

    full = requests.post(f"{pipeline}/v1/batch", json=batch, auth=(key, ""), timeout=10)
    over = requests.post(f"{pipeline}/v1/batch", json=batch, auth=(key, ""), timeout=10)

    assert refused.returncode == 1
    assert "rate_limit_events_per_second must be a whole number" in refused.stderr
    assert orjson.loads(set_rate.stdout)["rate_limit_events_per_second"] == 3
    assert full.status_code == 200
    assert over.status_code == 429, over.text
    assert over.json()["code"] == "rate_limited"
    assert 1 <= int(over.headers["Retry-After"]) <= 2
    time.sleep(int(over.headers["Retry-After"]) + 1)
    assert requests.post(f"{pipeline}/v1/batch", json=batch, auth=(key, ""), timeout=10).ok


def test_dead_letters_are_listed_and_replayed_once_after_a_plan_fix(
    pipeline: str, clicktrail_cli: ClicktrailCli, kafka: KafkaCollector, topics: TopicNames
) -> None:
    name = f"replay-{uuid.uuid4().hex[:8]}"
    plan = '{"events": ["Signed Up"], "unplanned": "deadletter"}'
    key = _created_key(
        clicktrail_cli("sources", "create", name, "--setting", f"tracking_plan={plan}")
    )
    message_id = f"replay-{uuid.uuid4()}"
    body = {"userId": "u-replay", "event": "Coupon Clipped", "messageId": message_id}
    assert requests.post(f"{pipeline}/v1/track", json=body, auth=(key, ""), timeout=10).ok
    [dead] = kafka.wait_for([message_id], topic=topics.deadletter)[message_id]

    listed = clicktrail_cli("deadletters", "list", "--reason", "unplanned", "--idle", "2")
    early = clicktrail_cli("deadletters", "replay", "--reason", "unplanned", "--source", name,
                      "--dry-run", "--idle", "2")  # fmt: skip
    clicktrail_cli("sources", "plan", name, "--any-event", "--unplanned", "allow")
    replayed = clicktrail_cli("deadletters", "replay", "--reason", "unplanned", "--source", name,
                         "--idle", "2")  # fmt: skip
    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
    again = clicktrail_cli("deadletters", "replay", "--reason", "unplanned", "--source", name,
                      "--idle", "2")  # fmt: skip

    assert listed.returncode == 0, listed.stderr
    assert message_id in listed.stdout
    assert "Coupon Clipped" in listed.stdout
    assert early.stdout.strip() == "would replay 1 event(s) dead-lettered as unplanned"
    assert replayed.stdout.strip() == "replayed 1 event(s) dead-lettered as unplanned"
    assert again.stdout.strip() == "replayed 0 event(s) dead-lettered as unplanned", again.stderr
    assert record.value["receivedAt"] == dead.value["event"]["receivedAt"]
    assert record.value["event"] == "Coupon Clipped"
    assert len([m for m in kafka.records(message_id) if m.topic == topics.events]) == 1


def clicktrail_with(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``clicktrail <args>`` with an environment of the test's making."""
    return subprocess.run(
        [sys.executable, "-m", "clicktrail", *args],
        env=env,
        cwd=PROJECT_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (("sources",), "Sources and their write keys."),
        (("schemas", "check"), "every new version backward compatible"),
        (("schemas", "register"), "SCHEMA_REGISTRY_URL"),
        (("deadletters", "replay"), "Send dead-lettered events through the pipeline again"),
        (("users", "show"), "an alias finds its user"),
        (("users", "erase"), "File an erasure request"),
        (("events", "show"), "What became of an event, by its messageId"),
        (("doctor",), "say what to fix"),
        (("migrate",), "apply the migrations"),
        (("topics",), "Kafka topics that are missing"),
        (("dev-source",), "development source"),
        (("tail",), "JSON lines"),
        (("run",), "whole stack in the foreground"),
        (("sink",), "history sink"),
        (("flower",), "Flower for the workers"),
    ],
)
def test_every_command_explains_itself(
    clicktrail_cli: ClicktrailCli, command: tuple[str, ...], says: str
) -> None:
    result = clicktrail_cli(*command, "--help")

    assert result.returncode == 0, result.stderr
    assert says in " ".join(result.stdout.split())


def test_schemas_check_passes_the_catalogue_and_fails_a_breaking_change(
    clicktrail_cli: ClicktrailCli, tmp_path: Path
) -> None:
    breaking = copy_catalogue(tmp_path / "schemas")
    evolved(breaking, "events/product_viewed", "2-0-1", require_sku)

    shipped = clicktrail_cli("schemas", "check")
    broken = clicktrail_cli("schemas", "check", "--dir", str(breaking))

    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "every version is backward compatible" in shipped.stdout
    assert broken.returncode == 1
    assert "FAIL  events/product_viewed 2-0-0 -> 2-0-1 is not backward compatible" in broken.stdout
    assert "/properties/sku: now required" in broken.stdout


def test_schemas_register_fills_the_registry_and_needs_one(
    stack_env: dict[str, str], clicktrail_cli: ClicktrailCli, run_id: str
) -> None:
    server = RegistryServer().start()
    prefix = f"ct-cli-{run_id}"
    try:
        registered = clicktrail_with(
            {**stack_env, "SCHEMA_REGISTRY_URL": server.url, "SCHEMA_SUBJECT_PREFIX": prefix},
            "schemas",
            "register",
        )
        subjects = SchemaRegistryClient({"url": server.url}).get_subjects()
    finally:
        server.stop()
    nowhere = clicktrail_cli("schemas", "register")

    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert f"ok      {prefix}.events.product_viewed.v1 v1" in registered.stdout
    assert f"{prefix}.calls.track.v1" in subjects
    assert nowhere.returncode == 2
    assert "SCHEMA_REGISTRY_URL is not set" in nowhere.stderr


def test_users_show_prints_a_profile_and_erase_files_a_request_once(
    database_url: str, clicktrail_cli: ClicktrailCli
) -> None:
    user = f"cli-user-{uuid.uuid4().hex[:8]}"
    db = Database(database_url)
    try:
        with db.connection() as conn, conn.transaction():
            ProfileWriter().apply(
                conn,
                [
                    {"type": "identify", "userId": user, "anonymousId": f"anon-{user}",
                     "traits": {"plan": "pro"}, "receivedAt": "2026-01-02T03:04:05.678Z",
                     "timestamp": "2026-01-02T03:04:05.678Z"},
                ],
            )  # fmt: skip

        shown = clicktrail_cli("users", "show", user)
        by_alias = clicktrail_cli("users", "show", f"anon-{user}")
        unknown = clicktrail_cli("users", "show", f"nobody-{user}")
        unconfirmed = clicktrail_cli("users", "erase", user)
        erased = clicktrail_cli("users", "erase", user, "--yes")
        again = clicktrail_cli("users", "erase", f"anon-{user}", "--yes")
        with db.connection() as conn:
            pending = conn.execute(
                "SELECT id FROM erasure_requests WHERE user_id = %s AND completed_at IS NULL",
                (user,),
            ).fetchall()
    finally:
        db.close()

    assert shown.returncode == 0, shown.stderr
    profile = orjson.loads(shown.stdout)
    assert (profile["userId"], profile["traits"]) == (user, {"plan": "pro"})
    assert profile["aliases"] == [f"anon-{user}"]
    assert orjson.loads(by_alias.stdout)["userId"] == user
    assert unknown.returncode == 1
    assert f"no profile for 'nobody-{user}'" in unknown.stderr
    assert unconfirmed.returncode == 1  # no answer to the question: nothing filed
    assert "Aborted" in unconfirmed.stderr
    request = orjson.loads(erased.stdout)
    assert request == {"erasureId": pending[0][0], "userId": user, "status": "pending", "new": True}
    assert orjson.loads(again.stdout) | {"new": True} == request
    assert orjson.loads(again.stdout)["new"] is False
    assert len(pending) == 1


def test_doctor_passes_a_healthy_stack(pipeline: str, clicktrail_cli: ClicktrailCli) -> None:
    result = clicktrail_cli("doctor")

    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("ok    redis", "ok    postgres", "ok    kafka", "ok    workers",
                 "ok    migrations", "ok    topics"):  # fmt: skip
        assert line in result.stdout, result.stdout


def test_doctor_names_each_problem_and_its_fix(stack_env: dict[str, str], run_id: str) -> None:
    nothing_there = f"127.0.0.1:{free_port()}"
    broken = clicktrail_with(
        {**stack_env, "SESSION_TIMEOUT_SECONDS": "soon", "MAX_DELIVERIES": "0"}, "doctor"
    )
    unreachable = clicktrail_with(
        {
            **stack_env,
            "KAFKA_BOOTSTRAP_SERVERS": nothing_there,
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/missing_{run_id}",
            "REDIS_URL": "redis://:hunter2@127.0.0.1:6379/0",
            "ADMIN_TOKEN": "",
        },
        "doctor",
    )

    assert broken.returncode == 1
    assert "FAIL  SESSION_TIMEOUT_SECONDS must be an integer, got 'soon'" in broken.stdout
    assert "FAIL  MAX_DELIVERIES must be at least 1, got 0" in broken.stdout
    assert "fix: correct SESSION_TIMEOUT_SECONDS, or unset it" in broken.stdout
    assert "not checked until the configuration is fixed" in broken.stdout

    assert unreachable.returncode == 1, unreachable.stdout
    out = unreachable.stdout
    assert f'database "missing_{run_id}" does not exist' in out
    assert "fix: create it and its tables: make migrate" in out
    assert "FAIL  kafka:" in out
    assert f"point KAFKA_BOOTSTRAP_SERVERS at one (now {nothing_there})" in out
    assert "WARN  ADMIN_TOKEN" in out
    assert "hunter2" not in out + unreachable.stderr


def test_the_flask_command_line_runs_the_same_groups(stack_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "clicktrail.web", "sources", "--help"],
        env=stack_env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert "Sources and their write keys." in result.stdout
