"""``make schemas-check`` and a Confluent-compatible registry judge schema changes alike.

Each change below is made to a copy of the catalogue, checked offline, and registered with the
registry under a subject prefix of its own: the double (built from Confluent's published rules,
independent of Clicktrail's checker) or, with SCHEMA_REGISTRY_URL, a real one. What the check
passes must register; what the registry refuses, the check must have refused; and for the
changes the README teaches, the two must say the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from clicktrail.compat import check_catalogue
from clicktrail.registry import register_catalogue
from clicktrail.schemas import FileSchemaRegistry
from tests.support.catalogue import (
    add_optional_color,
    copy_catalogue,
    evolved,
    require_new_field,
    require_sku,
)
from tests.support.registry_server import RegistryUnderTest, registry_under_test

Change = Callable[[dict[str, Any]], None]


def drop(name: str) -> Change:
    return lambda document: document["properties"].pop(name)


def set_property(name: str, **values: Any) -> Change:
    return lambda document: document["properties"][name].update(values)


def close(document: dict[str, Any]) -> None:
    document["additionalProperties"] = False


def add_trait(document: dict[str, Any]) -> None:
    document["properties"]["plan"] = {"type": "string"}


@dataclass(frozen=True)
class Case:
    key: str
    version: str
    change: Change
    compatible: bool  # by the README's rules, which make schemas-check applies
    taught: bool = False  # the README's own examples: the registry must agree exactly


CASES = {
    # events/product_viewed 2-0-0 is closed; 1-0-0 and traits/identify are open.
    "closed: new optional property": Case("events/product_viewed", "2-0-1", add_optional_color, True, True),
    "closed: new required property": Case("events/product_viewed", "2-0-1", require_new_field, False, True),
    "closed: narrowed type": Case("events/product_viewed", "2-0-1", set_property("price", type="integer"), False, True),
    "closed: removed property": Case("events/product_viewed", "2-0-1", drop("brand"), False, True),
    "open: new optional property": Case("events/product_viewed", "1-0-1", add_optional_color, False, True),
    "open traits: new trait": Case("traits/identify", "1-0-1", add_trait, False, True),
    "open: removed property": Case("events/product_viewed", "1-0-1", drop("brand"), True),
    "open: closed afterwards": Case("events/product_viewed", "1-0-1", close, False),
    "closed: optional made required": Case("events/product_viewed", "2-0-1", require_sku, False),
    "closed: tightened minimum": Case("events/product_viewed", "2-0-1", set_property("price", minimum=1), False),
    "closed: loosened minimum": Case("events/product_viewed", "2-0-1", set_property("price", minimum=-1), True),
    "closed: widened type": Case("events/product_viewed", "2-0-1", set_property("price", type=["number", "string"]), True),
    "closed: new pattern": Case("events/product_viewed", "2-0-1", set_property("currency", pattern="^[A-Z]{2}$"), False),
    "closed: new maxLength": Case("events/product_viewed", "2-0-1", set_property("sku", maxLength=8), False),
    "closed: now an enum": Case("events/product_viewed", "2-0-1", set_property("variant", enum=["a", "b"]), False),
    "traits: narrowed type": Case("traits/identify", "1-0-1", set_property("age", type="integer"), False),
}  # fmt: skip


@pytest.fixture(scope="module")
def registry(run_id: str) -> Iterator[RegistryUnderTest]:
    with registry_under_test(f"ct-agree-{run_id}") as found:
        yield found


@pytest.mark.parametrize("name", list(CASES))
def test_the_check_and_the_registry_agree(
    registry: RegistryUnderTest, tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    root = copy_catalogue(tmp_path / "schemas")
    evolved(root, case.key, case.version, case.change)
    prefix = f"{registry.subject_prefix}.case{list(CASES).index(name)}"

    checked = check_catalogue(root)
    results = register_catalogue(
        SchemaRegistryClient({"url": registry.url}), FileSchemaRegistry(root), prefix
    )

    refused = [r for r in results if r.error]
    registered = not refused
    assert checked.ok == case.compatible, checked.render()
    assert all(r.schema.endswith(case.version) for r in refused), refused
    if checked.ok:
        assert registered, f"make schemas-check passed what the registry refused: {refused}"
    if not registered:
        assert not checked.ok
    if case.taught or not registry.real:
        # The double follows Confluent's rules, which agree with the check on every case here.
        assert registered == case.compatible, (refused, checked.render())
