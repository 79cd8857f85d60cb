"""Flower for ops: behind basic auth, showing the pipeline's workers and tasks with their
arguments trimmed of personal data."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from celery import Celery

from clicktrail.local.stack import listening
from clicktrail.queue import INGEST_TASK, QUEUE
from tests.integration.conftest import SourceUnderTest
from tests.support.infra import (
    Service,
    claim_redis_db,
    free_port,
    release_redis_db,
    start_worker_and_api,
    wait_for,
)

CREDENTIALS = ("ops", "flower-test-password")


def start_flower(env: dict[str, str], log_path: Path) -> tuple[Service, str]:
    port = free_port()
    env = {
        **env,
        "FLOWER_BASIC_AUTH": ":".join(CREDENTIALS),
        "FLOWER_PORT": str(port),
        "FLOWER_ADDRESS": "127.0.0.1",
    }
    service = Service("flower", [sys.executable, "-m", "clicktrail.workers.flower"], env, log_path)
    wait_for(lambda: listening("127.0.0.1", port), "Flower", timeout=30)
    return service, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def flower(stack_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    service, base = start_flower(stack_env, logs_dir / "flower.log")
    yield base
    service.stop()


def send(base: str, source: SourceUnderTest, message_id: str) -> None:
    body = {
        "userId": "flower-user-secret",
        "messageId": message_id,
        "event": "Watched",
        "context": {"ip": "203.0.113.5"},
    }
    response = requests.post(f"{base}/v1/track", json=body, auth=(source.write_key, ""), timeout=10)
    assert response.status_code == 200


def task_in_flower(flower: str, base: str, source: SourceUnderTest) -> tuple[dict[str, Any], str]:
    """A task Flower shows as done, and the messageId it carried. Flower asks the workers for
    task events every 5 s: requests go on until one is sent after they started sending them."""
    sent: list[str] = []

    def seen() -> tuple[dict[str, Any], str] | None:
        sent.append(f"flower-{uuid.uuid4()}")
        send(base, source, sent[-1])
        time.sleep(1)
        tasks = requests.get(f"{flower}/api/tasks", auth=CREDENTIALS, timeout=10).json()
        for task in tasks.values():
            for message_id in sent:
                if task.get("state") == "SUCCESS" and message_id in str(task.get("args")):
                    return task, message_id
        return None

    return wait_for(seen, "a task in Flower", timeout=60)


class TaskEvents:
    """Every task event published on a broker, as Flower would receive them."""

    def __init__(self, broker_url: str) -> None:
        self.seen: list[str] = []
        self._app = Celery(broker=broker_url, set_as_current=False)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._capture, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _capture(self) -> None:
        with self._app.connection_for_read() as connection:
            receiver = self._app.events.Receiver(
                connection, handlers={"*": lambda event: self.seen.append(event["type"])}
            )
            self._ready.set()
            receiver.capture(limit=None, timeout=None, wakeup=False)


def test_workers_send_task_events_only_once_flower_asks_for_them(
    stack_env: dict[str, str], run_id: str, logs_dir: Path, source: SourceUnderTest
) -> None:
    db = claim_redis_db(owner=f"{run_id}-events")
    env = {**stack_env, "REDIS_URL": f"redis://127.0.0.1:6379/{db}"}
    queue = redis.Redis.from_url(env["REDIS_URL"])
    worker, api, base = start_worker_and_api(env, logs_dir, "events")
    flower_service = None
    try:
        events = TaskEvents(env["REDIS_URL"])
        send(base, source, f"unwatched-{uuid.uuid4()}")
        wait_for(
            lambda: queue.llen(QUEUE) == 0 and queue.hlen("unacked") == 0,
            "the task done",
            timeout=30,
        )
        time.sleep(1)
        assert not [kind for kind in events.seen if kind.startswith("task-")]

        flower_service, flower = start_flower(env, logs_dir / "events-flower.log")
        task_in_flower(flower, base, source)

        assert "task-succeeded" in events.seen
    finally:
        for service in (flower_service, api, worker):
            if service is not None:
                service.stop()
        queue.flushdb()
        release_redis_db(db)


@pytest.mark.parametrize(
    "page", ["/", "/workers", "/tasks", "/broker", "/api/tasks", "/api/workers", "/metrics"]
)
def test_every_page_needs_the_credentials(flower: str, page: str) -> None:
    anonymous = requests.get(f"{flower}{page}", timeout=10)
    wrong = requests.get(f"{flower}{page}", auth=("ops", "nope"), timeout=10)
    allowed = requests.get(f"{flower}{page}", auth=CREDENTIALS, timeout=30)

    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert allowed.status_code == 200


def test_flower_shows_the_pipeline_tasks_without_their_events(
    flower: str, pipeline: str, source: SourceUnderTest
) -> None:
    task, message_id = task_in_flower(flower, pipeline, source)

    assert task["name"] == INGEST_TASK
    assert task["args"] == f"source={source.id} events=1 first={message_id}"
    assert "flower-user-secret" not in str(task)
    assert "203.0.113.5" not in str(task)
    page = requests.get(f"{flower}/tasks", auth=CREDENTIALS, timeout=10)
    assert page.status_code == 200
