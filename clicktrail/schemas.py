"""The schema catalogue (``schemas/``) and event validation.

Layout: ``schemas/<kind>/<name>/<MODEL-REVISION-ADDITION>.json``, each file self-describing
(``self``: vendor, kind, name, version) with ``$id`` ``urn:clicktrail:<kind>/<name>/<version>``.
Kinds: ``common`` (shared definitions), ``calls`` (one envelope per Segment call type),
``events`` (the ``properties`` of one ``track`` event, named after it in snake case).

Validators are compiled once, when the registry is built; validation reports every error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import total_ordering
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_SCHEMAVER = re.compile(r"^([1-9][0-9]*)-(0|[1-9][0-9]*)-(0|[1-9][0-9]*)$")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


class SchemaCatalogueError(ValueError):
    """A schema file is malformed or does not describe itself consistently."""


@total_ordering
@dataclass(frozen=True)
class SchemaVer:
    """SchemaVer ``MODEL-REVISION-ADDITION`` (Snowplow Iglu), ordered numerically."""

    model: int
    revision: int
    addition: int

    @classmethod
    def parse(cls, text: str) -> SchemaVer:
        match = _SCHEMAVER.match(text)
        if not match:
            raise SchemaCatalogueError(f"{text!r} is not a SchemaVer (MODEL-REVISION-ADDITION)")
        return cls(*(int(part) for part in match.groups()))

    def __lt__(self, other: SchemaVer) -> bool:
        return (self.model, self.revision, self.addition) < (
            other.model,
            other.revision,
            other.addition,
        )

    def __str__(self) -> str:
        return f"{self.model}-{self.revision}-{self.addition}"


@dataclass(frozen=True)
class Schema:
    kind: str
    name: str
    version: SchemaVer
    document: dict[str, Any]
    validator: Draft202012Validator

    @property
    def key(self) -> str:
        """``events/product_viewed/1-0-0``: how records and errors name this schema."""
        return f"{self.kind}/{self.name}/{self.version}"


def event_schema_name(event_name: str) -> str:
    """The schema name of a track event: ``Product Viewed`` -> ``product_viewed``."""
    return _NOT_WORD.sub("_", event_name.lower()).strip("_")


class FileSchemaRegistry:
    """Schemas read from a directory tree, all loaded and compiled at construction."""

    def __init__(self, root: Path) -> None:
        documents = list(_read_catalogue(root))
        resources = Registry().with_resources(
            (doc["$id"], Resource.from_contents(doc, default_specification=DRAFT202012))
            for _, _, _, doc in documents
        )
        self._schemas: dict[tuple[str, str], dict[SchemaVer, Schema]] = {}
        for kind, name, version, doc in documents:
            validator = Draft202012Validator(
                doc, registry=resources, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            schema = Schema(kind, name, version, doc, validator)
            self._schemas.setdefault((kind, name), {})[version] = schema

    def get(self, kind: str, name: str, version: str | None = None) -> Schema | None:
        """The named version, or the latest when ``version`` is None; None when unknown."""
        versions = self._schemas.get((kind, name))
        if not versions:
            return None
        if version is None:
            return versions[max(versions)]
        try:
            return versions.get(SchemaVer.parse(version))
        except SchemaCatalogueError:
            return None

    def __iter__(self) -> Iterator[Schema]:
        for versions in self._schemas.values():
            yield from versions.values()


def _read_catalogue(root: Path) -> Iterator[tuple[str, str, SchemaVer, dict[str, Any]]]:
    if not root.is_dir():
        raise SchemaCatalogueError(f"schema directory {root} does not exist")
    for path in sorted(root.glob("*/*/*.json")):
        kind, name = path.parent.parent.name, path.parent.name
        version = SchemaVer.parse(path.stem)
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise SchemaCatalogueError(f"{path}: not valid JSON: {exc}") from None
        described = doc.get("self", {})
        expected = {"kind": kind, "name": name, "version": str(version)}
        for field, value in expected.items():
            if described.get(field) != value:
                raise SchemaCatalogueError(
                    f"{path}: self.{field} is {described.get(field)!r}, the path says {value!r}"
                )
        if doc.get("$id") != f"urn:clicktrail:{kind}/{name}/{version}":
            raise SchemaCatalogueError(
                f"{path}: $id must be urn:clicktrail:{kind}/{name}/{version}"
            )
        Draft202012Validator.check_schema(doc)
        yield kind, name, version, doc


@dataclass(frozen=True)
class Verdict:
    """The outcome of validating one event: the most specific schema used, and every error."""

    schema: str
    errors: list[dict[str, str]]

    @property
    def valid(self) -> bool:
        return not self.errors


class EventValidator:
    """Validates an event against its call envelope and, for ``track``, its event schema."""

    def __init__(self, registry: FileSchemaRegistry) -> None:
        self._registry = registry

    def validate(self, event: dict[str, Any]) -> Verdict:
        call_type = event.get("type")
        envelope = self._registry.get("calls", call_type) if isinstance(call_type, str) else None
        if envelope is None:
            return Verdict(
                schema="calls/unknown",
                errors=[
                    _error("/type", "enum", f"unknown call type {call_type!r}", "calls/unknown")
                ],
            )
        errors = _errors(envelope, event, prefix="")
        used = envelope
        if call_type == "track" and isinstance(event.get("event"), str):
            schema = self._registry.get("events", event_schema_name(event["event"]))
            if schema is not None:
                used = schema
                properties = event.get("properties", {})
                if isinstance(properties, dict):
                    errors.extend(_errors(schema, properties, prefix="/properties"))
        return Verdict(schema=used.key, errors=errors)


def _errors(schema: Schema, instance: Any, prefix: str) -> list[dict[str, str]]:
    found: list[ValidationError] = sorted(
        schema.validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))
    )
    return [
        _error(prefix + _pointer(error), str(error.validator), error.message, schema.key)
        for error in found
    ]


def _pointer(error: ValidationError) -> str:
    """JSON pointer of the failing value; for ``required``, of the missing field itself."""
    parts = [str(part) for part in error.absolute_path]
    required = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict):
        assert isinstance(required, list)
        missing = [
            name for name in required if name not in error.instance and repr(name) in error.message
        ]
        if missing:
            parts.append(missing[0])
    return "".join(f"/{part}" for part in parts)


def _error(path: str, keyword: str, message: str, schema: str) -> dict[str, str]:
    return {"path": path or "/", "keyword": keyword, "message": message, "schema": schema}
