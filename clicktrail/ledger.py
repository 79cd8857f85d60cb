"""The ledger: per source and minute of ``receivedAt``, what became of the events the API
accepted, counted where each thing happens and in round-trips that happen anyway.

- ``accepted``: the API, in the MULTI that queues the request (``clicktrail.web.enqueue``): a
  request acknowledged is counted exactly once, a request refused not at all.
- ``published`` and ``dead_lettered``: the workers, from Kafka's delivery reports; ``dropped``
  (events the deduplication skipped as delivered already) and ``erased`` (events of users
  erased since they were received, never published), on a message's first delivery only (on a
  redelivery after a worker died, what the deduplication skips is the pipeline's own copies).
  All in the round-trip that notes the delivered ids for deduplication
  (``clicktrail.delivery.SeenIds``), best effort: a failure there never fails a task whose
  records Kafka has (``clicktrail_ledger_count_failures_total``).
- ``stored``, ``duplicates``, ``copies`` and ``erased``: the history sink, in Postgres (the
  ``ledger`` table), in the transaction that writes the rows.

The Redis counts are one hash per minute, ``ct:ledger:<YYYY-MM-DDTHH:MM>`` (UTC), with a field
``<stage>:<source id>`` per stage and source, in the queue's Redis when the broker is Redis (so
that the API's count is part of its enqueue) and at REDIS_URL otherwise; each expires
LEDGER_RETENTION_HOURS after its last count, and the purge trims the Postgres rows as old.

The books (``Books``) put both sides together. A minute balances when

    accepted = stored + duplicates + dropped + erased

(``copies`` are outside: more records of events counted already). Once a minute is settled
(LEDGER_SETTLE_SECONDS after its end: the pipeline's normal lag) it must balance; where it does
not, ``published + dead_lettered`` says where the missing events stopped: short of the accepted
(less what the workers dropped or erased), they never reached Kafka (the queue, the workers);
otherwise Kafka has them and the sink has not stored them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis

from clicktrail.clock import Clock, minute_of, parse_ts
from clicktrail.config import Settings
from clicktrail.metrics import (
    LEDGER_COUNT_FAILURES,
    LEDGER_WATCH_HOURS,
    LedgerGauges,
    LedgerReading,
)
from clicktrail.redisconn import is_redis_url, pipeline_redis, queue_redis
from clicktrail.telemetry import dependency_span

log = logging.getLogger(__name__)

ACCEPTED, PUBLISHED, DEAD_LETTERED, DROPPED, ERASED = (
    "accepted",
    "published",
    "dead_lettered",
    "dropped",
    "erased",
)
# What the API and the workers count in Redis (the sink counts in Postgres).
# The sink's columns are clicktrail.history.LEDGER_COLUMNS.
REDIS_STAGES = (ACCEPTED, PUBLISHED, DEAD_LETTERED, DROPPED, ERASED)

LEDGER_KEY = "ct:ledger:{minute}"
_LABEL = "%Y-%m-%dT%H:%M"
_MINUTE = timedelta(minutes=1)
# HGETALLs per round-trip when the books are read.
_READ_CHUNK = 500


def minute_label(received_at: object) -> str | None:
    """The minute (``2026-01-02T03:04``, UTC) of a ``receivedAt``; None when it has none.

    The API writes every receivedAt as ``2026-01-02T03:04:05.678Z``, whose minute is its first
    16 characters; anything else is parsed."""
    if (
        isinstance(received_at, str)
        and len(received_at) == 24
        and received_at[10] == "T"
        and received_at[23] == "Z"
        and received_at[:4].isdigit()
    ):
        return received_at[:16]
    moment = parse_ts(received_at)
    return None if moment is None else label_of(moment)


def label_of(moment: datetime) -> str:
    """The minute a moment falls in, as the ledger's keys name it."""
    return minute_of(moment).strftime(_LABEL)


def minute_at(label: str) -> datetime:
    return datetime.strptime(label, _LABEL).replace(tzinfo=UTC)


