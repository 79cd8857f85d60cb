"""The schema catalogue: authored JSON Schemas in ``schemas/`` and the record schemas built on them.

Layout: ``schemas/<kind>/<name>/<MODEL-REVISION-ADDITION>.json``, each file self-describing
(``self``: vendor, kind, name, version) with ``$id`` ``urn:clicktrail:<kind>/<name>/<version>``.

Kinds of authored schema:
- ``common``: shared definitions (``common/segment``: the fields every Segment call has);
- ``calls``: the envelope of each Segment call type (``calls/track``, ``calls/page``, ...);
- ``events``: the ``properties`` of one ``track`` event, named after it in snake case;
- ``traits``: the ``traits`` of ``identify`` (``traits/identify``) and ``group`` (``traits/group``).

An event is validated against one *record schema*: the whole event. For a call type it is the
envelope; for an event or traits schema it is the latest envelope of its call type with that
schema on ``properties`` (or ``traits``). A record schema is one self-contained draft-07
document with every reference inlined (``clicktrail.inline``): what a schema registry stores
and judges, and what is compiled once, by jsonschema-rs, which both accepts valid events and
reports every error of a rejected one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache, total_ordering
from pathlib import Path
from typing import Any, Protocol

import jsonschema_rs
import orjson
from jsonschema import Draft7Validator, Draft202012Validator

from clicktrail.errors import ClicktrailError, Fault
from clicktrail.inline import RECORD_DRAFT, InlineError, conjoin, inline

DRAFT = "https://json-schema.org/draft/2020-12/schema"
VENDOR = "io.clicktrail"
KINDS = ("common", "calls", "events", "traits")

# At most nine digits a part: int() refuses thousands, and nobody counts that high by hand.
_SCHEMAVER = re.compile(r"^([1-9][0-9]{0,8})-(0|[1-9][0-9]{0,8})-(0|[1-9][0-9]{0,8})$")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


class SchemaCatalogueError(ClicktrailError, ValueError):
    """A schema file is malformed or does not describe itself consistently: the catalogue is
    ours, so it is our fault. A ValueError too, as it always was."""

    fault = Fault.INTERNAL


@total_ordering
@dataclass(frozen=True)
class SchemaVer:
    """SchemaVer ``MODEL-REVISION-ADDITION`` (Snowplow Iglu), ordered numerically."""

    model: int
    revision: int
    addition: int

    @classmethod
    def parse(cls, text: str) -> SchemaVer:
        match = _SCHEMAVER.match(text) if len(text) <= 32 else None
        if not match:
            shown = text if len(text) <= 40 else f"{text[:40]}…"
            raise SchemaCatalogueError(
                f"{shown!r} is not a SchemaVer (MODEL-REVISION-ADDITION, at most 9 digits each)"
            )
        return cls(*(int(part) for part in match.groups()))

    def __lt__(self, other: SchemaVer) -> bool:
        return (self.model, self.revision, self.addition) < (
            other.model,
            other.revision,
            other.addition,
        )

    def __str__(self) -> str:
        return f"{self.model}-{self.revision}-{self.addition}"


def schema_urn(kind: str, name: str, version: SchemaVer | str) -> str:
    return f"urn:clicktrail:{kind}/{name}/{version}"


@lru_cache(maxsize=4096)
def event_schema_name(event_name: str) -> str:
    """The schema name of a track event: ``Product Viewed`` -> ``product_viewed``."""
    return _NOT_WORD.sub("_", event_name.lower()).strip("_")


@dataclass(frozen=True)
class SchemaDoc:
    """One authored schema file."""

    kind: str
    name: str
    version: SchemaVer
    document: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}/{self.version}"

    @property
    def id(self) -> str:
        return schema_urn(self.kind, self.name, self.version)


@dataclass(frozen=True)
class RecordSchema:
    """What a whole event of one kind must look like, compiled once.

    ``key`` (``events/product_viewed/1-0-0``) names it in record headers and errors;
    ``schema_id`` is its id in a Confluent-compatible registry, when one is used.
    """

    kind: str
    name: str
    version: SchemaVer
    document: dict[str, Any]
    schema_id: int | None = None
    _validator: Any = field(default=None, repr=False, compare=False)

    @cached_property
    def key(self) -> str:
        return f"{self.kind}/{self.name}/{self.version}"

    def errors(self, event: Any) -> list[dict[str, str]]:
        """Every violation (JSON path, keyword, message, schema); empty when the event is valid."""
        if self._validator.is_valid(event):
            return []
        report, seen = [], set()
        for error in self._validator.iter_errors(event):
            parts = [str(part) for part in error.instance_path]
            last = error.schema_path[-1] if error.schema_path else ""
            keyword = last if isinstance(last, str) else type(error.kind).__name__
            if keyword == "required":
                parts.append(str(error.kind.property))  # point at the missing field itself
            path = "".join(f"/{part}" for part in parts)
            # An envelope and the schema completing it may both say /traits must be an object.
            if (path, keyword) not in seen:
                seen.add((path, keyword))
                report.append(error_entry(path, keyword, self._message(error, keyword), self.key))
        return report

    def _message(self, error: Any, keyword: str) -> str:
        """The error's message, without echoing a whole object back for composite keywords."""
        if keyword in ("anyOf", "oneOf", "not"):
            described = self._node(error.schema_path[:-1]).get("description")
            return str(described or f"matches none of the forms its {keyword} allows")
        message = str(error.message)
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        return message

    def _node(self, path: Iterable[str | int]) -> dict[str, Any]:
        """The schema object at a keyword path of this (reference-free) document."""
        node: Any = self.document
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node.get(part, {})
        return node if isinstance(node, dict) else {}


