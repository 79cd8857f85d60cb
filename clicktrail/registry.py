"""Record schemas from a Confluent-compatible Schema Registry (Confluent, Karapace, Redpanda,
Apicurio's ccompat API), and the command that registers the catalogue there.

Subjects: one per record schema name and SchemaVer MODEL, ``<prefix>.<kind>.<name>.v<model>``
(``clicktrail.events.product_viewed.v1``; the prefix is SCHEMA_SUBJECT_PREFIX). Within a
subject, versions are registered in SchemaVer order under BACKWARD compatibility, so the registry
enforces what ``make schemas-check`` checks (the same rules); a breaking change is a new MODEL,
hence a new subject. Each registered schema is the record schema as ``clicktrail.inline`` writes
it (self-contained draft-07, no ``$ref``), carrying its SchemaVer in ``self.version``.

Values on the events topic are then written in the Confluent JSON wire format with the id of the
schema they were validated against, so standard deserializers read them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import orjson
from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
    ServerConfig,
)

from clicktrail.config import Settings
from clicktrail.errors import DependencyUnavailable
from clicktrail.intake import CALL_TYPES
from clicktrail.schemas import (
    FileSchemaRegistry,
    RecordSchema,
    SchemaCatalogueError,
    SchemaRegistry,
    SchemaVer,
    compile_record,
    read_catalogue,
)

log = logging.getLogger(__name__)

COMPATIBILITY = ConfigCompatibilityLevel.BACKWARD
_T = TypeVar("_T")


def subject_name(prefix: str, kind: str, name: str, model: int) -> str:
    return f"{prefix}.{kind}.{name}.v{model}"


def expected_subjects(schemas_dir: Path, prefix: str) -> list[str]:
    """The subjects ``make schemas-register`` fills from the catalogue at ``schemas_dir``; without
    a readable catalogue, the envelopes' of any MODEL (``<prefix>.calls.<type>.v*``)."""
    try:
        docs = read_catalogue(schemas_dir)
    except SchemaCatalogueError:
        return [f"{prefix}.calls.{call}.v*" for call in CALL_TYPES]
    return sorted(
        {
            subject_name(prefix, doc.kind, doc.name, doc.version.model)
            for doc in docs
            if doc.kind != "common"
        }
    )


def missing_subjects(present: Iterable[str], expected: Iterable[str]) -> list[str]:
    held = set(present)
    return [
        subject
        for subject in expected
        if not (
            any(s.startswith(subject[:-1]) for s in held)
            if subject.endswith("*")
            else subject in held
        )
    ]


def make_registry(settings: Settings) -> SchemaRegistry:
    """A Confluent-compatible registry at SCHEMA_REGISTRY_URL when set, else the files."""
    if settings.schema_registry:
        client = SchemaRegistryClient.new_client(dict(settings.schema_registry))
        return ConfluentSchemaRegistry(client, settings.schema_subject_prefix)
    return FileSchemaRegistry(settings.schemas_dir)


