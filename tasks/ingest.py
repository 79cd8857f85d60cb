"""The ingest task: one per accepted request (a batch is one task)."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from opentelemetry.trace import SpanKind

from clicktrail.errors import TransientError
from clicktrail.logs import bind, bind_message_ids
from clicktrail.metrics import POISON_REQUESTS, TASK_RETRIES, TASK_SECONDS
from clicktrail.pipeline import PublishIncomplete
from clicktrail.queue import INGEST_TASK, describe_payload
from clicktrail.telemetry import context_of, tracer
from workers.runtime import runtime

log = logging.getLogger(__name__)

# Unexpected errors (bugs, data the code cannot handle) are retried this many times, then the
# request's events go to the dead-letter topic rather than looping forever.
MAX_UNEXPECTED_FAILURES = 3


def backoff(retries: int, maximum: int) -> int:
    """Exponential backoff with full jitter, capped well below the visibility timeout."""
    return int(
        get_exponential_backoff_interval(
            factor=2, retries=retries, maximum=maximum, full_jitter=True
        )
    )


def _ids(payload: dict[str, Any]) -> list[str]:
    events = payload.get("events")
    if isinstance(events, list):
        return [str(e.get("messageId")) for e in events if isinstance(e, dict)]
    records = payload.get("records") or []
    return [str((r.get("headers") or {}).get("event-id")) for r in records if isinstance(r, dict)]


@shared_task(name=INGEST_TASK, bind=True, max_retries=None)
def ingest(self: Task, payload: dict[str, Any]) -> None:
    """Validate, enrich and publish one request's events; returns after Kafka confirmed them all."""
    started = time.monotonic()
    bind(source_id=(payload.get("source") or {}).get("id"))
    bind_message_ids(_ids(payload))
    with tracer.start_as_current_span(
        INGEST_TASK, context=context_of(payload.get("traceparent")), kind=SpanKind.CONSUMER
    ):
        try:
            _run(self, payload)
        finally:
            TASK_SECONDS.labels(INGEST_TASK).observe(time.monotonic() - started)


def _run(task: Task, payload: dict[str, Any]) -> None:
    current = runtime()
    pipeline = current.pipeline
    try:
        delivery = current.deliveries.count(str(task.request.id), task.request.retries or 0)
    except TransientError as exc:
        TASK_RETRIES.labels("transient").inc()
        raise _retry(task, payload) from exc
    if delivery > current.settings.max_deliveries:
        # Each earlier delivery took the worker process down (no retry was scheduled): stop.
        POISON_REQUESTS.inc()
        log.error("delivered %d times without finishing, dead-lettering the request", delivery - 1)
        try:
            pipeline.dead_letter_all(
                payload, "poison", f"the worker died {delivery - 1} times processing this request"
            )
        except PublishIncomplete as exc:
            raise _retry(task, exc.retry_payload) from exc
        return
    try:
        outcome = pipeline.process(payload)
    except PublishIncomplete as exc:
        TASK_RETRIES.labels("publish").inc()
        log.warning("publish incomplete, retrying %d record(s): %s", len(exc.failures), exc)
        raise _retry(task, exc.retry_payload) from exc
    except (TransientError, SoftTimeLimitExceeded) as exc:
        TASK_RETRIES.labels("transient").inc()
        log.warning("transient failure, retrying: %s", exc)
        raise _retry(task, payload) from exc
    except Exception as exc:
        failures = int(payload.get("failures", 0)) + 1
        if failures < MAX_UNEXPECTED_FAILURES:
            TASK_RETRIES.labels("unexpected").inc()
            log.exception("ingest failed (%d of %d), retrying", failures, MAX_UNEXPECTED_FAILURES)
            raise _retry(task, {**payload, "failures": failures}) from exc
        log.exception("ingest failed %d times, dead-lettering the request", failures)
        try:
            pipeline.dead_letter_all(payload, "processing_failed", f"{type(exc).__name__}: {exc}")
        except PublishIncomplete as dlq_exc:
            raise _retry(task, dlq_exc.retry_payload) from dlq_exc
        return
    log.info("published %d event(s), dead-lettered %d", outcome.published, outcome.dead_lettered)


def _retry(task: Task, payload: dict[str, Any]) -> Exception:
    maximum = runtime().settings.retry_backoff_max_seconds
    return task.retry(  # type: ignore[no-any-return]
        args=[payload],
        countdown=backoff(task.request.retries, maximum),
        argsrepr=describe_payload(payload),
    )
