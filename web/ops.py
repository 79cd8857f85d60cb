"""Operations endpoints: liveness and readiness."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from flask import Blueprint, current_app

from web.health import CHECK_TIMEOUT
from web.services import Services

bp = Blueprint("ops", __name__)
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readyz")


@bp.get("/livez")
def livez() -> dict[str, Any]:
    """The process is up. Calls no dependency, so a dependency outage never restarts the API."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    """Every dependency answers within its timeout; 503 with each one's state otherwise."""
    services: Services = current_app.extensions["clicktrail"]
    futures = {name: _executor.submit(check) for name, check in services.checks.items()}
    results: dict[str, dict[str, str]] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=CHECK_TIMEOUT + 1)
            results[name] = {"status": "ok"}
        except FutureTimeout:
            results[name] = {"status": "down", "error": "timed out"}
        except Exception as exc:  # any failure of a check means "not ready", with why
            results[name] = {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
    ready = all(r["status"] == "ok" for r in results.values())
    return {"status": "ok" if ready else "unavailable", "checks": results}, 200 if ready else 503
