"""Scratch copies of the schema catalogue with new versions added, for evolution tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.support.paths import PROJECT_ROOT

SCHEMAS = PROJECT_ROOT / "schemas"


def evolved(
    root: Path,
    key: str,
    new_version: str,
    change: Callable[[dict[str, Any]], None] = lambda doc: None,
) -> dict[str, Any]:
    """Write ``<kind>/<name>/<new_version>.json``: the latest existing version of ``key``
    (``events/product_viewed``) in the same MODEL (else the latest of all) with ``change``
    applied. Returns the new document."""
    kind, name = key.split("/")
    folder = root / kind / name
    versions = {tuple(int(n) for n in p.stem.split("-")): p for p in folder.glob("*.json")}
    model = int(new_version.split("-")[0])
    same_model = [v for v in versions if v[0] == model]
    latest = versions[max(same_model or versions)]
    document = orjson.loads(latest.read_bytes())
    document["$id"] = f"urn:clicktrail:{kind}/{name}/{new_version}"
    document["self"]["version"] = new_version
    change(document)
    (folder / f"{new_version}.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return document


def copy_catalogue(target: Path) -> Path:
    shutil.copytree(SCHEMAS, target)
    return target


def add_optional_color(document: dict[str, Any]) -> None:
    document["properties"]["color"] = {"type": "string", "minLength": 1}


def require_sku(document: dict[str, Any]) -> None:
    document["required"] = [*document.get("required", []), "sku"]


def require_new_field(document: dict[str, Any]) -> None:
    document["properties"]["brand_id"] = {"type": "string"}
    document["required"] = [*document.get("required", []), "brand_id"]