def received_minutes(events: Iterable[Any]) -> tuple[tuple[str, int], ...]:
    """How many of these events were received in each minute (an API request's events share
    one receivedAt: one minute, parsed once). A messageId a request repeats counts once: the
    history stores it once, and takes the repeat for a copy."""
    distinct = {(e.get("receivedAt"), e.get("messageId")) for e in events if isinstance(e, dict)}
    by_time = Counter(received_at for received_at, _ in distinct)
    minutes: Counter[str] = Counter()
    for received_at, count in by_time.items():
        label = minute_label(received_at)
        if label is not None:
            minutes[label] += count
    return tuple(minutes.items())


def ledger_field(stage: str, source_id: str) -> str:
    return f"{stage}:{source_id}"


class Tally:
    """Counts on their way to Redis: by minute and ``<stage>:<source>`` field."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def add(self, stage: str, source_id: str, received_at: object, count: int = 1) -> None:
        label = minute_label(received_at)
        if label is not None and count:
            self.counts[label, ledger_field(stage, source_id)] += count

    def add_minutes(self, stage: str, source_id: str, minutes: Iterable[tuple[str, int]]) -> None:
        for label, count in minutes:
            if count:
                self.counts[label, ledger_field(stage, source_id)] += count

    def of(self, stage: str, source_id: str) -> int:
        """How many this tally holds of one stage and source (every minute)."""
        wanted = ledger_field(stage, source_id)
        return sum(n for (_, name), n in self.counts.items() if name == wanted)


class LedgerCounter:
    """Adds tallies to the ledger's Redis hashes: into a round-trip of the caller's
    (``queue``, which is how the API counts inside its enqueue and the workers beside their
    deduplication note), or in one of its own (``note``)."""

    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.client = client
        self._retention = retention_seconds

    def queue(self, pipe: Any, tally: Tally) -> None:
        """HINCRBY each count, then EXPIRE each minute's hash, in ``pipe`` (a redis-py pipeline
        of this counter's client)."""
        minutes: set[str] = set()
        for (label, name), count in tally.counts.items():
            if count:
                key = LEDGER_KEY.format(minute=label)
                pipe.hincrby(key, name, count)
                minutes.add(key)
        for key in sorted(minutes):
            pipe.expire(key, self._retention)

    def note(self, tally: Tally) -> bool:
        """Add a tally in a round-trip of its own. Best effort, never raises: False (logged and
        counted in clicktrail_ledger_count_failures_total) when Redis did not take it."""
        if not tally:
            return True
        pipe = self.client.pipeline(transaction=False)
        self.queue(pipe, tally)
        try:
            with dependency_span("redis ledger.note", "redis", "HINCRBY", len(pipe)):
                pipe.execute()
        except redis.RedisError as exc:
            counts_lost(exc)
            return False
        return True


def counts_lost(exc: BaseException) -> None:
    """A tally Redis did not take: its minutes will not balance."""
    LEDGER_COUNT_FAILURES.inc()
    log.warning("ledger counts lost, their minutes will not balance: %s", exc)


