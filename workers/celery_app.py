"""The Celery application of the workers, beat and Flower (``celery -A workers.celery_app``)."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from clicktrail.config import Settings
from clicktrail.logs import configure_logging
from clicktrail.queue import celery_settings
from workers.runtime import close_runtime, runtime
from workers.schedule import beat_schedule

# A retry or dead-letter publish while Redis is briefly away keeps trying for ~30 s instead of
# failing (which would drop the message: Celery rejects the original when a retry cannot be sent).
_WORKER_PUBLISH_RETRY = {
    "max_retries": 30,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 2,
}


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    app = Celery("clicktrail")
    app.conf.update(celery_settings(settings))
    app.conf.update(
        include=["tasks.ingest", "tasks.purge"],
        task_publish_retry_policy=_WORKER_PUBLISH_RETRY,
        beat_schedule=beat_schedule(settings),
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix="ct:redbeat:",
        # Leave a task's messages in Redis if the worker is stopped mid-task; another picks them up.
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(Settings.from_env())


@signals.worker_process_init.connect
def _build_runtime(**_: Any) -> None:
    runtime()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    """Deliver what the producer still holds (pool children, and solo/threads workers)."""
    close_runtime()


app = make_celery()
