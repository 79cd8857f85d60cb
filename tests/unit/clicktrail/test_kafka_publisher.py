"""The publisher's handling of its producer, with a twin of librdkafka's Producer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from clicktrail.kafka import KafkaPublisher, Record, refused_for_size


class ScriptedProducer:
    """Reports each produced record with the next error of ``errors`` (None: delivered)."""

    def __init__(self, errors: list[KafkaError | None]) -> None:
        self.errors = errors
        self.pending: list[tuple[Callable[..., None], KafkaError | None]] = []

    def produce(self, topic: str, on_delivery: Callable[..., None], **_: Any) -> None:
        self.pending.append((on_delivery, self.errors.pop(0) if self.errors else None))

    def poll(self, _: float) -> int:
        return 0

    def flush(self, _: float = 0) -> int:
        for callback, error in self.pending:
            callback(error, Message())
        self.pending.clear()
        return 0


class Message:
    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError.PRODUCER_FENCED),
        KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER),
        KafkaError(KafkaError._FENCED),
        KafkaError(KafkaError._MSG_TIMED_OUT, fatal=True),
    ],
)
def test_a_producer_the_broker_no_longer_accepts_is_replaced(error: KafkaError) -> None:
    built: list[ScriptedProducer] = []

    def factory(_: dict[str, Any]) -> ScriptedProducer:
        built.append(ScriptedProducer([error] if not built else []))
        return built[-1]

    publisher = KafkaPublisher({"bootstrap.servers": "x"}, producer_factory=factory)  # type: ignore[arg-type]
    record = Record("events", "k", {"a": 1}, {})

    [failed] = publisher.publish([record])
    [delivered] = publisher.publish([record])

    assert failed.error is not None
    assert delivered.error is None
    assert len(built) == 2


def test_a_transient_delivery_failure_keeps_the_producer() -> None:
    built: list[ScriptedProducer] = []

    def factory(_: dict[str, Any]) -> ScriptedProducer:
        built.append(ScriptedProducer([KafkaError(KafkaError._MSG_TIMED_OUT)]))
        return built[-1]

    publisher = KafkaPublisher({"bootstrap.servers": "x"}, producer_factory=factory)  # type: ignore[arg-type]

    publisher.publish([Record("events", "k", {"a": 1}, {})])
    publisher.publish([Record("events", "k", {"a": 1}, {})])

    assert len(built) == 1


class RefusingProducer(ScriptedProducer):
    """librdkafka refusing a record at produce() (a record over message.max.bytes)."""

    def produce(self, topic: str, on_delivery: Callable[..., None], **_: Any) -> None:
        raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large"))


def test_a_record_refused_at_produce_for_its_size_is_reported_as_never_accepted() -> None:
    publisher = KafkaPublisher(
        {"bootstrap.servers": "x"},
        producer_factory=lambda _: RefusingProducer([]),  # type: ignore[arg-type,return-value]
    )

    [delivery] = publisher.publish([Record("events", "k", {"a": 1}, {})])

    assert delivery.permanent
    assert delivery.code == "MSG_SIZE_TOO_LARGE"
    assert refused_for_size(delivery)


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), True),
        (KafkaError(KafkaError.RECORD_LIST_TOO_LARGE), True),
        (KafkaError(KafkaError.INVALID_RECORD), True),
        (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), True),
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), True),
        (KafkaError(KafkaError._UNKNOWN_TOPIC), True),
        # Worth another try: an outage, anything librdkafka calls retriable, a fatal error
        # (the producer is replaced).
        (KafkaError(KafkaError._MSG_TIMED_OUT), False),
        (KafkaError(KafkaError.NOT_ENOUGH_REPLICAS), False),
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, retriable=True), False),
        (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, fatal=True), False),
    ],
)
def test_delivery_errors_are_classified_as_librdkafka_does(
    error: KafkaError, permanent: bool
) -> None:
    publisher = KafkaPublisher(
        {"bootstrap.servers": "x"},
        producer_factory=lambda _: ScriptedProducer([error]),  # type: ignore[arg-type,return-value]
    )

    [delivery] = publisher.publish([Record("events", "k", {"a": 1}, {})])

    assert delivery.error is not None
    assert delivery.permanent is permanent
    assert delivery.code == error.name()
