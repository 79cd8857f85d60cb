"""Consumers that know nothing of Clicktrail read what it writes to the events topic: with a
registry, confluent-kafka's own ``JSONDeserializer`` (the schema fetched by the id in each
record, the value validated against it); without one, plain JSON, as a Kafka Connect
``JsonConverter`` or a ksqlDB ``VALUE_FORMAT='JSON'`` stream reads it."""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.catalogue import copy_catalogue
from tests.support.events import every_call
from tests.support.infra import KafkaCollector, Message
from tests.support.registry_server import registry_under_test
from tests.support.schema_stack import SchemaStack, schema_stack


@pytest.fixture(scope="module", params=["files", "registry"])
def stack(
    request: pytest.FixtureRequest,
    stack_env: dict[str, str],
    run_id: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SchemaStack]:
    catalogue = copy_catalogue(tmp_path_factory.mktemp(f"consumers-{request.param}") / "schemas")
    name = f"consumers-{request.param}-{run_id}"
    if request.param == "files":
        with schema_stack(stack_env, logs_dir, name, catalogue, None) as files:
            yield files
        return
    with (
        registry_under_test(f"ct-consumers-{run_id}") as registry,
        schema_stack(stack_env, logs_dir, name, catalogue, registry) as registered,
    ):
        yield registered


def send_every_call(
    stack: SchemaStack, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> list[tuple[dict[str, Any], Message]]:
    calls = every_call(f"consumer-{uuid.uuid4().hex[:8]}")
    for call in calls:
        call["context"] = {"library": {"name": "consumer-test", "version": "1"}, "custom": {"k": 1}}
    response = requests.post(
        f"{stack.api}/v1/batch", json={"batch": calls}, auth=(source.write_key, ""), timeout=10
    )
    assert response.status_code == 200, response.text
    found = kafka.wait_for([c["messageId"] for c in calls], topic=topics.events)
    return [(call, found[call["messageId"]][0]) for call in calls]


@pytest.mark.parametrize("stack", ["registry"], indirect=True)
def test_the_json_deserializer_reads_every_call_with_the_registry_schema(
    stack: SchemaStack, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    assert stack.registry is not None
    client = SchemaRegistryClient({"url": stack.registry.url})
    deserializer = JSONDeserializer(None, schema_registry_client=client)
    context = SerializationContext(topics.events, MessageField.VALUE)

    for call, record in send_every_call(stack, kafka, source, topics):
        assert record.raw is not None
        event = deserializer(record.raw, context)  # validates it against the writer's schema

        assert event["messageId"] == call["messageId"]
        assert event["type"] == call["type"]
        assert event["context"]["custom"] == {"k": 1}  # what no schema names passes through
        assert event["context"]["session"]["id"]
        schema = json.loads(client.get_schema(record.schema_id).schema_str)
        assert schema["self"]["version"] in record.headers["schema"]
        assert record.key == (call.get("userId") or call.get("anonymousId"))


@pytest.mark.parametrize("stack", ["registry"], indirect=True)
def test_the_json_deserializer_refuses_a_value_its_schema_refuses(
    stack: SchemaStack, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    """The deserializer does check values against the schema fetched by id: so the records
    above were valid against what the registry holds."""
    assert stack.registry is not None
    deserializer = JSONDeserializer(
        None, schema_registry_client=SchemaRegistryClient({"url": stack.registry.url})
    )
    [(_, viewed)] = [
        (call, record)
        for call, record in send_every_call(stack, kafka, source, topics)
        if call.get("event") == "Product Viewed"
    ]
    assert viewed.raw is not None
    assert viewed.schema_id is not None
    tampered = json.loads(viewed.raw[5:])
    tampered["properties"]["price"] = "free"
    forged = b"\x00" + struct.pack(">I", viewed.schema_id) + json.dumps(tampered).encode()

    with pytest.raises(SerializationError):
        deserializer(forged, SerializationContext(topics.events, MessageField.VALUE))


@pytest.mark.parametrize("stack", ["files"], indirect=True)
def test_without_a_registry_values_are_plain_json(
    stack: SchemaStack, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    for call, record in send_every_call(stack, kafka, source, topics):
        assert record.raw is not None
        event = json.loads(record.raw)  # no magic byte, no schema id: JSON from the first byte

        assert record.raw[:1] == b"{"
        assert event == record.value
        assert event["messageId"] == call["messageId"]
        assert event["context"]["session"]["eventIndex"] >= 1
        assert record.headers["event-type"] == call["type"]