class ConfluentSchemaRegistry:
    """Looks record schemas up in a registry; compiled schemas are kept for good (an id never
    changes), subject listings for ``refresh_seconds`` so new versions are picked up.

    Lookups of different subjects never wait for each other: each subject (and the listing) is
    fetched by one thread at a time, the others waiting for that fetch alone, or, when an older
    answer is at hand, going on with it meanwhile. A subject the listing does not hold is absent
    without asking for it: the listing is fetched again for it at most every
    ``absent_seconds``, so random event names cost at most one call per that time.
    """

    def __init__(
        self,
        client: SchemaRegistryClient,
        subject_prefix: str = "clicktrail",
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        absent_seconds: float = 5.0,
    ) -> None:
        self._client = client
        self._prefix = subject_prefix
        self._refresh = refresh_seconds
        self._absent = min(absent_seconds, refresh_seconds)
        self._clock = clock
        self._guard = threading.Lock()  # only around _locks, never across a call
        self._locks: dict[str | None, threading.Lock] = {}  # None: the listing
        self._subjects: tuple[float, frozenset[str]] | None = None
        self._versions: dict[str, tuple[float, dict[SchemaVer, int]]] = {}
        self._compiled: dict[int, RecordSchema] = {}
        self._documents: dict[int, dict[str, Any]] = {}

    def record(self, kind: str, name: str, version: str | None = None) -> RecordSchema | None:
        try:
            return self._record(kind, name, version)
        except SchemaRegistryError as exc:
            if exc.http_status_code >= 500:
                raise DependencyUnavailable("schema_registry", str(exc)) from exc
            raise
        except httpx2.HTTPError as exc:  # the client's transport: registry unreachable
            raise DependencyUnavailable("schema_registry", str(exc)) from exc

    def _record(self, kind: str, name: str, version: str | None) -> RecordSchema | None:
        if version is None:
            prefix = subject_name(self._prefix, kind, name, 0)[:-1]
            models = self._models(prefix, self._subject_list())
            if not models:  # perhaps registered since the listing: look again, now and then
                models = self._models(prefix, self._subject_list(self._absent))
            if not models:
                return None
            versions = self._subject_versions(subject_name(self._prefix, kind, name, max(models)))
            if not versions:
                return None
            wanted = max(versions)
        else:
            try:
                wanted = SchemaVer.parse(version)
            except SchemaCatalogueError:
                return None
            subject = subject_name(self._prefix, kind, name, wanted.model)
            if subject not in self._subject_list() and subject not in self._subject_list(
                self._absent
            ):
                return None
            versions = self._subject_versions(subject)
            if wanted not in versions:
                return None
        schema_id = versions[wanted]
        compiled = self._compiled.get(schema_id)
        if compiled is None:  # two threads may compile it at once: the same, harmlessly
            compiled = self._compiled[schema_id] = compile_record(
                kind, name, wanted, self._documents[schema_id], schema_id
            )
        return compiled

    @staticmethod
    def _models(prefix: str, subjects: frozenset[str]) -> list[int]:
        return [
            int(s[len(prefix) :])
            for s in subjects
            if s.startswith(prefix) and s[len(prefix) :].isdigit()
        ]

    def _subject_list(self, max_age: float | None = None) -> frozenset[str]:
        """The registry's subjects, at most ``max_age`` (else ``refresh_seconds``) old, or
        older while another thread fetches them."""

        def fetch() -> frozenset[str]:
            self._subjects = (self._clock(), frozenset(self._client.get_subjects()))
            return self._subjects[1]

        return self._single_flight(None, lambda: self._subjects, fetch, max_age)

    def _subject_versions(self, subject: str) -> dict[SchemaVer, int]:
        """SchemaVer -> schema id of a subject's versions, cached for ``refresh_seconds``."""

        def fetch() -> dict[SchemaVer, int]:
            versions: dict[SchemaVer, int] = {}
            for schemaver, registered in subject_versions(self._client, subject).items():
                versions[schemaver] = registered.schema_id
                self._documents[registered.schema_id] = registered.document
            self._versions[subject] = (self._clock(), versions)
            return versions

        return self._single_flight(subject, lambda: self._versions.get(subject), fetch, None)

    def _single_flight(
        self,
        key: str | None,
        held: Callable[[], tuple[float, _T] | None],
        fetch: Callable[[], _T],
        max_age: float | None,
    ) -> _T:
        """What ``held`` has when fresh enough; else one thread per key fetches it. The others
        wait for that fetch, unless they hold an older answer, which they use meanwhile."""
        age = self._refresh if max_age is None else max_age
        entry = held()
        if entry is not None and self._clock() - entry[0] <= age:
            return entry[1]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=entry is None):
            assert entry is not None
            return entry[1]
        try:
            latest = held()
            if latest is not None and latest is not entry and self._clock() - latest[0] <= age:
                return latest[1]  # fetched while this thread waited
            return fetch()
        finally:
            lock.release()

    def locate(self, kind: str, name: str, version: str | None = None) -> str:
        model = version.split("-", 1)[0] if version else "<MODEL>"
        subject = f"{self._prefix}.{kind}.{name}.v{model}"
        return f"subject {subject}" + (f", version {version}" if version else "")


