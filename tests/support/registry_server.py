"""A Confluent-compatible Schema Registry double, for tests that cross process boundaries.

No registry server installs from this machine's package registries, so the REST API the
Confluent clients use is served here, built from Confluent's published behaviour and
independent of Clicktrail's code:

- a schema must parse as a self-contained draft-07 JSON Schema: a ``$ref`` that does not point
  into the document itself cannot be resolved (Confluent: 422 error 42201; Karapace answered
  500 to the ``urn:`` references Clicktrail once sent);
- ids are global: the same schema text has one id in every subject; registering a schema a
  subject already holds answers its id and version, unchecked;
- a subject's compatibility level (``PUT /config/<subject>``; the global default BACKWARD) is
  enforced on registration by Confluent's JSON Schema rules (``tests.support.confluent_rules``):
  409 error 409 with each incompatible difference;
- ``GET /config/<subject>`` of a subject without its own level answers 404 error 40408; unknown
  subjects and versions 40401 and 40402; a permanent delete needs a soft delete first (40405).

Point the tests at a real registry (Confluent, Karapace, Redpanda) with SCHEMA_REGISTRY_URL.

For tests of its clients, it counts the requests it serves (``Traffic.paths``) and answers a
subject's requests after a delay of the test's choosing (``Traffic.slow``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from flask import Flask, Response, request
from jsonschema import Draft7Validator
from werkzeug.serving import make_server

from tests.support import confluent_rules
from tests.support.infra import free_port

JSON_TYPE = "application/vnd.schemaregistry.v1+json"
CHECKED = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
)


class RegistryError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Subject:
    versions: list[int] = field(default_factory=list)  # schema ids, version n at n-1
    deleted: bool = False
    level: str | None = None


@dataclass
class Store:
    schemas: list[str] = field(default_factory=list)  # id n at n-1
    subjects: dict[str, Subject] = field(default_factory=dict)
    global_level: str = "BACKWARD"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def live(self, name: str) -> Subject:
        subject = self.subjects.get(name)
        if subject is None or subject.deleted or not subject.versions:
            raise RegistryError(404, 40401, f"Subject '{name}' not found.")
        return subject

    def version(self, name: str, version: str) -> tuple[int, int]:
        """(version number, schema id)."""
        versions = self.live(name).versions
        number = len(versions) if version in ("latest", "-1") else int(version)
        if not 1 <= number <= len(versions):
            raise RegistryError(404, 40402, f"Version {version} not found.")
        return number, versions[number - 1]

    def register(self, name: str, text: str) -> tuple[int, int]:
        document = _parse(text)
        subject = self.subjects.setdefault(name, Subject())
        if subject.deleted:
            subject.versions, subject.deleted = [], False
        for number, schema_id in enumerate(subject.versions, 1):
            if _canonical(self.schemas[schema_id - 1]) == _canonical(text):
                return schema_id, number
        level = subject.level or self.global_level
        if subject.versions and level in CHECKED:
            earlier = subject.versions if level.endswith("_TRANSITIVE") else subject.versions[-1:]
            for schema_id in reversed(earlier):
                old = orjson.loads(self.schemas[schema_id - 1])
                found = []
                if level.startswith(("BACKWARD", "FULL")):
                    found += confluent_rules.incompatibilities(old, document)
                if level.startswith(("FORWARD", "FULL")):
                    found += confluent_rules.incompatibilities(document, old)
                if found:
                    details = ", ".join(
                        f'{{errorType:"{d.kind}", description:"at path \'{d.path}\'"}}'
                        for d in found
                    )
                    raise RegistryError(
                        409,
                        409,
                        f"Schema being registered is incompatible with an earlier schema for "
                        f"subject \"{name}\", details: [{details}, {{compatibility: '{level}'}}]",
                    )
        schema_id = next(
            (i for i, t in enumerate(self.schemas, 1) if _canonical(t) == _canonical(text)), None
        )
        if schema_id is None:
            self.schemas.append(text)
            schema_id = len(self.schemas)
        subject.versions.append(schema_id)
        return schema_id, len(subject.versions)


def _canonical(text: str) -> bytes:
    return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS)


def _parse(text: str) -> Any:
    try:
        document = orjson.loads(text)
        Draft7Validator.check_schema(document)
    except Exception as exc:
        raise RegistryError(422, 42201, f"Invalid schema: {exc}") from None
    for ref in _refs(document):
        if not ref.startswith("#") or not _points_into(document, ref[1:]):
            raise RegistryError(422, 42201, f"Invalid schema: cannot resolve $ref {ref}")
    return document


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for key, value in node.items() if key not in ("enum", "const")
                        for ref in _refs(value)]  # fmt: skip
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _points_into(document: Any, pointer: str) -> bool:
    node = document
    for part in [p for p in pointer.split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type=JSON_TYPE)


@dataclass
class Traffic:
    """The requests served (their paths), and subjects answered only after some seconds."""

    paths: list[str] = field(default_factory=list)
    slow: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def served(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)
        subject = path.split("/")[2] if path.startswith("/subjects/") else None
        if subject in self.slow:
            time.sleep(self.slow[subject])


def build_app(traffic: Traffic | None = None) -> Flask:
    store = Store()
    app = Flask("schema-registry")
    seen = traffic or Traffic()

    @app.before_request
    def count() -> None:
        seen.served(request.path)

    @app.errorhandler(RegistryError)
    def refused(exc: RegistryError) -> Response:
        return _json({"error_code": exc.code, "message": exc.message}, exc.status)

    def body() -> dict[str, Any]:
        payload = orjson.loads(request.get_data() or b"{}")
        if payload.get("schemaType", "JSON") != "JSON":
            raise RegistryError(422, 42201, "only JSON schemas are served here")
        return dict(payload)

    @app.get("/subjects")
    def subjects() -> Response:
        return _json(sorted(n for n, s in store.subjects.items() if s.versions and not s.deleted))

    @app.get("/subjects/<subject>/versions")
    def versions(subject: str) -> Response:
        return _json(list(range(1, len(store.live(subject).versions) + 1)))

    def registered(subject: str, number: int, schema_id: int) -> Response:
        text = store.schemas[schema_id - 1]
        found = {"subject": subject, "version": number, "id": schema_id, "schemaType": "JSON"}
        return _json({**found, "schema": text})

    @app.get("/subjects/<subject>/versions/<version>")
    def version(subject: str, version: str) -> Response:
        return registered(subject, *store.version(subject, version))

    @app.post("/subjects/<subject>/versions")
    def register(subject: str) -> Response:
        with store.lock:
            schema_id, number = store.register(subject, body()["schema"])
        return _json({"id": schema_id, "version": number})

    @app.post("/subjects/<subject>")
    def lookup(subject: str) -> Response:
        text = body()["schema"]
        for number, schema_id in enumerate(store.live(subject).versions, 1):
            if _canonical(store.schemas[schema_id - 1]) == _canonical(text):
                return registered(subject, number, schema_id)
        raise RegistryError(404, 40403, "Schema not found")

    @app.get("/schemas/ids/<int:schema_id>")
    def by_id(schema_id: int) -> Response:
        if not 1 <= schema_id <= len(store.schemas):
            raise RegistryError(404, 40403, "Schema not found")
        return _json({"schema": store.schemas[schema_id - 1], "schemaType": "JSON"})

    @app.get("/config")
    def get_global() -> Response:
        return _json({"compatibilityLevel": store.global_level})

    @app.get("/config/<subject>")
    def get_config(subject: str) -> Response:
        found = store.subjects.get(subject)
        if found is None or found.level is None:
            if request.args.get("defaultToGlobal") == "true":
                return _json({"compatibilityLevel": store.global_level})
            raise RegistryError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return _json({"compatibilityLevel": found.level})

    @app.put("/config/<subject>")
    def put_config(subject: str) -> Response:
        level = str(orjson.loads(request.get_data())["compatibility"]).upper()
        if level not in (*CHECKED, "NONE"):
            raise RegistryError(422, 42203, f"Invalid compatibility level {level}")
        store.subjects.setdefault(subject, Subject()).level = level
        return _json({"compatibility": level})

    @app.delete("/subjects/<subject>")
    def delete(subject: str) -> Response:
        permanent = request.args.get("permanent") == "true"
        with store.lock:
            found = store.subjects.get(subject)
            if found is None or not found.versions:
                raise RegistryError(404, 40401, f"Subject '{subject}' not found.")
            if permanent and not found.deleted:
                raise RegistryError(
                    404,
                    40405,
                    f"Subject '{subject}' was not deleted first before being permanently deleted",
                )
            numbers = list(range(1, len(found.versions) + 1))
            if permanent:
                del store.subjects[subject]
            else:
                found.deleted = True
        return _json(numbers)

    return app


class RegistryServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.traffic = Traffic()
        self._server = make_server("127.0.0.1", self.port, build_app(self.traffic), threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> RegistryServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(5)


@dataclass(frozen=True)
class RegistryUnderTest:
    url: str
    subject_prefix: str
    real: bool  # SCHEMA_REGISTRY_URL named a registry of the world's


@contextmanager
def registry_under_test(subject_prefix: str) -> Iterator[RegistryUnderTest]:
    """The registry at SCHEMA_REGISTRY_URL (under a subject prefix of the test's own, its
    subjects deleted afterwards), else the double, served for the test."""
    url = os.environ.get("SCHEMA_REGISTRY_URL")
    server = None if url else RegistryServer().start()
    try:
        yield RegistryUnderTest(url or server.url, subject_prefix, server is None)  # type: ignore[union-attr]
    finally:
        if server is not None:
            server.stop()
        elif url:
            client = SchemaRegistryClient({"url": url})
            for subject in client.get_subjects():
                if subject.startswith(subject_prefix + "."):
                    client.delete_subject(subject)
                    client.delete_subject(subject, permanent=True)
