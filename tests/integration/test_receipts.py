"""Receipts through the real stack: an event posted to the API, then asked after with
GET /v1/events/<messageId> and ``clicktrail events show``, once published, dead-lettered,
erased, and while still queued."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clicktrail.config import Settings
from clicktrail.workers.runtime import Runtime
from tests.integration.conftest import ADMIN_TOKEN, ClicktrailCli, SourceUnderTest, TopicNames
from tests.support.events import uid
from tests.support.infra import (
    KafkaCollector,
    claim_redis_db,
    history_counts,
    release_redis_db,
    start_api,
    start_worker,
    wait_for,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ORDER = {"order_id": "o-1", "currency": "EUR", "total": 12.5}


def post(base: str, key: str, **event: Any) -> str:
    message_id = f"receipt-{uuid.uuid4()}"
    sent = requests.post(
        f"{base}/v1/track", json={"messageId": message_id, **event}, auth=(key, ""), timeout=10
    )
    assert sent.status_code == 200, sent.text
    return message_id


def receipt(base: str, message_id: str, headers: dict[str, str] = ADMIN) -> requests.Response:
    return requests.get(f"{base}/v1/events/{message_id}", headers=headers, timeout=10)


def stored(database_url: str, message_id: str) -> None:
    wait_for(
        lambda: history_counts(database_url, [message_id]).get(message_id) == 1,
        "the event in the history",
        timeout=60,
    )


def in_dead_letters(settings: Settings, message_id: str) -> bool:
    import psycopg

    with psycopg.connect(settings.database_url) as conn:
        return (
            conn.execute(
                "SELECT 1 FROM dead_letters WHERE message_id = %s", (message_id,)
            ).fetchone()
            is not None
        )


def test_a_published_event_has_a_receipt_naming_its_kafka_record(
    pipeline: str,
    sink: Any,
    source: SourceUnderTest,
    kafka: KafkaCollector,
    topics: TopicNames,
    database_url: str,
    debugger_key: str,
    clicktrail_cli: ClicktrailCli,
) -> None:
    message_id = post(
        pipeline, source.write_key, userId=uid("u"), event="Order Completed", properties=ORDER
    )
    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
    stored(database_url, message_id)

    answer = receipt(pipeline, message_id)
    shown = clicktrail_cli("events", "show", message_id)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "published"
    [copy] = body["receipts"]
    assert copy["sourceId"] == source.id
    assert copy["receivedAt"] == record.value["receivedAt"]
    assert (copy["type"], copy["event"], copy["inHistory"]) == ("track", "Order Completed", True)
    published = copy["published"]
    assert (published["topic"], published["partition"], published["offset"]) == (
        topics.events,
        record.partition,
        record.offset,
    )
    assert published["schema"] == record.headers["schema"] == "events/order_completed/2-0-0"
    assert "deadLettered" not in copy
    assert answer.headers["Cache-Control"] == "no-store"
    assert shown.returncode == 0, shown.stderr
    assert f"{message_id}: published" in shown.stdout
    assert f"[{record.partition}]@{record.offset}" in shown.stdout
    # The source's debugger key opens its own events; its write key opens nothing.
    mine = receipt(pipeline, message_id, {"Authorization": f"Bearer {debugger_key}"})
    assert mine.status_code == 200
    assert mine.json()["receipts"] == body["receipts"]
    by_write_key = requests.get(
        f"{pipeline}/v1/events/{message_id}", auth=(source.write_key, ""), timeout=10
    )
    assert by_write_key.status_code == 401
    assert by_write_key.json()["code"] == "write_key_not_accepted"


def test_another_sources_debugger_key_finds_nothing(
    pipeline: str,
    sink: Any,
    source: SourceUnderTest,
    kafka: KafkaCollector,
    database_url: str,
    clicktrail_cli: ClicktrailCli,
) -> None:
    name = f"receipts-other-{uuid.uuid4().hex[:6]}"
    assert clicktrail_cli("sources", "create", name).returncode == 0
    made = clicktrail_cli("sources", "debugger-key", name)
    assert made.returncode == 0, made.stderr
    other_key = made.stdout.split("debugger key: ")[1].split()[0]
    message_id = post(pipeline, source.write_key, userId=uid("u"), event="Signed Up")
    stored(database_url, message_id)

    theirs = receipt(pipeline, message_id, {"Authorization": f"Bearer {other_key}"})

    assert theirs.status_code == 404
    assert theirs.json()["code"] == "event_not_found"
    assert theirs.json()["receipts"] == []
    assert receipt(pipeline, message_id).status_code == 200  # the admin sees it


def test_a_dead_lettered_event_has_a_receipt_with_every_error(
    pipeline: str,
    sink: Any,
    source: SourceUnderTest,
    kafka: KafkaCollector,
    topics: TopicNames,
    settings: Settings,
    clicktrail_cli: ClicktrailCli,
) -> None:
    message_id = post(
        pipeline,
        source.write_key,
        userId=uid("u"),
        event="Order Completed",
        properties={"total": -1},  # no order_id, no currency, a negative total
    )
    [letter] = kafka.wait_for([message_id], topic=topics.deadletter)[message_id]
    wait_for(lambda: in_dead_letters(settings, message_id), "the dead letter in Postgres", 60)

    answer = receipt(pipeline, message_id)
    shown = clicktrail_cli("events", "show", message_id)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "dead_lettered"
    [copy] = body["receipts"]
    dead = copy["deadLettered"]
    assert (dead["topic"], dead["partition"], dead["offset"]) == (
        topics.deadletter,
        letter.partition,
        letter.offset,
    )
    assert dead["reason"] == "schema_validation"
    assert dead["errors"] == letter.value["errors"]
    assert len(dead["errors"]) >= 3
    assert (copy["inHistory"], "published" in copy) == (False, False)
    assert shown.returncode == 0, shown.stderr
    assert "schema_validation" in shown.stdout
    for error in dead["errors"]:
        assert f"{error['path']}: {error['message']}" in shown.stdout


@pytest.fixture(scope="module")
def runtime(settings: Settings) -> Iterator[Runtime]:
    built = Runtime.build(settings)
    yield built
    built.close()


def test_an_erased_users_event_has_a_receipt_that_says_so_and_nothing_more(
    pipeline: str,
    sink: Any,
    source: SourceUnderTest,
    database_url: str,
    runtime: Runtime,
    clicktrail_cli: ClicktrailCli,
) -> None:
    user = uid("erased")
    message_id = post(
        pipeline, source.write_key, userId=user, event="Signed Up", properties={"plan": "pro"}
    )
    stored(database_url, message_id)
    filed = requests.delete(f"{pipeline}/v1/users/{user}", headers=ADMIN, timeout=10)
    assert filed.status_code == 202, filed.text
    assert user in runtime.purger.run().erased

    answer = receipt(pipeline, message_id)
    shown = clicktrail_cli("events", "show", message_id)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "erased"
    [copy] = body["receipts"]
    assert set(copy) == {"status", "receivedAt", "sourceId", "erasedAt"}
    assert user not in answer.text
    assert "Signed Up" not in answer.text
    assert shown.returncode == 0, shown.stderr
    assert "erased" in shown.stdout
    assert user not in shown.stdout


def test_a_queued_event_is_not_found_yet_with_the_queue_depth_then_published(
    stack_env: dict[str, str],
    sink: Any,
    source: SourceUnderTest,
    kafka: KafkaCollector,
    database_url: str,
    logs_dir: Path,
    clicktrail_cli: ClicktrailCli,
) -> None:
    # An API of its own whose queue no worker reads yet.
    queue_db = claim_redis_db(owner=f"receipts-{uuid.uuid4().hex[:6]}")
    env = {**stack_env, "CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{queue_db}"}
    api, base = start_api(env, logs_dir / "receipts-api.log", name="receipts-api")
    try:
        message_id = post(base, source.write_key, userId=uid("u"), event="Signed Up")
        post(base, source.write_key, userId=uid("u"), event="Signed Up")

        waiting = receipt(base, message_id)

        assert waiting.status_code == 404, waiting.text
        body = waiting.json()
        assert (body["code"], body["status"]) == ("event_not_found", "not_found")
        assert body["queue"]["depth"] >= 1
        assert "queued" in body["message"]
        shown = clicktrail_cli("events", "show", message_id)
        assert shown.returncode == 1
        assert "message(s) waiting" in shown.stdout

        worker = start_worker(env, logs_dir / "receipts-worker.log", f"receipts-{queue_db}")
        try:
            stored(database_url, message_id)
            done = receipt(base, message_id)
            assert done.status_code == 200
            assert done.json()["status"] == "published"
        finally:
            worker.stop()
    finally:
        api.stop()
        release_redis_db(queue_db)
