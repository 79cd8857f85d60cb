"""The purge task, run by Celery beat: erasure requests, then profile retention, then the
ledger's old rows."""

from __future__ import annotations

import logging

from celery import shared_task

from clicktrail.errors import TransientError
from clicktrail.queue import PURGE_TASK
from clicktrail.workers.runtime import runtime

log = logging.getLogger(__name__)


@shared_task(name=PURGE_TASK)
def purge_profiles() -> None:
    """Idempotent and bounded: what a run cannot finish stays for the next one."""
    try:
        result = runtime().purger.run()
    except TransientError as exc:
        log.warning("purge stopped, the next run carries on: %s", exc)
        return
    if result.erased or result.expired or result.ledger_rows:
        log.info(
            "purge: %d erased, %d expired, %d ledger row(s) removed",
            len(result.erased),
            len(result.expired),
            result.ledger_rows,
        )