def ledger_redis(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    """Where the ledger's counts live: the queue's Redis when the broker is Redis (the API counts
    in the transaction that queues), REDIS_URL otherwise."""
    if is_redis_url(settings.celery_broker_url):
        return queue_redis(settings, timeout=timeout)
    return pipeline_redis(settings, timeout=timeout)


def shares_ledger_redis(settings: Settings) -> bool:
    """Whether the ledger lives in the Redis at REDIS_URL (its counts can then share the
    workers' deduplication round-trip)."""
    return not is_redis_url(settings.celery_broker_url) or (
        settings.celery_broker_url == settings.redis_url
    )


@dataclass
class MinuteBooks:
    """One source's books for one minute of receivedAt."""

    source_id: str
    minute: datetime
    accepted: int = 0
    published: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    erased_by_workers: int = 0
    stored: int = 0
    duplicates: int = 0
    copies: int = 0
    erased_by_sink: int = 0
    settled: bool = False

    @property
    def erased(self) -> int:
        return self.erased_by_workers + self.erased_by_sink

    @property
    def balance(self) -> int:
        """Accepted events not accounted for: positive, missing; negative, counted beyond
        what was accepted."""
        return self.accepted - (self.stored + self.duplicates + self.dropped + self.erased)

    @property
    def unbalanced(self) -> bool:
        """Settled, and not balancing."""
        return self.settled and self.balance != 0

    @property
    def unpublished(self) -> int:
        """Accepted events that neither reached Kafka nor were dropped by the workers."""
        return self.accepted - (
            self.published + self.dead_lettered + self.dropped + self.erased_by_workers
        )

    @property
    def stopped(self) -> str | None:
        """Where the missing events stopped: ``queue`` (they never reached Kafka: still queued,
        or lost on the way through the queue and the workers) or ``sink`` (Kafka has them, the
        sink has not stored them); None when nothing is missing."""
        if self.balance <= 0:
            return None
        return "queue" if self.unpublished > 0 else "sink"

    def add(self, other: MinuteBooks) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, Any]:
        return {
            "sourceId": self.source_id,
            "minute": self.minute.strftime(_LABEL) + "Z",
            "accepted": self.accepted,
            "published": self.published,
            "deadLettered": self.dead_lettered,
            "dropped": self.dropped,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "copies": self.copies,
            "erased": self.erased,
            "erasedByWorkers": self.erased_by_workers,
            "erasedBySink": self.erased_by_sink,
            "balance": self.balance,
            "settled": self.settled,
            "stopped": self.stopped,
        }


_COUNTS = (
    "accepted", "published", "dead_lettered", "dropped", "erased_by_workers", "stored",
    "duplicates", "copies", "erased_by_sink",
)  # fmt: skip
_FROM_REDIS = {
    ACCEPTED: "accepted",
    PUBLISHED: "published",
    DEAD_LETTERED: "dead_lettered",
    DROPPED: "dropped",
    ERASED: "erased_by_workers",
}


Connect = Callable[[], AbstractContextManager[psycopg.Connection]]


