"""Users, for operators (Authorization: Bearer $ADMIN_TOKEN): GET /v1/users/<userId> shows a
profile; DELETE /v1/users/<userId> files an erasure request that the purge task carries out."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from clicktrail.errors import NotFound
from web.auth import require_admin
from web.services import Services

bp = Blueprint("users", __name__)


@bp.get("/v1/users/<path:user_id>")
def show(user_id: str) -> dict[str, Any]:
    services: Services = current_app.extensions["clicktrail"]
    require_admin(services)
    profile = services.profiles.get(user_id)
    if profile is None:
        raise NotFound("user_not_found", "no profile for that userId")
    return profile.to_json()


@bp.delete("/v1/users/<path:user_id>")
def erase(user_id: str) -> tuple[dict[str, Any], int]:
    services: Services = current_app.extensions["clicktrail"]
    require_admin(services)
    request_id, canonical, created = services.profiles.request_erasure(user_id)
    body = {"erasureId": request_id, "userId": canonical, "status": "pending", "new": created}
    return body, 202
