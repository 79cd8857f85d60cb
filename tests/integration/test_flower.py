"""Flower for ops: behind basic auth, showing the pipeline's workers and tasks with their
arguments trimmed of personal data."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from clicktrail.local.stack import listening
from clicktrail.queue import INGEST_TASK
from tests.integration.conftest import SourceUnderTest
from tests.support.infra import Service, free_port, wait_for

CREDENTIALS = ("ops", "flower-test-password")


@pytest.fixture(scope="module")
def flower(stack_env: dict[str, str], logs_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **stack_env,
        "FLOWER_BASIC_AUTH": ":".join(CREDENTIALS),
        "FLOWER_PORT": str(port),
        "FLOWER_ADDRESS": "127.0.0.1",
    }
    service = Service(
        "flower",
        [sys.executable, "-m", "clicktrail.workers.flower"],
        env,
        logs_dir / "flower.log",
    )
    wait_for(lambda: listening("127.0.0.1", port), "Flower", timeout=30)
    yield f"http://127.0.0.1:{port}"
    service.stop()


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
    message_id = f"flower-{uuid.uuid4()}"
    body = {
        "userId": "flower-user-secret",
        "messageId": message_id,
        "event": "Watched",
        "context": {"ip": "203.0.113.5"},
    }

    assert (
        requests.post(
            f"{pipeline}/v1/track", json=body, auth=(source.write_key, ""), timeout=10
        ).status_code
        == 200
    )

    def seen() -> dict[str, object] | None:
        tasks = requests.get(f"{flower}/api/tasks", auth=CREDENTIALS, timeout=10).json()
        mine = [t for t in tasks.values() if message_id in str(t.get("args"))]
        return mine[0] if mine and mine[0].get("state") == "SUCCESS" else None

    task = wait_for(seen, "the task in Flower", timeout=60)
    assert task["name"] == INGEST_TASK
    assert task["args"] == f"source={source.id} events=1 first={message_id}"
    assert "flower-user-secret" not in str(task)
    assert "203.0.113.5" not in str(task)
    page = requests.get(f"{flower}/tasks", auth=CREDENTIALS, timeout=10)
    assert page.status_code == 200
