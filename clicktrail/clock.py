"""Time: an injectable clock, the one timestamp format Clicktrail writes, and when an event
happened.

Every component that reads the wall clock takes a ``Clock`` (the processes build one
``SystemClock`` and hand it to each), so tests decide what time it is. Durations are measured
with ``time.monotonic``, which no clock replaces.

Timestamps go out as ISO 8601 UTC with milliseconds and a ``Z`` (``2026-01-02T03:04:05.678Z``),
the form Segment's own APIs emit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

# How far after its receipt an event's time may lie before it is taken for a wrong clock and
# replaced by the receive time: room for servers whose clocks differ a little, no more.
FUTURE_TOLERANCE = timedelta(minutes=5)


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


# The default of components built without a clock (tools, tests of other things).
SYSTEM_CLOCK = SystemClock()


def epoch_seconds(clock: Clock) -> Callable[[], float]:
    """The clock as seconds since the epoch, for components that count in them."""
    return lambda: clock.now().timestamp()


def epoch_ms(clock: Clock) -> int:
    """The clock's time in milliseconds since the epoch."""
    return int(clock.now().timestamp() * 1000)


def format_ts(moment: datetime) -> str:
    """``2026-01-02T03:04:05.678Z`` (UTC, milliseconds)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_ts(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 timestamp as an aware UTC datetime; None when absent or
    unreadable, or when it has no UTC equivalent (``0001-01-01T00:00:00+01:00``).

    A timestamp without a zone is read as UTC, as Segment does.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is UTC:  # a ``Z`` or ``+00:00``: by far the most common
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def event_time(timestamp: datetime | None, sent: datetime | None, received: datetime) -> datetime:
    """When an event happened, on the server's clock (Segment's ``timestamp``).

    ``receivedAt - (sentAt - timestamp)`` when the client sent both, else its timestamp as is;
    the receive time when it sent none, when the skew arithmetic leaves the calendar (a
    ``sentAt`` of 9999-12-31), or when the result lies more than FUTURE_TOLERANCE after the
    receipt (an event cannot happen after it arrived).
    """
    if timestamp is None:
        return received
    moment = timestamp
    if sent is not None:
        try:
            moment = received - (sent - timestamp)
        except OverflowError:
            moment = timestamp
    try:
        future = moment > received + FUTURE_TOLERANCE
    except OverflowError:  # received is within FUTURE_TOLERANCE of year 9999's end
        future = False
    return received if future else moment


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` (what ``--since`` takes) as a timedelta;
    ValueError naming the expected form for anything else."""
    value = text.strip().lower()
    unit = _DURATION_UNITS.get(value[-1:]) if value else None
    number = value[:-1]
    if unit is None or not number.isdigit() or len(number) > 9:
        raise ValueError(f"{text!r}: expected a number and a unit (s, m, h, d, w), e.g. 24h")
    duration = timedelta(seconds=int(number) * unit)
    if not duration or duration > _MAX_DURATION:
        raise ValueError(f"{text!r}: expected more than nothing and at most ten years")
    return duration


def minute_of(moment: datetime) -> datetime:
    """The UTC minute a moment falls in (the ledger's unit)."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)
