"""A Confluent-compatible Schema Registry for tests that cross process boundaries.

No registry server can be installed from this machine's package registries, so the REST
endpoints the Confluent clients use are served here over HTTP, with storage delegated to
confluent-kafka's own in-process mock client and BACKWARD compatibility enforced on
registration with Clicktrail's evolution rules, as a real registry would. Point the tests at a
real registry (Confluent, Karapace, Redpanda) with SCHEMA_REGISTRY_URL instead.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from flask import Flask, Response, request
from werkzeug.serving import make_server

from clicktrail.compat import bundled_changes
from tests.support.infra import free_port

JSON_TYPE = "application/vnd.schemaregistry.v1+json"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type=JSON_TYPE)


def _error(status: int, code: int, message: str) -> Response:
    return _json({"error_code": code, "message": message}, status)


def build_app() -> Flask:
    store = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    config: dict[str, str] = {}
    lock = threading.Lock()
    app = Flask("schema-registry")

    def registered(subject: str, version: Any) -> dict[str, Any]:
        found = store.get_version(subject, version)
        assert found.schema is not None
        return {
            "subject": subject,
            "version": found.version,
            "id": found.schema_id,
            "schema": found.schema.schema_str,
            "schemaType": "JSON",
        }

    @app.errorhandler(SchemaRegistryError)
    def not_found(exc: SchemaRegistryError) -> Response:
        return _error(exc.http_status_code, exc.error_code, exc.error_message)

    @app.get("/subjects")
    def subjects() -> Response:
        return _json(store.get_subjects())

    @app.get("/subjects/<subject>/versions")
    def versions(subject: str) -> Response:
        found = store.get_versions(subject)
        return _json(found) if found else _error(404, 40401, f"Subject '{subject}' not found.")

    @app.get("/subjects/<subject>/versions/<version>")
    def version(subject: str, version: str) -> Response:
        return _json(registered(subject, version if version == "latest" else int(version)))

    @app.post("/subjects/<subject>/versions")
    def register(subject: str) -> Response:
        body = request.get_json(force=True)
        schema = Schema(body["schema"], body.get("schemaType", "JSON"))
        with lock:
            try:  # a schema registered before keeps its id and version, unchecked
                found = store.lookup_schema(subject, schema)
                return _json({"id": found.schema_id, "subject": subject, "version": found.version})
            except SchemaRegistryError:
                pass
            if config.get(subject, "BACKWARD") == "BACKWARD" and store.get_versions(subject):
                latest = store.get_latest_version(subject)
                assert latest.schema is not None
                new_doc = orjson.loads(schema.schema_str or "{}")
                old_doc = orjson.loads(latest.schema.schema_str or "{}")
                if old_doc != new_doc and (changes := bundled_changes(old_doc, new_doc)):
                    return _error(
                        409, 409, "Schema being registered is incompatible: " + "; ".join(changes)
                    )
            result = store.register_schema_full_response(subject, schema)
        return _json({"id": result.schema_id, "subject": subject, "version": result.version})

    @app.post("/subjects/<subject>")
    def lookup(subject: str) -> Response:
        body = request.get_json(force=True)
        found = store.lookup_schema(subject, Schema(body["schema"], body.get("schemaType", "JSON")))
        return _json(registered(subject, found.version))

    @app.get("/schemas/ids/<int:schema_id>")
    def by_id(schema_id: int) -> Response:
        schema = store.get_schema(schema_id)
        return _json({"schema": schema.schema_str, "schemaType": "JSON"})

    @app.get("/config/<subject>")
    def get_config(subject: str) -> Response:
        if subject not in config:
            return _error(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return _json({"compatibilityLevel": config[subject]})

    @app.put("/config/<subject>")
    def put_config(subject: str) -> Response:
        config[subject] = request.get_json(force=True)["compatibility"]
        return _json({"compatibility": config[subject]})

    @app.delete("/subjects/<subject>")
    def delete(subject: str) -> Response:
        return _json(store.delete_subject(subject))

    return app


class RegistryServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, build_app(), threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> RegistryServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(5)
