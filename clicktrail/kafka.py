"""Kafka output: records, a bounded and drained publisher, and topic administration.

The publisher returns only when every record it was given has a final delivery report, so a
task that returns has nothing left in librdkafka's queue to lose when its process exits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from clicktrail.config import Settings
from clicktrail.metrics import KAFKA_DELIVERY_SECONDS, PUBLISH_FAILURES

log = logging.getLogger(__name__)

# Defaults for every producer; KAFKA_* variables override them (see config.kafka_client_properties).
PRODUCER_DEFAULTS: dict[str, Any] = {
    # Idempotence implies acks=all and keeps per-partition order across internal retries.
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 10,
    "compression.type": "lz4",
    # A message not delivered in 30 s gets a final (failed) report; the task then retries it.
    "message.timeout.ms": 30000,
    # A topic the cluster still does not know after 10 s is reported as unknown
    # (UNKNOWN_TOPIC_OR_PART), not as a timeout indistinguishable from an outage.
    "topic.metadata.propagation.max.ms": 10000,
    # Bound what a process may buffer: produce() raises BufferError beyond it (backpressure).
    "queue.buffering.max.messages": 100000,
    "queue.buffering.max.kbytes": 65536,
    "client.id": "clicktrail",
}


@dataclass(frozen=True)
class Record:
    """One Kafka record to write; JSON-safe so a retried task can carry it."""

    topic: str
    key: str | None
    value: dict[str, Any] | None  # None: a tombstone
    headers: dict[str, str] = field(default_factory=dict)
    # Registry id of the value's schema: the value is then written in the Confluent wire format.
    schema_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "key": self.key,
            "value": self.value,
            "headers": self.headers,
            "schema_id": self.schema_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(
            data["topic"],
            data.get("key"),
            data["value"],
            dict(data.get("headers") or {}),
            data.get("schema_id"),
        )

    def encode_value(self) -> bytes | None:
        """JSON, or with a schema id the Confluent wire format: magic byte 0, the id as 4 bytes
        big-endian, then the JSON (what confluent-kafka's JSONDeserializer reads)."""
        if self.value is None:
            return None
        value = orjson.dumps(self.value)
        if self.schema_id is None:
            return value
        return b"\x00" + self.schema_id.to_bytes(4, "big") + value


@dataclass(frozen=True)
class Delivery:
    """The final report of one record: where it went, or why it did not. ``code`` names
    librdkafka's error; ``permanent``: Kafka will never take this record as it is."""

    record: Record
    error: str | None = None
    partition: int | None = None
    offset: int | None = None
    code: str | None = None
    permanent: bool = False


# Errors that trying again cannot cure: the record itself (its size, its form) or where it
# goes (a topic the cluster does not have after topic.metadata.propagation.max.ms, or one this
# client may not write to). librdkafka retries what is retriable before it reports; it reports
# these at once, or once the topic's metadata has had its time to propagate.
NEVER_ACCEPTED = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
    }
)
# Of those, the ones a smaller record would cure.
TOO_LARGE = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}
)


_TOO_LARGE_NAMES = frozenset(KafkaError(code).name() for code in TOO_LARGE)


def refused_for_size(delivery: Delivery) -> bool:
    """Whether a smaller record would have been taken."""
    return delivery.code in _TOO_LARGE_NAMES


def never_accepted(error: KafkaError) -> bool:
    """Whether Kafka will refuse this record however often it is sent. A fatal error is the
    producer's (it is replaced) and a retriable one passes: both are worth another try."""
    return not error.fatal() and not error.retriable() and error.code() in NEVER_ACCEPTED


def failed(record: Record, error: KafkaError) -> Delivery:
    return Delivery(record, str(error), code=error.name(), permanent=never_accepted(error))


class Publisher(Protocol):
    def publish(self, records: list[Record]) -> list[Delivery]:
        """One delivery per record, in order, once every record has its final report."""

    def close(self) -> None: ...


# Delivery errors that mean the broker no longer accepts this producer's identity or sequence
# (after long outages some brokers fence an idempotent producer instead of bumping its epoch):
# every later record would fail the same way, so the producer is replaced.
_PRODUCER_STATE_ERRORS = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError._FENCED,
    }
)


