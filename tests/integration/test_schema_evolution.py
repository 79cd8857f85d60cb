"""The README's evolution walkthrough, with each backend (the files, and a Confluent-compatible
registry: SCHEMA_REGISTRY_URL when set, else the double): Product Viewed gains 2-0-1 (a new
optional ``color`` in its closed content model), ``make schemas-register`` adds that version
alone, and old and new clients flow side by side through a real worker and broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from confluent_kafka.schema_registry import SchemaRegistryClient

from clicktrail.registry import register_catalogue
from clicktrail.schemas import FileSchemaRegistry
from tests.integration.conftest import SourceUnderTest, TopicNames
from tests.support.catalogue import (
    add_optional_color,
    copy_catalogue,
    evolved,
    require_new_field,
    require_sku,
)
from tests.support.infra import KafkaCollector
from tests.support.registry_server import registry_under_test
from tests.support.schema_stack import SchemaStack, clicktrail_cli, registry_env, schema_stack


@pytest.fixture(scope="module", params=["files", "registry"])
def stack(
    request: pytest.FixtureRequest,
    stack_env: dict[str, str],
    run_id: str,
    logs_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SchemaStack, str]]:
    """The stack after the walkthrough, and what the second ``schemas register`` printed."""
    backend: str = request.param
    catalogue = copy_catalogue(tmp_path_factory.mktemp(backend) / "schemas")
    if backend == "files":
        evolved(catalogue, "events/product_viewed", "2-0-1", add_optional_color)
        with schema_stack(stack_env, logs_dir, f"evolution-files-{run_id}", catalogue, None) as s:
            yield s, ""
        return
    with registry_under_test(f"ct-evolution-{run_id}") as registry:
        env = registry_env({**stack_env, "SCHEMAS_DIR": str(catalogue)}, registry)
        first = clicktrail_cli(env, "schemas", "register")
        assert first.returncode == 0, first.stdout + first.stderr
        evolved(catalogue, "events/product_viewed", "2-0-1", add_optional_color)
        second = clicktrail_cli(env, "schemas", "register")
        assert second.returncode == 0, second.stdout + second.stderr
        name = f"evolution-registry-{run_id}"
        with schema_stack(stack_env, logs_dir, name, catalogue, registry, register=False) as s:
            yield s, second.stdout


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


@pytest.mark.parametrize("stack", ["registry"], indirect=True)
def test_schemas_register_adds_the_new_version_alone(stack: tuple[SchemaStack, str]) -> None:
    schemas, printed = stack
    assert schemas.registry is not None
    prefix = schemas.registry.subject_prefix

    assert f"ok      {prefix}.events.product_viewed.v2 v2 " in printed
    assert "<- events/product_viewed/2-0-1\n" in printed
    assert "<- events/product_viewed/2-0-0 (registered before)" in printed
    assert "REFUSED" not in printed


def test_old_and_new_clients_flow_at_once_each_checked_against_its_version(
    stack: tuple[SchemaStack, str],
    kafka: KafkaCollector,
    source: SourceUnderTest,
    topics: TopicNames,
) -> None:
    schemas, _ = stack
    old, new, invalid, old_with_color, legacy = (f"evo-{uuid.uuid4()}" for _ in range(5))
    batch = [
        product_viewed(old, color=None, schema="product_viewed/2-0-0"),
        product_viewed(new, color="red", schema=None),
        product_viewed(invalid, color="", schema=None),  # 2-0-1: color has minLength 1
        product_viewed(old_with_color, color="red", schema="product_viewed/2-0-0"),  # closed
        product_viewed(legacy, color="", schema="product_viewed/1-0-0"),  # open: anything goes
    ]

    response = requests.post(
        f"{schemas.api}/v1/batch", json={"batch": batch}, auth=(source.write_key, ""), timeout=10
    )

    assert response.status_code == 200, response.text
    published = kafka.wait_for([old, new, legacy], topic=topics.events)
    assert published[old][0].headers["schema"] == "events/product_viewed/2-0-0"
    assert published[new][0].headers["schema"] == "events/product_viewed/2-0-1"
    assert published[legacy][0].headers["schema"] == "events/product_viewed/1-0-0"
    dead = kafka.wait_for([invalid, old_with_color], topic=topics.deadletter)
    assert [(e["path"], e["keyword"], e["schema"]) for e in dead[invalid][0].value["errors"]] == [
        ("/properties/color", "minLength", "events/product_viewed/2-0-1")
    ]
    [unknown] = dead[old_with_color][0].value["errors"]
    assert (unknown["path"], unknown["keyword"]) == ("/properties", "additionalProperties")
    assert "color" in unknown["message"]
    ids = {published[key][0].schema_id for key in (old, new, legacy)}
    if schemas.registry is not None:
        assert None not in ids
        assert len(ids) == 3
        assert dead[invalid][0].schema_id is None  # dead letters are plain JSON
    else:
        assert ids == {None}


def test_validate_endpoint_uses_the_same_schemas(
    stack: tuple[SchemaStack, str], source: SourceUnderTest
) -> None:
    schemas, _ = stack
    response = requests.post(
        f"{schemas.api}/v1/validate",
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
    assert (new["valid"], new["schema"]) == (False, "events/product_viewed/2-0-1")
    assert new["errors"][0]["path"] == "/properties/color"


@pytest.mark.parametrize("stack", ["registry"], indirect=True)
def test_the_registry_refuses_an_incompatible_version_with_its_reason(
    stack: tuple[SchemaStack, str], tmp_path: Path
) -> None:
    schemas, _ = stack
    assert schemas.registry is not None
    breaking = copy_catalogue(tmp_path / "schemas")
    evolved(breaking, "events/product_viewed", "2-0-1", add_optional_color)
    evolved(breaking, "events/product_viewed", "2-0-2", require_new_field)
    client = SchemaRegistryClient({"url": schemas.registry.url})
    subject = f"{schemas.registry.subject_prefix}.events.product_viewed.v2"

    results = register_catalogue(
        client, FileSchemaRegistry(breaking), schemas.registry.subject_prefix
    )

    refused = [r for r in results if r.error]
    assert [r.schema for r in refused] == ["events/product_viewed/2-0-2"]
    assert "409" in (refused[0].error or "")
    assert "brand_id" in (refused[0].error or "")  # the registry says which property
    assert client.get_latest_version(subject).version == 2


@pytest.mark.parametrize("stack", ["registry"], indirect=True)
def test_schemas_register_checks_the_catalogue_first(
    stack: tuple[SchemaStack, str], tmp_path: Path
) -> None:
    schemas, _ = stack
    breaking = copy_catalogue(tmp_path / "schemas")
    evolved(breaking, "events/product_viewed", "2-0-1", require_sku)

    result = clicktrail_cli(schemas.env, "schemas", "register", "--dir", str(breaking))

    assert result.returncode == 1
    assert "FAIL  events/product_viewed 2-0-0 -> 2-0-1 is not backward compatible" in result.stderr
    assert "/properties/sku: now required" in result.stderr
