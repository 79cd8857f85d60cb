"""Sessions: POST /v1/sessions (a server-issued session id), GET and DELETE /v1/sessions/<id>.

A source reaches its own sessions with its write key (HTTP Basic); an operator reaches any with
the admin token. Events join a session they name in ``context.sessionId`` while it is live.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, request

from clicktrail.errors import InvalidInput, NotFound
from clicktrail.intake import parse_json
from clicktrail.sessions import SessionView
from clicktrail.web.auth import authenticate, basic_write_key, source_or_admin
from clicktrail.web.cors import check_origin
from clicktrail.web.services import Services

bp = Blueprint("sessions", __name__)


@bp.post("/v1/sessions")
def create() -> tuple[dict[str, Any], int]:
    services: Services = current_app.extensions["clicktrail"]
    raw = request.get_data()
    body = parse_json(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise InvalidInput("invalid_body", "the body, when sent, must be a JSON object")
    body_key = body.get("writeKey")
    if body_key is not None and not isinstance(body_key, str):
        raise InvalidInput("invalid_write_key", "writeKey must be a string", field="writeKey")
    source = authenticate(services, basic_write_key() or body_key)
    check_origin(source)
    session = services.sessions.create(source.id, str(uuid.uuid4()), services.clock.now())
    return {**session.to_json(), "timeoutSeconds": services.sessions.timeout_seconds}, 201


@bp.get("/v1/sessions/<session_id>")
def show(session_id: str) -> dict[str, Any]:
    services: Services = current_app.extensions["clicktrail"]
    return _visible(services, session_id).to_json()


@bp.delete("/v1/sessions/<session_id>")
def end(session_id: str) -> Response:
    services: Services = current_app.extensions["clicktrail"]
    _visible(services, session_id)
    services.sessions.end(session_id)
    return Response(status=204)


def _visible(services: Services, session_id: str) -> SessionView:
    """The live session, if the caller may see it; 404 alike when it is not live or not theirs."""
    source = source_or_admin(services)
    session = services.sessions.get(session_id)
    if session is None or (source is not None and session.source_id != source.id):
        raise NotFound("session_not_found", "no live session with that id")
    return session