MAX_MESSAGE_CHARS = 300


def compile_record(
    kind: str, name: str, version: SchemaVer, document: dict[str, Any], schema_id: int | None = None
) -> RecordSchema:
    """Compile a self-contained record schema document (jsonschema-rs: fast to accept, and to
    report every error of a rejected event)."""
    validator = jsonschema_rs.validator_for(document, validate_formats=True)
    return RecordSchema(kind, name, version, document, schema_id, validator)


class SchemaRegistry(Protocol):
    """Where record schemas come from: files (the default) or a Confluent-compatible registry."""

    def record(self, kind: str, name: str, version: str | None = None) -> RecordSchema | None:
        """The named version (latest when None) of a record schema; None when there is none.

        Raises DependencyUnavailable when the registry cannot be reached.
        """

    def locate(self, kind: str, name: str, version: str | None = None) -> str:
        """Where that schema is, or would be: a file, or a registry subject and version."""


class FileSchemaRegistry:
    """Record schemas built from a directory of authored schemas, all at construction."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.documents = read_catalogue(root)
        self._records: dict[tuple[str, str], dict[SchemaVer, RecordSchema]] = {}
        for kind, name, version, document in build_records(self.documents):
            record = compile_record(kind, name, version, document)
            self._records.setdefault((kind, name), {})[version] = record

    def record(self, kind: str, name: str, version: str | None = None) -> RecordSchema | None:
        versions = self._records.get((kind, name))
        if not versions:
            return None
        if version is None:
            return versions[max(versions)]
        try:
            return versions.get(SchemaVer.parse(version))
        except SchemaCatalogueError:
            return None

    def locate(self, kind: str, name: str, version: str | None = None) -> str:
        return str(self.root / kind / name / f"{version or '<version>'}.json")

    def records(self) -> Iterator[RecordSchema]:
        """Every record schema, each name's versions in order."""
        for key in sorted(self._records):
            versions = self._records[key]
            for version in sorted(versions):
                yield versions[version]


