"""The ledger on the running pipeline: a normal run balances, and events that vanish from the
queue show as missing, in `clicktrail ledger` (which then exits 1) and in the worker side's
gauges. The minutes are judged 2 s after they end (LEDGER_SETTLE_SECONDS), so the module waits
once, for the minute its events were received in to end."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from clicktrail.clock import minute_of
from clicktrail.db import Database
from clicktrail.queue import QUEUE
from clicktrail.sources import SourceStore, new_write_key
from tests.support.infra import (
    KafkaCollector,
    Service,
    claim_redis_db,
    release_redis_db,
    start_api,
    start_worker,
    wait_for,
)
from tests.support.paths import PROJECT_ROOT

SETTLE = "2"


@dataclass(frozen=True)
class Sent:
    source: str  # its name
    source_id: str
    env: dict[str, str]  # the environment its API ran with
    accepted: int


def new_source(database_url: str, prefix: str) -> tuple[str, str, str]:
    """A source of the test's own (no other test counts in its books): name, id, write key."""
    db = Database(database_url)
    try:
        key, name = new_write_key(), f"{prefix}-{uuid.uuid4().hex[:8]}"
        return name, SourceStore(db, cache_seconds=0).create(name, key).id, key
    finally:
        db.close()


def send(base: str, key: str, events: list[dict[str, Any]]) -> None:
    response = requests.post(f"{base}/v1/batch", json={"batch": events}, auth=(key, ""), timeout=10)
    assert response.status_code == 200, response.text


def track(n: int, run: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Ledger Tested",
        "userId": f"u-{n % 3}",
        "messageId": f"{run}-{n}",
    }


def ledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clicktrail", "ledger", *args],
        env={**env, "LEDGER_SETTLE_SECONDS": SETTLE},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def settled(env: dict[str, str], source: str) -> dict[str, Any]:
    """The source's books once each of its minutes is settled."""
    result = ledger(env, "--source", source, "--since", "15m", "--json")
    assert result.returncode in (0, 1), result.stderr
    body: dict[str, Any] = orjson.loads(result.stdout)
    return body if body["minutes"] and all(m["settled"] for m in body["minutes"]) else {}


def wait_until_settled() -> None:
    """Until the minute now falls in (and every one before it) has ended, and the settle time
    after it has passed."""
    settles_at = minute_of(datetime.now(UTC)).timestamp() + 60 + float(SETTLE) + 0.5
    time.sleep(max(0.0, settles_at - time.time()))


@pytest.fixture(scope="module")
def queue_of_its_own() -> Iterator[str]:
    """A Redis database for an API no worker reads from."""
    db = claim_redis_db(owner=f"ledger-{uuid.uuid4().hex[:6]}")
    yield f"redis://127.0.0.1:6379/{db}"
    release_redis_db(db)


@pytest.fixture(scope="module")
def vanished(
    stack_env: dict[str, str], database_url: str, logs_dir: Path, queue_of_its_own: str
) -> Iterator[Sent]:
    """30 events accepted by an API whose queue no worker reads, then deleted from the queue."""
    env = {**stack_env, "REDIS_URL": queue_of_its_own}
    api, base = start_api(env, logs_dir / "ledger-vanish-api.log", name="ledger-vanish-api")
    try:
        name, source_id, key = new_source(database_url, "ledger-vanish")
        run = uuid.uuid4().hex[:8]
        send(base, key, [track(n, run) for n in range(20)])
        send(base, key, [track(n, run) for n in range(20, 30)])
        queue = redis.Redis.from_url(queue_of_its_own)
        assert queue.llen(QUEUE) >= 1
        queue.delete(QUEUE)  # what a lost queue, or a flushed Redis, would do
        yield Sent(name, source_id, env, 30)
    finally:
        api.stop()


