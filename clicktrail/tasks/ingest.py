"""The ingest task: one per queue message, which holds one request (a batch is one request) or
several that reached one API process together."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import redis
from celery import Task, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from clicktrail.errors import TransientError
from clicktrail.logs import bind, message_id_fields
from clicktrail.message import MalformedMessage, Message
from clicktrail.metrics import POISON_REQUESTS, TASK_RETRIES, TASK_SECONDS
from clicktrail.pipeline import PublishIncomplete
from clicktrail.queue import INGEST_TASK
from clicktrail.workers.runtime import runtime

log = logging.getLogger(__name__)

# Unexpected errors (bugs, data the code cannot handle) are retried this many times, then the
# request's events go to the dead-letter topic rather than looping forever.
MAX_UNEXPECTED_FAILURES = 3

# Redis refusing a write (at its maxmemory with noeviction, a read-only replica after a
# failover, a master without the replicas it wants, a failing disk): an outage like Redis
# being away, not a fault of the events.
_REFUSALS = ("OOM", "READONLY", "NOREPLICAS", "MISCONF", "MASTERDOWN")


def refused_write(exc: BaseException) -> bool:
    if isinstance(exc, (redis.OutOfMemoryError, redis.ReadOnlyError)):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(_REFUSALS)


def backoff(retries: int, maximum: int) -> int:
    """Exponential backoff with full jitter, capped well below the visibility timeout."""
    return int(
        get_exponential_backoff_interval(
            factor=2, retries=retries, maximum=maximum, full_jitter=True
        )
    )


@shared_task(
    name=INGEST_TASK,
    bind=True,
    max_retries=None,
    # The main process hands the body on undecoded (clicktrail/workers/strategy.py).
    Strategy="clicktrail.workers.strategy:ingest",
)
def ingest(self: Task, payload: Any) -> None:
    """Validate, enrich and publish one message's events (one request's, or several that reached
    one API process together); returns after Kafka confirmed them all."""
    started = time.monotonic()
    try:
        message = Message.decode(payload)
    except MalformedMessage as exc:
        # Only code of ours writes these messages: one no release can read is a bug of ours,
        # kept in the log (with the task id) rather than retried for ever.
        log.error("dropping a message in no known format: %s", exc)
        return
    if len(message.parts) == 1:
        bind(source_id=message.parts[0].source_id)
    bind(requests=len(message.parts), **message_id_fields(message.message_ids()))
    try:
        _run(self, message)
    finally:
        TASK_SECONDS.labels(INGEST_TASK).observe(time.monotonic() - started)


def _run(task: Task, message: Message) -> None:
    current = runtime()
    pipeline = current.pipeline
    parts = message.parts
    try:
        delivery = current.deliveries.count(str(task.request.id), task.request.retries or 0)
    except TransientError as exc:
        TASK_RETRIES.labels("transient").inc()
        log.warning("delivery counter unavailable, retrying: %s", exc)
        raise _retry(task, message) from exc
    if delivery > 1 and len(parts) > 1:
        # An earlier delivery of this message took the worker down: go on with each request in
        # a message of its own, so that whatever is to blame costs no other request anything.
        log.warning("delivered %d times, splitting into %d requests", delivery, len(parts))
        _split(task, message, redelivered=True)
        return
    if delivery > current.settings.max_deliveries:
        # Each earlier delivery took the worker process down (no retry was scheduled): stop.
        POISON_REQUESTS.inc()
        log.error("delivered %d times without finishing, dead-lettering the request", delivery - 1)
        try:
            pipeline.dead_letter_all(
                message, "poison", f"the worker died {delivery - 1} times processing this request"
            )
        except PublishIncomplete as exc:
            raise _retry(task, exc.retry) from exc
        return
    try:
        # The ledger counts what the workers drop of a message on its first delivery only: on a
        # later one, the worker that died may have published (and noted) it.
        pipeline.process(message, first_delivery=delivery == 1)
    except PublishIncomplete as exc:
        TASK_RETRIES.labels("publish").inc()
        log.warning("publish incomplete, retrying %d record(s): %s", len(exc.failures), exc)
        raise _retry(task, exc.retry) from exc
    except (TransientError, SoftTimeLimitExceeded) as exc:
        TASK_RETRIES.labels("transient").inc()
        log.warning("transient failure, retrying: %s", exc)
        raise _retry(task, message) from exc
    except Exception as exc:
        if refused_write(exc):
            TASK_RETRIES.labels("transient").inc()
            log.warning("redis refused a write, retrying: %s", exc)
            raise _retry(task, message) from exc
        if len(parts) > 1:
            log.exception("ingest failed, splitting into %d requests", len(parts))
            _split(task, message)
            return
        failed = message.failed_again()
        if failed.failures < MAX_UNEXPECTED_FAILURES:
            TASK_RETRIES.labels("unexpected").inc()
            log.exception(
                "ingest failed (%d of %d), retrying", failed.failures, MAX_UNEXPECTED_FAILURES
            )
            raise _retry(task, failed) from exc
        log.exception("ingest failed %d times, dead-lettering the request", failed.failures)
        try:
            pipeline.dead_letter_all(message, "processing_failed", f"{type(exc).__name__}: {exc}")
        except PublishIncomplete as dlq_exc:
            raise _retry(task, dlq_exc.retry) from dlq_exc


def _split(task: Task, message: Message, redelivered: bool = False) -> None:
    """Queue each part as a message of its own (acknowledged by Redis) before this one is
    acknowledged: a crash in between costs duplicates, which the pipeline drops. The parts of a
    message handed out again are marked ``redelivered``: the ledger counts no drop of theirs."""
    try:
        for part in message.parts:
            alone = Message((replace(part, redelivered=True) if redelivered else part,))
            task.apply_async(args=[alone.to_wire()], argsrepr=alone.describe())
    except Exception as exc:
        # The queue would not take them: this message goes back whole (the parts sent already
        # come twice, and are dropped as duplicates).
        log.warning("could not queue the split requests, requeueing the message: %s", exc)
        raise Reject(exc, requeue=True) from exc


def _retry(task: Task, message: Message) -> Exception:
    """The retry to raise. When the queue will not take it (Redis away or refusing writes),
    Celery would reject this message for good, losing its events: it is requeued instead,
    which the worker does once Redis takes writes (the message is never acknowledged before)."""
    maximum = runtime().settings.retry_backoff_max_seconds
    try:
        return task.retry(  # type: ignore[no-any-return]
            args=[message.to_wire()],
            countdown=backoff(task.request.retries, maximum),
            argsrepr=message.describe(),
        )
    except Reject as exc:
        log.warning("could not queue the retry, requeueing the message: %s", exc.reason)
        requeue: Exception = Reject(exc.reason, requeue=True)
        return requeue
