"""Users, for operators (Authorization: Bearer $ADMIN_TOKEN): GET /v1/users/<userId> shows a
profile; DELETE /v1/users/<userId> files an erasure request that the purge task carries out."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter

from clicktrail.errors import InvalidInput, NotFound
from clicktrail.intake import MAX_ID_CHARS
from clicktrail.web.auth import require_admin
from clicktrail.web.services import Services

bp = Blueprint("users", __name__)


class UserIdConverter(PathConverter):
    """Any userId, slashes and line breaks included (Werkzeug's path stops at a line break)."""

    regex = "(?s:.+)"


@bp.record_once
def _add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["user_id"] = UserIdConverter


@bp.get("/v1/users/<user_id:user_id>")
def show(user_id: str) -> dict[str, Any]:
    services: Services = current_app.extensions["clicktrail"]
    require_admin(services)
    _check(user_id)
    profile = services.profiles.get(user_id)
    if profile is None:
        raise NotFound("user_not_found", "no profile for that userId")
    return profile.to_json()


@bp.delete("/v1/users/<user_id:user_id>")
def erase(user_id: str) -> tuple[dict[str, Any], int]:
    services: Services = current_app.extensions["clicktrail"]
    require_admin(services)
    _check(user_id)
    request_id, canonical, created = services.profiles.request_erasure(user_id)
    body = {"erasureId": request_id, "userId": canonical, "status": "pending", "new": created}
    return body, 202


def _check(user_id: str) -> None:
    if len(user_id) > MAX_ID_CHARS:
        raise InvalidInput("invalid_identity", f"a userId has at most {MAX_ID_CHARS} characters")
