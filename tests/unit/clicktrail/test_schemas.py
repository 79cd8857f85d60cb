from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from clicktrail.config import PROJECT_ROOT
from clicktrail.intake import CALL_TYPES
from clicktrail.schemas import (
    EventValidator,
    FileSchemaRegistry,
    SchemaCatalogueError,
    SchemaVer,
    event_schema_name,
)
from tests.support.data import invalid_events, valid_events

SCHEMAS = PROJECT_ROOT / "schemas"


@pytest.fixture(scope="module")
def validator() -> EventValidator:
    return EventValidator(FileSchemaRegistry(SCHEMAS))


def test_the_catalogue_has_an_envelope_for_every_call_type() -> None:
    registry = FileSchemaRegistry(SCHEMAS)

    assert {s.name for s in registry if s.kind == "calls"} == set(CALL_TYPES)


@pytest.mark.parametrize(("name", "event"), list(valid_events().items()))
def test_valid_sample_events_pass(
    validator: EventValidator, name: str, event: dict[str, Any]
) -> None:
    verdict = validator.validate(event)

    assert verdict.errors == []
    assert verdict.valid


@pytest.mark.parametrize(("name", "case"), list(invalid_events().items()))
def test_invalid_sample_events_report_every_error_with_its_path(
    validator: EventValidator, name: str, case: tuple[dict[str, Any], list[tuple[str, str]]]
) -> None:
    event, expected = case

    verdict = validator.validate(event)

    assert not verdict.valid
    assert sorted((e["path"], e["keyword"]) for e in verdict.errors) == sorted(expected)
    assert all(e["message"] and e["schema"] for e in verdict.errors)


def test_a_track_event_with_a_schema_is_checked_against_it_and_names_it(
    validator: EventValidator,
) -> None:
    event = valid_events()["track_product_viewed"]

    assert validator.validate(event).schema == "events/product_viewed/1-0-0"


def test_a_track_event_without_a_schema_is_checked_against_the_envelope(
    validator: EventValidator,
) -> None:
    assert validator.validate(valid_events()["track_unplanned"]).schema == "calls/track/1-0-0"


def test_an_unknown_call_type_is_an_error(validator: EventValidator) -> None:
    verdict = validator.validate({"type": "hover", "userId": "u"})

    assert [(e["path"], e["keyword"]) for e in verdict.errors] == [("/type", "enum")]


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


def _catalogue_with(tmp_path: Path, version: str, extra: dict[str, Any]) -> Path:
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    doc = orjson.loads((SCHEMAS / "events/product_viewed/1-0-0.json").read_bytes())
    doc["$id"] = f"urn:clicktrail:events/product_viewed/{version}"
    doc["self"]["version"] = version
    doc.update(extra)
    (tmp_path / "schemas/events/product_viewed" / f"{version}.json").write_bytes(orjson.dumps(doc))
    return tmp_path / "schemas"


def test_the_latest_version_applies_unless_one_is_named(tmp_path: Path) -> None:
    root = _catalogue_with(tmp_path, "1-1-0", {})
    (root / "events/product_viewed/1-10-0.json").write_bytes(
        (root / "events/product_viewed/1-1-0.json").read_bytes().replace(b"1-1-0", b"1-10-0")
    )
    registry = FileSchemaRegistry(root)

    latest = registry.get("events", "product_viewed")
    assert latest is not None
    assert str(latest.version) == "1-10-0"
    named = registry.get("events", "product_viewed", "1-0-0")
    assert named is not None
    assert named.key == "events/product_viewed/1-0-0"
    assert registry.get("events", "product_viewed", "9-9-9") is None
    assert registry.get("events", "nothing") is None


def test_a_schema_whose_self_disagrees_with_its_path_is_refused(tmp_path: Path) -> None:
    root = _catalogue_with(
        tmp_path, "1-1-0", {"self": {"kind": "events", "name": "other", "version": "1-1-0"}}
    )

    with pytest.raises(SchemaCatalogueError, match=r"self\.name"):
        FileSchemaRegistry(root)


def test_an_invalid_json_schema_is_refused(tmp_path: Path) -> None:
    root = _catalogue_with(tmp_path, "1-1-0", {"type": "no-such-type"})

    with pytest.raises(Exception, match="no-such-type"):
        FileSchemaRegistry(root)