@dataclass(frozen=True)
class RegisteredVersion:
    version: int
    schema_id: int
    document: dict[str, Any]


def subject_versions(
    client: SchemaRegistryClient, subject: str
) -> dict[SchemaVer, RegisteredVersion]:
    """What a subject holds, by the SchemaVer in each schema's ``self.version`` (a later
    registration of the same SchemaVer wins); empty when the subject does not exist."""
    try:
        numbers = sorted(client.get_versions(subject))
    except SchemaRegistryError as exc:
        if exc.http_status_code != 404:
            raise
        return {}
    found: dict[SchemaVer, RegisteredVersion] = {}
    for number in numbers:
        registered = client.get_version(subject, number)
        assert registered.schema_id is not None
        assert registered.schema is not None
        document = orjson.loads(registered.schema.schema_str or "{}")
        try:
            schemaver = SchemaVer.parse(str((document.get("self") or {}).get("version")))
        except SchemaCatalogueError:
            log.warning("%s version %s has no SchemaVer in self.version; ignored", subject, number)
            continue
        found[schemaver] = RegisteredVersion(number, registered.schema_id, document)
    return found


@dataclass(frozen=True)
class Registration:
    subject: str
    schema: str
    schema_id: int | None
    version: int | None
    error: str | None = None
    note: str = ""


def register_catalogue(
    client: SchemaRegistryClient, catalogue: FileSchemaRegistry, subject_prefix: str = "clicktrail"
) -> list[Registration]:
    """Register every record schema of the catalogue, oldest version first (idempotent).

    A subject without a compatibility level of its own gets BACKWARD; one that has a level keeps
    it. A version the subject already holds is left as it is, unless it is the subject's newest
    and has changed (its envelope did): that one is registered again, and checked again. A
    schema the registry refuses is reported with the registry's reason, the later versions of
    its subject are not tried, and the other subjects carry on.
    """
    subjects: dict[str, list[RecordSchema]] = {}
    for record in catalogue.records():
        subject = subject_name(subject_prefix, record.kind, record.name, record.version.model)
        subjects.setdefault(subject, []).append(record)
    results: list[Registration] = []
    for subject, records in subjects.items():
        _ensure_compatibility(client, subject)
        held = subject_versions(client, subject)
        refused: str | None = None
        for record in records:
            known = held.get(record.version)
            if refused is not None:
                results.append(
                    Registration(
                        subject, record.key, None, None, f"not tried: {refused} was refused"
                    )
                )
            elif known is not None and (
                known.document == record.document or record is not records[-1]
            ):
                note = "registered before" + (
                    "" if known.document == record.document else " (with an earlier envelope)"
                )
                results.append(
                    Registration(subject, record.key, known.schema_id, known.version, note=note)
                )
            else:
                try:
                    results.append(_register(client, subject, record))
                except SchemaRegistryError as exc:
                    if exc.http_status_code not in (409, 422):
                        raise
                    refused = record.key
                    results.append(Registration(subject, record.key, None, None, str(exc)))
    return results


def _register(client: SchemaRegistryClient, subject: str, record: RecordSchema) -> Registration:
    schema = Schema(orjson.dumps(record.document).decode(), "JSON")
    registered = client.register_schema_full_response(subject, schema)
    version = registered.version
    if version is None:  # Karapace and older Confluent answer the id alone
        version = client.lookup_schema(subject, schema).version
    return Registration(subject, record.key, registered.schema_id, version)


def _ensure_compatibility(client: SchemaRegistryClient, subject: str) -> None:
    try:
        current = client.get_config(subject)
    except SchemaRegistryError as exc:
        if exc.http_status_code != 404:
            raise
        current = None
    if current is not None and (current.compatibility or current.compatibility_level):
        return
    client.set_config(subject, ServerConfig(compatibility=COMPATIBILITY))
