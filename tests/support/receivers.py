"""Local stand-ins for what ops point Clicktrail at: an OTLP/HTTP trace collector and a Sentry
ingest endpoint. Processes under test export to them over loopback; nothing leaves the machine."""

from __future__ import annotations

import gzip
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Flask, Response, request
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from werkzeug.serving import make_server

from tests.support.infra import free_port


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    # (trace id, span id) of each span this one links to.
    links: tuple[tuple[str, str], ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


class _Server:
    def __init__(self, app: Flask) -> None:
        self.port = free_port()
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()


def _body() -> bytes:
    raw = request.get_data()
    encoding = request.headers.get("Content-Encoding", "")
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    return raw


def _value(value: Any) -> Any:
    """An OTLP AnyValue as Python (scalars only)."""
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class OtlpReceiver(_Server):
    """Collects the spans POSTed to /v1/traces (OTLP protobuf)."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        app = Flask("otlp")

        @app.post("/v1/traces")
        def traces() -> Response:
            export = ExportTraceServiceRequest()
            export.ParseFromString(_body())
            for resource_spans in export.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            ExportedSpan(
                                attributes.get("service.name", ""),
                                span.name,
                                span.kind,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                tuple((k.trace_id.hex(), k.span_id.hex()) for k in span.links),
                                {a.key: _value(a.value) for a in span.attributes},
                            )
                        )
            return Response(b"", content_type="application/x-protobuf")

        super().__init__(app)
        self.endpoint = f"http://127.0.0.1:{self.port}"


class SentryReceiver(_Server):
    """Collects the envelopes a Sentry SDK sends (DSN ``http://public@127.0.0.1:<port>/1``)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.events: list[dict[str, Any]] = []
        app = Flask("sentry")

        @app.post("/api/<int:project>/envelope/")
        def envelope(project: int) -> Response:
            body = _body()
            self.raw.append(body)
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if payload and orjson.loads(header).get("type") == "event":
                    self.events.append(orjson.loads(payload))
            return Response(b"{}", content_type="application/json")

        super().__init__(app)
        self.dsn = f"http://public@127.0.0.1:{self.port}/1"
