"""The Celery application of the workers, beat and Flower
(``celery -A clicktrail.workers.celery_app``)."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from celery import Celery, signals

from clicktrail.clock import SystemClock
from clicktrail.config import Settings
from clicktrail.ledger import gauges as ledger_gauges
from clicktrail.logs import bind, clear, configure_logging
from clicktrail.metrics import PipelineGauges, clear_multiprocess_dir, mark_dead, serve
from clicktrail.queue import QUEUE, celery_settings
from clicktrail.redisconn import parse_sentinel_url, pipeline_redis, queue_redis
from clicktrail.sessions import SessionStore
from clicktrail.telemetry import setup_sentry, setup_tracing, shutdown_tracing
from clicktrail.workers.runtime import close_runtime, runtime
from clicktrail.workers.schedule import beat_schedule

log = logging.getLogger(__name__)

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
        include=["clicktrail.tasks.ingest", "clicktrail.tasks.purge"],
        task_publish_retry_policy=_WORKER_PUBLISH_RETRY,
        beat_schedule=beat_schedule(settings),
        **_redbeat_redis(settings),
        **beat_lock(settings),
        redbeat_key_prefix="ct:redbeat:",
        # Leave a task's messages in Redis if the worker is stopped mid-task; another picks them up.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Survives a Redis that went away while the worker held messages (consumer.py).
        worker_consumer="clicktrail.workers.consumer:Consumer",
    )
    return app


def beat_lock(settings: Settings) -> dict[str, Any]:
    """celery-redbeat's lock outlives a beat that died by its timeout (by default five times
    beat's longest sleep, 300 s: 25 minutes without a purge). The holder renews it on every
    tick, and ticks at most a fifth of the timeout apart, so a live beat keeps it through a
    tick held up by a retried publish (about a minute at worst); a standby tries for it as often."""
    timeout = settings.beat_lock_timeout_seconds
    return {"redbeat_lock_timeout": timeout, "beat_max_loop_interval": max(1, timeout // 5)}


def _redbeat_redis(settings: Settings) -> dict[str, Any]:
    """Where celery-redbeat keeps the schedule and its lock: REDIS_URL, or its Sentinels."""
    sentinel = parse_sentinel_url(settings.redis_url)
    if sentinel is None:
        return {"redbeat_redis_url": settings.redis_url}
    return {
        "redbeat_redis_url": "redis-sentinel://",
        "redbeat_redis_options": {
            "sentinels": sentinel.sentinels,
            "service_name": settings.redis_sentinel_master,
            "db": sentinel.db,
            "password": sentinel.password,
            "username": sentinel.username,
            "socket_timeout": 5,
        },
    }


def _sentry(settings: Settings) -> None:
    from sentry_sdk.integrations.celery import CeleryIntegration

    setup_sentry(settings, [CeleryIntegration()])


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging(Settings.from_env())


@signals.worker_init.connect
def _start_worker(**_: Any) -> None:
    """In the worker's main process, before the pool forks: errors, and the metrics server
    (it sums the pool children's metrics, reads queue depth and live sessions at scrape, and
    the ledger's books at most once a minute)."""
    settings = Settings.from_env()
    _sentry(settings)
    if settings.prometheus_multiproc_dir is None:
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set: metrics of pool children are not served")
    clear_multiprocess_dir(settings.prometheus_multiproc_dir)
    queue = queue_redis(settings, timeout=2)
    sessions = SessionStore(
        pipeline_redis(settings, timeout=2), settings.session_timeout_seconds, SystemClock()
    )
    gauges = PipelineGauges(lambda: int(queue.llen(QUEUE)), sessions.active_count)
    serve(
        settings.worker_metrics_port,
        settings.metrics_host,
        settings.prometheus_multiproc_dir,
        (gauges, ledger_gauges(settings, SystemClock())),
    )


@signals.worker_process_init.connect
def _start_child(**_: Any) -> None:
    settings = Settings.from_env()
    setup_tracing(settings, "clicktrail-worker")
    _sentry(settings)
    runtime().warm_up()
    # The schemas, clients and caches built so far live as long as the process: keep them out of
    # the garbage collector's full passes.
    gc.freeze()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stop(**_: Any) -> None:
    """Deliver what the producer still holds and export buffered spans (pool children, and
    solo/threads workers)."""
    close_runtime()
    shutdown_tracing()
    mark_dead(os.getpid(), Settings.from_env().prometheus_multiproc_dir)


@signals.task_prerun.connect
def _task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    clear()
    bind(task_id=task_id, task=getattr(task, "name", None))


@signals.task_postrun.connect
def _task_done(**_: Any) -> None:
    clear()


app = make_celery()
