"""Receipts (``GET /v1/events/<messageId>``): what became of one event, for an operator (the
admin token: any source's) or a source's debugger key (that source's events only: another
source's answer as if unknown)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from clicktrail.errors import Forbidden, InvalidInput
from clicktrail.intake import MAX_MESSAGE_ID_CHARS
from clicktrail.web.auth import debugger_or_admin
from clicktrail.web.services import Services
from clicktrail.web.users import UserIdConverter

bp = Blueprint("receipts", __name__)


@bp.record_once
def _add_converter(state: object) -> None:
    state.app.url_map.converters["message_id"] = UserIdConverter  # type: ignore[attr-defined]


@bp.get("/v1/events/<message_id:message_id>")
def show(message_id: str) -> Response:
    services: Services = current_app.extensions["clicktrail"]
    keys = services.debugger_keys or services.debugger
    if services.receipts is None or keys is None:
        raise Forbidden("receipts_disabled", "receipts are not available on this API")
    caller = debugger_or_admin(services, keys.source_of)
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise InvalidInput(
            "invalid_message_id", f"a messageId has at most {MAX_MESSAGE_ID_CHARS} characters"
        )
    receipt = services.receipts.find(message_id, caller)
    body = receipt.to_json()
    if not receipt.found:
        body = {"success": False, "code": "event_not_found", "message": body["explanation"], **body}
    response = jsonify(body)
    response.status_code = 200 if receipt.found else 404
    response.headers["Cache-Control"] = "no-store"
    return response
