"""Operations endpoints: liveness, readiness and the OpenAPI document (/metrics is served by the
metrics exporter)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from clicktrail.errors import InvalidInput
from clicktrail.health import INTAKE_CHECKS, run_checks
from clicktrail.web.openapi import document
from clicktrail.web.services import Services

bp = Blueprint("ops", __name__)


@bp.get("/livez")
def livez() -> dict[str, Any]:
    """The process is up. Calls no dependency, so a dependency outage never restarts the API."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """Every dependency answers within its timeout; 503 with each one's state otherwise.

    ``?scope=intake``: only what the API needs to take events (Redis, the queue, Postgres), for
    a load balancer's readiness check. Kafka, the registry and the workers may be away: the
    queue holds the events until they are back."""
    services: Services = current_app.extensions["clicktrail"]
    scope = request.args.get("scope", "all")
    if scope not in ("all", "intake"):
        raise InvalidInput("invalid_scope", "scope is all or intake", field="scope")
    checks = services.checks
    if scope == "intake":
        checks = {name: check for name, check in checks.items() if name in INTAKE_CHECKS}
    ready, results = run_checks(checks)
    return {"status": "ok" if ready else "unavailable", "checks": results}, 200 if ready else 503


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return document()
