"""Periodic tasks run by Celery beat (one beat at a time: celery-redbeat holds a lock in Redis)."""

from __future__ import annotations

from typing import Any

from clicktrail.config import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {}
