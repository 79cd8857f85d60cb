"""A catalogue where Product Viewed gained version 1-0-1 (a new optional ``color``): old and new
clients flow side by side through a real worker and broker, with each backend: the files, and a
Confluent-compatible registry (SCHEMA_REGISTRY_URL when set, else one served in the test)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from clicktrail.config import PROJECT_ROOT
from clicktrail.registry import register_catalogue
from clicktrail.schemas import FileSchemaRegistry
from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.catalogue import add_optional_color, copy_catalogue, evolved, require_sku
from tests.support.infra import (
    KafkaCollector,
    claim_redis_db,
    release_redis_db,
    start_api,
    start_worker,
)
from tests.support.registry_server import RegistryServer


@dataclass(frozen=True)
class Stack:
    backend: str
    api: str
    registry_url: str | None
    subject_prefix: str
    catalogue: Path


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clicktrail", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module", params=["files", "registry"])
def stack(
    request: pytest.FixtureRequest,
    stack_env: dict[str, str],
    run_id: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    backend: str = request.param
    catalogue = copy_catalogue(tmp_path_factory.mktemp(backend) / "schemas")
    evolved(catalogue, "events/product_viewed", "1-0-1", add_optional_color)
    db = claim_redis_db(owner=f"{run_id}-{backend}")
    prefix = f"ct-test-{run_id}"
    env = {**stack_env, "REDIS_URL": f"redis://127.0.0.1:6379/{db}", "SCHEMAS_DIR": str(catalogue)}
    server = None
    registry_url = None
    if backend == "registry":
        registry_url = os.environ.get("SCHEMA_REGISTRY_URL")
        if not registry_url:
            server = RegistryServer().start()
            registry_url = server.url
        env.update(SCHEMA_REGISTRY_URL=registry_url, SCHEMA_SUBJECT_PREFIX=prefix)
        registered = run_cli(env, "schemas", "register")
        assert registered.returncode == 0, registered.stdout + registered.stderr
    worker = start_worker(
        env, logs_dir / f"evolution-{backend}-worker.log", f"evolution-{backend}-{run_id}"
    )
    api, base = start_api(
        env, logs_dir / f"evolution-{backend}-api.log", name=f"evolution-{backend}-api"
    )
    try:
        yield Stack(backend, base, registry_url, prefix, catalogue)
    finally:
        api.stop()
        worker.stop()
        release_redis_db(db)
        if registry_url and server is None:
            client = SchemaRegistryClient({"url": registry_url})
            for subject in client.get_subjects():
                if subject.startswith(prefix + "."):
                    client.delete_subject(subject)
                    client.delete_subject(subject, permanent=True)
        if server:
            server.stop()


def product_viewed(message_id: str, color: str | None, schema: str | None) -> dict[str, object]:
    event: dict[str, object] = {
        "type": "track",
        "userId": "evolving",
        "messageId": message_id,
        "event": "Product Viewed",
        "properties": {
            "product_id": "sku-7",
            "price": 3.0,
            **({"color": color} if color is not None else {}),
        },
    }
    if schema:
        event["context"] = {"schema": schema}
    return event


def test_old_and_new_clients_flow_at_once_each_checked_against_its_version(
    stack: Stack, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    old, new, new_but_invalid = (f"evo-{uuid.uuid4()}" for _ in range(3))
    batch = [
        product_viewed(
            old, color="", schema="product_viewed/1-0-0"
        ),  # 1-0-0 knows no color: anything goes
        product_viewed(new, color="red", schema=None),
        product_viewed(new_but_invalid, color="", schema=None),  # 1-0-1: color has minLength 1
    ]

    response = requests.post(
        f"{stack.api}/v1/batch", json={"batch": batch}, auth=(source.write_key, ""), timeout=10
    )

    assert response.status_code == 200, response.text
    published = kafka.wait_for([old, new], topic=topics.events)
    assert published[old][0].headers["schema"] == "events/product_viewed/1-0-0"
    assert published[new][0].headers["schema"] == "events/product_viewed/1-0-1"
    [dead] = kafka.wait_for([new_but_invalid], topic=topics.deadletter)[new_but_invalid]
    assert [(e["path"], e["keyword"], e["schema"]) for e in dead.value["errors"]] == [
        ("/properties/color", "minLength", "events/product_viewed/1-0-1")
    ]
    if stack.backend == "registry":
        assert published[old][0].schema_id is not None
        assert published[new][0].schema_id is not None
        assert published[old][0].schema_id != published[new][0].schema_id
        assert dead.schema_id is None  # dead letters are plain JSON
    else:
        assert published[old][0].schema_id is None


def test_validate_endpoint_uses_the_same_schemas(stack: Stack, source: SourceUnderTest) -> None:
    response = requests.post(
        f"{stack.api}/v1/validate",
        json={
            "batch": [
                product_viewed("v1", "", "product_viewed/1-0-0"),
                product_viewed("v2", "", None),
            ]
        },
        auth=(source.write_key, ""),
        timeout=10,
    )

    assert response.status_code == 200
    old, new = response.json()["results"]
    assert (old["valid"], old["schema"]) == (True, "events/product_viewed/1-0-0")
    assert (new["valid"], new["schema"]) == (False, "events/product_viewed/1-0-1")
    assert new["errors"][0]["path"] == "/properties/color"


@pytest.mark.parametrize("stack", ["registry"], indirect=True)
def test_a_standard_deserializer_reads_the_published_events(
    stack: Stack, kafka: KafkaCollector, source: SourceUnderTest, topics: TopicNames
) -> None:
    message_id = f"evo-{uuid.uuid4()}"
    body = product_viewed(message_id, "blue", None)
    assert (
        requests.post(
            f"{stack.api}/v1/track", json=body, auth=(source.write_key, ""), timeout=10
        ).status_code
        == 200
    )
    [record] = kafka.wait_for([message_id], topic=topics.events)[message_id]
    assert record.raw is not None
    deserializer = JSONDeserializer(
        None, schema_registry_client=SchemaRegistryClient({"url": stack.registry_url})
    )

    event = deserializer(record.raw, SerializationContext(topics.events, MessageField.VALUE))

    assert event == record.value
    assert event["properties"]["color"] == "blue"
    assert event["context"]["session"]["eventIndex"] >= 1


@pytest.mark.parametrize("stack", ["registry"], indirect=True)
def test_the_registry_refuses_an_incompatible_version(stack: Stack, tmp_path: Path) -> None:
    breaking = copy_catalogue(tmp_path / "schemas")
    evolved(breaking, "events/product_viewed", "1-0-1", add_optional_color)
    evolved(breaking, "events/product_viewed", "1-0-2", require_sku)
    client = SchemaRegistryClient({"url": stack.registry_url})

    results = register_catalogue(client, FileSchemaRegistry(breaking), stack.subject_prefix)

    refused = [r for r in results if r.error]
    assert [r.schema for r in refused] == ["events/product_viewed/1-0-2"]
    assert "incompatible" in (refused[0].error or "").lower()
    assert (
        client.get_latest_version(f"{stack.subject_prefix}.events.product_viewed.v1").version == 2
    )


@pytest.mark.parametrize("stack", ["registry"], indirect=True)
def test_schemas_register_checks_the_catalogue_first(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path
) -> None:
    breaking = copy_catalogue(tmp_path / "schemas")
    evolved(breaking, "events/product_viewed", "1-0-1", require_sku)
    env = {
        **stack_env,
        "SCHEMA_REGISTRY_URL": stack.registry_url or "",
        "SCHEMA_SUBJECT_PREFIX": stack.subject_prefix,
    }

    result = run_cli(env, "schemas", "register", "--dir", str(breaking))

    assert result.returncode == 1
    assert "FAIL  events/product_viewed 1-0-0 -> 1-0-1 is not backward compatible" in result.stderr
    assert "/sku: new required field" in result.stderr
