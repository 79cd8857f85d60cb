"""Operations endpoints: liveness, readiness and the OpenAPI document (/metrics is served by the
metrics exporter)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from clicktrail.health import run_checks
from clicktrail.web.openapi import document
from clicktrail.web.services import Services

bp = Blueprint("ops", __name__)


@bp.get("/livez")
def livez() -> dict[str, Any]:
    """The process is up. Calls no dependency, so a dependency outage never restarts the API."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """Every dependency answers within its timeout; 503 with each one's state otherwise."""
    services: Services = current_app.extensions["clicktrail"]
    ready, results = run_checks(services.checks)
    return {"status": "ok" if ready else "unavailable", "checks": results}, 200 if ready else 503


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return document()
