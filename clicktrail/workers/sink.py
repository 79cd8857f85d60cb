"""The history sink (``clicktrail sink``): the events and dead-letter topics -> Postgres.

Reads both topics in a consumer group, and for each batch, in one transaction, writes the
history rows (with where each record was in Kafka) and the dead letters, applies the profile
changes of the events written for the first time and adds the batch to the ledger; only after
the commit are the offsets committed. Killed at any point, it re-reads what it had not
committed and writes nothing twice. When Postgres is away it rewinds to the batch and tries
again with backoff, losing and duplicating nothing.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from clicktrail.clock import SYSTEM_CLOCK, Clock, SystemClock
from clicktrail.config import Settings
from clicktrail.db import REFUSED_DATA, Database, without_nul
from clicktrail.errors import DependencyUnavailable
from clicktrail.history import DeadLetterRow, HistoryRow, HistoryStore, KafkaPosition, Row
from clicktrail.kafka import decode_value, parse_headers
from clicktrail.logs import configure_logging
from clicktrail.metrics import SINK_LAG, SINK_RETRIES, SINK_ROWS_WRITTEN, serve
from clicktrail.profiles import ProfileWriter
from clicktrail.telemetry import (
    dependency_span,
    request_spans,
    setup_sentry,
    setup_tracing,
    shutdown_tracing,
    tracing_enabled,
)

log = logging.getLogger("clicktrail.sink")

BACKOFF_START, BACKOFF_MAX = 0.5, 30.0
SPAN_NAME = "history sink"


@dataclass(frozen=True)
class BatchResult:
    read: int
    written: int
    profiles: int


def consumer_config(settings: Settings) -> dict[str, Any]:
    return {
        **settings.kafka,
        "group.id": settings.sink_group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "logger": logging.getLogger("librdkafka"),
    }


class HistorySink:
    def __init__(
        self,
        consumer: Consumer,
        db: Database,
        topic: str,
        batch_size: int,
        clock: Clock = SYSTEM_CLOCK,
        deadletter_topic: str | None = None,
    ) -> None:
        self._consumer = consumer
        self._db = db
        self._topic = topic
        self._deadletter_topic = deadletter_topic
        self._batch_size = batch_size
        self._history = HistoryStore()
        self._profiles = ProfileWriter(clock)

    def run(
        self, stop: threading.Event, on_batch: Callable[[BatchResult], None] | None = None
    ) -> None:
        topics = [self._topic] + ([self._deadletter_topic] if self._deadletter_topic else [])
        self._consumer.subscribe(
            topics,
            on_assign=_log_partitions("assigned"),
            on_revoke=_log_partitions("revoked"),
        )
        delay = BACKOFF_START
        try:
            while not stop.is_set():
                messages = self._consumer.consume(num_messages=self._batch_size, timeout=1.0)
                if not messages:
                    continue
                try:
                    try:
                        result = self.write(messages)
                    except REFUSED_DATA:
                        result = self._write_each(messages)
                except (DependencyUnavailable, psycopg.OperationalError) as exc:
                    SINK_RETRIES.inc()
                    log.warning(
                        "postgres unavailable, retrying the batch in %.1f s: %s", delay, exc
                    )
                    self._rewind(messages)
                    stop.wait(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                delay = BACKOFF_START
                self._commit()
                SINK_ROWS_WRITTEN.inc(result.written)
                self._measure_lag()
                if on_batch is not None:
                    on_batch(result)
        finally:
            self._consumer.close()

    def write(self, messages: list[Message]) -> BatchResult:
        """Write one batch in one transaction; raises when Postgres cannot take it.

        Traced (when spans are recorded): a CONSUMER span per trace the batch's records carry
        (their ``traceparent``, the produce span of the request that wrote them), and the
        Postgres write under the first, linked to the others."""
        traceparents = _traceparents(messages) if tracing_enabled() else []
        with request_spans(SPAN_NAME, traceparents) as spans:
            for span in spans:
                if span.is_recording():
                    span.set_attributes(
                        {
                            "messaging.system": "kafka",
                            "messaging.operation.type": "process",
                            "messaging.destination.name": self._topic,
                            "messaging.batch.message_count": len(messages),
                        }
                    )
            return self._write(messages)

    def _write(self, messages: list[Message]) -> BatchResult:
        rows: list[Row] = []
        events: dict[str, dict[str, Any]] = {}
        for message in messages:
            if message.error():
                log.warning("consumer error: %s", message.error())
                continue
            try:
                value, _ = decode_value(message.value())
            except ValueError:
                log.error(
                    "undecodable record at %s[%s]@%s skipped",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                )
                continue
            if not isinstance(value, dict):
                continue  # a tombstone, or not an event
            if b"\\u0000" in (message.value() or b""):  # only then walk the value
                value = without_nul(value)
            row = self._row(message, value)
            if row is None:
                log.error(
                    "record without receivedAt/messageId/type at %s[%s]@%s skipped",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                )
                continue
            rows.append(row)
            if isinstance(row, HistoryRow):
                events[row.message_id] = value
        if not rows:
            return BatchResult(len(messages), 0, 0)
        with (
            dependency_span("postgres history.write", "postgresql", "INSERT", len(rows)),
            self._db.connection() as conn,
            conn.transaction(),
        ):
            written = self._history.write(conn, rows)
            profiles = self._profiles.apply(conn, [events[m] for m in written.history])
        return BatchResult(
            len(messages), len(written.history) + len(written.dead_letters), profiles
        )

    def _row(self, message: Message, value: dict[str, Any]) -> Row | None:
        headers = parse_headers(message.headers())
        kind, stamp = message.timestamp()
        position = KafkaPosition(
            message.partition(),
            message.offset(),
            None if kind == TIMESTAMP_NOT_AVAILABLE else datetime.fromtimestamp(stamp / 1000, UTC),
        )
        source_id = headers.get("source-id", "")
        if self._deadletter_topic is not None and message.topic() == self._deadletter_topic:
            return DeadLetterRow.from_letter(value, source_id, headers.get("event-id"), position)
        return HistoryRow.from_event(value, source_id, position, headers.get("schema"))

    def _write_each(self, messages: list[Message]) -> BatchResult:
        """A batch Postgres refused as data: write its records one by one, skipping (and
        logging) those it refuses, so one bad record never stops the sink."""
        written = profiles = 0
        for message in messages:
            try:
                result = self.write([message])
            except REFUSED_DATA as exc:
                log.error(
                    "record at %s[%s]@%s refused by postgres, skipped: %s",
                    message.topic(), message.partition(), message.offset(), exc,
                )  # fmt: skip
                continue
            written += result.written
            profiles += result.profiles
        return BatchResult(len(messages), written, profiles)

    def _commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            # After a rebalance another sink owns the partitions and re-reads what is not
            # committed; the rows are already in, so it writes nothing twice.
            log.warning("offset commit failed: %s", exc)

    def _measure_lag(self) -> None:
        """Records between the sink's position and each partition's end (from fetch responses,
        no extra request)."""
        try:
            for position in self._consumer.position(self._consumer.assignment()):
                if position.offset < 0:
                    continue
                _, high = self._consumer.get_watermark_offsets(position, cached=True)
                if high is not None and high >= 0:
                    SINK_LAG.labels(position.topic, str(position.partition)).set(
                        max(0, high - position.offset)
                    )
        except KafkaException as exc:
            log.debug("lag unknown: %s", exc)

    def _rewind(self, messages: list[Message]) -> None:
        """Seek each partition back to the batch's first offset, so the next poll re-reads it."""
        first: dict[tuple[str, int], int] = {}
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if message.error() or topic is None or partition is None or offset is None:
                continue
            first[topic, partition] = min(offset, first.get((topic, partition), offset))
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # no longer ours: its new owner starts from the commit
                log.info("could not rewind %s[%s]: %s", topic, partition, exc)


