from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from clicktrail.intake import CALL_TYPES
from clicktrail.schemas import (
    FileSchemaRegistry,
    SchemaCatalogueError,
    SchemaVer,
    bundle,
    event_schema_name,
)
from tests.support.catalogue import SCHEMAS, add_optional_color, copy_catalogue, evolved
from tests.support.data import invalid_events, valid_events


@pytest.fixture(scope="module")
def registry() -> FileSchemaRegistry:
    return FileSchemaRegistry(SCHEMAS)


def test_the_catalogue_has_a_record_for_every_call_type_event_and_traits_schema(
    registry: FileSchemaRegistry,
) -> None:
    keys = {record.key for record in registry.records()}

    assert {f"calls/{t}/1-0-0" for t in CALL_TYPES} <= keys
    assert {"events/product_viewed/1-0-0", "events/order_completed/1-0-0"} <= keys
    assert {"traits/identify/1-0-0", "traits/group/1-0-0"} <= keys
    assert not any(key.startswith("common/") for key in keys)


def test_record_schemas_are_self_contained(registry: FileSchemaRegistry) -> None:
    record = registry.record("events", "product_viewed")
    assert record is not None
    text = orjson.dumps(record.document).decode()

    # Every document it refers to is embedded, so a registry or a deserializer needs nothing else.
    assert set(record.document["$defs"]) == {
        "urn:clicktrail:calls/track/1-0-1",
        "urn:clicktrail:common/segment/1-0-1",
        "urn:clicktrail:events/product_viewed/1-0-0",
    }
    assert record.document["self"]["envelope"] == "calls/track/1-0-1"
    assert "urn:clicktrail:events/product_viewed/1-0-0" in text


def test_record_schemas_judge_every_sample_as_an_independent_validator_does(
    registry: FileSchemaRegistry,
) -> None:
    from jsonschema import Draft202012Validator

    from clicktrail.validation import specific_schema

    samples = [*valid_events().values(), *(event for event, _ in invalid_events().values())]
    for event in samples:
        kind, name = specific_schema(event)
        record = registry.record(kind, name) or registry.record("calls", event["type"])
        assert record is not None
        reference = Draft202012Validator(
            record.document, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        assert (record.errors(event) == []) == reference.is_valid(event)


def test_errors_point_at_the_missing_field_and_stay_short(registry: FileSchemaRegistry) -> None:
    record = registry.record("calls", "alias")
    assert record is not None
    event = {
        "type": "alias",
        "messageId": "m",
        "receivedAt": "2026-01-01T00:00:00Z",
        "previousId": "x" * 5000,
    }

    errors = record.errors(event)

    assert ("/userId", "required") in [(e["path"], e["keyword"]) for e in errors]
    identity = [e for e in errors if e["keyword"] == "anyOf"]
    assert identity[0]["message"] == "every event needs a userId or an anonymousId"
    assert all(len(e["message"]) <= 300 for e in errors)
    assert {e["schema"] for e in errors} == {"calls/alias/1-0-1"}


@pytest.mark.parametrize(
    ("event", "schema"),
    [
        ("Product Viewed", "product_viewed"),
        ("order-completed", "order_completed"),
        ("  Signed  Up! ", "signed_up"),
    ],
)
def test_event_schema_names(event: str, schema: str) -> None:
    assert event_schema_name(event) == schema


def test_schemaver_orders_numerically() -> None:
    assert SchemaVer.parse("1-10-0") > SchemaVer.parse("1-9-3")
    assert str(SchemaVer.parse("2-0-1")) == "2-0-1"
    with pytest.raises(SchemaCatalogueError):
        SchemaVer.parse("1.0.0")


def test_the_latest_version_applies_unless_one_is_named(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, "events/product_viewed", "1-0-1", add_optional_color)
    evolved(root, "events/product_viewed", "1-10-0")
    registry = FileSchemaRegistry(root)

    latest = registry.record("events", "product_viewed")
    named = registry.record("events", "product_viewed", "1-0-0")

    assert latest is not None
    assert latest.key == "events/product_viewed/1-10-0"
    assert named is not None
    assert named.key == "events/product_viewed/1-0-0"
    assert registry.record("events", "product_viewed", "9-9-9") is None
    assert registry.record("events", "product_viewed", "latest") is None
    assert registry.record("events", "nothing") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["self"].update(name="other"), r"self\.name"),
        (
            lambda d: d.update({"$id": "urn:clicktrail:events/product_viewed/9-9-9"}),
            r"\$id must be",
        ),
        (lambda d: d.update(type="no-such-type"), "not a valid JSON Schema"),
        (
            lambda d: d.update({"$schema": "http://json-schema.org/draft-07/schema#"}),
            r"\$schema must be",
        ),
        (
            lambda d: d["properties"].update(x={"$ref": "urn:clicktrail:events/missing/1-0-0"}),
            "unknown",
        ),
    ],
)
def test_a_malformed_schema_file_is_refused_with_its_path(
    tmp_path: Path, change: Any, message: str
) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, "events/product_viewed", "1-1-0", change)

    with pytest.raises(SchemaCatalogueError, match=message):
        FileSchemaRegistry(root)


def test_traits_schemas_exist_only_for_identify_and_group(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    (root / "traits" / "page").mkdir()
    doc = orjson.loads((root / "traits/group/1-0-0.json").read_bytes())
    doc["$id"], doc["self"]["name"] = "urn:clicktrail:traits/page/1-0-0", "page"
    (root / "traits/page/1-0-0.json").write_bytes(orjson.dumps(doc))

    with pytest.raises(SchemaCatalogueError, match="traits/identify or traits/group"):
        FileSchemaRegistry(root)


def test_bundle_embeds_what_is_referenced_transitively() -> None:
    documents = {
        "urn:a": {"$id": "urn:a", "$ref": "urn:b#/$defs/x"},
        "urn:b": {"$id": "urn:b", "$defs": {"x": {"$ref": "urn:c"}}},
        "urn:c": {"$id": "urn:c", "type": "string"},
        "urn:unused": {"$id": "urn:unused"},
    }

    bundled = bundle(documents["urn:a"], documents)

    assert set(bundled["$defs"]) == {"urn:b", "urn:c"}
    assert bundled["$ref"] == "urn:b#/$defs/x"
