"""The publisher and topic administration against a real broker."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from clicktrail.kafka import KafkaPublisher, Record, ensure_topics
from tests.integration.conftest import TopicNames
from tests.support.infra import KafkaCollector, free_port


def test_records_arrive_with_key_headers_and_value(
    kafka_bootstrap: str, topics: TopicNames, kafka: KafkaCollector
) -> None:
    publisher = KafkaPublisher({"bootstrap.servers": kafka_bootstrap})
    ids = [f"pub-{uuid.uuid4()}" for _ in range(50)]
    records = [
        Record(topics.events, f"user-{i % 5}", {"n": i, "messageId": m}, {"event-id": m})
        for i, m in enumerate(ids)
    ]

    deliveries = publisher.publish(records)
    publisher.close()

    assert [d.error for d in deliveries] == [None] * len(records)
    assert all(d.partition is not None and d.offset is not None for d in deliveries)
    got = kafka.wait_for(ids, topic=topics.events)
    for i, m in enumerate(ids):
        [message] = got[m]
        assert message.key == f"user-{i % 5}"
        assert message.value == {"n": i, "messageId": m}
    # One key, one partition, in order.
    user0 = [got[m][0] for i, m in enumerate(ids) if i % 5 == 0]
    assert len({m.partition for m in user0}) == 1
    assert [m.value["n"] for m in sorted(user0, key=lambda m: m.offset)] == [
        0,
        5,
        10,
        15,
        20,
        25,
        30,
        35,
        40,
        45,
    ]


def test_an_unreachable_broker_fails_every_record_once_the_timeout_passes() -> None:
    publisher = KafkaPublisher(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": "1500"}
    )
    records = [Record("nowhere", "k", {"i": i}) for i in range(3)]

    started = time.monotonic()
    deliveries = publisher.publish(records)
    elapsed = time.monotonic() - started

    assert [d.record for d in deliveries] == records
    assert all("timed out" in (d.error or "").lower() for d in deliveries)
    assert elapsed < 1.5 + 5 + 2


def test_connect_fetches_the_topics_and_publishing_goes_on_with_that_producer(
    kafka_bootstrap: str, topics: TopicNames, kafka: KafkaCollector
) -> None:
    built: list[Producer] = []

    def factory(config: dict[str, Any]) -> Producer:
        built.append(Producer(config))
        return built[-1]

    publisher = KafkaPublisher({"bootstrap.servers": kafka_bootstrap}, producer_factory=factory)

    assert publisher.connect([topics.events, topics.deadletter])
    message_id = f"warm-{uuid.uuid4()}"
    [delivery] = publisher.publish(
        [Record(topics.events, "k", {"m": message_id}, {"event-id": message_id})]
    )
    publisher.close()

    assert delivery.error is None
    assert len(built) == 1
    kafka.wait_for([message_id], topic=topics.events)


def test_connect_to_an_unreachable_broker_gives_up_and_says_so() -> None:
    publisher = KafkaPublisher({"bootstrap.servers": f"127.0.0.1:{free_port()}"})

    started = time.monotonic()
    assert not publisher.connect(["nowhere"], timeout=1.0)
    assert time.monotonic() - started < 5


def test_ensure_topics_creates_missing_ones_with_partitions(kafka_bootstrap: str) -> None:
    name = f"ct-ensure-{uuid.uuid4().hex[:8]}"
    config = {"bootstrap.servers": kafka_bootstrap}
    try:
        assert ensure_topics(config, [name], partitions=4) == [name]
        assert ensure_topics(config, [name], partitions=4) == []
        metadata = AdminClient(config).list_topics(name, timeout=10)
        assert len(metadata.topics[name].partitions) == 4
    finally:
        AdminClient(config).delete_topics([name])
