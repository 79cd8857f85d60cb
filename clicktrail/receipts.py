"""Receipts: what became of one event, by its messageId (``GET /v1/events/<messageId>``,
``clicktrail events show``).

A few index lookups, never a scan of Kafka: the history sink keeps each published event's
partition and offset in ``event_history`` and each dead letter in ``dead_letters``; an erasure
leaves only the ids of what it removed in ``erased_events``. An event in none of them was either
delivered to Kafka and not yet written by the sink (the workers' deduplication ids say so), or
is still queued, or was never received: the receipt then gives the queue's depth.

One receipt per request that carried the messageId (a client may resend an event on another
day): each says when and by which source it was received, and what it became. Nothing of an
erased user's event is shown beyond that it was erased and when.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from clicktrail.clock import Clock, epoch_seconds, format_ts
from clicktrail.config import Settings
from clicktrail.db import Database

PUBLISHED = "published"
DEAD_LETTERED = "dead_lettered"
ERASED = "erased"
# Kafka has it (the workers noted its delivery) but the history sink has not written it yet.
DELIVERED = "delivered"
NOT_FOUND = "not_found"


class DeliveredIds(Protocol):
    """``clicktrail.delivery.SeenIds``: the ids of each source delivered to Kafka lately."""

    window_seconds: int

    def seen(self, ids: Mapping[str, list[str]]) -> dict[str, set[str]]: ...


@dataclass
class Copy:
    """What became of the event one request carried (one per day it was received)."""

    day: date
    received_at: datetime
    source_id: str
    type: str | None = None
    event: str | None = None
    published: dict[str, Any] | None = None
    dead_lettered: dict[str, Any] | None = None
    erased_at: datetime | None = None

    @property
    def status(self) -> str:
        if self.erased_at is not None:
            return ERASED
        return PUBLISHED if self.published is not None else DEAD_LETTERED

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": self.status,
            "receivedAt": format_ts(self.received_at),
            "sourceId": self.source_id,
        }
        if self.erased_at is not None:  # nothing else of an erased user's event
            body["erasedAt"] = format_ts(self.erased_at)
            return body
        body.update(
            {"type": self.type, "event": self.event, "inHistory": self.published is not None}
        )
        if self.published is not None:
            body["published"] = self.published
        if self.dead_lettered is not None:
            body["deadLettered"] = self.dead_lettered
        return body


@dataclass
class Receipt:
    message_id: str
    copies: list[Copy] = field(default_factory=list)
    # When no copy is in Postgres: the sources whose deliveries to Kafka include it, and the
    # messages waiting in the queue (None: unknown).
    delivered_by: list[str] = field(default_factory=list)
    queue_depth: int | None = None
    dedupe_window_seconds: int = 0

    @property
    def status(self) -> str:
        if self.copies:
            return self.copies[-1].status
        return DELIVERED if self.delivered_by else NOT_FOUND

    @property
    def found(self) -> bool:
        return self.status != NOT_FOUND

    def explanation(self) -> str:
        status = self.status
        if status == PUBLISHED:
            return "published to Kafka and written to the history"
        if status == DEAD_LETTERED:
            letter = self.copies[-1].dead_lettered or {}
            return f"dead-lettered as {letter.get('reason')}: not published"
        if status == ERASED:
            return "erased with its user's data: only its id and times are kept"
        if status == DELIVERED:
            return "published to Kafka; the history sink has not written it yet"
        return (
            "no record of this event yet: it may still be queued for the workers, or it was"
            " never received (or longer ago than the history keeps)"
        )

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messageId": self.message_id,
            "status": self.status,
            "explanation": self.explanation(),
            "receipts": [copy.to_json() for copy in self.copies],
        }
        if not self.copies:
            if self.delivered_by:
                body["deliveredBy"] = self.delivered_by
            body["queue"] = {"depth": self.queue_depth}
            body["dedupeWindowSeconds"] = self.dedupe_window_seconds
        return body


class Receipts:
    def __init__(
        self,
        db: Database,
        topic_events: str,
        topic_deadletter: str,
        source_ids: Callable[[], list[str]],
        seen: DeliveredIds | None = None,
        queue_depth: Callable[[], int] | None = None,
    ) -> None:
        self._db = db
        self._topics = (topic_events, topic_deadletter)
        self._source_ids = source_ids
        self._seen = seen
        self._queue_depth = queue_depth

    def find(self, message_id: str, source_id: str | None = None) -> Receipt:
        """What became of ``message_id`` (only ``source_id``'s, when given). Raises
        DependencyUnavailable when Postgres (or, for an event it does not hold, Redis) is
        away."""
        copies: dict[date, Copy] = {}
        args = {"id": message_id, "source": source_id}
        with self._db.connection() as conn:
            for day, received, source, kind, name, schema, partition, offset, at in conn.execute(
                "SELECT day, received_at, source_id, type, event, schema, kafka_partition,"
                " kafka_offset, published_at FROM event_history WHERE message_id = %(id)s"
                " AND (%(source)s::text IS NULL OR source_id = %(source)s)",
                args,
            ):
                copy = copies.setdefault(day, Copy(day, received, source, kind, name))
                copy.published = {
                    "topic": self._topics[0],
                    "partition": partition,
                    "offset": offset,
                    "schema": schema,
                    "at": format_ts(at) if at is not None else None,
                }
            for row in conn.execute(
                "SELECT day, received_at, source_id, type, event, reason, schema, errors,"
                " failed_at, kafka_partition, kafka_offset FROM dead_letters"
                " WHERE message_id = %(id)s"
                " AND (%(source)s::text IS NULL OR source_id = %(source)s)",
                args,
            ):
                day, received, source, kind, name, reason, schema, errors, failed, part, off = row
                copy = copies.setdefault(day, Copy(day, received, source, kind, name))
                copy.dead_lettered = {
                    "topic": self._topics[1],
                    "partition": part,
                    "offset": off,
                    "reason": reason,
                    "schema": schema,
                    "errors": errors,
                    "at": format_ts(failed) if failed is not None else None,
                }
            for day, received, source, erased_at in conn.execute(
                "SELECT day, received_at, source_id, erased_at FROM erased_events"
                " WHERE message_id = %(id)s"
                " AND (%(source)s::text IS NULL OR source_id = %(source)s)",
                args,
            ):
                copy = copies.setdefault(day, Copy(day, received, source))
                copy.erased_at = erased_at
        receipt = Receipt(message_id, sorted(copies.values(), key=lambda c: c.received_at))
        if not receipt.copies:
            self._look_further(receipt, source_id)
        return receipt

    def _look_further(self, receipt: Receipt, source_id: str | None) -> None:
        """For an event Postgres does not hold: whether Kafka has it, and the queue's depth."""
        if self._seen is not None and self._seen.window_seconds > 0:
            sources = [source_id] if source_id is not None else self._source_ids()
            found = self._seen.seen({source: [receipt.message_id] for source in sources})
            receipt.delivered_by = sorted(s for s, ids in found.items() if ids)
            receipt.dedupe_window_seconds = self._seen.window_seconds
        if self._queue_depth is not None:
            receipt.queue_depth = self._queue_depth()


def build_receipts(
    settings: Settings, db: Database, source_ids: Callable[[], list[str]], clock: Clock
) -> Receipts:
    """Receipts over the configured topics, the workers' deduplication ids and the queue."""
    from clicktrail.delivery import SeenIds
    from clicktrail.queue import QUEUE
    from clicktrail.redisconn import is_redis_url, pipeline_redis, queue_redis

    depth = None
    if is_redis_url(settings.celery_broker_url):
        broker = queue_redis(settings, timeout=2)
        depth = lambda: int(broker.llen(QUEUE))  # noqa: E731
    return Receipts(
        db,
        settings.topic_events,
        settings.topic_deadletter,
        source_ids,
        SeenIds(
            pipeline_redis(settings, timeout=2),
            settings.dedupe_window_seconds,
            epoch_seconds(clock),
        ),
        depth,
    )
