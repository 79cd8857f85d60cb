"""The ingest task: one per accepted request (a batch is one task)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from clicktrail.errors import TransientError
from clicktrail.pipeline import PublishIncomplete
from clicktrail.queue import INGEST_TASK, RETRY_BACKOFF_MAX
from workers.runtime import runtime

log = logging.getLogger(__name__)

# Unexpected errors (bugs, data the code cannot handle) are retried this many times, then the
# request's events go to the dead-letter topic rather than looping forever.
MAX_UNEXPECTED_FAILURES = 3


def backoff(retries: int) -> int:
    """Exponential backoff with full jitter, capped well below the visibility timeout."""
    return int(
        get_exponential_backoff_interval(
            factor=2, retries=retries, maximum=RETRY_BACKOFF_MAX, full_jitter=True
        )
    )


@shared_task(name=INGEST_TASK, bind=True, max_retries=None)
def ingest(self: Task, payload: dict[str, Any]) -> None:
    """Validate, enrich and publish one request's events; returns after Kafka confirmed them all."""
    pipeline = runtime().pipeline
    try:
        pipeline.process(payload)
    except PublishIncomplete as exc:
        log.warning("publish incomplete, retrying %d record(s): %s", len(exc.failures), exc)
        raise self.retry(args=[exc.retry_payload], countdown=backoff(self.request.retries)) from exc
    except (TransientError, SoftTimeLimitExceeded) as exc:
        log.warning("transient failure, retrying: %s", exc)
        raise self.retry(countdown=backoff(self.request.retries)) from exc
    except Exception as exc:
        failures = int(payload.get("failures", 0)) + 1
        if failures < MAX_UNEXPECTED_FAILURES:
            log.exception("ingest failed (%d of %d), retrying", failures, MAX_UNEXPECTED_FAILURES)
            retry_payload = {**payload, "failures": failures}
            raise self.retry(args=[retry_payload], countdown=backoff(self.request.retries)) from exc
        log.exception("ingest failed %d times, dead-lettering the request", failures)
        try:
            pipeline.dead_letter_all(payload, "processing_failed", f"{type(exc).__name__}: {exc}")
        except PublishIncomplete as dlq_exc:
            raise self.retry(
                args=[dlq_exc.retry_payload], countdown=backoff(self.request.retries)
            ) from dlq_exc