@pytest.fixture(scope="module")
def flowed(
    pipeline: str,
    sink: Service,
    kafka: KafkaCollector,
    stack_env: dict[str, str],
    database_url: str,
) -> Sent:
    """A normal run: 20 valid events and 2 invalid (dead-lettered), then 5 of them sent again as
    an SDK does that never got its answer (a new receivedAt; the workers drop them)."""
    name, source_id, key = new_source(database_url, "ledger-flow")
    run = uuid.uuid4().hex[:8]
    good = [track(n, run) for n in range(20)]
    bad = [
        {"type": "track", "event": "Order Completed", "userId": "u-9", "messageId": f"{run}-bad-{n}",
         "properties": {"currency": "euro"}}
        for n in range(2)
    ]  # fmt: skip
    send(pipeline, key, good + bad)
    kafka.wait_for([e["messageId"] for e in good + bad], timeout=60)
    send(pipeline, key, good[:5])
    return Sent(name, source_id, stack_env, 27)


@pytest.fixture(scope="module")
def judged(vanished: Sent, flowed: Sent) -> tuple[Sent, Sent]:
    """Both runs, their minutes ended and settled."""
    wait_until_settled()
    return vanished, flowed


def test_events_deleted_from_the_queue_show_as_missing_and_the_ledger_exits_1(
    judged: tuple[Sent, Sent],
) -> None:
    vanished, _ = judged

    table = ledger(vanished.env, "--source", vanished.source, "--since", "15m")
    body = settled(vanished.env, vanished.source)

    assert table.returncode == 1, table.stdout + table.stderr
    marked = [line for line in table.stdout.splitlines() if line.startswith("!")]
    assert marked, table.stdout
    assert all("missing: not in Kafka (queue, workers)" in line for line in marked)
    assert "do not balance: 30 missing" in table.stdout.splitlines()[-1]
    assert sum(m["accepted"] for m in body["minutes"]) == vanished.accepted
    assert sum(m["published"] + m["stored"] for m in body["minutes"]) == 0
    assert (body["unbalancedMinutes"], body["missing"]) == (len(marked), 30)
    assert {m["stopped"] for m in body["minutes"]} == {"queue"}


def test_the_worker_side_serves_the_unbalanced_minutes_and_the_missing_events(
    judged: tuple[Sent, Sent], logs_dir: Path
) -> None:
    vanished, _ = judged
    env = {**vanished.env, "LEDGER_SETTLE_SECONDS": SETTLE}
    worker = start_worker(
        env, logs_dir / "ledger-gauges-worker.log", f"ledger-{uuid.uuid4().hex[:6]}"
    )
    try:
        text = requests.get(worker.metrics_url, timeout=30).text
    finally:
        worker.stop()

    samples = {
        (s.name, s.labels.get("column", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("source") == vanished.source_id
    }
    assert samples[("clicktrail_ledger_missing_events", "")] == 30
    assert samples[("clicktrail_ledger_unbalanced_minutes", "")] >= 1
    assert samples[("clicktrail_ledger_extra_events", "")] == 0


def test_a_normal_run_balances_every_minute(judged: tuple[Sent, Sent]) -> None:
    _, flowed = judged

    # The sink stores within a few seconds of Kafka; until then the minutes show as missing.
    body = wait_for(
        lambda: (b := settled(flowed.env, flowed.source)) and b["unbalancedMinutes"] == 0 and b,
        "the normal run's books balancing",
        timeout=60,
        every=2,
    )
    table = ledger(flowed.env, "--source", flowed.source, "--since", "15m")

    assert table.returncode == 0, table.stdout
    assert table.stdout.splitlines()[-1].startswith("every settled minute balances")
    minutes = body["minutes"]
    assert sum(m["accepted"] for m in minutes) == flowed.accepted
    assert sum(m["stored"] for m in minutes) == 22  # the dead letters too
    assert sum(m["deadLettered"] for m in minutes) == 2
    assert sum(m["dropped"] + m["duplicates"] for m in minutes) == 5  # the resent events
    assert sum(m["published"] for m in minutes) + sum(m["dropped"] for m in minutes) == 25


def test_the_ledger_command_explains_itself(clicktrail_cli: Any) -> None:
    result = clicktrail_cli("ledger", "--help")

    assert result.returncode == 0, result.stderr
    assert "Exits 1 when a settled minute does not balance" in " ".join(result.stdout.split())
