"""Periodic tasks run by Celery beat. celery-redbeat holds a lock in Redis, so with several beat
processes only one sends them."""

from __future__ import annotations

from typing import Any

from clicktrail.config import Settings
from clicktrail.queue import PURGE_TASK


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    interval = settings.purge_interval_seconds
    return {
        "purge-profiles": {
            "task": PURGE_TASK,
            "schedule": float(interval),
            # A run not started within the interval is dropped: the next one does its work.
            "options": {"expires": interval},
        }
    }