class Books:
    """Reads both sides of the ledger for a time range: the Redis counts (one HGETALL per minute,
    pipelined) and the sink's rows in Postgres (one query)."""

    def __init__(
        self, client: redis.Redis, connect: Connect, settle_seconds: int, clock: Clock
    ) -> None:
        self._client = client
        self._connect = connect
        self._settle = timedelta(seconds=settle_seconds)
        self._clock = clock

    def settled_until(self) -> datetime:
        """The first minute not settled yet: every minute before it ended at least the settle
        time ago."""
        return minute_of(self._clock.now() - self._settle)

    def read(
        self, since: datetime, until: datetime | None = None, source_id: str | None = None
    ) -> list[MinuteBooks]:
        """Every minute from ``since``'s to ``until``'s (now's) that counted anything, by source
        then minute; only ``source_id``'s when given."""
        first, last = minute_of(since), minute_of(until or self._clock.now())
        books: dict[tuple[str, datetime], MinuteBooks] = {}

        def entry(source: str, minute: datetime) -> MinuteBooks:
            found = books.get((source, minute))
            if found is None:
                found = books[source, minute] = MinuteBooks(source, minute)
            return found

        for label, counts in self._redis_counts(first, last, source_id):
            minute = minute_at(label)
            for name, value in counts.items():
                stage, _, source = name.partition(":")
                attribute = _FROM_REDIS.get(stage)
                if attribute is not None and value:
                    row = entry(source, minute)
                    setattr(row, attribute, getattr(row, attribute) + int(value))
        for source, minute, stored, duplicates, copies, erased in self._sink_rows(
            first, last, source_id
        ):
            row = entry(source, minute.astimezone(UTC))
            row.stored += stored
            row.duplicates += duplicates
            row.copies += copies
            row.erased_by_sink += erased
        settled_until = self.settled_until()
        for row in books.values():
            row.settled = row.minute < settled_until
        return [books[key] for key in sorted(books)]

    def _redis_counts(
        self, first: datetime, last: datetime, source_id: str | None
    ) -> Iterator[tuple[str, Mapping[str, str]]]:
        labels = []
        minute = first
        while minute <= last:
            labels.append(minute.strftime(_LABEL))
            minute += _MINUTE
        fields = [ledger_field(stage, source_id) for stage in REDIS_STAGES] if source_id else []
        for start in range(0, len(labels), _READ_CHUNK):
            chunk = labels[start : start + _READ_CHUNK]
            pipe = self._client.pipeline(transaction=False)
            for label in chunk:
                key = LEDGER_KEY.format(minute=label)
                if fields:
                    pipe.hmget(key, fields)
                else:
                    pipe.hgetall(key)
            with dependency_span("redis ledger.read", "redis", "HGETALL", len(chunk)):
                replies = pipe.execute()
            for label, reply in zip(chunk, replies, strict=True):
                if fields:
                    counts = {f: v for f, v in zip(fields, reply, strict=True) if v is not None}
                else:
                    counts = reply
                if counts:
                    yield label, counts

    def _sink_rows(
        self, first: datetime, last: datetime, source_id: str | None
    ) -> list[tuple[str, datetime, int, int, int, int]]:
        query = (
            "SELECT source_id, minute, stored, duplicates, copies, erased FROM ledger"
            " WHERE minute >= %s AND minute <= %s"
        )
        params: tuple[Any, ...] = (first, last)
        if source_id is not None:
            query += " AND source_id = %s"
            params = (first, last, source_id)
        with (
            dependency_span("postgres ledger.read", "postgresql", "SELECT", 1),
            self._connect() as conn,
        ):
            return [
                (str(s), m, int(a), int(b), int(c), int(d))
                for s, m, a, b, c, d in conn.execute(query, params).fetchall()
            ]


@dataclass
class SourceBooks:
    """One source's books over a range: its totals, and what did not balance."""

    source_id: str
    total: MinuteBooks
    settled_minutes: int = 0
    unbalanced_minutes: int = 0
    missing: int = 0
    extra: int = 0
    minutes: list[MinuteBooks] = field(default_factory=list)


def by_source(minutes: Sequence[MinuteBooks]) -> dict[str, SourceBooks]:
    """Each source's totals over these minutes, and its unbalanced settled minutes: how many,
    the events missing from them and those counted beyond what was accepted."""
    sources: dict[str, SourceBooks] = {}
    for row in minutes:
        books = sources.get(row.source_id)
        if books is None:
            books = sources[row.source_id] = SourceBooks(
                row.source_id, MinuteBooks(row.source_id, row.minute)
            )
        books.total.add(row)
        books.minutes.append(row)
        if row.settled:
            books.settled_minutes += 1
        if row.unbalanced:
            books.unbalanced_minutes += 1
            books.missing += max(0, row.balance)
            books.extra += max(0, -row.balance)
    return sources


# The columns the books show (and the latest settled minute's gauge is labelled with).
COLUMNS = (
    "accepted", "published", "dead_lettered", "dropped", "stored", "duplicates", "copies", "erased",
)  # fmt: skip


def readings(books: Books, watched: timedelta) -> list[LedgerReading]:
    """The ledger's gauges: each source's unbalanced minutes among those settled in the last
    ``watched``, and the books of the latest settled minute."""
    latest = books.settled_until() - _MINUTE
    found = []
    for source_id, source in by_source(books.read(latest - watched + _MINUTE, latest)).items():
        last = source.minutes[-1] if source.minutes[-1].minute == latest else None
        found.append(
            LedgerReading(
                source_id,
                source.unbalanced_minutes,
                source.missing,
                source.extra,
                {column: getattr(last, column) if last else 0 for column in COLUMNS},
            )
        )
    return found


