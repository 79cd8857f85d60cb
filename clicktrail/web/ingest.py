"""The Segment HTTP Tracking API: /v1/track, page, screen, identify, group, alias, batch, import,
and /v1/validate, which checks events against their schemas without sending them.

A request is answered 200 only once its events are in the queue. Auth first (Basic, then the
body's writeKey), then the synchronous checks of clicktrail.intake; everything else happens in
the workers.
"""

from __future__ import annotations

import logging
import re
import secrets
import zlib
from collections import Counter
from typing import Any

from flask import Blueprint, current_app, request

from clicktrail.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from clicktrail.intake import (
    CALL_TYPES,
    MAX_REQUEST_BYTES,
    nesting_error,
    parse_json,
    read_body,
    stamp,
)
from clicktrail.logs import bind, bind_message_ids
from clicktrail.message import Part, Unencodable
from clicktrail.metrics import EVENTS_ACCEPTED
from clicktrail.sources import Source
from clicktrail.telemetry import current_traceparent
from clicktrail.validation import TrackingPlan
from clicktrail.web.auth import authenticate, basic_write_key
from clicktrail.web.cors import check_origin
from clicktrail.web.services import Services

log = logging.getLogger(__name__)
bp = Blueprint("ingest", __name__)

_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


@bp.post(f"/v1/<any({', '.join(CALL_TYPES)}):call_type>")
def single(call_type: str) -> dict[str, Any]:
    return _ingest(call_type)


@bp.post("/v1/batch")
@bp.post("/v1/import", endpoint="import")
def batch() -> dict[str, Any]:
    return _ingest(None)


@bp.post("/v1/validate")
def validate() -> dict[str, Any]:
    """Check one event (with its ``type``) or a batch against the schemas the pipeline would use,
    and answer every error at once. Nothing is queued."""
    services, source, events, batch = _receive(None, infer_type=True)
    if services.admission is not None:
        services.admission.check_rate(source, len(events))
    try:  # what ingest would refuse, validate refuses too
        Part(source.id, events=events).encode()
    except Unencodable:
        raise nesting_error(events, batch) from None
    plan = TrackingPlan.from_settings(source.settings)
    results = []
    for event in events:
        verdict = services.validator.validate(event, plan)
        result: dict[str, Any] = {
            "messageId": event["messageId"],
            "type": event["type"],
            "valid": verdict.valid,
            "schema": verdict.schema,
            "errors": verdict.errors,
        }
        if not verdict.valid:
            result["reason"] = verdict.reason
        results.append(result)
    return {"valid": all(r["valid"] for r in results), "results": results}


def _ingest(call_type: str | None) -> dict[str, Any]:
    services, source, events, _ = _receive(call_type)
    if services.admission is not None:
        services.admission.check_queue()
        services.admission.check_rate(source, len(events))
    bind_message_ids([event["messageId"] for event in events])
    try:
        services.enqueuer.enqueue(Part(source.id, source.settings, events, _traceparent()))
    except Unencodable:
        raise nesting_error(events, batch=call_type is None) from None
    for kind, count in Counter(str(event["type"]) for event in events).items():
        EVENTS_ACCEPTED.labels(source.id, kind).inc(count)
    if current_app.config["CLICKTRAIL_SETTINGS"].log_requests:
        log.info("accepted %d event(s)", len(events))
    return {"success": True}


def _receive(
    call_type: str | None, infer_type: bool = False
) -> tuple[Services, Source, list[dict[str, Any]], bool]:
    """Authenticate, read and check a request; its events, stamped, their source, and whether
    they came as a batch."""
    # The body is read as JSON whatever its Content-Type, as RudderStack's gateway reads it:
    # Segment documents application/json, but its browser library (sendBeacon) says text/plain,
    # and RudderStack's Node.js SDK says application/x-www-form-urlencoded of gzipped JSON.
    services: Services = current_app.extensions["clicktrail"]
    basic_key = basic_write_key()
    source = authenticate(services, basic_key, charge=False) if basic_key else None
    raw = _read_body()
    body = parse_json(raw)
    if infer_type:
        call_type = _call_type_of(body)
    intake = read_body(body, call_type, len(raw))
    if source is None:
        source = authenticate(services, intake.write_key, charge=False)
    bind(source_id=source.id)
    check_origin(source)
    stamp(intake.events, services.clock.now(), request.remote_addr)
    return services, source, intake.events, call_type is None


def _call_type_of(body: Any) -> str | None:
    """A body sent to /v1/validate: a batch (None), or one event naming its type."""
    if isinstance(body, dict) and "batch" in body:
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    if kind not in CALL_TYPES:
        raise InvalidInput(
            "invalid_type",
            f"give the event's type (one of {', '.join(CALL_TYPES)}) or send a batch",
            field="type",
        )
    return str(kind)


def _read_body() -> bytes:
    """The request body, gunzipped when sent with Content-Encoding: gzip, capped in size."""
    if request.content_length is None:
        # Chunked: no length to refuse up front, and Werkzeug would cut the body at the limit
        # silently. Read one byte past it to know.
        raw: bytes = request.environ["wsgi.input"].read(MAX_REQUEST_BYTES + 1)
        if len(raw) > MAX_REQUEST_BYTES:
            raise PayloadTooLarge(
                "request_too_large", f"a request may be at most {MAX_REQUEST_BYTES} bytes"
            )
    else:  # MAX_CONTENT_LENGTH refused a longer one before a byte was read
        raw = request.get_data(cache=False)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise UnsupportedMediaType(
            "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, MAX_REQUEST_BYTES + 1)
    except zlib.error as exc:
        raise InvalidInput("invalid_gzip", f"the body is not valid gzip: {exc}") from None
    if len(body) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge(
            "request_too_large", f"a request may be at most {MAX_REQUEST_BYTES} bytes uncompressed"
        )
    if not inflater.eof or inflater.unused_data:
        raise InvalidInput("invalid_gzip", "the gzip body is truncated or has trailing data")
    return body


def _traceparent() -> str:
    """The request span's W3C traceparent (it continues a caller's trace); else the caller's
    own when well formed; else a new trace."""
    current = current_traceparent()
    if current:
        return current
    given = request.headers.get("traceparent", "")
    if _TRACEPARENT.match(given):
        return given
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