def read_catalogue(root: Path) -> list[SchemaDoc]:
    """Every authored schema under ``root``, checked to describe itself as its path does."""
    if not root.is_dir():
        raise SchemaCatalogueError(f"schema directory {root} does not exist")
    docs = []
    for path in sorted(root.glob("*/*/*.json")):
        kind, name = path.parent.parent.name, path.parent.name
        if kind not in KINDS:
            raise SchemaCatalogueError(f"{path}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        version = SchemaVer.parse(path.stem)
        try:
            document = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise SchemaCatalogueError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise SchemaCatalogueError(f"{path}: a schema must be a JSON object")
        described = document.get("self") or {}
        expected = {"vendor": VENDOR, "kind": kind, "name": name, "version": str(version)}
        for key, value in expected.items():
            if described.get(key) != value:
                raise SchemaCatalogueError(
                    f"{path}: self.{key} is {described.get(key)!r}, expected {value!r}"
                )
        if document.get("$id") != schema_urn(kind, name, version):
            raise SchemaCatalogueError(f"{path}: $id must be {schema_urn(kind, name, version)}")
        if document.get("$schema") != DRAFT:
            raise SchemaCatalogueError(f"{path}: $schema must be {DRAFT}")
        try:
            Draft202012Validator.check_schema(document)
        except Exception as exc:
            raise SchemaCatalogueError(f"{path}: not a valid JSON Schema: {exc}") from None
        if kind == "traits" and name not in ("identify", "group"):
            raise SchemaCatalogueError(
                f"{path}: traits schemas are traits/identify or traits/group"
            )
        docs.append(SchemaDoc(kind, name, version, document))
    return docs


def build_records(
    docs: Iterable[SchemaDoc],
) -> Iterator[tuple[str, str, SchemaVer, dict[str, Any]]]:
    """The record schema of every call envelope and every event or traits schema."""
    docs = list(docs)
    resolve = _resolver({doc.id: doc.document for doc in docs})
    envelopes: dict[str, SchemaDoc] = {}
    for doc in docs:
        if doc.kind == "calls" and (
            doc.name not in envelopes or doc.version > envelopes[doc.name].version
        ):
            envelopes[doc.name] = doc
    for doc in docs:
        if doc.kind == "calls":
            tree = _inlined(doc, resolve)
            title = f"{doc.name} call {doc.version}"
            yield doc.kind, doc.name, doc.version, _record(tree, doc.document["self"], title)
        elif doc.kind in ("events", "traits"):
            call, field_name = completes(doc.kind, doc.name)
            envelope = envelopes.get(call)
            if envelope is None:
                raise SchemaCatalogueError(f"{doc.key}: no calls/{call} envelope to complete")
            part = {"type": "object", "properties": {field_name: _inlined(doc, resolve)}}
            tree = conjoin(_inlined(envelope, resolve), part)
            described = {**doc.document["self"], "envelope": envelope.key}
            title = f"{call} {doc.name} {doc.version}"
            yield doc.kind, doc.name, doc.version, _record(tree, described, title)


def completes(kind: str, name: str) -> tuple[str, str]:
    """The call type an event or traits schema completes, and the field it describes."""
    return ("track", "properties") if kind == "events" else (name, "traits")


def _record(tree: Any, described: dict[str, Any], title: str) -> dict[str, Any]:
    if not isinstance(tree, dict) or "allOf" in tree or "anyOf" in tree or "oneOf" in tree:
        # Registries would judge every later change of such a record only as "subschemas
        # changed", and Kafka Connect could not map it to a struct.
        raise SchemaCatalogueError(
            f"{described['kind']}/{described['name']}/{described['version']}: the record "
            "schema must be one object schema, without allOf, anyOf or oneOf at its top"
        )
    record = {"$schema": RECORD_DRAFT, "title": title, "self": described, **tree}
    try:
        Draft7Validator.check_schema(record)
    except Exception as exc:
        raise SchemaCatalogueError(f"{title}: not a valid draft-07 record schema: {exc}") from None
    return record


def _inlined(doc: SchemaDoc, resolve: Callable[[str, str], tuple[Any, str]]) -> Any:
    try:
        return inline(doc.document, doc.id, resolve)
    except InlineError as exc:
        raise SchemaCatalogueError(f"{doc.key}: {exc}") from None


def _resolver(documents: dict[str, dict[str, Any]]) -> Callable[[str, str], tuple[Any, str]]:
    """Resolves ``uri#/json/pointer`` references among the catalogue's documents."""

    def resolve(ref: str, base: str) -> tuple[Any, str]:
        uri, _, fragment = ref.partition("#")
        uri = uri or base
        if uri not in documents:
            raise SchemaCatalogueError(f"{base}: $ref to unknown {uri}")
        node: Any = documents[uri]
        for part in [p for p in fragment.split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            try:
                node = node[int(part)] if isinstance(node, list) else node[part]
            except (KeyError, IndexError, ValueError):
                raise SchemaCatalogueError(f"{base}: $ref {ref} points at nothing") from None
        return node, uri

    return resolve


def error_entry(path: str, keyword: str, message: str, schema: str) -> dict[str, str]:
    return {"path": path or "/", "keyword": keyword, "message": message, "schema": schema}
