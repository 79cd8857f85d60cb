"""Time: an injectable clock and the one timestamp format Clicktrail writes.

Timestamps go out as ISO 8601 UTC with milliseconds and a ``Z`` (``2026-01-02T03:04:05.678Z``),
the form Segment's own APIs emit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    """``2026-01-02T03:04:05.678Z`` (UTC, milliseconds)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_ts(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 timestamp as an aware datetime; None when absent or unreadable.

    A timestamp without a zone is read as UTC, as Segment does.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