def _traceparents(messages: list[Message]) -> list[str | None]:
    """The distinct traceparents of a batch's records, in order (a request's records share
    one): one span each."""
    found: dict[str | None, None] = {}
    for message in messages:
        if not message.error():
            found.setdefault(parse_headers(message.headers()).get("traceparent"))
    return list(found)


def _log_partitions(what: str) -> Callable[[Consumer, list[TopicPartition]], None]:
    def log_them(_: Consumer, partitions: list[TopicPartition]) -> None:
        named = sorted((p.topic, p.partition) for p in partitions)
        log.info("partitions %s: %s", what, ", ".join(f"{t}[{n}]" for t, n in named))

    return log_them


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings)
    setup_tracing(settings, "clicktrail-sink")
    setup_sentry(settings, [])
    serve(settings.sink_metrics_port, settings.metrics_host, None)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    db = Database(settings.database_url, name="clicktrail-sink")
    sink = HistorySink(
        Consumer(consumer_config(settings)),
        db,
        settings.topic_events,
        settings.sink_batch_size,
        SystemClock(),
        settings.topic_deadletter,
    )
    log.info(
        "history sink reading %s and %s as %s",
        settings.topic_events,
        settings.topic_deadletter,
        settings.sink_group_id,
    )
    try:
        sink.run(
            stop,
            lambda r: log.info(
                "batch: %d read, %d new, %d profiles", r.read, r.written, r.profiles
            ),
        )
    finally:
        db.close()
        shutdown_tracing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