def watched_window(settings: Settings) -> timedelta:
    """How far back the gauges look: a day, or the retention when shorter."""
    return timedelta(hours=min(LEDGER_WATCH_HOURS, settings.ledger_retention_hours))


def gauges(settings: Settings, clock: Clock) -> LedgerGauges:
    """The worker side's ledger gauges: the books read at most once a minute, each time with a
    Postgres connection of their own (no pool in a process that forks its pool children)."""
    books = Books(
        ledger_redis(settings, timeout=2),
        lambda: psycopg.connect(settings.database_url, autocommit=True, connect_timeout=2),
        settings.ledger_settle_seconds,
        clock,
    )
    window = watched_window(settings)
    return LedgerGauges(lambda: readings(books, window))


_HEADER = ("", "source", "minute (UTC)", *COLUMNS, "balance")


def _balance_text(row: MinuteBooks) -> str:
    balance = row.balance
    if not row.settled:
        if balance > 0:
            return f"settling ({balance} to come)"
        return "settling" if balance == 0 else f"settling ({-balance} extra)"
    if balance == 0:
        return "0"
    if balance < 0:
        return f"{-balance} extra"
    if row.stopped == "queue":
        return f"{balance} missing: not in Kafka (queue, workers)"
    return f"{balance} missing: in Kafka, not stored (sink)"


def render(minutes: Sequence[MinuteBooks], names: Mapping[str, str], since: datetime) -> str:
    """The books as ``clicktrail ledger`` prints them: a line per source and minute, ``!`` on
    each settled minute that does not balance, a total, and what did not balance."""
    if not minutes:
        return f"nothing counted since {since:%Y-%m-%d %H:%M} UTC"
    ordered = sorted(minutes, key=lambda m: (names.get(m.source_id, m.source_id), m.minute))
    rows: list[tuple[str, ...]] = [_HEADER]
    for row in ordered:
        rows.append(
            (
                "!" if row.unbalanced else "",
                names.get(row.source_id, row.source_id),
                f"{row.minute:%Y-%m-%d %H:%M}",
                *(str(getattr(row, column)) for column in COLUMNS),
                _balance_text(row),
            )
        )
    total = MinuteBooks("", since)
    for row in ordered:
        total.add(row)
    sources = by_source(ordered).values()
    settled = sum(s.settled_minutes for s in sources)
    unbalanced = sum(s.unbalanced_minutes for s in sources)
    missing, extra = sum(s.missing for s in sources), sum(s.extra for s in sources)
    off = ", ".join(
        p for p in (f"{missing} missing" if missing else "", f"{extra} extra" if extra else "") if p
    )
    rows.append(("", "total", "", *(str(getattr(total, c)) for c in COLUMNS), off or "0"))
    numeric = range(3, 3 + len(COLUMNS))
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = [
        "  ".join(
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    settling = len(ordered) - settled
    later = f", {settling} still settling" if settling else ""
    if unbalanced:
        lines.append(f"{unbalanced} of {settled} settled minute(s) do not balance: {off}{later}")
    else:
        lines.append(f"every settled minute balances ({settled} settled{later})")
    return "\n".join(lines)


def to_json(
    minutes: Sequence[MinuteBooks], names: Mapping[str, str], since: datetime, until: datetime
) -> dict[str, Any]:
    """The books as ``clicktrail ledger --json`` prints them."""
    sources = by_source(minutes).values()
    return {
        "since": f"{minute_of(since):%Y-%m-%dT%H:%M}Z",
        "until": f"{minute_of(until):%Y-%m-%dT%H:%M}Z",
        "minutes": [
            {"source": names.get(m.source_id, m.source_id), **m.to_json()} for m in minutes
        ],
        "unbalancedMinutes": sum(s.unbalanced_minutes for s in sources),
        "missing": sum(s.missing for s in sources),
        "extra": sum(s.extra for s in sources),
    }
