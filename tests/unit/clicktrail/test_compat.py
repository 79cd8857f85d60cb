"""Each evolution rule on a scratch copy of the catalogue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clicktrail.compat import check_catalogue
from tests.support.catalogue import (
    SCHEMAS,
    add_optional_color,
    copy_catalogue,
    evolved,
    require_sku,
)


def check(
    tmp_path: Path, key: str, version: str, change: Callable[[dict[str, Any]], None]
) -> tuple[bool, str]:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, key, version, change)
    report = check_catalogue(root)
    return report.ok, report.render()


def test_the_shipped_catalogue_passes() -> None:
    report = check_catalogue(SCHEMAS)

    assert report.ok, report.render()
    assert report.schemas >= 11


def test_a_new_optional_field_passes_in_a_closed_object(tmp_path: Path) -> None:
    ok, text = check(tmp_path, "events/product_viewed", "2-0-1", add_optional_color)

    assert ok, text
    assert "ok    events/product_viewed 2-0-0 -> 2-0-1" in text


def test_a_new_field_in_an_open_object_fails_and_says_how_to_add_one(tmp_path: Path) -> None:
    ok, text = check(tmp_path, "events/product_viewed", "1-0-1", add_optional_color)

    assert not ok
    assert "/properties/color: added to an open object" in text
    assert "may carry color with any value" in text
    assert '("additionalProperties": false) as a new MODEL' in text


def test_a_field_removed_from_an_open_object_passes(tmp_path: Path) -> None:
    ok, text = check(
        tmp_path, "events/product_viewed", "1-0-1", lambda d: d["properties"].pop("brand")
    )

    assert ok, text


def set_path(*path: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        node = document
        for part in path:
            node = node[part]
        node.update(values)

    return change


def add_required(document: dict[str, Any]) -> None:
    document["properties"]["brand_id"] = {"type": "string"}
    document["required"] = [*document["required"], "brand_id"]


@pytest.mark.parametrize(
    ("key", "version", "change", "expected"),
    [
        (
            "events/product_viewed",
            "2-0-1",
            add_required,
            "/properties/brand_id: new required field",
        ),
        ("events/product_viewed", "2-0-1", require_sku, "/properties/sku: now required"),
        (
            "events/product_viewed",
            "2-0-1",
            lambda d: d["properties"].pop("brand"),
            "/properties/brand: field removed or renamed, and the object is closed",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            lambda d: d["properties"].update(maker=d["properties"].pop("brand")),
            "/properties/brand: field removed or renamed",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            set_path("properties", "price", type="integer"),
            "/properties/price: type narrowed",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            set_path("properties", "sku", type="integer"),
            "no longer accepts string",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            set_path("properties", "price", minimum=1),
            "/properties/price: minimum tightened to 1 (was 0)",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            set_path("properties", "sku", maxLength=8),
            "/properties/sku: maxLength tightened",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            set_path("properties", "currency", pattern="^[A-Z]{2}$"),
            "pattern added or changed",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            set_path("properties", "url", format="uri"),
            "format added or changed",
        ),
        (
            "events/product_viewed",
            "1-0-1",
            lambda d: d.update(additionalProperties=False),
            "/properties: additional properties no longer allowed",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            set_path("properties", "variant", enum=["red", "blue"]),
            "now restricted to an enum",
        ),
        (
            "events/product_viewed",
            "2-0-1",
            set_path("properties", "variant", const="red"),
            "const added or changed",
        ),
        (
            "traits/group",
            "1-0-1",
            set_path("properties", "employees", type="integer"),
            "/traits/employees: type narrowed, no longer accepts string",
        ),
        (
            "calls/page",
            "1-0-2",
            set_path("properties", "name", type="string"),
            "/name: type narrowed, no longer accepts null",
        ),
    ],
)
def test_an_incompatible_change_fails_with_a_readable_reason(
    tmp_path: Path,
    key: str,
    version: str,
    change: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    ok, text = check(tmp_path, key, version, change)

    assert not ok
    assert f"FAIL  {key} " in text
    assert f" -> {version} is not backward compatible" in text
    assert expected in text
    assert "new MODEL" in text


def test_a_changed_enum_fails_but_a_longer_one_passes(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(
        root,
        "events/product_viewed",
        "1-0-1",
        set_path("properties", "variant", enum=["red", "blue"]),
    )
    (root / "events/product_viewed/1-0-0.json").unlink()
    evolved(
        root,
        "events/product_viewed",
        "1-0-2",
        set_path("properties", "variant", enum=["red", "blue", "green"]),
    )
    evolved(
        root,
        "events/product_viewed",
        "1-0-3",
        set_path("properties", "variant", enum=["red", "green"]),
    )

    text = check_catalogue(root).render()

    assert "ok    events/product_viewed 1-0-1 -> 1-0-2" in text
    assert 'enum no longer allows "blue"' in text


def test_loosened_constraints_pass(tmp_path: Path) -> None:
    def loosen(document: dict[str, Any]) -> None:
        document["properties"]["price"] = {"type": ["number", "string"]}
        document["properties"]["quantity"]["minimum"] = 0
        document["properties"]["currency"].pop("pattern")

    ok, text = check(tmp_path, "events/product_viewed", "1-1-0", loosen)

    assert ok, text


def test_a_new_model_may_break_compatibility(tmp_path: Path) -> None:
    ok, text = check(tmp_path, "events/product_viewed", "3-0-0", require_sku)

    assert ok, text
    assert "new   events/product_viewed 2-0-0 -> 3-0-0" in text


def test_an_envelope_change_through_its_references_is_checked(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, "common/segment", "1-0-2", set_path("$defs", "id", maxLength=64))

    def point_at_new_common(document: dict[str, Any]) -> None:
        document["$ref"] = "urn:clicktrail:common/segment/1-0-2#/$defs/call"

    evolved(root, "calls/track", "1-0-2", point_at_new_common)

    report = check_catalogue(root)

    assert not report.ok
    text = report.render()
    assert "FAIL  calls/track 1-0-1 -> 1-0-2" in text
    assert "/anonymousId: maxLength tightened to 64 (was 1024)" in text


def test_a_broken_catalogue_is_an_error_not_a_crash(tmp_path: Path) -> None:
    root = copy_catalogue(tmp_path / "schemas")
    (root / "events/product_viewed/2-0-1.json").write_text("{not json")

    report = check_catalogue(root)

    assert not report.ok
    assert "not valid JSON" in report.render()
