"""Operator commands (`flask --app web ...`) against the test database."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

import orjson
import requests

from clicktrail.db import Database
from clicktrail.sources import SourceStore, new_write_key
from tests.integration.conftest import FlaskCli, TopicNames
from tests.support.infra import KafkaCollector, wait_for


def test_sources_plan_shows_and_changes_a_tracking_plan(
    database_url: str, flask_cli: FlaskCli
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    db = Database(database_url)
    try:
        SourceStore(db, cache_seconds=0).create(name, new_write_key())

        shown = flask_cli("sources", "plan", name)
        changed = flask_cli(
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
        opened = flask_cli("sources", "plan", name, "--any-event")
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


def test_sources_plan_of_an_unknown_source_fails(flask_cli: FlaskCli) -> None:
    result = flask_cli("sources", "plan", "no-such-source")

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
    pipeline: str, flask_cli: FlaskCli
) -> None:
    name = f"keys-{uuid.uuid4().hex[:8]}"
    first = _created_key(flask_cli("sources", "create", name))
    assert _status(pipeline, first) == 200

    rotated = flask_cli("sources", "rotate", name, "--grace-hours", "0.002")  # 7.2 s
    assert rotated.returncode == 0, rotated.stderr
    second = rotated.stdout.split("new write key: ")[1].split()[0]
    time.sleep(1.5)  # past the API's source cache: what follows is the database's answer
    assert (_status(pipeline, first), _status(pipeline, second)) == (200, 200)
    wait_for(lambda: _status(pipeline, first) == 401, "the old key expiring", timeout=20)
    assert _status(pipeline, second) == 200

    listed = flask_cli("sources", "list")
    revoked = flask_cli("sources", "revoke", name)
    wait_for(lambda: _status(pipeline, second) == 401, "the revoked key refused", timeout=10)
    after = flask_cli("sources", "list")

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
    pipeline: str, flask_cli: FlaskCli
) -> None:
    name = f"rate-{uuid.uuid4().hex[:8]}"
    key = _created_key(flask_cli("sources", "create", name))
    refused = flask_cli("sources", "settings", name, "rate_limit_events_per_second=-5")
    set_rate = flask_cli("sources", "settings", name, "rate_limit_events_per_second=3")
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
    pipeline: str, flask_cli: FlaskCli, kafka: KafkaCollector, topics: TopicNames
) -> None:
    name = f"replay-{uuid.uuid4().hex[:8]}"
    plan = '{"events": ["Signed Up"], "unplanned": "deadletter"}'
    key = _created_key(flask_cli("sources", "create", name, "--setting", f"tracking_plan={plan}"))
    message_id = f"replay-{uuid.uuid4()}"
    body = {"userId": "u-replay", "event": "Coupon Clipped", "messageId": message_id}
    assert requests.post(f"{pipeline}/v1/track", json=body, auth=(key, ""), timeout=10).ok
    [dead] = kafka.wait_for([message_id], topic=topics.deadletter)[message_id]

    listed = flask_cli("deadletters", "list", "--reason", "unplanned", "--idle", "2")
    early = flask_cli("deadletters", "replay", "--reason", "unplanned", "--source", name,
                      "--dry-run", "--idle", "2")  # fmt: skip
    flask_cli("sources", "plan", name, "--any-event", "--unplanned", "allow")
    replayed = flask_cli("deadletters", "replay", "--reason", "unplanned", "--source", name,
                         "--idle", "2")  # fmt: skip
    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
    again = flask_cli("deadletters", "replay", "--reason", "unplanned", "--source", name,
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