class KafkaPublisher:
    """Writes records through one idempotent producer per process, waiting for every report.

    A fatal producer error, or a delivery refused for the producer's own state, discards the
    producer; the next publish builds a new one. Build it after fork: a producer never survives
    a fork.
    """

    def __init__(
        self,
        config: dict[str, str],
        producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        self._config: dict[str, Any] = {
            **PRODUCER_DEFAULTS,
            **config,
            "error_cb": self._on_error,
            # librdkafka's own log lines go through our logging (JSON lines), not raw stderr.
            "logger": logging.getLogger("librdkafka"),
        }
        self._factory = producer_factory
        self._producer: Producer | None = None
        self._fatal = False
        # Wait for reports a little longer than librdkafka may hold a message, so that every
        # record reaches a final report: an unreported one could still be delivered after a retry.
        self._drain_timeout = int(self._config["message.timeout.ms"]) / 1000 + 5

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("kafka producer fatal error, rebuilding: %s", error)
            self._fatal = True
        else:
            log.warning("kafka client error: %s", error)

    def _get(self) -> Producer:
        if self._producer is None or self._fatal:
            if self._producer is not None:
                log.warning("replacing the kafka producer")
            self._producer = self._factory(self._config)
            self._fatal = False
        return self._producer

    def connect(self, topics: list[str], timeout: float = 5.0) -> bool:
        """Connect now and fetch the topics' metadata, so that the first publish does not wait
        for the connection, the metadata and the idempotent producer's id; False when Kafka did
        not answer in time (the first publish then connects)."""
        producer = self._get()
        try:
            for topic in topics:
                producer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            log.warning("kafka did not answer at start, the first publish will connect: %s", exc)
            return False
        return True

    def publish(self, records: list[Record]) -> list[Delivery]:
        """Produce every record and wait for its report."""
        producer = self._get()
        reports: dict[int, Delivery] = {}
        started = time.monotonic()

        def reporter(index: int) -> Callable[[KafkaError | None, Any], None]:
            def report(error: KafkaError | None, message: Any) -> None:
                record = records[index]
                if error is None:
                    reports[index] = Delivery(record, None, message.partition(), message.offset())
                else:
                    PUBLISH_FAILURES.inc()
                    reports[index] = failed(record, error)
                    if error.fatal() or error.code() in _PRODUCER_STATE_ERRORS:
                        self._fatal = True

            return report

        deadline = started + self._drain_timeout
        for index, record in enumerate(records):
            refused = self._produce(producer, record, reporter(index), deadline)
            if refused is not None:
                PUBLISH_FAILURES.inc()
                reports[index] = refused
            producer.poll(0)
        producer.flush(max(0.0, deadline - time.monotonic()))
        KAFKA_DELIVERY_SECONDS.observe(time.monotonic() - started)
        return [
            reports.get(index) or Delivery(record, "no delivery report before the timeout")
            for index, record in enumerate(records)
        ]

    def _produce(
        self,
        producer: Producer,
        record: Record,
        on_delivery: Callable[[KafkaError | None, Any], None],
        deadline: float,
    ) -> Delivery | None:
        """Hand one record to librdkafka; the failed delivery if it would not take it (a
        record over message.max.bytes is refused here, never sent)."""
        value = record.encode_value()
        headers: list[tuple[str, str | bytes | None]] = [
            (name, text.encode()) for name, text in record.headers.items()
        ]
        while True:
            try:
                producer.produce(
                    record.topic,
                    value=value,
                    key=None if record.key is None else record.key.encode(),
                    headers=headers,
                    on_delivery=on_delivery,
                )
                return None
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                if time.monotonic() >= deadline:
                    return Delivery(record, "local producer queue full", code="_QUEUE_FULL")
                producer.poll(0.1)
            except KafkaException as exc:
                error = exc.args[0]
                if isinstance(error, KafkaError):
                    return failed(record, error)
                return Delivery(record, str(exc))

    def close(self) -> None:
        """Deliver what is still queued (on worker shutdown)."""
        if self._producer is not None:
            remaining = self._producer.flush(self._drain_timeout)
            if remaining:
                log.error("kafka producer closed with %d undelivered messages", remaining)
            self._producer = None


def admin_client(config: dict[str, str]) -> AdminClient:
    return AdminClient(dict(config))


def ensure_topics(
    config: dict[str, str],
    names: Iterable[str],
    partitions: int,
    replication_factor: int = -1,
    timeout: float = 15.0,
    topic_configs: Mapping[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (with their ``topic_configs``); those created."""
    admin = admin_client(config)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=dict((topic_configs or {}).get(name, {})),
        )
        for name in dict.fromkeys(names)
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def decode_value(raw: bytes | None) -> tuple[Any, int | None]:
    """A consumed value and its schema id: JSON, or JSON in the Confluent wire format."""
    if raw is None:
        return None, None
    if raw[:1] == b"\x00" and len(raw) >= 5:
        return orjson.loads(raw[5:]), int.from_bytes(raw[1:5], "big")
    return orjson.loads(raw), None


def create_pipeline_topics(settings: Settings) -> list[str]:
    """The events, dead-letter and profiles topics, as configured; those created now."""
    return ensure_topics(
        settings.kafka,
        settings.topics,
        settings.topic_partitions,
        settings.topic_replication_factor,
        topic_configs=settings.topic_configs,
    )


def parse_headers(headers: Any) -> dict[str, str]:
    """A consumed record's headers (a list of name, bytes pairs) as a dict of strings."""
    return {
        name: value.decode() if isinstance(value, bytes) else (value or "")
        for name, value in headers or []
    }
