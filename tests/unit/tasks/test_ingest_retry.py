"""A retry the queue will not take requeues the message instead of dropping it."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery.exceptions import Reject, Retry

from clicktrail.message import Message, Part
from clicktrail.tasks import ingest

MESSAGE = Message.of([Part("src", events=[])])


class Request:
    retries = 2


class RefusedRetry:
    """A task whose retry could not be queued: Celery's retry then rejects for good."""

    request = Request()

    def retry(self, **_: Any) -> Exception:
        raise Reject(OSError("OOM command not allowed"), requeue=False)


class QueuedRetry:
    request = Request()

    def retry(self, **options: Any) -> Exception:
        raise Retry("queued", None)


class Settings:
    retry_backoff_max_seconds = 300


class Runtime:
    settings = Settings()


@pytest.fixture(autouse=True)
def _runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "runtime", Runtime)


def test_a_retry_the_queue_refused_requeues_the_message() -> None:
    rejected = ingest._retry(RefusedRetry(), MESSAGE)  # type: ignore[arg-type]

    assert isinstance(rejected, Reject)
    assert rejected.requeue is True
    assert "OOM" in str(rejected.reason)


def test_a_queued_retry_is_raised_as_celery_made_it() -> None:
    with pytest.raises(Retry):
        ingest._retry(QueuedRetry(), MESSAGE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (redis.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), True),
        (redis.ReadOnlyError("You can't write against a read only replica."), True),
        (redis.ResponseError("NOREPLICAS Not enough good replicas to write."), True),
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"), True),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (ValueError("a bug"), False),
    ],
)
def test_redis_refusing_a_write_is_an_outage_not_a_bug(error: Exception, refused: bool) -> None:
    assert ingest.refused_write(error) is refused
