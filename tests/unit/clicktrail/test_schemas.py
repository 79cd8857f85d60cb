from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from clicktrail.inline import InlineError, conjoin, inline
from clicktrail.intake import CALL_TYPES
from clicktrail.schemas import (
    FileSchemaRegistry,
    SchemaCatalogueError,
    SchemaVer,
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
    assert {"events/product_viewed/2-0-0", "events/order_completed/2-0-0"} <= keys
    assert {"traits/identify/1-0-0", "traits/group/1-0-0"} <= keys
    assert not any(key.startswith("common/") for key in keys)


def test_record_schemas_are_one_flat_draft_07_document_without_references(
    registry: FileSchemaRegistry,
) -> None:
    for record in registry.records():
        text = orjson.dumps(record.document).decode()

        assert '"$ref"' not in text, record.key  # a registry or a deserializer needs nothing else
        assert record.document["$schema"] == "http://json-schema.org/draft-07/schema#"
        assert record.document["type"] == "object"
        assert not {"allOf", "anyOf", "oneOf"} & set(record.document), record.key
    viewed = registry.record("events", "product_viewed")
    assert viewed is not None
    assert viewed.document["self"]["envelope"] == "calls/track/1-0-1"
    assert viewed.document["properties"]["properties"]["additionalProperties"] is False
    assert "product_id" in viewed.document["properties"]["properties"]["properties"]
    assert "context" in viewed.document["properties"]  # the envelope's fields, merged in


def test_record_schemas_judge_every_sample_as_an_independent_validator_does(
    registry: FileSchemaRegistry,
) -> None:
    from jsonschema import Draft7Validator

    from clicktrail.validation import specific_schema

    samples = [*valid_events().values(), *(event for event, _ in invalid_events().values())]
    for event in samples:
        kind, name = specific_schema(event)
        record = registry.record(kind, name) or registry.record("calls", event["type"])
        assert record is not None
        reference = Draft7Validator(record.document, format_checker=Draft7Validator.FORMAT_CHECKER)
        assert (record.errors(event) == []) == reference.is_valid(event)


def test_errors_point_at_the_missing_field_and_stay_short(registry: FileSchemaRegistry) -> None:
    record = registry.record("calls", "alias")
    assert record is not None
    event = {
        "type": "alias",
        "messageId": "m",
        "receivedAt": "2026-01-01T00:00:00Z",
        "anonymousId": {"nested": "x" * 5000},
        "previousId": "x" * 5000,
    }

    errors = record.errors(event)

    assert ("/userId", "required") in [(e["path"], e["keyword"]) for e in errors]
    [composite] = [e for e in errors if e["keyword"] == "anyOf"]
    assert composite["path"] == "/anonymousId"
    assert "x" * 100 not in composite["message"]
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


@pytest.mark.parametrize("text", ["1-0-" + "9" * 5000, "9" * 10 + "-0-0", "1-" * 3000 + "0"])
def test_a_schemaver_of_absurd_length_is_refused_with_a_short_message(text: str) -> None:
    with pytest.raises(SchemaCatalogueError) as caught:
        SchemaVer.parse(text)

    assert len(str(caught.value)) < 120


def test_the_latest_version_applies_unless_one_is_named(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, "events/product_viewed", "2-0-1", add_optional_color)
    evolved(root, "events/product_viewed", "2-10-0")
    registry = FileSchemaRegistry(root)

    latest = registry.record("events", "product_viewed")
    named = registry.record("events", "product_viewed", "2-0-0")

    assert latest is not None
    assert latest.key == "events/product_viewed/2-10-0"
    assert named is not None
    assert named.key == "events/product_viewed/2-0-0"
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


def resolver(documents: dict[str, Any]) -> Any:
    def resolve(ref: str, base: str) -> tuple[Any, str]:
        uri, _, fragment = ref.partition("#")
        node = documents[uri or base]
        for part in [p for p in fragment.split("/") if p]:
            node = node[part]
        return node, uri or base

    return resolve


def test_inline_replaces_references_transitively_and_merges_their_siblings() -> None:
    documents = {
        "urn:a": {"$id": "urn:a", "type": "object", "$ref": "urn:b#/$defs/x", "required": ["n"]},
        "urn:b": {
            "$id": "urn:b",
            "$defs": {
                "x": {"type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}},
                "n": {"$ref": "urn:c"},
            },
        },
        "urn:c": {"$id": "urn:c", "type": "string", "description": "from c"},
    }

    inlined = inline(documents["urn:a"], "urn:a", resolver(documents))

    assert inlined == {
        "type": "object",
        "properties": {"n": {"type": "string", "description": "from c"}},
        "required": ["n"],
    }


def test_inline_refuses_what_draft_07_cannot_say() -> None:
    recursive = {"urn:r": {"$id": "urn:r", "properties": {"next": {"$ref": "urn:r"}}}}
    with pytest.raises(InlineError, match="refers back to itself"):
        inline(recursive["urn:r"], "urn:r", resolver(recursive))
    with pytest.raises(InlineError, match="dependentRequired is not JSON Schema draft-07"):
        inline({"dependentRequired": {"a": ["b"]}}, "urn:x", resolver({}))


def test_conjoin_merges_only_where_that_means_the_same() -> None:
    closed = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    widening = {"properties": {"b": {"type": "string"}}}

    # Merged, b would be allowed by the closed schema's additionalProperties: kept apart.
    assert conjoin(closed, widening) == {"allOf": [closed, widening]}
    assert conjoin({"type": ["string", "null"]}, {"type": "string", "minLength": 1}) == {
        "type": "string",
        "minLength": 1,
    }
    assert conjoin({"minLength": 1}, {"minLength": 2}) == {
        "allOf": [{"minLength": 1}, {"minLength": 2}]
    }
    assert conjoin(True, widening) == widening
